"""Checks of notebook 05, the transformer: ``encoder_layer_forward`` (5.1), ``decoder_layer_forward`` (5.2),
``teacher_forcing_loss`` (5.3), ``training_step`` (5.4)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F

from labutils import model as _model
from labutils import tokens as _tokens
from labutils.checks.compare import expect, fail, short
from labutils.checks.core import Case, exercise, fresh, hidden_test, integer, pick, randn, tiny_model
from labutils.tokens import PAD_IDX, SOURCE_VOCAB, TARGET_VOCAB

_POST_NORM_HINT = (
    "this is the paper's post-norm order, the LayerNorm after the residual addition; the package's layers "
    "are pre-norm: each sublayer reads a normalized copy of x, and its output is added to x itself"
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
    layer,
    x,
    src_pad_mask,
    post_norm=False,
    residual=True,
    mask=True,
    causal=False,
    one_norm=False,
    residual_from_norm=False,
):
    """The encoder layer with one typical mistake switched on (the defaults give the right layer).

    ``residual``: True, False (neither sublayer), "attention" or "feed-forward" (only that one has it).
    """
    m = src_pad_mask if mask else None
    if post_norm:
        a, _ = layer.self_attn(x, x, x, m)
        x = layer.norm1(x + a)
        return layer.norm2(x + layer.feed_forward(x))
    h = layer.norm1(x)
    a, _ = layer.self_attn(h, h, h, m, causal)
    base = h if residual_from_norm else x
    x = base + a if residual in (True, "attention") else a
    h = (layer.norm1 if one_norm else layer.norm2)(x)
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


@exercise("05_transformer.encoder_layer_forward", "5.1", 2, _ENCODER_REPLACES, cases=_encoder_cases)
def encoder_layer_forward(args: tuple, got) -> None:
    layer, x, mask = args
    expected, _ = layer(x, mask)
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
):
    """The decoder layer with one typical mistake switched on (the defaults give the right layer)."""
    if swap_masks:
        spm, tpm = tpm, spm
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
            "the cross-attention read the target itself: its queries come from x, its keys and values "
            "from the memory (the encoder's output)",
        ),
        (
            lambda: _decoder_variant(layer, x, memory, s, tm, swap_masks=True),
            "the masks are swapped: the self-attention's keys are target positions, the "
            "cross-attention's are source positions",
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
            "the decoder was scored on the very tokens it reads: position t reads the target up to "
            "token t and is scored on token t + 1 (teacher forcing shifts the target by one)",
        ),
        (
            lambda: _loss(model, src, tgt, spm, tpm, ignore=False),
            "the <pad> positions counted in the mean: padding is not part of any series, so the loss "
            "leaves out every position whose true next token is <pad> (cross_entropy can be told which "
            "target to ignore)",
        ),
        (
            lambda: _loss(model, src, tgt, spm, tpm, reduction="sum"),
            "this is the sum over tokens; the loss is the mean over the real (not <pad>) tokens",
        ),
        (
            lambda: _loss(model, src, tgt, spm, tpm, reduction="sum") / (tgt.numel() - tgt.size(0)),
            "the sum was divided by every position, <pad> included: the mean is over the real tokens only",
        ),
        (
            lambda: _loss(model, src, tgt, spm, tpm, backwards=True),
            "the shift goes the other way: the decoder reads the target from <sos> on, without its last "
            "token, and predicts it from its second token on, up to <eos>",
        ),
        (
            lambda: _loss(model, src, tgt, spm, tpm, scores="probabilities"),
            "cross_entropy was given probabilities: it applies log_softmax itself, so it takes the raw "
            "logits, and a softmax before it is one too many",
        ),
        (
            lambda: _loss(model, src, tgt, spm, tpm, scores="logits"),
            "nll_loss was given raw logits: it expects log-probabilities; cross_entropy is the loss that "
            "takes logits",
        ),
        (
            lambda: _loss(model, src, tgt, spm, tpm, masks=False),
            "the model ran without the padding masks, so positions attended to <pad>: pass it both "
            "masks, the target's shifted like the target",
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
    if not isinstance(got, torch.Tensor):
        fail(
            f"the loss: got {type(got).__name__} {short(got)}. Hint: the instructions ask for a "
            "0-dimensional tensor: training calls backward() on it, which a Python number cannot do"
        )
    if got.dim() > 0:
        fail(f"the loss: got shape {tuple(got.shape)}. Hint: the loss is one number, a 0-dimensional tensor")
    expect(got, expected, "the loss", mistakes=_teacher_forcing_mistakes(model, src, tgt, spm, tpm))
    return f"{expected.item():.4f}"


# ---------------------------------------------------------------------------------------- 5.4 training_step


def _copies(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple:
    """Copies of ``model`` and its ``optimizer`` (one deepcopy, so the copy steps the copied parameters),
    with the gradients ``.grad`` the model holds, which deepcopy leaves behind."""
    new_model, new_optimizer = copy.deepcopy((model, optimizer))
    for new, old in zip(new_model.parameters(), model.parameters(), strict=True):
        new.grad = None if old.grad is None else old.grad.clone()
    return new_model, new_optimizer


def _parameters(model: torch.nn.Module) -> torch.Tensor:
    """Every parameter of ``model`` in one vector, to compare two models after a step."""
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _warmup(step: int, peak_lr: float, warmup_steps: int) -> float:
    return peak_lr * min(1.0, (step + 1) / warmup_steps)


def _step(model, optimizer, batch, step, peak_lr, warmup_steps, **mistake) -> dict:
    """One training step on copies of ``model`` and ``optimizer``, with one typical mistake switched on.

    ``lr``: "peak" (no warm-up), "behind" (step / warmup_steps), "uncapped" (no cap at peak_lr);
    ``zero=False`` keeps the old gradients; ``ignore=False`` counts <pad>; ``after=True`` returns the loss
    recomputed after the step; ``stepped=False`` leaves the parameters as they were.
    """
    model, optimizer = _copies(model, optimizer)
    lr = {
        None: _warmup(step, peak_lr, warmup_steps),
        "peak": peak_lr,
        "behind": peak_lr * min(1.0, step / warmup_steps),
        "uncapped": peak_lr * (step + 1) / warmup_steps,
    }[mistake.get("lr")]
    with torch.enable_grad():
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = _loss(model, *batch, ignore=mistake.get("ignore", True))
        if mistake.get("zero", True):
            optimizer.zero_grad()
        loss.backward()
        if mistake.get("stepped", True):
            optimizer.step()
        if mistake.get("after"):
            loss = _loss(model, *batch)
    return {
        "loss": loss.item(),
        "lrs": [group["lr"] for group in optimizer.param_groups],
        "params": _parameters(model),
    }


def _with_old_gradients(model: torch.nn.Module, batch) -> torch.nn.Module:
    """``model`` with the gradients of an earlier step still in ``.grad``, as a training loop leaves them."""
    with torch.enable_grad():
        model.zero_grad()
        _loss(model, *batch).backward()
    return model


def _one_step(answer: Callable, args: tuple) -> dict:
    """The answer's step on copies of the model and the optimizer: what it returns and what it changed."""
    model, optimizer, batch, step, peak_lr, warmup_steps = args
    model, optimizer = _copies(model, optimizer)
    with torch.enable_grad():  # the checks run under no_grad; a training step needs gradients
        returned = answer(model, optimizer, fresh(batch), step, peak_lr, warmup_steps)
    lrs = [group["lr"] for group in optimizer.param_groups]
    return {"returned": returned, "lrs": lrs, "params": _parameters(model)}


