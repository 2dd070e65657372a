"""Checks of notebook 04, attention: ``attention`` (4.1), ``masked_attention`` (4.2), ``causal_mask`` (4.3),
``split_heads`` (4.4), ``multi_head_attention`` (4.5)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from labutils import attention as _attention
from labutils.checks.compare import expect, fail, matches, pair
from labutils.checks.core import Case, exercise, fresh, hidden_test, integer, pick, randn

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


def _attention_pair(got, out: torch.Tensor, weights: torch.Tensor, what: str) -> tuple:
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


@exercise("04_attention.masked_attention", "4.2", 2, _ATTENTION_REPLACES, cases=_masked_attention_cases)
def masked_attention(args: tuple, got) -> str:
    Q, K, V, mask = args
    out, weights = _attention.scaled_dot_product_attention(Q, K, V, mask)
    got_out, got_weights = _attention_pair(got, out, weights, "masked_attention")
    expect(got_weights, weights, "weights", mistakes=_masked_attention_mistakes(Q, K, V, mask))
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


# ------------------------------------------------------------------------------------------- 4.4 split_heads


def _split_heads_mistakes(x: torch.Tensor, H: int):
    B, L, d_model = x.shape
    d_head = d_model // H
    return [
        (  # first: when L == H it gives what the next one gives
            lambda: x.reshape(B, H, L, d_head),
            "positions were mixed into heads: a reshape keeps the order of the values, so cutting "
            "straight to (B, H, L, d_head) gives head 0 the first positions, not the first features of "
            "every position. Cut each position's features into heads first, then move the head axis",
        ),
        (
            lambda: x.view(B, L, H, d_head),
            "this is (B, L, H, d_head), the heads after the positions: the heads go before the "
            "positions, (B, H, L, d_head)",
        ),
        (
            lambda: x.view(B, L, d_head, H).permute(0, 3, 1, 2),
            "each head took every H-th feature; head h holds one block of d_head neighbouring "
            "features, h*d_head … (h+1)*d_head - 1",
        ),
        (
            lambda: x.transpose(1, 2).reshape(B, H, L, d_head),
            "the axes were swapped before the features were cut into heads, so a head holds a mix of "
            "positions: cut each position's features first, swap the axes after",
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


# ---------------------------------------------------------------------------------- 4.5 multi_head_attention


def _heads_of(mha: _attention.MultiHeadAttention, query, key, value, mask=None, **mistake):
    """Multi-head attention with ``mha``'s weights and one typical mistake switched on (defaults: right).

    ``merge="no transpose"`` joins the heads without moving the head axis back; ``out_proj=False`` leaves
    the output projection out; ``masked=False`` ignores the mask; ``values="key"`` takes the values from
    the key input; ``scale="d_model"`` scales the scores by √d_model.
    """
    B, Lq, d_model = query.shape
    Q = mha.split_heads(mha.q_proj(query))  # (B, H, Lq, d_head)
    K = mha.split_heads(mha.k_proj(key))  # (B, H, Lk, d_head)
    V = mha.split_heads(mha.v_proj(key if mistake.get("values") == "key" else value))
    if mistake.get("scale") == "d_model":
        Q = Q * math.sqrt(mha.d_head / d_model)  # as if the scores were divided by √d_model
    full = mask[:, None, None, :] if mask is not None and mistake.get("masked", True) else None
    heads, weights = _attention.scaled_dot_product_attention(Q, K, V, full)  # (B, H, Lq, d_head)
    if mistake.get("merge") == "no transpose":
        joined = heads.reshape(B, Lq, d_model)
    else:
        joined = heads.transpose(1, 2).reshape(B, Lq, d_model)  # (B, Lq, d_model)
    out = mha.out_proj(joined) if mistake.get("out_proj", True) else joined
    return out, weights


def _multi_head_mistakes(mha, query, key, value, mask):
    def out_of(**mistake):
        return lambda: _heads_of(mha, query, key, value, mask, **mistake)[0]

    def weights_of(**mistake):
        return lambda: _heads_of(mha, query, key, value, mask, **mistake)[1]

    weights = [
        (
            lambda: _heads_of(mha, query, key, value, mask)[1].mean(dim=1),
            "the weights were averaged over the heads: each head has a map of its own, (B, H, Lq, Lk)",
        ),
        (
            weights_of(masked=False),
            "no key was masked: the padding mask (B, Lk) must reach every head and every query, which "
            "takes two more axes, (B, 1, 1, Lk)",
        ),
        (
            weights_of(scale="d_model"),
            "the scores were scaled by √d_model; each head attends in d_head = d_model / H dimensions, "
            "so its scale is √d_head",
        ),
    ]
    outs = [
        (
            out_of(merge="no transpose"),
            "the heads were joined in the wrong order: before they are put side by side again, the "
            "head axis goes back after the positions, the reverse of the split",
        ),
        (
            out_of(out_proj=False),
            "the heads' outputs were joined but not mixed: the last step is the output projection W^O "
            "(out_proj)",
        ),
        (
            out_of(values="key"),
            "the values were computed from the key input: V comes from the value input",
        ),
    ]
    return weights, outs


def _on_a_copy(answer: Callable, args: tuple):
    """The answer run on a copy of the module: the check's own stays as the cases made it."""
    mha, *inputs = args
    return answer(copy.deepcopy(mha), *fresh(tuple(inputs)))


