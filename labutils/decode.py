"""Decoding, the lecture's last step: the trained model writes a Taylor series one token at a time.

Greedy decoding takes the most likely token at each step; beam search keeps the ``beam_size`` most likely
partial series. Both reuse the decoder's keys and values through a :class:`~labutils.model.KVCache`, so each
step costs one new position instead of the whole prefix (``use_cache=False`` recomputes it, for comparison).
The model's answer is the model's: nothing here checks or repairs it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from .model import KVCache, Seq2SeqTransformer
from .tokens import EOS_IDX, PAD_IDX, SOS_IDX, SOURCE_VOCAB, TARGET_VOCAB, code, pad_batch

__all__ = ["greedy_decode", "beam_search", "translate", "translate_beams"]


@contextmanager
def _evaluating(model: Seq2SeqTransformer) -> Iterator[None]:
    """Eval mode (no dropout) for the duration, then the mode the model had."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


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
    with torch.inference_mode(), _evaluating(model):
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
    with torch.inference_mode(), _evaluating(model):
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


def _batches(sources: Sequence[str], batch_size: int) -> Iterator[tuple[list[int], Tensor, Tensor]]:
    """Indices, codes and padding masks of batches of sources of similar length (longest first)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    coded = [code(source, SOURCE_VOCAB) for source in sources]
    order = sorted(range(len(coded)), key=lambda i: len(coded[i]), reverse=True)
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        src, src_pad_mask = pad_batch([coded[i] for i in indices])
        yield indices, src, src_pad_mask


def translate_beams(
    model: Seq2SeqTransformer,
    sources: Sequence[str],
    beam: int = 4,
    batch_size: int = 64,
    use_cache: bool = True,
    device: torch.device | str | None = None,
    max_len: int | None = None,
) -> list[list[tuple[str, float]]]:
    """The ``beam`` best series of each source expression, ``[(series, log-probability), …]``, best first.

    Sources are in data-set form (``cosh(a*x)**3+tanh(b*x)``); output is in input order. ``device``: where to
    run (the model is moved there); default: where the model is.
    """
    if device is not None:
        model.to(device)
    device = model.device
    results: list[list[tuple[str, float]]] = [[] for _ in sources]
    for indices, src, src_pad_mask in _batches(sources, batch_size):
        found = beam_search(model, src.to(device), src_pad_mask.to(device), beam, max_len, use_cache)
        for i, hypotheses in zip(indices, found, strict=True):
            results[i] = [(TARGET_VOCAB.decode(codes), score) for codes, score in hypotheses]
    return results


def translate(
    model: Seq2SeqTransformer,
    sources: Sequence[str],
    beam: int = 1,
    batch_size: int = 64,
    use_cache: bool = True,
    device: torch.device | str | None = None,
    max_len: int | None = None,
) -> list[str]:
    """The model's series for each source expression (greedy with ``beam=1``, else the best beam).

    Returns ``TARGET_VOCAB`` strings in input order, ``""`` where the model wrote nothing.
    """
    if beam > 1:
        beams = translate_beams(model, sources, beam, batch_size, use_cache, device, max_len)
        return [hypotheses[0][0] if hypotheses else "" for hypotheses in beams]
    if device is not None:
        model.to(device)
    device = model.device
    results = [""] * len(sources)
    for indices, src, src_pad_mask in _batches(sources, batch_size):
        found = greedy_decode(model, src.to(device), src_pad_mask.to(device), max_len, use_cache)
        for i, codes in zip(indices, found, strict=True):
            results[i] = TARGET_VOCAB.decode(codes)
    return results
