"""Checks of notebook 04, multi-head attention: ``split_heads`` (4.4), ``multi_head_attention`` (4.5)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch

from labutils import attention as _attention
from labutils.checks.attention import attention_pair
from labutils.checks.compare import broadcast_sizes, expect
from labutils.checks.core import Case, exercise, fresh, hidden_test, integer, pick, randn

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


_VIEW_HINT = (
    "view never moves values: it reads them in the order they sit in memory, and a transpose changed that "
    "order without moving them. Cut each position's features into heads while the features are still "
    "the last axis, then move the head axis"
)


def _explain_split(args: tuple, error: str) -> str | None:
    return _VIEW_HINT if "view size is not compatible" in error else None


@exercise(
    "04_attention.split_heads",
    "4.4",
    1,
    _SPLIT_HEADS_REPLACES,
    cases=_split_heads_cases,
    explain=_explain_split,
)
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
    if mask is not None and mistake.get("pad_shape") == "(B, 1, Lk)":
        full = mask[:, None, :]  # lined up from the last axis: its batch axis falls on the heads
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
            weights_of(pad_shape="(B, 1, Lk)"),
            "the padding mask was (B, 1, Lk): a mask lines up with the scores (B, H, Lq, Lk) from the last "
            "axis, so its batch axis fell on the heads' and head h got the mask of sequence h; it needs an "
            "axis of size one for the heads and one for the queries",
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
        "self-attention with padding, 2 heads for 2 sequences": (
            _attention.MultiHeadAttention(8, 2),
            *(randn(2, 6, 8, seed=65),) * 3,
            pad,
        ),
    }
    return {name: Case(args, call=_on_a_copy) for name, args in cases.items()}


_MULTI_HEAD_REPLACES = ("labutils.attention.MultiHeadAttention.forward",)


def _explain_multi_head(args: tuple, error: str) -> str | None:
    """The exceptions of typical mistakes: the method's arguments, a view after a transpose, a mask's shape."""
    mha, query, key, _, mask = args
    if "split_heads() takes 2 positional arguments" in error:
        return (
            "the module's split_heads takes the tensor only: the module knows its own number of heads "
            "(your split_heads of exercise 4.4 takes it as an argument)"
        )
    if "view size is not compatible" in error:
        return _VIEW_HINT.replace("Cut each position's features into heads", "Join the heads").replace(
            "while the features are still the last axis, then move the head axis",
            "after the head axis is back beside the features, with an operation that may copy values",
        )
    sizes = broadcast_sizes(error)
    if sizes is None:
        return None
    B, Lq, Lk, H = query.size(0), query.size(1), key.size(1), mha.n_heads
    if Lq != Lk and set(sizes) == {Lq, Lk}:
        return (
            f"{Lq} and {Lk} did not match: the keys and values come from the key and value inputs "
            f"(Lk = {Lk} here), the queries from the query input (Lq = {Lq}); the scores have one row per "
            "query and one column per key"
        )
    if mask is not None:
        return (
            f"the padding mask {tuple(mask.shape)}, (B, Lk), must broadcast against the scores of every head, "
            f"(B, H, Lq, Lk) = {(B, H, Lq, Lk)}: a mask lines up with them from the last axis, so it needs "
            "an axis of size one for the heads and one for the queries"
        )
    return None


@exercise(
    "04_attention.multi_head_attention",
    "4.5",
    2,
    _MULTI_HEAD_REPLACES,
    cases=_multi_head_cases,
    explain=_explain_multi_head,
)
def multi_head_attention(args: tuple, got) -> str:
    mha, query, key, value, mask = args
    reference = _attention.MultiHeadAttention(mha.d_model, mha.n_heads).eval()
    reference.load_state_dict(mha.state_dict())  # the package's module, with the same (copied) weights
    out, weights = reference(query, key, value, mask, need_weights=True)
    got_out, got_weights = attention_pair(got, out, weights, "multi_head_attention")
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