def _multi_head_cases() -> dict[str, Case]:
    pad = torch.tensor([[False] * 6, [False, False, False, False, True, True]])  # (B, Lk)
    x = randn(2, 5, 8, seed=60)
    cases = {
        "self-attention, 2 heads, no mask": (_attention.MultiHeadAttention(8, 2), x, x, x, None),
        "cross-attention, 4 heads, keys and values of another length, padding mask": (
            _attention.MultiHeadAttention(16, 4),
            randn(2, 3, 16, seed=61),
            randn(2, 6, 16, seed=62),
            randn(2, 6, 16, seed=63),
            pad,
        ),
        "self-attention with padding, 4 heads": (
            _attention.MultiHeadAttention(16, 4),
            *(randn(2, 6, 16, seed=64),) * 3,
            pad,
        ),
    }
    return {name: Case(args, call=_on_a_copy) for name, args in cases.items()}


_MULTI_HEAD_REPLACES = ("labutils.attention.MultiHeadAttention.forward",)


@exercise("04_attention.multi_head_attention", "4.5", 2, _MULTI_HEAD_REPLACES, cases=_multi_head_cases)
def multi_head_attention(args: tuple, got) -> str:
    mha, query, key, value, mask = args
    reference = _attention.MultiHeadAttention(mha.d_model, mha.n_heads).eval()
    reference.load_state_dict(mha.state_dict())  # the package's module, with the same (copied) weights
    out, weights = reference(query, key, value, mask, need_weights=True)
    got_out, got_weights = _attention_pair(got, out, weights, "multi_head_attention")
    weight_mistakes, out_mistakes = _multi_head_mistakes(mha, query, key, value, mask)
    expect(got_weights, weights, "weights (B, H, Lq, Lk)", mistakes=weight_mistakes)
    expect(
        got_out,
        out,
        "out (compared with MultiHeadAttention's)",
        mistakes=out_mistakes,
        hint="the weights are right but out is not: each head's output is its weights times its values, "
        "then the heads are joined and mixed by the output projection",
    )
    return f"equal to MultiHeadAttention({mha.d_model}, {mha.n_heads}) with the same weights"


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


@hidden_test(
    "04_attention.multi_head_attention",
    "any number of heads, lengths and padding give the module's output and per-head weights",
)
def any_heads_and_padding(generator) -> Case:
    H, d_head = pick(generator, [1, 2, 4, 8]), integer(generator, 1, 4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(integer(generator, 0, 2**31))
        mha = _attention.MultiHeadAttention(H * d_head, H)
    B, Lq, Lk = integer(generator, 1, 3), integer(generator, 1, 6), integer(generator, 1, 7)
    query, key, value = (torch.randn(B, L, H * d_head, generator=generator) for L in (Lq, Lk, Lk))
    lengths = torch.tensor([integer(generator, 1, Lk) for _ in range(B)])
    pad = torch.arange(Lk)[None, :] >= lengths[:, None]  # (B, Lk): never a whole row
    return Case((mha, query, key, value, pick(generator, [None, pad])), call=_on_a_copy)
