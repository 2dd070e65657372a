"""Checks of notebook 07, GPT: ``build_sequence`` (7.1), ``greedy_generate`` (7.2)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from labutils import data as _data
from labutils import decode as _decode
from labutils import gpt as _gpt
from labutils import tokens as _tokens
from labutils.checks.compare import expect, fail, short, value_problem
from labutils.checks.core import Case, exercise, hidden_test, integer, pick
from labutils.checks.training import PAIRS
from labutils.checks.translation import DECODERS, explain_greedy, fail_if_asked_after_eos
from labutils.gpt import SEP_IDX, SEQUENCE_VOCAB
from labutils.tokens import EOS_IDX, PAD_IDX, SOS_IDX, SOURCE_VOCAB, TARGET_VOCAB, tokenize

# ------------------------------------------------------------------------------------- 7.1 build_sequence


def _codes(text: str) -> list[int]:
    return SEQUENCE_VOCAB.encode(tokenize(text))


def _as_list(value):
    """A part of the answer as a list (a tensor's values), or the value itself if it is not list-like."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return list(value) if isinstance(value, tuple) else value


def _count(codes: list, code: int) -> int:
    return sum(1 for c in codes if c == code)


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _kind_hint(got) -> str | None:
    """What is wrong with a list of codes that is no flat list of whole numbers; None if it is one."""
    if isinstance(got, list) and got and all(isinstance(c, list) for c in got):
        return "return one flat list of codes, not a batch of them"
    if not isinstance(got, list) or not all(isinstance(c, int) for c in got):
        return (
            "the codes are whole numbers, each token's place in the sequence vocabulary; a list of them, "
            "one per position"
        )
    return None


def _input_hint(got: list, source: str, series: str) -> str:
    """What is wrong with the input codes, from what they hold."""
    src, ser = _codes(source), _codes(series)
    whole = [SOS_IDX, *src, SEP_IDX, *ser, EOS_IDX]
    series_in_its_own = _tokens.code(series, TARGET_VOCAB)[1:]  # its tokens and <eos>, series codes
    source_in_its_own = _tokens.code(source, SOURCE_VOCAB)[1:-1]
    if got == whole:
        return (
            "your input ends with <eos>: the input is the sequence without its last token, since nothing "
            "comes after <eos> to predict"
        )
    if got == whole[1:]:
        return (
            "your input starts after <sos>: it is the target that drops the first token; the input drops "
            "the last"
        )
    if got == [SOS_IDX, *source_in_its_own, SEP_IDX, *series_in_its_own][:-1]:
        return (
            "the source and the series were coded in their own vocabularies, where most tokens have other "
            "codes: one vocabulary, the sequence vocabulary, codes the source, <sep> and the series"
        )
    if got == [SOS_IDX, *src, SEP_IDX, *series_in_its_own][:-1]:
        return (
            "the series was coded in the series vocabulary, where its letters have other codes: one "
            "vocabulary, the sequence vocabulary, codes the source, <sep> and the series"
        )
    n_sos, n_eos = _count(got, SOS_IDX), _count(got, EOS_IDX)
    if n_sos > 1 or n_eos > 0:
        return (
            f"your input holds <sos> {_times(n_sos)} and <eos> {_times(n_eos)}: the sequence has one <sos> "
            "at its start and one <eos> at its end (which the input leaves out), and <sep> alone between "
            "the source and the series"
        )
    if SEP_IDX not in got:
        return (
            "your input holds no <sep>: the separator goes between the source and the series, so that the "
            "model knows where the expression ends and the series begins"
        )
    if not got or got[0] != SOS_IDX:
        return "your input does not start with <sos>: the sequence is <sos>, the source, <sep>, the series, <eos>"
    return (
        "compare your sequence with the steps above: <sos>, the source's tokens, <sep>, the series' tokens, "
        "<eos>, all coded in the sequence vocabulary"
    )


def _target_hint(got: list, inputs: list, source: str, series: str) -> str:
    """What is wrong with the target codes, from what they hold and how they sit against the input."""
    whole = [SOS_IDX, *_codes(source), SEP_IDX, *_codes(series), EOS_IDX]
    if got == whole:
        return (
            "your target is the whole sequence: the target at each position is the token after it, so it "
            "is the sequence without its first token"
        )
    if got == inputs or got == whole[:-1]:
        return (
            "your target is the input: each position must be scored on the next token, which it has not "
            "read yet; shift the sequence by one"
        )
    if not got or got[-1] != EOS_IDX:
        return "your target does not end with <eos>: the last position predicts the end of the series"
    return "the target is the sequence shifted by one: at each position, the token that comes next"


def _mask_hint(got: list, source: str, series: str) -> str:
    """What is wrong with the loss mask, from which positions it counts."""
    n_src, n_ser = len(_codes(source)), len(_codes(series))
    right = [False] * (n_src + 1) + [True] * (n_ser + 1)
    got = [bool(x) for x in got]
    if all(got):
        return (
            "your mask counts every position, those of the source too: the source is given, not predicted, "
            "so only the positions whose target is a series token or <eos> count"
        )
    if got == [not x for x in right]:
        return "your mask is True exactly where it should be False: True marks the positions the loss counts"
    if got == [False] * n_src + [True] * (n_ser + 2):
        return (
            "your mask counts the position whose target is <sep>: the separator belongs to the prompt, "
            "which is given, not predicted"
        )
    if got == right[:-1] + [False]:
        return (
            "your mask leaves out the last position, whose target is <eos>: the model must learn where the "
            "series ends, so <eos> counts"
        )
    if got == [False] * (n_src + 2) + [True] * n_ser:
        return (
            "your mask leaves out the position that reads <sep>: it predicts the first token of the series, "
            "which counts"
        )
    in_prompt, missed = sum(got[: n_src + 1]), got[n_src + 1 :].count(False)
    said = []
    if in_prompt:
        said.append(
            f"your mask counts {in_prompt} position{'s' * (in_prompt > 1)} whose target belongs to the prompt "
            "(a token of the expression, or <sep>)"
        )
    if missed:
        said.append(f"it leaves out {missed} whose target is a token of the series or <eos>")
    return (
        "; ".join(said)
        + ": whether a position counts depends on where its target is in the sequence, not on "
        "which token it is"
    )


def _mask_problem(got, expected: list[bool]) -> str | None:
    """What is wrong with a loss mask, drawn as a row of 1 (True) and 0 (False) that is easy to read."""
    problem = value_problem(got, expected)
    if problem is None or not isinstance(got, list) or len(got) != len(expected):
        return problem
    if not all(isinstance(x, (bool, int, float)) for x in got):
        return problem
    first = next(i for i, (g, e) in enumerate(zip(got, expected)) if bool(g) != e)
    bits = "".join("1" if x else "0" for x in got)
    return f"your mask, position by position (1 = True): {bits}; the first wrong entry is at position {first}"


def _sequence_cases() -> dict[str, Case]:
    return {
        "the lecture's example": Case(PAIRS[0]),
        "one term": Case(PAIRS[1]),
        "numbers in the expression and the series": Case(("cos(3*x)", "1-9*x**2/2+27*x**4/8+O(x**6)")),
    }


def _explain_sequence(args: tuple, error: str) -> str | None:
    """Exceptions of typical mistakes: a token looked up in a vocabulary that lacks it."""
    if "is not in the" in error or error.startswith("KeyError"):
        return (
            "a token was looked up in a vocabulary that does not hold it: one vocabulary, the sequence "
            "vocabulary, codes the source, <sep> and the series"
        )
    return None


@exercise(
    "07_gpt.build_sequence", "7.1", 2, ("labutils.gpt.sequence_for",), cases=_sequence_cases,
    explain=_explain_sequence,
)  # fmt: skip
def build_sequence(args: tuple, got) -> str:
    source, series = args
    what = f"build_sequence({source!r}, {series!r})"
    if got is None:
        fail(
            f"{what}: your function returned None. Hint: a function without a return statement returns "
            "None; return the result"
        )
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        fail(
            f"{what} returned {type(got).__name__} {short(got)}. Hint: return three things, in this order: "
            "the input codes, the target codes and the loss mask"
        )
    inputs, targets, mask = (_as_list(part) for part in got)
    expected_inputs, expected_targets, expected_mask = _gpt.sequence_for(source, series)
    problem = value_problem(inputs, expected_inputs)
    if problem is not None:
        hint = _kind_hint(inputs) or _input_hint(inputs, source, series)
        fail(f"{what}: the input codes: {problem}. Hint: {hint}")
    problem = value_problem(targets, expected_targets)
    if problem is not None:
        hint = _kind_hint(targets) or _target_hint(targets, inputs, source, series)
        fail(f"{what}: the target codes: {problem}. Hint: {hint}")
    problem = _mask_problem(mask, expected_mask)
    if problem is not None:
        if not isinstance(mask, list) or len(mask) != len(expected_mask):
            hint = "the mask has one entry, True or False, for each position of the input"
        else:
            hint = _mask_hint(mask, source, series)
        fail(f"{what}: the loss mask: {problem}. Hint: {hint}")
    return f"{len(inputs)} positions, {sum(map(bool, mask))} of them counted"


# ------------------------------------------------------------------------------------ 7.2 greedy_generate


def _small_model(seed: int, eos_bias: float) -> _gpt.DecoderOnlyTransformer:
    """A small random decoder-only model whose ``<eos>`` is made likelier: it stops after a few tokens, or at once."""
    torch.manual_seed(seed)
    config = _gpt.DecoderOnlyConfig(
        d_model=32, n_heads=4, n_layers=2, d_ff=64, max_src_len=64, max_tgt_len=64, tie_embeddings=False
    )
    model = _gpt.DecoderOnlyTransformer(config).eval()
    with torch.no_grad():
        model.generator.bias[EOS_IDX] += eos_bias
        model.generator.bias[[PAD_IDX, SOS_IDX]] -= 100.0  # as a trained one, it never writes <pad> or <sos>
    return model


_SOURCES = ["tan(h*x)+sinh(g*x)", "cosh(a*x)**3+tanh(b*x)", "exp(-b*x)*sin(c*x)"]


def _expected_series(model, source: str, max_len: int) -> tuple[str, bool]:
    """The series the package's greedy decoding writes, and whether it ended with <eos> (not at max_len)."""
    src = torch.tensor([_tokens.code(source, SOURCE_VOCAB)])  # (1, Ls)
    codes = _decode.greedy_decode(model, src, None, max_len)[0]
    return TARGET_VOCAB.decode(codes), len(codes) < max_len


@torch.no_grad()
def _generate_variant(
    model, source, max_len, *, sep=True, source_eos=False, position=-1, cache=True, refeed=False,
    feed_target_codes=False, whole_text=False,
) -> str:  # fmt: skip
    """Greedy generation with one typical mistake switched on (the defaults generate right).

    ``cache=False`` runs each step without the cache on the new token alone; ``refeed`` feeds the cache the
    whole sequence at every step; ``feed_target_codes`` feeds back the series vocabulary's code unchanged;
    ``position=0`` reads the first position's logits; ``whole_text`` returns the prompt's text too.
    """
    prompt = [SOS_IDX, *_codes(source)] + ([EOS_IDX] if source_eos else []) + ([SEP_IDX] if sep else [])
    kept = model.new_cache() if cache else None
    sequence, new, series = list(prompt), list(prompt), []
    for _ in range(max_len):
        fed = sequence if refeed else new
        hidden, _ = model.run(torch.tensor([fed]), cache=kept)  # (1, L, d_model)
        token = int(model.logits(hidden[:, position])[0].argmax())
        if token == EOS_IDX:
            break
        series.append(token)
        code = token if feed_target_codes else SEQUENCE_VOCAB.stoi[TARGET_VOCAB.itos[token]]
        sequence.append(code)
        new = [code]
    return SEQUENCE_VOCAB.decode(sequence) if whole_text else TARGET_VOCAB.decode(series)


def _generate_mistakes(model, source: str, max_len: int, expected: str, ended: bool):
    mistakes = [
        (
            lambda: _generate_variant(model, source, max_len, sep=False),
            "the prompt ends with <sep>: the model learned to write the series after it, and without it the "
            "model is asked to go on writing the expression",
        ),
        (
            lambda: _generate_variant(model, source, max_len, source_eos=True),
            "the prompt holds no <eos>: it is <sos>, the source's tokens and <sep>, as in the sequences the "
            "model was trained on",
        ),
        (
            lambda: _generate_variant(model, source, max_len, feed_target_codes=True),
            "the token fed back was coded in the series vocabulary, where the same code names another "
            "token of the sequence vocabulary: feed the model the sequence code of the token it wrote",
        ),
        (
            lambda: _generate_variant(model, source, max_len, cache=False),
            "without the cache, the model keeps nothing between calls: a step that feeds only the new token "
            "must give the model the cache that holds the keys and values of every earlier position",
        ),
        (
            lambda: _generate_variant(model, source, max_len, refeed=True),
            "the cache already holds the keys and values of every position fed before: after the prompt, "
            "feed only the new token",
        ),
        (
            lambda: _generate_variant(model, source, max_len, position=0),
            "the first token was read from the first position of the prompt, which predicts what follows "
            "<sos>: the next token is predicted by the last position",
        ),
        (
            lambda: _generate_variant(model, source, max_len + 1),
            f"one token too many: stop after max_len = {max_len} new tokens",
        ),
        (
            lambda: _generate_variant(model, source, max_len - 1),
            f"one token too few: generate up to max_len = {max_len} new tokens",
        ),
        (
            lambda: _generate_variant(model, source, max_len, whole_text=True),
            "return the series alone: the prompt is the model's input, not part of its answer",
        ),
    ]
    if ended:
        mistakes.append(
            (lambda: expected + "<eos>", "leave <eos> out of the text: stop when the model writes it")
        )
    return mistakes


def _generate_each_source(answer: Callable, args: tuple) -> list[dict]:
    """For each source: the text the answer returns, how many positions each run of the model read, and how
    often the model was asked for a token after it had written ``<eos>``.

    Every run of the stack embeds what it reads (``embed``) and every prediction passes through the output
    layer (``generator``), whatever the answer calls (``run``, ``logits``, ``decode``, the model itself):
    hooks there see each one.
    """
    model, max_len = args
    results = []
    for source in _SOURCES:
        reads: list[int] = []  # positions read by each run of the stack
        predicted: list[bool] = []  # per call of the output layer: did its last position put <eos> first?

        def read(module, inputs, output, reads=reads):
            reads.append(int(inputs[0].shape[-1]))

        def see(module, inputs, logits, predicted=predicted):
            last = logits[0, -1] if logits.dim() == 3 else logits.reshape(-1, logits.size(-1))[-1]
            predicted.append(int(last.argmax()) == EOS_IDX)

        handles = [model.embed.register_forward_hook(read), model.generator.register_forward_hook(see)]
        try:
            text = answer(model, source, max_len)
        finally:
            for handle in handles:
                handle.remove()
        after = len(predicted) - predicted.index(True) - 1 if True in predicted else 0
        results.append({"text": text, "reads": reads, "calls_after_eos": after})
    return results


def _judge_cache(args: tuple, got: list) -> str:
    """The cache case: after the first run (the prompt), each run of the model reads one new position."""
    model, max_len = args
    for source, returned in zip(_SOURCES, got, strict=True):
        reads = returned["reads"]
        what = f"greedy_generate(model, {source!r}, max_len={max_len})"
        if not reads:
            fail(f"{what} never ran the model. Hint: each new token is the model's prediction")
        longer = [n for n in reads[1:] if n != 1]
        if longer:
            fail(
                f"{what}: after the first run of the model, {len(longer)} of {len(reads) - 1} runs read more "
                f"than one position (up to {max(longer)}). Hint: the cache keeps the keys and values of every "
                "position read so far, so each step after the prompt feeds only the token just written"
            )
    return ""


def _generate_cases() -> dict[str, Case]:
    models = {
        "a model that never writes <eos> (runs to max_len)": (_small_model(1, -100.0), 12),
        "a model that stops with <eos> after a few tokens": (_small_model(3, 0.5), 30),
        "a model that writes <eos> at once": (_small_model(3, 100.0), 10),
    }
    cases = {name: Case(args, call=_generate_each_source) for name, args in models.items()}
    cases["the cache: after the prompt, one new position per step"] = Case(
        (_small_model(1, -100.0), 12), call=_generate_each_source, judge=_judge_cache
    )
    return cases


def _explain_generate(args: tuple, error: str) -> str | None:
    """Exceptions of typical mistakes: more positions than the model has, one row, a pair left packed."""
    _, max_len = args
    if "does not fit: this model encodes at most" in error:
        return (
            f"more positions reached the model than the prompt and max_len = {max_len} new tokens make: "
            "the loop went on past max_len, or each step fed the cache positions it already holds"
        )
    if "Dimension out of range" in error:
        return "the model reads a batch: codes of shape (1, L), one row of L positions"
    if "not tuple" in error or "tuple indices" in error or "'tuple' object" in error:
        return "a run of the model returns a pair, the hidden states and the attention weights: unpack it"
    return explain_greedy(args, error)  # those of notebook 6's loop: past max_len, a flattened argmax


@exercise("07_gpt.greedy_generate", "7.2", 2, DECODERS, cases=_generate_cases, explain=_explain_generate)
def greedy_generate(args: tuple, got: list) -> str:
    model, max_len = args
    for source, returned in zip(_SOURCES, got, strict=True):
        what = f"greedy_generate(model, {source!r}, max_len={max_len})"
        fail_if_asked_after_eos(what, returned["calls_after_eos"], "generation")
        text = returned["text"]
        if not isinstance(text, str):
            fail(f"{what} returned {type(text).__name__} {short(text)}. Hint: return the series as text")
        expected, ended = _expected_series(model, source, max_len)
        expect(
            text,
            expected,
            what,
            hint="compare your loop with the steps above the exercise: the prompt, the cache, how the next "
            "token is chosen and fed back, the two ways to stop, and which tokens become the text",
            mistakes=_generate_mistakes(model, source, max_len, expected, ended),
        )
    return ""


# ------------------------------------------------------------------------------------------------ hidden tests
# Inputs the grader draws from the secret of its grading run: they vary what the visible cases fix.


@hidden_test(
    "07_gpt.build_sequence",
    "any expression of the data set and its series give the input, the shifted target and the mask",
)
def any_pair(generator) -> Case:
    pairs = _data.load_pairs("test")
    return Case(pairs[integer(generator, 0, len(pairs) - 1)])


@hidden_test(
    "07_gpt.greedy_generate", "generation stops at <eos> or after max_len new tokens, whatever the model"
)
def any_model_and_limit(generator) -> Case:
    # A model that never writes <eos> (max_len stops it), or one that does (what comes after it shows).
    eos_bias = pick(generator, [-100.0, 1.0, 2.0, 100.0])
    max_len = integer(generator, 8, 24)
    for _ in range(10):  # a model whose choices are clear at every step: rounding cannot change them
        model = _small_model(integer(generator, 0, 2**31), eos_bias)
        if min(_margin(model, source, max_len) for source in _SOURCES) > 1e-3:
            break
    return Case((model, max_len), call=_generate_each_source)


@torch.no_grad()
def _margin(model, source: str, max_len: int) -> float:
    """The smallest lead of the most likely token over the next, along the greedy series of ``source``."""
    sequence, smallest = [SOS_IDX, *_codes(source), SEP_IDX], float("inf")
    for _ in range(max_len):
        hidden, _ = model.run(torch.tensor([sequence]))  # (1, L, d_model)
        top = model.logits(hidden[:, -1])[0].topk(2)
        smallest = min(smallest, float(top.values[0] - top.values[1]))
        if int(top.indices[0]) == EOS_IDX:
            break
        sequence.append(SEQUENCE_VOCAB.stoi[TARGET_VOCAB.itos[int(top.indices[0])]])
    return smallest
