"""Checks of notebook 04, attention: ``attention`` (4.1), ``masked_attention`` (4.2), ``causal_mask`` (4.3).
Its multi-head exercises are checked in :mod:`labutils.checks.multi_head`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from labutils import attention as _attention
from labutils.checks.compare import answer_line, expect, fail, matches, pair
from labutils.checks.core import Case, exercise, hidden_test, integer, randn

#: What attention may not use: the package's attention, and PyTorch's.
_ATTENTION_REPLACES = (
    "labutils.attention.scaled_dot_product_attention",
    "torch.nn.functional.scaled_dot_product_attention",
    "labutils.attention.MultiHeadAttention",
)

# --------------------------------------------------------------------------------------------- 4.1 attention

#: The lecture's two-token example, with numbers: q1, q2 / k1, k2 / v1, v2 as rows.
TWO_TOKENS = {
    "Q": torch.tensor([[1.0, 0.0], [0.0, 2.0]]),
    "K": torch.tensor([[1.0, 1.0], [-1.0, 1.0]]),
    "V": torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
}


def _attention_mistakes(Q, K, V, mask=None):
    d = Q.size(-1)
    scores = Q @ K.transpose(-2, -1)  # (..., Lq, Lk)
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    return [
        (
            lambda: torch.softmax(scores, -1),
            "the scores were not scaled: QKᵀ is divided by √d, d the size of a query vector, before the "
            "softmax",
        ),
        (lambda: torch.softmax(scores / d, -1), "the scores were divided by d; the scale is √d"),
        *(
            (
                lambda dim=dim: torch.softmax(scores / math.sqrt(d), dim),
                "the weights sum to one along another axis than the keys: each row (one query) must sum "
                "to one over the keys, the last axis, whatever axes come in front",
            )
            for dim in range(scores.dim() - 1)
        ),
        *(
            (
                lambda axis=axis: torch.softmax(scores / math.sqrt(Q.size(axis)), -1),
                "the scale used the size of another axis than the features: d is the size of a query "
                "vector, the last axis, whatever axes come in front",
            )
            for axis in range(Q.dim() - 1)
        ),
    ]


def attention_pair(got, out: torch.Tensor, weights: torch.Tensor, what: str) -> tuple:
    """The answer's (out, weights); a pair returned the wrong way round fails with its own hint."""
    got_out, got_weights = pair(got, what)
    if not matches(got_weights, weights) and matches(got_out, weights) and matches(got_weights, out):
        fail(f"{what}: out and weights are swapped. Hint: the pair is (out, weights), out first")
    return got_out, got_weights


def _attention_cases() -> dict[str, Case]:
    return {
        "the lecture's two-token example": Case((TWO_TOKENS["Q"], TWO_TOKENS["K"], TWO_TOKENS["V"])),
        "a batch, more keys than queries (cross-attention)": Case(
            (randn(2, 3, 8, seed=1), randn(2, 5, 8, seed=2), randn(2, 5, 4, seed=3))
        ),
        "4 heads at once (B, H, L, d)": Case(
            (randn(2, 4, 6, 16, seed=4), randn(2, 4, 6, 16, seed=5), randn(2, 4, 6, 16, seed=6))
        ),
    }


def _explain_scores(args: tuple, error: str) -> str | None:
    """An error of QKᵀ with leading axes (a batch, heads): K.T reverses them all."""
    if not error.startswith("RuntimeError") or "size" not in error:
        return None
    Q, K = args[0], args[1]
    line = answer_line(error)
    if ".T" in line and ".transpose" not in line:
        return (
            f"K.T reverses every axis of K, {tuple(K.shape)} here, the batch's included; QKᵀ needs only "
            "the last two swapped, (…, d, Lk), with every leading axis kept"
        )
    return (
        f"the shapes did not line up: Q is {tuple(Q.shape)}, (…, Lq, d), and K {tuple(K.shape)}, (…, Lk, d); "
        "the scores are (…, Lq, Lk), with every leading axis (batch, heads) kept"
    )


@exercise(
    "04_attention.attention", "4.1", 2, _ATTENTION_REPLACES, cases=_attention_cases, explain=_explain_scores
)
def attention(args: tuple, got) -> str:
    Q, K, V = args
    out, weights = _attention.scaled_dot_product_attention(Q, K, V)
    got_out, got_weights = attention_pair(got, out, weights, "attention")
    expect(got_weights, weights, "weights", mistakes=_attention_mistakes(Q, K, V))
    expect(
        got_out,
        F.scaled_dot_product_attention(Q, K, V),
        "out (compared with PyTorch's)",
        hint="the weights are right but out is not: each query's output is the sum of the values, each "
        "weighted by that query's weight for its key",
    )
    return "weights and out equal PyTorch's scaled_dot_product_attention"


# -------------------------------------------------------------------------------------- 4.2 masked_attention


