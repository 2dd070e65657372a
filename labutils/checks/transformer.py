"""Checks of notebook 05, the transformer's layers: ``encoder_layer_forward`` (5.1), ``decoder_layer_forward``
(5.2). Its loss and training step are checked in :mod:`labutils.checks.training`."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from labutils import model as _model
from labutils.checks.compare import answer_line, expect, fail, short, tensor_problem
from labutils.checks.core import Case, exercise, hidden_test, integer, randn

_POST_NORM_HINT = (
    "this is the paper's post-norm order, the LayerNorm after the residual addition; the package's layers "
    "are pre-norm: each sublayer reads a normalized copy of x, and its output is added to x itself"
)


_NO_NORM_HINT = (
    "the sublayers read x itself: in a pre-norm layer each sublayer reads a normalized copy of x, through "
    "its own LayerNorm, and adds its output to x"
)


def _distinct_norms(layer: torch.nn.Module, seed: int) -> torch.nn.Module:
    """``layer`` with a gain and bias of its own in every LayerNorm.

    New LayerNorms are all alike (gain 1, bias 0): an answer that used norm1 where norm2 belongs would pass.
    """
    g = torch.Generator().manual_seed(seed)
    for module in layer.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.weight.data = 1 + 0.3 * torch.randn(module.weight.shape, generator=g)
            module.bias.data = 0.3 * torch.randn(module.bias.shape, generator=g)
    return layer


def _explain_layer(args: tuple, error: str) -> str | None:
    """Exceptions of typical mistakes in a layer: a pair left unpacked, the other sequence's padding mask."""
    if "for +: 'Tensor' and 'tuple'" in error or "for +: 'tuple' and 'Tensor'" in error:
        return (
            "an attention sublayer returns a pair (output, weights): the residual connection adds its "
            "output to x, not the pair"
        )
    if "key_pad_mask has shape" in error and "cross_attn" in answer_line(error):
        return (
            "the cross-attention's keys are the memory's positions, the source's: its padding mask is the "
            "source's"
        )
    if "key_pad_mask has shape" in error and "self_attn" in answer_line(error):
        return "the self-attention's keys are the layer's own positions: its padding mask is theirs"
    return None


def _a_tensor(got, x: torch.Tensor, what: str) -> None:
    """A layer's function returns the new x alone: a pair (the package's layer returns weights too) fails."""
    if got is None:
        fail(
            f"{what} returned None. Hint: a function without a return statement returns None; return the "
            "new x"
        )
    if isinstance(got, tuple):
        fail(
            f"{what} returned a tuple {short(got)}. Hint: return the new x alone, a tensor of the shape of "
            f"x, {tuple(x.shape)}"
        )


# --------------------------------------------------------------------------------- 5.1 encoder_layer_forward


def _encoder_variant(
    layer,
    x,
    src_pad_mask,
    post_norm=False,
    residual=True,
    mask=True,
    causal=False,
    one_norm=False,
    residual_from_norm=False,
    norms=True,
):
    """The encoder layer with one typical mistake switched on (the defaults give the right layer).

    ``residual``: True, False (neither sublayer), "attention" or "feed-forward" (only that one has it);
    ``norms=False``: no LayerNorm at all.
    """
    m = src_pad_mask if mask else None
    if post_norm:
        a, _ = layer.self_attn(x, x, x, m)
        x = layer.norm1(x + a)
        return layer.norm2(x + layer.feed_forward(x))
    h = layer.norm1(x) if norms else x
    a, _ = layer.self_attn(h, h, h, m, causal)
    base = h if residual_from_norm else x
    x = base + a if residual in (True, "attention") else a
    h = (layer.norm1 if one_norm else layer.norm2)(x) if norms else x
    f = layer.feed_forward(h)
    base = h if residual_from_norm else x
    return base + f if residual in (True, "feed-forward") else f


def _encoder_layer_mistakes(layer, x, mask):
    return [
        (
            lambda: _encoder_variant(layer, x, mask, post_norm=True),
            _POST_NORM_HINT,
        ),
        (
            lambda: _encoder_variant(layer, x, mask, residual=False),
            "the residual connections are missing: each sublayer's output is added to the x that went "
            "into it, it does not replace it",
        ),
        (
            lambda: _encoder_variant(layer, x, mask, residual="attention"),
            "the feed-forward sublayer has no residual connection: its output is added to x, it does "
            "not replace it",
        ),
        (
            lambda: _encoder_variant(layer, x, mask, residual="feed-forward"),
            "the self-attention sublayer has no residual connection: its output is added to x, it does "
            "not replace it",
        ),
        (
            lambda: _encoder_variant(layer, x, mask, residual_from_norm=True),
            "the residual was taken from the normalized x: in a pre-norm layer only the sublayer's input "
            "is normalized, and its output is added to x as it came in (the residual stream)",
        ),
        (
            lambda: _encoder_variant(layer, x, mask, mask=False),
            "the <pad> positions were attended to: the self-attention needs src_pad_mask",
        ),
        (
            lambda: _encoder_variant(layer, x, mask, causal=True),
            "the encoder reads the whole source at once: no causal mask here (that is the "
            "decoder's), only src_pad_mask",
        ),
        (
            lambda: _encoder_variant(layer, x, mask, norms=False),
            _NO_NORM_HINT,
        ),
        (
            lambda: _encoder_variant(layer, x, mask, one_norm=True),
            "one LayerNorm served both sublayers: each sublayer has its own, norm1 before the "
            "self-attention, norm2 before the feed-forward",
        ),
    ]


