"""Checks of notebook 04, attention: ``attention`` (4.1), ``masked_attention`` (4.2), ``causal_mask`` (4.3),
``split_heads`` (4.4)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from labutils import attention as _attention
from labutils.checks.compare import expect, fail, matches, pair
from labutils.checks.core import Case, exercise, hidden_test, integer, pick, randn

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
            "divide the scores QKᵀ by √d (d = Q.size(-1)) before the softmax",
        ),
        (lambda: torch.softmax(scores / d, -1), "the scale is √d, not d: use math.sqrt(d) or d ** 0.5"),
        *(
            (
                lambda dim=dim: torch.softmax(scores / math.sqrt(d), dim),
                "take the softmax over the keys, the last axis (dim=-1): each row (one query) must sum "
                "to one, whatever axes come in front",
            )
            for dim in range(scores.dim() - 1)
        ),
        *(
            (
                lambda axis=axis: torch.softmax(scores / math.sqrt(Q.size(axis)), -1),
                "d is the size of the last axis, Q.size(-1) (the features): with a batch or heads in "
                "front, Q.shape[1] is not d",
            )
            for axis in range(Q.dim() - 1)
        ),
    ]


def _attention_pair(got, out: torch.Tensor, weights: torch.Tensor, what: str) -> tuple:
    """The answer's (out, weights); a pair returned the wrong way round fails with its own hint."""
    got_out, got_weights = pair(got, what)
    if not matches(got_weights, weights) and matches(got_out, weights) and matches(got_weights, out):
        fail(
            f"{what}: out and weights are swapped. Hint: return the pair in this order: weights @ V, weights"
        )
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


@exercise("04_attention.attention", "4.1", 2, _ATTENTION_REPLACES, cases=_attention_cases)
def attention(args: tuple, got) -> str:
    Q, K, V = args
    out, weights = _attention.scaled_dot_product_attention(Q, K, V)
    got_out, got_weights = _attention_pair(got, out, weights, "attention")
    expect(got_weights, weights, "weights", mistakes=_attention_mistakes(Q, K, V))
    expect(
        got_out,
        F.scaled_dot_product_attention(Q, K, V),
        "out (compared with PyTorch's)",
        hint="out = weights @ V",
    )
    return "weights and out equal PyTorch's scaled_dot_product_attention"


# -------------------------------------------------------------------------------------- 4.2 masked_attention


def _masked_case(seed: int, front: tuple[int, ...], Lq: int, Lk: int, d: int, mask: torch.Tensor):
    """Q (*front, Lq, d), K and V (*front, Lk, d), and the mask; ``front`` is (B,) or (B, H)."""
    Q, K, V = (randn(*front, L, d, seed=seed + i) for i, L in enumerate((Lq, Lk, Lk)))
    return Q, K, V, mask


def _masked_attention_cases() -> dict[str, Case]:
    pad = torch.tensor([[False, False, False, False, False], [False, False, False, True, True]])  # (B, Lk)
    cases = {
        "no key masked": _masked_case(10, (2,), 3, 5, 8, torch.zeros(3, 5, dtype=torch.bool)),
        "padding mask (B, 1, Lk): the last keys of row 1 are <pad>": _masked_case(
            20, (2,), 3, 5, 8, pad[:, None, :]
        ),
        "causal mask (L, L)": _masked_case(30, (2,), 4, 4, 8, _attention.causal_mask(4)),
        "4 heads (B, H, L, d), padding mask (B, 1, 1, Lk)": _masked_case(
            40, (2, 4), 3, 5, 8, pad[:, None, None, :]
        ),
    }
    return {name: Case(args) for name, args in cases.items()}


def _masked_attention_mistakes(Q, K, V, mask):
    scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1))  # (..., Lq, Lk)
    return [
        *_attention_mistakes(Q, K, V, mask),
        (
            lambda: torch.softmax(scores.masked_fill(~mask, float("-inf")), -1),
            "the mask is inverted: True marks keys a query may NOT attend to (score -inf)",
        ),
        (
            lambda: torch.softmax(scores.masked_fill(mask, 0.0), -1),
            "fill the masked scores with float('-inf'), not 0: a score of 0 still gets the "
            "weight exp(0) > 0 after the softmax",
        ),
        (
            lambda: torch.softmax(scores, -1),
            "the mask had no effect: masked_fill returns a new tensor, so write "
            "scores = scores.masked_fill(mask, float('-inf')) (or use masked_fill_)",
        ),
        (
            lambda: torch.softmax(scores, -1).masked_fill(mask, 0.0),
            "mask the scores before the softmax (masked_fill(mask, float('-inf'))), "
            "so each row still sums to one",
        ),
    ]