def _masked_case(seed: int, front: tuple[int, ...], Lq: int, Lk: int, d: int, mask: torch.Tensor):
    """Q (*front, Lq, d), K and V (*front, Lk, d), and the mask; ``front`` is (B,) or (B, H)."""
    Q, K, V = (randn(*front, L, d, seed=seed + i) for i, L in enumerate((Lq, Lk, Lk)))
    return Q, K, V, mask


def _masked_attention_cases() -> dict[str, Case]:
    pad = torch.tensor([[False, False, False, False, False], [False, False, False, True, True]])  # (B, Lk)
    nowhere = torch.zeros(2, 3, 5, dtype=torch.bool)
    nowhere[1, 2] = True  # query 2 of sequence 1 may see no key at all
    cases = {
        "no key masked": _masked_case(10, (2,), 3, 5, 8, torch.zeros(3, 5, dtype=torch.bool)),
        "padding mask (B, 1, Lk): the last keys of row 1 are <pad>": _masked_case(
            20, (2,), 3, 5, 8, pad[:, None, :]
        ),
        "causal mask (L, L)": _masked_case(30, (2,), 4, 4, 8, _attention.causal_mask(4)),
        "4 heads (B, H, L, d), padding mask (B, 1, 1, Lk)": _masked_case(
            40, (2, 4), 3, 5, 8, pad[:, None, None, :]
        ),
        "a query with every key masked: zero weights and zero output, not NaN": _masked_case(
            50, (2,), 3, 5, 4, nowhere
        ),
    }
    return {name: Case(args) for name, args in cases.items()}


def _masked_attention_mistakes(Q, K, V, mask):
    scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1))  # (..., Lq, Lk)
    return [
        (
            lambda: torch.softmax(scores.masked_fill(mask, float("-inf")), -1),
            "a query whose keys are all masked got NaN: the softmax of a row of -inf is 0/0; the "
            "instructions ask for zero weights (and so a zero output) for such a query",
        ),
        (
            lambda: torch.softmax(scores.masked_fill(mask, -1e9), -1),
            "a query whose keys are all masked got weights that sum to one: it has nothing to attend "
            "to, so its weights must all be zero",
        ),
        *_attention_mistakes(Q, K, V, mask),
        (
            lambda: torch.softmax(scores.masked_fill(~mask, float("-inf")), -1),
            "the mask is inverted: True marks keys a query may NOT attend to",
        ),
        (
            lambda: torch.softmax(scores.masked_fill(mask, 0.0), -1),
            "the masked scores were set to 0, which still gets the weight exp(0) > 0 after the softmax: "
            "a masked score must be minus infinity",
        ),
        (
            lambda: torch.softmax(scores, -1),
            "the mask changed nothing: these are the weights of attention without a mask. The mask acts "
            "on the scores, before the softmax (if you called masked_fill, keep the tensor it returns: it "
            "leaves its input as it was)",
        ),
        (
            lambda: torch.softmax(scores, -1).masked_fill(mask, 0.0),
            "the weights were masked after the softmax, so the rows no longer sum to one: the mask acts "
            "on the scores, before the softmax",
        ),
    ]


def _masked_weights_are_zero(got_weights: torch.Tensor, mask: torch.Tensor) -> None:
    """The instructions' "exactly zero": a large negative fill leaves a tiny weight that allclose accepts."""
    where = mask.expand_as(got_weights)
    if where.any() and not torch.equal(got_weights[where], torch.zeros_like(got_weights[where])):
        largest = got_weights[where].abs().max().item()
        fail(
            f"weights: a masked weight is {largest:.3g}, not exactly zero. Hint: a masked score must be "
            "minus infinity; a large negative number still leaves a small weight"
        )


def _mask_hint(got, mask: torch.Tensor) -> str | None:
    """What the weights ``got`` do with the keys ``mask`` hides and allows, when that is what is wrong."""
    if not isinstance(got, torch.Tensor) or not got.is_floating_point():
        return None
    try:
        hidden = mask.expand_as(got)
    except RuntimeError:
        return None
    g = got.detach().double()
    if torch.isnan(g).any():
        return None
    allowed = ~hidden
    n_allowed, n_hidden = int(allowed.sum()), int(hidden.sum())
    zero_allowed, weighted_hidden = int((g[allowed] == 0).sum()), int((g[hidden] != 0).sum())
    if n_allowed and zero_allowed == n_allowed and (n_hidden == 0 or weighted_hidden):
        also = f", and {weighted_hidden} of the {n_hidden} at keys it hides are not" if n_hidden else ""
        return (
            f"all {n_allowed} weights at keys the mask allows (False) are zero{also}: the mask is inverted; "
            "True marks the keys a query may NOT attend to"
        )
    if weighted_hidden:
        i = tuple((hidden & (g != 0)).nonzero()[0].tolist())
        return (
            f"the weight at index {i} is {g[i].item():.3g}, though the mask hides that key (True there): a "
            "hidden key gets weight zero, because the mask acts on the scores, before the softmax"
        )
    sums, sees = g.sum(dim=-1), allowed.any(dim=-1)
    off = sees & ~torch.isclose(sums, torch.ones_like(sums), atol=1e-4)
    if off.any():
        i = tuple(off.nonzero()[0].tolist())
        return (
            f"the weights of the query at index {i} sum to {sums[i].item():.3g}: a query that may see some "
            "key spreads a total weight of one over the keys it may see"
        )
    return None


