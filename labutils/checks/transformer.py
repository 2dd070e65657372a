"""Checks of notebook 05, the transformer: ``encoder_layer_forward`` (5.1), ``decoder_layer_forward`` (5.2),
``teacher_forcing_loss`` (5.3)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from labutils import model as _model
from labutils import tokens as _tokens
from labutils.checks.compare import expect, fail, short
from labutils.checks.core import Case, exercise, hidden_test, integer, randn, tiny_model
from labutils.tokens import PAD_IDX, SOURCE_VOCAB, TARGET_VOCAB

_POST_NORM_HINT = (
    "this is the paper's post-norm order; the package's layers are pre-norm: x + sublayer(norm(x))"
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


# --------------------------------------------------------------------------------- 5.1 encoder_layer_forward


def _encoder_variant(
    layer, x, src_pad_mask, post_norm=False, residual=True, mask=True, causal=False, one_norm=False
):
    """The encoder layer with one typical mistake switched on (the defaults give the right layer)."""
    m = src_pad_mask if mask else None
    if post_norm:
        a, _ = layer.self_attn(x, x, x, m)
        x = layer.norm1(x + a)
        return layer.norm2(x + layer.feed_forward(x))
    h = layer.norm1(x)
    a, _ = layer.self_attn(h, h, h, m, causal)
    x = x + a if residual else a
    f = layer.feed_forward((layer.norm1 if one_norm else layer.norm2)(x))
    return x + f if residual else f


def _encoder_layer_mistakes(layer, x, mask):
    return [
        (
            lambda: _encoder_variant(layer, x, mask, post_norm=True),
            _POST_NORM_HINT,
        ),
        (
            lambda: _encoder_variant(layer, x, mask, residual=False),
            "add the residual connections: x = x + self_attn(…), then x = x + feed_forward(…)",
        ),
        (
            lambda: _encoder_variant(layer, x, mask, mask=False),
            "pass src_pad_mask to self_attn, so that no position attends to <pad>",
        ),
        (
            lambda: _encoder_variant(layer, x, mask, causal=True),
            "the encoder reads the whole source at once: no causal mask here (that is the "
            "decoder's), only src_pad_mask",
        ),
        (
            lambda: _encoder_variant(layer, x, mask, one_norm=True),
            "each sublayer has its own LayerNorm: norm1 before the self-attention, norm2 before "
            "the feed-forward",
        ),
    ]


def _encoder_cases() -> dict[str, Case]:
    layer = _distinct_norms(_model.EncoderLayer(16, 2, 32, dropout=0.0).eval(), seed=12)
    x = randn(2, 5, 16, seed=7)
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    return {"no padding": Case((layer, x, None)), "with a padding mask": Case((layer, x, pad))}


_ENCODER_REPLACES = ("labutils.model.EncoderLayer.forward",)


@exercise("05_transformer.encoder_layer_forward", "5.1", 2, _ENCODER_REPLACES, cases=_encoder_cases)
def encoder_layer_forward(args: tuple, got) -> None:
    layer, x, mask = args
    expected, _ = layer(x, mask)
    expect(got, expected, "encoder_layer_forward", mistakes=_encoder_layer_mistakes(layer, x, mask))


# --------------------------------------------------------------------------------- 5.2 decoder_layer_forward

_CAUSAL_HINT = "the self-attention must be causal (causal=True): no position may read later tokens"


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
):
    """The decoder layer with one typical mistake switched on (the defaults give the right layer)."""
    if swap_masks:
        spm, tpm = tpm, spm
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
    kv = h if cross_from_x else memory
    a, _ = layer.cross_attn(h, kv, kv, (tpm if cross_from_x else spm) if cross_mask else None)
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
            "the cross-attention takes its keys and values from the memory, its queries from x",
        ),
        (
            lambda: _decoder_variant(layer, x, memory, s, tm, swap_masks=True),
            "the masks are swapped: tgt_pad_mask goes with the self-attention, "
            "src_pad_mask with the "
            "cross-attention (its keys are source positions)",
        ),
        (
            lambda: _decoder_variant(layer, x, memory, s, tm, post_norm=True),
            _POST_NORM_HINT,
        ),
        (
            lambda: _decoder_variant(layer, x, memory, s, tm, cross_mask=False),
            "pass src_pad_mask to the cross-attention too: its keys are the source positions, "
            "and no query may attend to a source <pad>",
        ),
        (
            lambda: _decoder_variant(layer, x, memory, s, tm, norm2=False),
            "normalize before the cross-attention as well: its queries are layer.norm2(x)",
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
    if isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor) and before.shape == x.shape:
        if not torch.allclose(before[:, :-1], after[:, :-1], atol=1e-5):
            fail(f"changing the last target position changed the outputs before it. Hint: {_CAUSAL_HINT}")
    else:
        fail(f"expected a tensor of shape {tuple(x.shape)}, got {short(before)}")


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


@exercise("05_transformer.decoder_layer_forward", "5.2", 2, _DECODER_REPLACES, cases=_decoder_cases)
def decoder_layer_forward(args: tuple, got) -> None:
    layer, x, memory, s, tm = args
    expected, _, _ = layer(x, memory, s, tm)
    expect(got, expected, "decoder_layer_forward", mistakes=_decoder_layer_mistakes(layer, x, memory, s, tm))


# ---------------------------------------------------------------------------------- 5.3 teacher_forcing_loss


def _batch_of(pairs):
    coded = [(_tokens.code(s, SOURCE_VOCAB), _tokens.code(t, TARGET_VOCAB)) for s, t in pairs]
    return _tokens.collate(coded)


PAIRS = [
    ("tan(h*x)+sinh(g*x)", "x*(g+h)+x**3*(g**3/6+h**3/3)+x**5*(g**5/120+2*h**5/15)+O(x**6)"),
    ("sin(a*x)", "a*x-a**3*x**3/6+a**5*x**5/120+O(x**6)"),
    ("cosh(a*x)**3+tanh(b*x)", "1+b*x+3*a**2*x**2/2-b**3*x**3/3+7*a**4*x**4/8+2*b**5*x**5/15+O(x**6)"),
]


def _loss(
    model,
    src,
    tgt,
    spm,
    tpm,
    shift=True,
    ignore=True,
    reduction="mean",
    backwards=False,
    masks=True,
    scores=None,
):
    """The loss with one typical mistake switched on (the defaults give the right loss).

    ``backwards``: reads tgt[:, 1:] to predict tgt[:, :-1]; ``scores``: "probabilities" (softmax fed to
    cross_entropy) or "logits" (fed to nll_loss).
    """
    if backwards:
        tgt_in, tgt_out, tpm_in = tgt[:, 1:], tgt[:, :-1], tpm[:, 1:]
    elif shift:
        tgt_in, tgt_out, tpm_in = tgt[:, :-1], tgt[:, 1:], tpm[:, :-1]
    else:
        tgt_in, tgt_out, tpm_in = tgt, tgt, tpm
    logits = model(src, tgt_in, spm, tpm_in) if masks else model(src, tgt_in)
    logits, tgt_out = logits.flatten(0, 1), tgt_out.flatten()
    ignore_index = PAD_IDX if ignore else -100
    if scores == "logits":
        return F.nll_loss(logits, tgt_out, ignore_index=ignore_index, reduction=reduction)
    if scores == "probabilities":
        logits = logits.softmax(-1)
    return F.cross_entropy(logits, tgt_out, ignore_index=ignore_index, reduction=reduction)


def _teacher_forcing_mistakes(model, src, tgt, spm, tpm):
    return [
        (
            lambda: _loss(model, src, tgt, spm, tpm, shift=False),
            "shift the target: the decoder reads tgt[:, :-1] and is scored on tgt[:, 1:]",
        ),
        (
            lambda: _loss(model, src, tgt, spm, tpm, ignore=False),
            "leave <pad> positions out of the mean: F.cross_entropy(…, ignore_index=PAD_IDX)",
        ),
        (
            lambda: _loss(model, src, tgt, spm, tpm, reduction="sum"),
            "this is the sum over tokens; the loss is the mean over the real (not <pad>) tokens",
        ),
        (
            lambda: _loss(model, src, tgt, spm, tpm, reduction="sum") / (tgt.numel() - tgt.size(0)),
            "divide by the number of real tokens, not by every position: <pad> positions "
            "must not count in the mean",
        ),
        (
            lambda: _loss(model, src, tgt, spm, tpm, backwards=True),
            "the shift goes the other way: the decoder reads tgt[:, :-1] (from <sos>) and "
            "predicts tgt[:, 1:] (up to <eos>)",
        ),
        (
            lambda: _loss(model, src, tgt, spm, tpm, scores="probabilities"),
            "give F.cross_entropy the raw logits: it applies log_softmax itself, so a softmax "
            "before it is one too many",
        ),
        (
            lambda: _loss(model, src, tgt, spm, tpm, scores="logits"),
            "F.nll_loss expects log-probabilities: use F.cross_entropy on the logits (or log_softmax first)",
        ),
        (
            lambda: _loss(model, src, tgt, spm, tpm, masks=False),
            "pass the padding masks to the model, model(src, tgt[:, :-1], src_pad_mask, "
            "tgt_pad_mask[:, :-1]), so that no position attends to <pad>",
        ),
    ]


def _loss_cases() -> dict[str, Case]:
    model = tiny_model()
    pairs = {"one pair": PAIRS[1:2], "a padded batch of three": PAIRS}
    return {name: Case((model, *_batch_of(batch))) for name, batch in pairs.items()}


@exercise("05_transformer.teacher_forcing_loss", "5.3", 2, ("labutils.train.evaluate",), cases=_loss_cases)
def teacher_forcing_loss(args: tuple, got) -> str:
    model, src, tgt, spm, tpm = args
    expected = _loss(model, src, tgt, spm, tpm)
    if isinstance(got, torch.Tensor) and got.numel() == 1 and got.dim() > 0:
        fail(f"return a scalar (a 0-dim tensor), got shape {tuple(got.shape)}")
    if isinstance(got, float):
        got = torch.tensor(got)
    expect(got, expected, "the loss", mistakes=_teacher_forcing_mistakes(model, src, tgt, spm, tpm))
    return f"{expected.item():.4f}"


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


@hidden_test("05_transformer.teacher_forcing_loss", "<pad> positions never count in the loss, for any batch")
def any_batch(generator) -> Case:
    import random

    from labutils import data as _data

    rng, pairs, n = random.Random(integer(generator, 0, 2**31)), [], integer(generator, 1, 3)
    while len(pairs) < n:
        source, series = _data.pair_of(_data.draw(rng))
        if len(_tokens.tokenize(series)) < 60:  # the small model's max_tgt_len is 64
            pairs.append((source, series))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(integer(generator, 0, 2**31))
        model = tiny_model()
    return Case((model, *_batch_of(pairs)))