def _encoder_cases() -> dict[str, Case]:
    layer = _distinct_norms(_model.EncoderLayer(16, 2, 32, dropout=0.0).eval(), seed=12)
    x = randn(2, 5, 16, seed=7)
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    return {"no padding": Case((layer, x, None)), "with a padding mask": Case((layer, x, pad))}


_ENCODER_REPLACES = ("labutils.model.EncoderLayer.forward",)


@exercise(
    "05_transformer.encoder_layer_forward",
    "5.1",
    2,
    _ENCODER_REPLACES,
    cases=_encoder_cases,
    explain=_explain_layer,
)
def encoder_layer_forward(args: tuple, got) -> None:
    layer, x, mask = args
    expected, _ = layer(x, mask)
    _a_tensor(got, x, "encoder_layer_forward")
    expect(got, expected, "encoder_layer_forward", mistakes=_encoder_layer_mistakes(layer, x, mask))


# --------------------------------------------------------------------------------- 5.2 decoder_layer_forward

_CAUSAL_HINT = (
    "a position read later target tokens: the decoder's self-attention is causal, each position sees "
    "itself and the positions before it"
)


def _decoder_variant(
    layer,
    x,
    memory,
    spm,
    tpm,
    causal=True,
    cross_from_x=False,
    swap_masks=False,
    post_norm=False,
    cross_mask=True,
    norm2=True,
    tgt_mask=True,
    norm_memory=False,
    cross_tgt_mask=False,
    norms=True,
    cross_causal=False,
):
    """The decoder layer with one typical mistake switched on (the defaults give the right layer).

    ``cross_tgt_mask`` gives the cross-attention the target's padding mask, the self-attention its own;
    ``norms=False`` leaves every LayerNorm out; ``cross_causal`` makes the cross-attention causal too.
    """
    if not norms:
        a, _ = layer.self_attn(x, x, x, tpm, causal)
        x = x + a
        a, _ = layer.cross_attn(x, memory, memory, spm)
        x = x + a
        return x + layer.feed_forward(x)
    cross_mask_of = tpm if cross_tgt_mask else spm
    if swap_masks:
        spm, tpm = tpm, spm
        cross_mask_of = spm
    if not tgt_mask:
        tpm = None
    if post_norm:
        a, _ = layer.self_attn(x, x, x, tpm, causal)
        x = layer.norm1(x + a)
        a, _ = layer.cross_attn(x, memory, memory, spm)
        x = layer.norm2(x + a)
        return layer.norm3(x + layer.feed_forward(x))
    h = layer.norm1(x)
    a, _ = layer.self_attn(h, h, h, tpm, causal)
    x = x + a
    h = layer.norm2(x) if norm2 else x
    kv = h if cross_from_x else (layer.norm2(memory) if norm_memory else memory)
    cross_mask_used = (tpm if cross_from_x else cross_mask_of) if cross_mask else None
    a, _ = layer.cross_attn(h, kv, kv, cross_mask_used, cross_causal)
    x = x + a
    return x + layer.feed_forward(layer.norm3(x))


def _decoder_layer_mistakes(layer, x, memory, s, tm):
    return [
        (
            lambda: _decoder_variant(layer, x, memory, s, tm, causal=False),
            _CAUSAL_HINT,
        ),
        (
            lambda: _decoder_variant(layer, x, memory, s, tm, cross_from_x=True),
            "the cross-attention read the target itself: its queries come from x, its keys and values "
            "from the memory (the encoder's output)",
        ),
        (
            lambda: _decoder_variant(layer, x, memory, s, tm, swap_masks=True),
            "the masks are swapped: the self-attention's keys are target positions, the "
            "cross-attention's are source positions",
        ),
        (
            lambda: _decoder_variant(layer, x, memory, s, tm, norms=False),
            _NO_NORM_HINT,
        ),
        (
            lambda: _decoder_variant(layer, x, memory, s, tm, cross_causal=True),
            "the cross-attention was causal: the causal mask is for the target's own positions, while every "
            "target position may read the whole source, all of the memory",
        ),
        (
            lambda: _decoder_variant(layer, x, memory, s, tm, cross_tgt_mask=True),
            "the cross-attention got the target's padding mask: its keys are the memory's positions, the "
            "source's, so its mask is the source's",
        ),
        (
            lambda: _decoder_variant(layer, x, memory, s, tm, post_norm=True),
            _POST_NORM_HINT,
        ),
        (
            lambda: _decoder_variant(layer, x, memory, s, tm, cross_mask=False),
            "a target position attended to a source <pad>: the cross-attention's keys are the source "
            "positions, so it needs the source's padding mask",
        ),
        (
            lambda: _decoder_variant(layer, x, memory, s, tm, norm2=False),
            "the cross-attention's queries were not normalized: like every sublayer of a pre-norm layer, "
            "it reads x through its own LayerNorm (norm2)",
        ),
        (
            lambda: _decoder_variant(layer, x, memory, s, tm, norm_memory=True),
            "the memory was normalized again: the cross-attention reads the encoder's memory as it is; "
            "only its queries go through norm2",
        ),
        (
            lambda: _decoder_variant(layer, x, memory, s, tm, tgt_mask=False),
            "a target position attended to a target <pad>: the self-attention needs the target's "
            "padding mask as well as the causal one",
        ),
    ]