def _training_step_cases() -> dict[str, Case]:
    cases = {}
    batch = _batch_of(PAIRS)
    earlier = _batch_of(PAIRS[:2])
    for name, (optimizer, step, warmup) in {
        "SGD, step 0 of a warm-up of 4 steps": ("sgd", 0, 4),
        "SGD, step 2 of a warm-up of 4 steps": ("sgd", 2, 4),
        "SGD, step 10, after the warm-up": ("sgd", 10, 4),
        "AdamW as in the package's loop, step 1 of a warm-up of 3": ("adamw", 1, 3),
    }.items():
        model = _with_old_gradients(tiny_model(), earlier)
        if optimizer == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=0.5)
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.9, 0.98))
        cases[name] = Case(
            (model, opt, batch, step, 0.5 if optimizer == "sgd" else 0.01, warmup), call=_one_step
        )
    return cases


def _step_mistakes(args: tuple, key: str):
    hints = {
        "lrs": [
            (
                {"lr": "peak"},
                "during the warm-up the learning rate stayed at peak_lr: it grows "
                "linearly, reaching peak_lr at the last warm-up step",
            ),
            (
                {"lr": "behind"},
                "the learning rate is one warm-up step behind: step 0 already trains, "
                "with peak_lr / warmup_steps, and the rate reaches peak_lr at the last warm-up step",
            ),
            ({"lr": "uncapped"}, "after the warm-up the learning rate kept growing; it stays at peak_lr"),
        ],
        "loss": [
            (
                {"ignore": False},
                "the <pad> positions counted in the loss: padding is not part of any "
                "series (as in exercise 5.3)",
            ),
            ({"after": True}, "this is the loss after the step; return the loss the step was taken on"),
        ],
        "params": [
            (
                {"zero": False},
                "the gradients of an earlier step were added to this step's: backward() "
                "adds to what .grad holds, so the old gradients are cleared before it",
            ),
            (
                {"stepped": False},
                "the parameters did not change: the optimizer takes its step after "
                "backward() has filled the gradients",
            ),
            (
                {"ignore": False},
                "the <pad> positions counted in the loss the step was taken on: padding "
                "is not part of any series (as in exercise 5.3)",
            ),
        ],
    }[key]
    return [(lambda mistake=mistake: _step(*args, **mistake)[key], hint) for mistake, hint in hints]


