"""Checks of notebook 05, training the transformer: ``teacher_forcing_loss`` (5.3), ``training_step`` (5.4)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F

from labutils import tokens as _tokens
from labutils.checks.compare import expect, fail, short
from labutils.checks.core import (
    TINY_SERIES_TOKENS,
    Case,
    exercise,
    family_pair,
    fresh,
    hidden_test,
    integer,
    pick,
    tiny_model,
)
from labutils.tokens import PAD_IDX, SOURCE_VOCAB, TARGET_VOCAB

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

    ``shift``: True reads tgt[:, :-1] and scores tgt[:, 1:]; False reads and scores the whole target;
    "reads" reads tgt[:, :-1] and scores the same tokens; "whole" reads the whole target and scores
    tgt[:, 1:] with the logits of positions 1 on. ``backwards``: reads tgt[:, 1:] to predict tgt[:, :-1];
    ``scores``: "probabilities" (softmax fed to cross_entropy) or "logits" (fed to nll_loss).
    """
    first = 0  # the first position whose logits are scored
    if backwards:
        tgt_in, tgt_out, tpm_in = tgt[:, 1:], tgt[:, :-1], tpm[:, 1:]
    elif shift is True:
        tgt_in, tgt_out, tpm_in = tgt[:, :-1], tgt[:, 1:], tpm[:, :-1]
    elif shift == "reads":
        tgt_in, tgt_out, tpm_in = tgt[:, :-1], tgt[:, :-1], tpm[:, :-1]
    elif shift == "whole":
        tgt_in, tgt_out, tpm_in, first = tgt, tgt[:, 1:], tpm, 1
    else:
        tgt_in, tgt_out, tpm_in = tgt, tgt, tpm
    logits = (model(src, tgt_in, spm, tpm_in) if masks else model(src, tgt_in))[:, first:]
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
            "the decoder read the whole target and each position was scored on the token it reads, token "
            "t: position t reads the target up to token t and must predict token t + 1, which it has not "
            "seen (a loss this low is the sign of a model that sees its answer)",
        ),
        (
            lambda: _loss(model, src, tgt, spm, tpm, shift="reads"),
            "the decoder read the target without its last token, as it should, but each position was "
            "scored on the token it reads, token t, not on the next one, token t + 1 (a loss this low is "
            "the sign of a model that sees its answer)",
        ),
        (
            lambda: _loss(model, src, tgt, spm, tpm, shift="whole"),
            "the decoder read the whole target, and from position 1 on each position was scored on the "
            "token it reads, token t: a position must predict the token after the last one it reads (a "
            "loss this low is the sign of a model that sees its answer)",
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


def _explain_loss(args: tuple, error: str) -> str | None:
    """Exceptions of typical mistakes in the loss: shapes cross_entropy does not take, a mask not shifted."""
    if "Expected target size" in error or "Expected input batch_size" in error:
        return (
            "cross_entropy takes the logits as (N, V), one row per prediction, and the targets as (N,); a "
            "3-D input is read as (B, V, L), with the classes on axis 1: put every predicted position of "
            "every sequence in one axis"
        )
    if "tgt_pad_mask must be" in error:
        return (
            "the decoder reads the target without its last token, Lt - 1 positions: the target's padding "
            "mask is cut the same way as the tokens the decoder reads"
        )
    return None


@exercise(
    "05_transformer.teacher_forcing_loss",
    "5.3",
    2,
    ("labutils.train.evaluate",),
    cases=_loss_cases,
    explain=_explain_loss,
)
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

    ``lr``: "peak" (no warm-up), "behind" (step / warmup_steps), "uncapped" (no cap at peak_lr), "unset"
    (the optimizer's rate left as it was); ``late=True`` sets the rate after the optimizer's step;
    ``zero=False`` keeps the old gradients; ``ignore=False`` counts <pad>; ``shift`` as in :func:`_loss`;
    ``after=True`` returns the loss recomputed after the step; ``stepped=False`` leaves the parameters.
    """
    model, optimizer = _copies(model, optimizer)
    lr = {
        None: _warmup(step, peak_lr, warmup_steps),
        "peak": peak_lr,
        "behind": peak_lr * min(1.0, step / warmup_steps),
        "uncapped": peak_lr * (step + 1) / warmup_steps,
        "unset": None,
    }[mistake.get("lr")]

    def set_rate() -> None:
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] if lr is None else lr

    with torch.enable_grad():
        if not mistake.get("late"):
            set_rate()
        loss = _loss(model, *batch, ignore=mistake.get("ignore", True), shift=mistake.get("shift", True))
        if mistake.get("zero", True):
            optimizer.zero_grad()
        loss.backward()
        if mistake.get("stepped", True):
            optimizer.step()
        if mistake.get("late"):
            set_rate()
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
            opt = torch.optim.SGD(model.parameters(), lr=0.1)  # not the peak: a rate left unset shows
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=0.003, betas=(0.9, 0.98))
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
            (
                {"lr": "unset"},
                "the optimizer's learning rate is still the one it had before the step: the rate of this "
                "step goes into every group of the optimizer's param_groups, which is where it reads it",
            ),
        ],
        "loss": [
            (
                {"ignore": False},
                "the <pad> positions counted in the loss: padding is not part of any "
                "series (as in exercise 5.3)",
            ),
            ({"after": True}, "this is the loss after the step; return the loss the step was taken on"),
            *(
                (
                    {"shift": shift},
                    "this loss is too low for a model that predicts: its positions were scored on tokens "
                    "they read; position t reads the target up to token t and must predict token t + 1 "
                    "(as in exercise 5.3)",
                )
                for shift in (False, "reads", "whole")
            ),
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
                {"late": True},
                "the step was taken with the optimizer's old learning rate, and the new one set after it: "
                "the optimizer reads the rate when it steps, so this step's rate is set before",
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


@hidden_test("05_transformer.teacher_forcing_loss", "<pad> positions never count in the loss, for any batch")
def any_batch(generator) -> Case:
    import random

    rng = random.Random(integer(generator, 0, 2**31))
    pairs = [family_pair(rng, TINY_SERIES_TOKENS) for _ in range(integer(generator, 1, 3))]
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

    rng = random.Random(integer(generator, 0, 2**31))
    pairs = [family_pair(rng, TINY_SERIES_TOKENS) for _ in range(integer(generator, 1, 3) + 1)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(integer(generator, 0, 2**31))
        model = _with_old_gradients(tiny_model(), _batch_of(pairs[:1]))
    warmup = integer(generator, 1, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    step, peak_lr = integer(generator, 0, 2 * warmup), pick(generator, [0.05, 0.1, 0.3])
    return Case((model, optimizer, _batch_of(pairs[1:]), step, peak_lr, warmup), call=_one_step)