def _before_and_after_a_change(answer: Callable, args: tuple) -> tuple:
    """The outputs for ``x``, and for ``x`` with its last position changed (no masks)."""
    layer, x, memory = args
    changed = x.clone()
    changed[:, -1] = randn(x.size(0), x.size(2), seed=10)  # not a constant shift: LayerNorm would erase it
    return answer(layer, x.clone(), memory, None, None), answer(layer, changed, memory, None, None)


def _earlier_outputs_unchanged(args: tuple, got) -> None:
    _, x, _ = args
    before, after = got
    _a_tensor(before, x, "decoder_layer_forward")
    problem = tensor_problem(before, x, atol=math.inf, rtol=0.0)  # its type and shape: the values differ
    if problem is not None:
        fail(f"decoder_layer_forward: {problem}")
    if not torch.allclose(before[:, :-1], after[:, :-1], atol=1e-5):
        fail(f"changing the last target position changed the outputs before it. Hint: {_CAUSAL_HINT}")


def _decoder_cases() -> dict[str, Case]:
    layer = _distinct_norms(_model.DecoderLayer(16, 2, 32, dropout=0.0).eval(), seed=13)
    x = randn(2, 4, 16, seed=8)
    memories = {6: randn(2, 6, 16, seed=9), 4: randn(2, 4, 16, seed=11)}  # Ls: memory
    cases = {
        "no padding": (6, None, None),
        "padding in source and target": (
            6,
            torch.tensor([[False] * 6, [False] * 4 + [True] * 2]),
            torch.tensor([[False] * 4, [False, False, False, True]]),
        ),
        "padding, source as long as the target": (
            4,
            torch.tensor([[False] * 4, [False, False, True, True]]),
            torch.tensor([[False, False, False, True], [False] * 4]),
        ),
    }
    return {
        **{name: Case((layer, x, memories[Ls], s, tm)) for name, (Ls, s, tm) in cases.items()},
        "a later target token does not change earlier outputs": Case(
            (layer, x, memories[6]), call=_before_and_after_a_change, judge=_earlier_outputs_unchanged
        ),
    }


_DECODER_REPLACES = ("labutils.model.DecoderLayer.forward",)


@exercise(
    "05_transformer.decoder_layer_forward",
    "5.2",
    2,
    _DECODER_REPLACES,
    cases=_decoder_cases,
    explain=_explain_layer,
)
def decoder_layer_forward(args: tuple, got) -> None:
    layer, x, memory, s, tm = args
    expected, _, _ = layer(x, memory, s, tm)
    _a_tensor(got, x, "decoder_layer_forward")
    expect(got, expected, "decoder_layer_forward", mistakes=_decoder_layer_mistakes(layer, x, memory, s, tm))


# ------------------------------------------------------------------------------------------------ hidden tests
# Inputs the grader draws from the secret of its grading run: they vary what the visible cases fix.


def _padding(generator, B: int, L: int) -> torch.Tensor:
    """(B, L): True at the last positions of some rows, never the whole row."""
    lengths = [integer(generator, 1, L) for _ in range(B)]
    return torch.arange(L)[None, :] >= torch.tensor(lengths)[:, None]


@hidden_test(
    "05_transformer.encoder_layer_forward", "any padding mask is respected: real tokens never see <pad>"
)
def any_padding(generator) -> Case:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(integer(generator, 0, 2**31))
        layer = _distinct_norms(
            _model.EncoderLayer(16, 4, 32, dropout=0.0).eval(), seed=integer(generator, 0, 99)
        )
    B, L = integer(generator, 1, 3), integer(generator, 2, 8)
    return Case((layer, torch.randn(B, L, 16, generator=generator), _padding(generator, B, L)))


@hidden_test(
    "05_transformer.decoder_layer_forward",
    "for any sizes and masks, later target tokens never change earlier outputs",
)
def any_sizes_and_masks(generator) -> Case:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(integer(generator, 0, 2**31))
        layer = _distinct_norms(
            _model.DecoderLayer(16, 4, 32, dropout=0.0).eval(), seed=integer(generator, 0, 99)
        )
    B, Lt, Ls = integer(generator, 1, 3), integer(generator, 2, 7), integer(generator, 2, 8)
    x, memory = torch.randn(B, Lt, 16, generator=generator), torch.randn(B, Ls, 16, generator=generator)
    return Case((layer, x, memory, _padding(generator, B, Ls), _padding(generator, B, Lt)))