@exercise(
    "05_transformer.training_step",
    "5.4",
    2,
    ("labutils.train.config.learning_rate", "labutils.train.train"),
    cases=_training_step_cases,
)
def training_step(args: tuple, got: dict) -> str:
    expected = _step(*args)
    returned = got["returned"]
    if not isinstance(returned, float):
        fail(
            f"training_step returned {type(returned).__name__} {short(returned)}. Hint: the instructions ask "
            "for the loss as a Python float: a tensor would keep the step's whole graph alive"
        )
    lr_mistakes = [(lambda m=m: torch.tensor(m()), h) for m, h in _step_mistakes(args, "lrs")]
    expect(
        torch.tensor(got["lrs"], dtype=torch.float64),
        torch.tensor(expected["lrs"], dtype=torch.float64),
        f"the learning rate at step {args[3]}",
        mistakes=lr_mistakes,
        hint="this is not the rate of this step: revisit the warm-up's formula, and that every param group of "
        "the optimizer gets the rate before the step",
    )
    loss_mistakes = [(lambda m=m: torch.tensor(m()), h) for m, h in _step_mistakes(args, "loss")]
    expect(
        torch.tensor(returned), torch.tensor(expected["loss"]), "the loss returned", mistakes=loss_mistakes
    )
    expect(
        got["params"],
        expected["params"],
        "the parameters after the step",
        mistakes=_step_mistakes(args, "params"),
        atol=1e-6,
    )
    return f"loss {expected['loss']:.4f}, learning rate {expected['lrs'][0]:.4g}"


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


@hidden_test(
    "05_transformer.training_step",
    "at any step of any warm-up, on any batch: that step's rate, the loss without <pad>, one optimizer step",
)
def any_step_and_batch(generator) -> Case:
    import random

    from labutils import data as _data

    rng, pairs = random.Random(integer(generator, 0, 2**31)), []
    while len(pairs) < integer(generator, 1, 3) + 1:
        source, series = _data.pair_of(_data.draw(rng))
        if len(_tokens.tokenize(series)) < 60:  # the small model's max_tgt_len is 64
            pairs.append((source, series))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(integer(generator, 0, 2**31))
        model = _with_old_gradients(tiny_model(), _batch_of(pairs[:1]))
    warmup = integer(generator, 1, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    step, peak_lr = integer(generator, 0, 2 * warmup), pick(generator, [0.05, 0.1, 0.3])
    return Case((model, optimizer, _batch_of(pairs[1:]), step, peak_lr, warmup), call=_one_step)