@exercise("04_attention.masked_attention", "4.2", 2, _ATTENTION_REPLACES, cases=_masked_attention_cases)
def masked_attention(args: tuple, got) -> str:
    Q, K, V, mask = args
    out, weights = _attention.scaled_dot_product_attention(Q, K, V, mask)
    got_out, got_weights = _attention_pair(got, out, weights, "masked_attention")
    expect(got_weights, weights, "weights", mistakes=_masked_attention_mistakes(Q, K, V, mask))
    expected_out = F.scaled_dot_product_attention(Q, K, V, attn_mask=~mask)  # PyTorch: True = may attend
    expect(got_out, expected_out, "out (compared with PyTorch's)", hint="out = weights @ V")
    return "equal to PyTorch's scaled_dot_product_attention with attn_mask=~mask"


# ------------------------------------------------------------------------------------------- 4.3 causal_mask


def _causal_mask_mistakes(L: int, expected: torch.Tensor):
    ones = torch.ones(L, L, dtype=torch.bool)
    return [
        (
            lambda: ones.triu(0),
            "the diagonal is masked too: a position must see itself (triu with diagonal=1)",
        ),
        (
            lambda: ~expected,
            "True means NOT allowed here: mask the future (above the diagonal), not the past",
        ),
        (
            lambda: ones.tril(-1),
            "this is the transpose, it masks the past: rows are queries i, columns keys j; "
            "query i may not see keys j > i, above the diagonal",
        ),
        *(
            (
                lambda float_mask=float_mask: float_mask,
                "the mask must be boolean, True where query i may NOT see key j: create the "
                "ones with dtype=torch.bool (not a float mask of 0/1 or of 0/-inf)",
            )
            for float_mask in (
                expected.float(),
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


# ------------------------------------------------------------------------------------------- 4.4 split_heads


def _split_heads_mistakes(x: torch.Tensor, H: int):
    B, L, d_model = x.shape
    d_head = d_model // H
    return [
        (  # first: when L == H it gives what the next one gives
            lambda: x.reshape(B, H, L, d_head),
            "reshaping straight to (B, H, L, d_head) mixes positions into heads: "
            "view as (B, L, H, d_head), then transpose(1, 2)",
        ),
        (
            lambda: x.view(B, L, H, d_head),
            "this is (B, L, H, d_head); the heads go before the positions, (B, H, L, d_head): "
            "add transpose(1, 2)",
        ),
        (
            lambda: x.view(B, L, d_head, H).permute(0, 3, 1, 2),
            "each head takes one block of d_head neighbouring features, not every "
            "n_heads-th feature: view as (B, L, n_heads, d_head), in this order",
        ),
        (
            lambda: x.transpose(1, 2).reshape(B, H, L, d_head),
            "transpose after the view, not before: x.view(B, L, n_heads, d_head).transpose(1, 2); "
            "transposing first puts the features of one position in a column",
        ),
    ]


def _split_heads_cases() -> dict[str, Case]:
    cases = {}
    for name, (B, L, d_model, H) in {
        "B=2, L=5, d_model=8 into 2 heads": (2, 5, 8, 2),
        "B=1, L=3, d_model=12 into 3 heads": (1, 3, 12, 3),
    }.items():
        x = torch.arange(B * L * d_model, dtype=torch.float32).view(B, L, d_model)  # readable values
        cases[name] = Case((x, H))
    return cases


_SPLIT_HEADS_REPLACES = ("labutils.attention.MultiHeadAttention.split_heads",)


@exercise("04_attention.split_heads", "4.4", 1, _SPLIT_HEADS_REPLACES, cases=_split_heads_cases)
def split_heads(args: tuple, got) -> None:
    x, H = args
    expected = _attention.MultiHeadAttention(x.size(-1), H).split_heads(x)
    expect(
        got,
        expected,
        f"split_heads(x, {H})",
        mistakes=_split_heads_mistakes(x, H),
        hint="head h holds features h*d_head … (h+1)*d_head - 1 of every position",
    )


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


@hidden_test("04_attention.split_heads", "any number of heads, one included, gets its own block of features")
def any_heads(generator) -> Case:
    H, d_head = pick(generator, [1, integer(generator, 2, 6)]), integer(generator, 1, 5)
    x = torch.randn(integer(generator, 1, 3), integer(generator, 1, 7), H * d_head, generator=generator)
    return Case((x, H))
