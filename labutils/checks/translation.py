"""Checks of notebook 06, translation: ``greedy_translate`` (6.1), ``series_log_probability`` (6.2)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from labutils import decode as _decode
from labutils import model as _model
from labutils import tokens as _tokens
from labutils.checks.compare import expect, fail, short
from labutils.checks.core import (
    TINY_SERIES_TOKENS,
    Case,
    exercise,
    family_pair,
    hidden_test,
    integer,
    pick,
    tiny_model,
)
from labutils.checks.training import PAIRS
from labutils.tokens import EOS_IDX, PAD_IDX, SOS_IDX, SOURCE_VOCAB, TARGET_VOCAB

# -------------------------------------------------------------------------------------- 6.1 greedy_translate


def _steering_model(seed: int, eos_bias: float) -> _model.Seq2SeqTransformer:
    """A small random model whose ``<eos>`` is made likelier: it stops after a few tokens, or at once."""
    torch.manual_seed(seed)
    model = tiny_model(d_model=32, n_heads=4, tie_embeddings=False)
    model.generator.bias.data[EOS_IDX] += eos_bias
    model.generator.bias.data[[PAD_IDX, SOS_IDX]] -= 100.0  # as a trained one, it never writes <pad> or <sos>
    return model


_SOURCES = ["tan(h*x)+sinh(g*x)", "cosh(a*x)**3+tanh(b*x)", "exp(-b*x)*sin(c*x)"]


def _greedy_variant(model, source: str, max_len: int, position=-1, history=True) -> str:
    """Greedy decoding with one typical mistake switched on (the defaults decode right).

    ``position=0`` reads the first position's logits; ``history=False`` feeds only the last token.
    """
    memory = model.encode(torch.tensor([_tokens.code(source, SOURCE_VOCAB)]))  # (1, Ls, d_model)
    ys = [SOS_IDX]
    for _ in range(max_len):
        logits = model.decode(torch.tensor([ys if history else ys[-1:]]), memory)  # (1, L, V)
        next_token = int(logits[0, position].argmax())
        if next_token == EOS_IDX:
            break
        ys.append(next_token)
    return TARGET_VOCAB.decode(ys[1:])


def _greedy_translate_mistakes(model, source: str, max_len: int, expected: str):
    return [
        (
            lambda expected=expected: "<sos>" + expected,
            "leave <sos> out of the text: decode the tokens after it",
        ),
        (
            lambda expected=expected: expected + "<eos>",
            "leave <eos> out of the text: stop when the model writes it",
        ),
        (
            lambda source=source: _decode.translate(model, [source], max_len=max_len + 1)[0],
            f"one token too many: stop after max_len = {max_len} new tokens",
        ),
        (
            lambda source=source: _decode.translate(model, [source], max_len=max_len - 1)[0],
            f"one token too few: generate up to max_len = {max_len} new tokens",
        ),
        (
            lambda source=source: _greedy_variant(model, source, max_len, position=0),
            "the next token was read from the first position at every step, which predicts the token "
            "after <sos> again and again: the next token is predicted by the last position",
        ),
        (
            lambda source=source: _greedy_variant(model, source, max_len, history=False),
            "feed the decoder the whole sequence so far, not only the last token: unlike an "
            "RNN it keeps no state between calls",
        ),
    ]


def _translate_each_source(answer: Callable, args: tuple) -> list[dict]:
    """For each source, the text the answer returns and how often it ran the model after an ``<eos>``.

    Every prediction passes through the model's output layer (``generator``), whatever the answer calls
    (``decode``, the model itself, a cache): a hook there sees each one and the token it puts first.
    """
    model, max_len = args
    results = []
    for source in _SOURCES:
        predicted = []  # per call of the output layer: did its last position put <eos> first?

        def see(module, inputs, logits, predicted=predicted):
            last = logits.reshape(-1, logits.size(-2), logits.size(-1))[0, -1]  # (V,)
            predicted.append(int(last.argmax()) == EOS_IDX)

        handle = model.generator.register_forward_hook(see)
        try:
            text = answer(model, source, max_len)
        finally:
            handle.remove()
        first_eos = predicted.index(True) if True in predicted else len(predicted)
        results.append(
            {"text": text, "calls_after_eos": len(predicted) - first_eos - 1 if True in predicted else 0}
        )
    return results


def _greedy_cases() -> dict[str, Case]:
    models = {
        "a random model (runs to max_len)": (_steering_model(1, 0.0), 12),
        "a model that stops with <eos> after a few tokens": (_steering_model(3, 0.5), 30),
        "a model that writes <eos> at once": (_steering_model(3, 100.0), 10),
    }
    return {name: Case(args, call=_translate_each_source) for name, args in models.items()}


def explain_greedy(args: tuple, error: str) -> str | None:
    """Exceptions of typical mistakes: a loop that ignores max_len, an argmax over every position at once."""
    model, max_len = args
    if "positions, more than this model's" in error:
        return (
            f"the loop went on past max_len = {max_len} new tokens, until the sequence was longer than the "
            "model can read: stop after max_len new tokens, or at <eos>"
        )
    if "index out of range" in error:
        return (
            "a code outside the target vocabulary reached the model: an argmax over the logits of every "
            "position at once returns a position in the flattened tensor; the next token is the argmax "
            "over the vocabulary at the last position"
        )
    return None


def fail_if_asked_after_eos(what: str, calls_after_eos: int, stopping: str) -> None:
    """Fail when the answer asked the model for tokens after it wrote ``<eos>`` (a hook on its output counts)."""
    if calls_after_eos:
        n = calls_after_eos
        fail(
            f"{what}: after the model wrote <eos>, it was asked for {n} more token{'s' if n > 1 else ''}. "
            f"Hint: the series ends at the first <eos>, so {stopping} stops as soon as the model writes it"
        )


#: The package's decoding functions, switched off while a greedy decoding loop of a student's runs.
DECODERS = (
    "labutils.decode.greedy_decode",
    "labutils.decode.translate",
    "labutils.decode.beam_search",
    "labutils.decode.translate_beams",
)


@exercise(
    "06_translation.greedy_translate",
    "6.1",
    2,
    DECODERS,
    cases=_greedy_cases,
    explain=explain_greedy,
)
def greedy_translate(args: tuple, got: list) -> str:
    model, max_len = args
    for source, returned in zip(_SOURCES, got, strict=True):
        what = f"greedy_translate(model, {source!r}, max_len={max_len})"
        fail_if_asked_after_eos(what, returned["calls_after_eos"], "decoding")
        series, expected = returned["text"], _decode.translate(model, [source], max_len=max_len)[0]
        if not isinstance(series, str):
            fail(f"{what} returned {type(series).__name__} {short(series)}. Hint: return the series as text")
        expect(
            series,
            expected,
            what,
            mistakes=_greedy_translate_mistakes(model, source, max_len, expected),
            hint="compare your loop with the steps above the exercise: the first token, how the next "
            "token is chosen, the two ways to stop, and which tokens become the text",
        )
    return ""


# -------------------------------------------------------------------------------- 6.2 series_log_probability


def _log_probability(model, source: str, series: str) -> float:
    src = torch.tensor([_tokens.code(source, SOURCE_VOCAB)])
    tgt = torch.tensor([_tokens.code(series, TARGET_VOCAB)])
    logp = model(src, tgt[:, :-1]).log_softmax(-1)  # (1, Lt, V)
    return float(logp.gather(-1, tgt[:, 1:, None]).sum())


def _log_probability_mistakes(model, source, series):
    src = torch.tensor([_tokens.code(source, SOURCE_VOCAB)])
    tgt = torch.tensor([_tokens.code(series, TARGET_VOCAB)])
    logits = model(src, tgt[:, :-1])  # (1, Lt-1, V)
    logp = logits.log_softmax(-1).gather(-1, tgt[:, 1:, None])[0, :, 0]  # (Lt-1,)
    return [
        (lambda: float(logp[:-1].sum()), "count <eos> too: the model must also choose to stop"),
        (lambda: float(logp.mean()), "add the log-probabilities (sum), do not average them"),
        (lambda: float(logp.exp().sum()), "add log-probabilities (log_softmax), not probabilities"),
        (
            lambda: float(logp.exp().prod()),
            "this is the probability itself; return its logarithm, the sum of the log-probabilities",
        ),
        (
            lambda: float(logits.log_softmax(-1).gather(-1, tgt[:, :-1, None]).sum()),
            "each position was scored on the token it reads: the output at position t predicts the "
            "NEXT token, t + 1",
        ),
        (
            lambda: float(model(src, tgt[:, 1:]).log_softmax(-1).gather(-1, tgt[:, 1:, None]).sum()),
            "the decoder read the series without <sos>, so each position was scored on the token it reads: "
            "it reads from <sos> on, and position t predicts token t + 1, which it has not seen",
        ),
        (
            lambda: float(logits.log_softmax(1).gather(-1, tgt[:, 1:, None]).sum()),
            "the log-probabilities were normalized over the positions; a prediction is a distribution "
            "over the vocabulary, the last axis",
        ),
    ]


def _log_probability_cases() -> dict[str, Case]:
    model = _steering_model(4, 0.0)
    return {
        name: Case((model, source, series))
        for name, (source, series) in {
            "a small untrained model; sin(a*x) and its true series": PAIRS[1],
            "the same model; the slide's example": PAIRS[0],
            "the same model; a short wrong series": ("cosh(a*x)", "1+O(x**6)"),
        }.items()
    }


_LOGP_REPLACES = ("labutils.decode.beam_search", "labutils.decode.translate_beams")


@exercise("06_translation.series_log_probability", "6.2", 1, _LOGP_REPLACES, cases=_log_probability_cases)
def series_log_probability(args: tuple, got) -> str:
    model, source, series = args
    expected = _log_probability(model, source, series)
    if not isinstance(got, float):
        fail(
            f"series_log_probability returned {type(got).__name__} {short(got)}. Hint: the instructions ask "
            "for a Python float; a tensor, even of one number, is not one"
        )
    if not math.isclose(got, expected, rel_tol=1e-4, abs_tol=1e-4):
        hint = next(
            (
                h
                for make, h in _log_probability_mistakes(model, source, series)
                if (value := make()) != 0.0 and math.isclose(got, value, rel_tol=1e-4)
            ),
            None,
        )
        shown = f"{got:.4f}" if got == 0.0 or abs(got) >= 1e-3 else f"{got:.4g}"
        too = "high" if got > expected else "low"
        fail(f"got {shown}, which is too {too}" + (f". Hint: {hint}" if hint else ""))
    return f"{expected:.3f}"


# ------------------------------------------------------------------------------------------------ hidden tests
# Inputs the grader draws from the secret of its grading run: they vary what the visible cases fix.


@hidden_test(
    "06_translation.greedy_translate", "decoding stops at <eos> or after max_len tokens, whatever the model"
)
def any_model_and_limit(generator) -> Case:
    eos_bias = pick(generator, [1.0, 2.0, 100.0])  # a model that writes <eos>: what comes after it shows
    model = _steering_model(integer(generator, 0, 2**31), eos_bias)
    return Case((model, integer(generator, 8, 24)), call=_translate_each_source)


@hidden_test(
    "06_translation.series_log_probability", "any series gets its log-probability, a float of at most 0"
)
def any_pair(generator) -> Case:
    import random

    source, series = family_pair(random.Random(integer(generator, 0, 2**31)), TINY_SERIES_TOKENS)
    return Case((_steering_model(integer(generator, 0, 2**31), 0.0), source, series))