@exercise(
    "04_attention.masked_attention",
    "4.2",
    2,
    _ATTENTION_REPLACES,
    cases=_masked_attention_cases,
    explain=_explain_scores,
)
def masked_attention(args: tuple, got) -> str:
    Q, K, V, mask = args
    out, weights = _attention.scaled_dot_product_attention(Q, K, V, mask)
    got_out, got_weights = attention_pair(got, out, weights, "masked_attention")
    expect(
        got_weights,
        weights,
        "weights",
        hint=_mask_hint(got_weights, mask) or "",
        mistakes=_masked_attention_mistakes(Q, K, V, mask),
    )
    _masked_weights_are_zero(got_weights, mask)
    expected_out = F.scaled_dot_product_attention(Q, K, V, attn_mask=~mask)  # PyTorch: True = may attend
    expected_out = expected_out.masked_fill(mask.all(dim=-1, keepdim=True), 0.0)  # no key: zero, not NaN
    expect(
        got_out,
        expected_out,
        "out (compared with PyTorch's)",
        hint="the weights are right but out is not: each query's output is the sum of the values, each "
        "weighted by that query's weight for its key",
    )
    return "equal to PyTorch's scaled_dot_product_attention with attn_mask=~mask"


# ------------------------------------------------------------------------------------------- 4.3 causal_mask


def _causal_mask_mistakes(L: int, expected: torch.Tensor):
    ones = torch.ones(L, L, dtype=torch.bool)
    return [
        (
            lambda: ones.triu(0),
            "the diagonal is masked too: a position must see itself, so the masked triangle starts one "
            "place above the diagonal",
        ),
        (
            lambda: ~expected,
            "the mask is inverted: True means NOT allowed here, so True marks the future (above the "
            "diagonal), and the past and the diagonal are False",
        ),
        (
            lambda: ones.tril(-1),
            "this is the transpose, it masks the past: rows are queries i, columns keys j; "
            "query i may not see keys j > i, above the diagonal",
        ),
        *(
            (
                lambda float_mask=float_mask: float_mask,
                "this mask holds numbers (0 and 1, or 0 and -inf); the instructions ask for a boolean "
                "mask (dtype torch.bool), True where query i may NOT see key j",
            )
            for float_mask in (
                expected.float(),
                expected.long(),
                expected.int(),
                torch.zeros(L, L).masked_fill(expected, -math.inf),
            )
        ),
    ]


def _causal_mask_cases() -> dict[str, Case]:
    return {f"L = {L}": Case((L,)) for L in (4, 1, 7)}


_CAUSAL_MASK_REPLACES = ("labutils.attention.causal_mask", "labutils.attention._causal_mask")


@exercise("04_attention.causal_mask", "4.3", 1, _CAUSAL_MASK_REPLACES, cases=_causal_mask_cases)
def causal_mask(args: tuple, got) -> None:
    (L,) = args
    expected = _attention.causal_mask(L)
    expect(got, expected, f"causal_mask({L})", mistakes=_causal_mask_mistakes(L, expected))


# ------------------------------------------------------------------------------------------------ hidden tests
# Inputs the grader draws from the secret of its grading run: they vary what the visible cases fix.


def _sizes(generator) -> tuple[tuple[int, ...], int, int, int]:
    """(the leading dimensions, Lq, Lk, d): a batch, with or without heads."""
    front = tuple(integer(generator, 1, 3) for _ in range(integer(generator, 1, 2)))
    return front, integer(generator, 1, 6), integer(generator, 1, 7), integer(generator, 1, 9)


@hidden_test("04_attention.attention", "attention works for any sizes and keeps every leading dimension")
def any_sizes(generator) -> Case:
    front, Lq, Lk, d = _sizes(generator)
    return Case(tuple(torch.randn(*front, L, d, generator=generator) for L in (Lq, Lk, Lk)))


@hidden_test("04_attention.masked_attention", "a fully masked row must give zeros, not NaN, with any mask")
def a_fully_masked_row(generator) -> Case:
    front, Lq, Lk, d = _sizes(generator)
    Q, K, V = (torch.randn(*front, L, d, generator=generator) for L in (Lq, Lk, Lk))
    mask = torch.rand(*front, Lq, Lk, generator=generator) < 0.4
    mask[(0,) * len(front) + (integer(generator, 0, Lq - 1),)] = True  # one query sees no key at all
    return Case((Q, K, V, mask))


@hidden_test(
    "04_attention.causal_mask", "a causal mask of any length hides exactly the keys after each query"
)
def any_length(generator) -> Case:
    return Case((integer(generator, 2, 64),))
