"""Decoding, the lecture's last step: the trained model writes a Taylor series one token at a time.

Greedy decoding takes the most likely token at each step; beam search keeps the ``beam_size`` most likely
partial series. Both reuse the decoder's keys and values through a :class:`~labutils.model.KVCache`, so each
step costs one new position instead of the whole prefix (``use_cache=False`` recomputes it, for comparison).
``translate`` decodes many expressions in batches; ``predict`` decodes one typed expression and keeps the
attention maps of the series it wrote, for the plots and the explorer. The model's answer is the model's:
nothing here checks or repairs it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

from .data import normalize, outside_family, parse_expression
from .model import KVCache, Seq2SeqTransformer, attention_for_codes, evaluating
from .tokens import (
    EOS_IDX,
    PAD_IDX,
    SOS_IDX,
    SOURCE_VOCAB,
    TARGET_VOCAB,
    TokenizationError,
    code,
    pad_batch,
)

__all__ = [
    "greedy_decode",
    "beam_search",
    "translate",
    "translate_beams",
    "Prediction",
    "read_source",
    "predict",
    "describe_series",
    "DecodingSteps",
    "decoding_steps",
]


def _max_len(model: Seq2SeqTransformer, max_len: int | None) -> int:
    """Most tokens to generate (``<eos>`` included): ``<sos>`` + tokens must fit the model."""
    limit = model.config.max_tgt_len
    if max_len is None:
        return limit
    if not 1 <= max_len <= limit:
        raise ValueError(f"max_len={max_len} must be between 1 and the model's max_tgt_len ({limit})")
    return max_len


def _next_logits(
    model: Seq2SeqTransformer, ys: Tensor, memory: Tensor, src_pad_mask: Tensor | None, cache: KVCache | None
) -> Tensor:
    """Logits ``(B, V)`` of the token after ``ys`` ``(B, L)``: with a cache only the last token is fed."""
    if cache is not None:
        return model.decode(ys[:, -1:], memory, src_pad_mask, cache=cache)[:, -1]
    return model.decode(ys, memory, src_pad_mask)[:, -1]


def _until_eos(codes: list[int]) -> list[int]:
    return codes[: codes.index(EOS_IDX)] if EOS_IDX in codes else codes


def greedy_decode(
    model: Seq2SeqTransformer,
    src: Tensor,
    src_pad_mask: Tensor | None,
    max_len: int | None = None,
    use_cache: bool = True,
) -> list[list[int]]:
    """The most likely token at every step, for a batch ``src`` ``(B, Ls)``: codes, no ``<sos>``/``<eos>``.

    Sequences that have produced ``<eos>`` leave the batch (and the cache), so the batch shrinks as it goes;
    it stops when all have, or after ``max_len`` tokens (default: the model's ``max_tgt_len``).
    """
    max_len = _max_len(model, max_len)
    with torch.inference_mode(), evaluating(model):
        memory = model.encode(src, src_pad_mask)  # (B, Ls, d_model)
        B = src.size(0)
        rows = torch.arange(B, device=src.device)  # the original row of every sequence still running
        ys = torch.full((B, 1), SOS_IDX, dtype=torch.long, device=src.device)  # (B, 1 + steps)
        cache = model.new_cache() if use_cache else None
        results: list[list[int]] = [[] for _ in range(B)]
        for _ in range(max_len):
            next_token = _next_logits(model, ys, memory, src_pad_mask, cache).argmax(-1)  # (B',)
            ys = torch.cat([ys, next_token[:, None]], dim=1)
            done = next_token == EOS_IDX  # (B',)
            if not done.any():
                continue
            for row, codes in zip(rows[done].tolist(), ys[done, 1:-1].tolist(), strict=True):
                results[row] = codes
            if done.all():
                return results
            keep = (~done).nonzero().squeeze(1)  # (B'',)
            rows, ys, memory = rows[keep], ys[keep], memory[keep]
            src_pad_mask = None if src_pad_mask is None else src_pad_mask[keep]
            if cache is not None:
                cache.reorder(keep)
        for row, codes in zip(
            rows.tolist(), ys[:, 1:].tolist(), strict=True
        ):  # ran out of max_len without <eos>
            results[row] = codes
        return results


def beam_search(
    model: Seq2SeqTransformer,
    src: Tensor,
    src_pad_mask: Tensor | None,
    beam_size: int = 4,
    max_len: int | None = None,
    use_cache: bool = True,
) -> list[list[tuple[list[int], float]]]:
    """The ``beam_size`` most likely series of each source, best first: ``[(codes, log-probability), …]``.

    The score is the plain sum of the tokens' log-probabilities, ``<eos>`` included (no length penalty). A
    finished hypothesis stays in the beam with its score fixed; since scores only fall as series grow, the
    search stops once every beam of every example has finished.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    max_len, k = _max_len(model, max_len), beam_size
    with torch.inference_mode(), evaluating(model):
        memory = model.encode(src, src_pad_mask)  # (B, Ls, d_model)
        B, device, V = src.size(0), src.device, model.config.tgt_vocab_size
        memory = memory.repeat_interleave(k, dim=0)  # (B*k, Ls, d_model), example b's beams at b*k … b*k+k-1
        if src_pad_mask is not None:
            src_pad_mask = src_pad_mask.repeat_interleave(k, dim=0)  # (B*k, Ls)
        scores = torch.full((B, k), float("-inf"), device=device)  # (B, k)
        scores[:, 0] = 0.0  # all beams start as the same <sos>: expand only one of them at first
        ys = torch.full((B * k, 1), SOS_IDX, dtype=torch.long, device=device)  # (B*k, 1 + steps)
        finished = torch.zeros(B * k, dtype=torch.bool, device=device)  # (B*k,)
        # A finished hypothesis can only be followed by <pad>, at no cost: its score stays as it is.
        after_eos = torch.full((V,), float("-inf"), device=device)
        after_eos[PAD_IDX] = 0.0
        cache = model.new_cache() if use_cache else None
        examples = torch.arange(B, device=device)  # original example of every row of ``scores``
        results: list[list[tuple[list[int], float]]] = [[] for _ in range(B)]

        def collect(which: Tensor) -> None:  # which: (b,) rows of ``scores`` whose beams are final
            for b in which.tolist():
                codes = ys[b * k : (b + 1) * k, 1:].tolist()
                results[int(examples[b])] = [
                    (_until_eos(c), s)
                    for c, s in zip(codes, scores[b].tolist(), strict=True)
                    if s != float("-inf")
                ]

        for _ in range(max_len):
            logp = _next_logits(model, ys, memory, src_pad_mask, cache).float().log_softmax(-1)  # (B'*k, V)
            logp = torch.where(finished[:, None], after_eos, logp)
            candidates = (scores.reshape(-1, 1) + logp).view(-1, k * V)  # (B', k*V)
            scores, index = candidates.topk(k, dim=1)  # (B', k), sorted best first
            beam, token = index // V, index % V  # (B', k)
            parent = (torch.arange(scores.size(0), device=device)[:, None] * k + beam).view(-1)  # (B'*k,)
            ys = torch.cat([ys[parent], token.view(-1, 1)], dim=1)
            finished = finished[parent] | (token.view(-1) == EOS_IDX)
            if cache is not None:  # memory needs no reordering: an example's beams share one memory
                cache.reorder(parent)
            done = (finished | scores.view(-1).isneginf()).view(-1, k).all(dim=1)  # (B',)
            if not done.any():
                continue
            collect(done.nonzero().squeeze(1))
            if done.all():
                return results
            keep = (~done).nonzero().squeeze(1)  # (B'',) examples still searching
            rows = (keep[:, None] * k + torch.arange(k, device=device)).view(-1)  # (B''*k,)
            scores, examples, ys, finished = scores[keep], examples[keep], ys[rows], finished[rows]
            memory = memory[rows]
            src_pad_mask = None if src_pad_mask is None else src_pad_mask[rows]
            if cache is not None:
                cache.reorder(rows)
        collect(torch.arange(scores.size(0), device=device))  # ran out of max_len
        return results


Found = TypeVar("Found")


def _decode_in_batches(
    model: Seq2SeqTransformer,
    sources: Sequence[str],
    batch_size: int,
    decode_batch: Callable[[Tensor, Tensor], list[Found]],
) -> list[Found]:
    """``decode_batch(src, src_pad_mask)`` over batches of sources of similar length, results in input order.

    The batches are made where the model is (``model.device``): to run elsewhere, move the model first.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    coded = [code(source, SOURCE_VOCAB) for source in sources]
    order = sorted(range(len(coded)), key=lambda i: len(coded[i]), reverse=True)  # longest first
    results: list = [None] * len(sources)
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        src, src_pad_mask = pad_batch([coded[i] for i in indices])  # (B, Ls), (B, Ls)
        found = decode_batch(src.to(model.device), src_pad_mask.to(model.device))
        for i, result in zip(indices, found, strict=True):
            results[i] = result
    return results


def translate_beams(
    model: Seq2SeqTransformer,
    sources: Sequence[str],
    beam: int = 4,
    batch_size: int = 64,
    use_cache: bool = True,
    max_len: int | None = None,
) -> list[list[tuple[str, float]]]:
    """The ``beam`` best series of each source expression, ``[(series, log-probability), …]``, best first.

    Sources are in data-set form (``cosh(a*x)**3+tanh(b*x)``); output is in input order. Decoding runs
    where the model is: ``model.to(device)`` first to run elsewhere.
    """
    found = _decode_in_batches(
        model,
        sources,
        batch_size,
        lambda src, src_pad_mask: beam_search(model, src, src_pad_mask, beam, max_len, use_cache),
    )
    return [[(TARGET_VOCAB.decode(codes), score) for codes, score in hypotheses] for hypotheses in found]


def translate(
    model: Seq2SeqTransformer,
    sources: Sequence[str],
    beam: int = 1,
    batch_size: int = 64,
    use_cache: bool = True,
    max_len: int | None = None,
) -> list[str]:
    """The model's series for each source expression (greedy with ``beam=1``, else the best beam).

    Returns ``TARGET_VOCAB`` strings in input order, ``""`` where the model wrote nothing. Decoding runs
    where the model is: ``model.to(device)`` first to run elsewhere.
    """
    if beam > 1:
        beams = translate_beams(model, sources, beam, batch_size, use_cache, max_len)
        return [hypotheses[0][0] if hypotheses else "" for hypotheses in beams]
    found = _decode_in_batches(
        model,
        sources,
        batch_size,
        lambda src, src_pad_mask: greedy_decode(model, src, src_pad_mask, max_len, use_cache),
    )
    return [TARGET_VOCAB.decode(codes) for codes in found]


# ------------------------------------------------------------------------------------- one typed expression


@dataclass(frozen=True)
class Prediction:
    """The model's series for one expression and every attention map of the pass that wrote it."""

    expression: str  # as the model reads it (normalized): ``tan(hx)`` → ``tan(h*x)``
    decoding: str  # "greedy" or "beam"
    series: str  # the model's series, "" if it wrote nothing
    attention: dict  # as ``labutils.attention_for``: encoder/decoder/cross lists, source/target tokens
    outside: str | None = None  # why the expression is outside the training family (data.outside_family)


def read_source(expression: str, max_src_len: int | None = None) -> tuple[str, list[int]]:
    """The expression as the model reads it (normalized) and its codes ``<sos> … <eos>``.

    Raises ``TokenizationError`` or ``ValueError`` with a one-line message for text the model cannot read.
    """
    normalized = normalize(expression)
    try:
        src_codes = code(normalized, SOURCE_VOCAB)
    except TokenizationError as error:  # sympy may print what the vocabulary lacks: E, sqrt, …
        raise TokenizationError(
            f"{expression!r} reads as {normalized!r}, which the model cannot read ({error})"
        ) from None
    if max_src_len is not None and len(src_codes) > max_src_len:
        raise ValueError(
            f"{normalized!r} is {len(src_codes)} tokens with <sos> and <eos>; the model reads at most {max_src_len}"
        )
    return normalized, src_codes


def predict(
    model: Seq2SeqTransformer, expression: str, decoding: str = "greedy", beam: int = 4
) -> Prediction:
    """Normalize ``expression``, let the model write its series, and take the attention maps of that series.

    Raises ``TokenizationError`` or ``ValueError`` with a one-line message for text the model cannot read.
    The maps are those of the tokens the model wrote, exactly: they are taken from the codes, not re-read
    from the text, so a malformed series (unbalanced parentheses, special tokens) is shown as it is.
    """
    normalized, src_codes = read_source(expression, model.config.max_src_len)
    src = torch.tensor([src_codes], device=model.device)  # (1, Ls)
    if decoding == "greedy":
        codes = greedy_decode(model, src, None)[0]
    elif decoding == "beam":
        hypotheses = beam_search(model, src, None, beam_size=beam)[0]
        codes = hypotheses[0][0] if hypotheses else []
    else:
        raise ValueError(f"unknown decoding {decoding!r}: use 'greedy' or 'beam'")
    return Prediction(
        normalized,
        decoding,
        TARGET_VOCAB.decode(codes),
        attention_for_codes(model, src_codes, codes),
        outside_family(parse_expression(normalized)),
    )


def describe_series(prediction: Prediction) -> str:
    """The model's series as text, or what it wrote instead (nothing, or special tokens only)."""
    if prediction.series:
        return prediction.series
    written = Counter(prediction.attention["target_tokens"][1:])
    if not written:
        return "no series: the model ended at once"
    return "no series, only special tokens: " + ", ".join(f"{token} ×{n}" for token, n in written.items())


# ------------------------------------------------------------------------------------- step by step


@dataclass(frozen=True)
class DecodingSteps:
    """What the decoder did at each step of writing one series: what it read and wrote, its top choices, and
    where it looked in the source.

    Step t reads ``read[t]`` (``<sos>``, then the series so far) and writes ``written[t]``: the series'
    tokens, then ``<eos>`` if the model ended the series (one cut at the length limit has none). ``top[t]``
    holds the most likely tokens at step t and their probabilities, best first. ``cross[layer]`` is
    ``(H, T, Ls)`` on the CPU: row t is step t's cross-attention over ``source_tokens``, per head. For the
    decoder-only model (``architecture``), it is the block of its self-attention where the series looks at
    the source.
    """

    expression: str  # as the model reads it (normalized)
    decoding: str  # "greedy" or "beam"
    series: str  # the model's series, "" if it wrote nothing
    source_tokens: list[str]
    read: list[str]
    written: list[str]
    top: list[list[tuple[str, float]]]
    cross: list[Tensor]
    architecture: str = "encoder-decoder"

    def __len__(self) -> int:
        return len(self.written)


def decoding_steps(
    model, expression: str, decoding: str = "greedy", beam: int = 4, top: int = 5
) -> DecodingSteps:
    """The model writes the series of ``expression``; teacher-forced passes over what it wrote then give, for
    every step, the probabilities of the token written there and the cross-attention row of that step.

    Attention is causal, so a position never sees the ones after it: the pass computes at step t exactly
    what decoding computed when it wrote token t (up to floating-point rounding), for either model. The
    probabilities are the softmax of ``decode``'s logits; the maps and their labels come from
    ``attention_for_codes``. Raises ``TokenizationError`` or ``ValueError`` (one line) for text the model
    cannot read.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    normalized, src_codes = read_source(expression, model.config.max_src_len)
    src = torch.tensor([src_codes], device=model.device)  # (1, Ls)
    if decoding == "greedy":
        codes = greedy_decode(model, src, None)[0]
    elif decoding == "beam":
        hypotheses = beam_search(model, src, None, beam_size=beam)[0]
        codes = hypotheses[0][0] if hypotheses else []
    else:
        raise ValueError(f"unknown decoding {decoding!r}: use 'greedy' or 'beam'")
    limit = model.config.max_tgt_len
    tgt_codes = ([SOS_IDX] + codes)[:limit]  # what the decoder read: <sos> and the series, up to its limit
    written_codes = (codes + [EOS_IDX] if len(codes) < limit else codes)[: len(tgt_codes)]
    with torch.inference_mode(), evaluating(model):
        memory = model.encode(src, None)
        logits = model.decode(torch.tensor([tgt_codes], device=model.device), memory)  # (1, T, V)
    probabilities = logits[0].float().softmax(dim=-1)  # (T, V)
    best = probabilities.topk(min(top, probabilities.size(-1)), dim=-1)
    maps = attention_for_codes(model, src_codes, codes)
    return DecodingSteps(
        expression=normalized,
        decoding=decoding,
        series=TARGET_VOCAB.decode(codes),
        source_tokens=list(maps["source_tokens"]),
        read=list(maps["target_tokens"]),
        written=TARGET_VOCAB.tokens_of(written_codes),
        top=[
            [(TARGET_VOCAB.itos[i], float(p)) for p, i in zip(values, indices, strict=True)]
            for values, indices in zip(best.values.tolist(), best.indices.tolist(), strict=True)
        ],
        cross=[w[0].float().cpu() for w in maps["cross"]],
        architecture=getattr(model, "architecture", "encoder-decoder"),
    )
