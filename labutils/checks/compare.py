"""Comparisons for the judges: whether an answer's output is right, and if not, what is wrong with it.

Messages say what came back for a test input and where it is wrong (type, shape, dtype, the first wrong
entry), never the reference answer's output. A wrong result that equals what a typical mistake gives gets
that mistake's hint: ``mistakes`` are ``(make_result, hint)`` pairs, tried in order.
"""

from __future__ import annotations

import re

import torch


def number_text(x: float) -> str:
    return f"{x:g}"


def short(value, limit: int = 160) -> str:
    if isinstance(value, torch.Tensor):
        if value.numel() > 24:
            return f"tensor of shape {tuple(value.shape)}"
        value = value.tolist()
    if isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value):
        inner = ", ".join(short(v, limit) for v in value)
        text = f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
        return text if len(text) <= limit else text[: limit - 1] + "…"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def matches(got, expected, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    try:
        if isinstance(expected, torch.Tensor):
            if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
                return False
            if (expected.dtype == torch.bool) != (got.dtype == torch.bool):  # a float mask is its own mistake
                return False
            if expected.dtype == torch.bool:
                return bool(torch.equal(got, expected))
            return bool(torch.allclose(got.double(), expected.double(), rtol=rtol, atol=atol, equal_nan=True))
        return got == expected
    except Exception:
        return False


def diagnose(got, mistakes, atol: float = 1e-5, rtol: float = 1e-4) -> str | None:
    """The hint of the first known mistake whose result ``got`` equals, if any."""
    for make, hint in mistakes:
        try:
            candidate = make()
        except Exception:  # a mistake that cannot happen for this input
            continue
        if matches(got, candidate, atol, rtol):
            return hint
    return None


def expect(
    got,
    expected,
    what: str,
    hint: str = "",
    mistakes=(),
    atol: float = 1e-5,
    rtol: float = 1e-4,
    mistake_atol: float | None = None,
):
    """Fail with a specific message unless ``got`` equals ``expected`` (tensors: allclose; else ==).

    ``mistakes`` are ``(make_result, hint)`` pairs: if ``got`` equals a known wrong result (within
    ``mistake_atol``, default ``atol``), its hint is given, else ``hint``.
    """
    if got is None and expected is not None:
        fail(
            f"{what}: your function returned None. Hint: a function without a return statement returns "
            "None; return the result"
        )
    if isinstance(expected, torch.Tensor):
        problem = tensor_problem(got, expected, atol, rtol)
    else:
        problem = value_problem(got, expected)
    if problem is None:
        return
    hint = diagnose(got, mistakes, atol if mistake_atol is None else mistake_atol, rtol) or hint
    fail(f"{what}: {problem}" + (f". Hint: {hint}" if hint else ""))


def fail(message: str):
    raise AssertionError(message)


def tensor_problem(got, expected: torch.Tensor, atol: float, rtol: float) -> str | None:
    """What is wrong with ``got``: its type, shape or dtype, else where it differs (never the right values)."""
    if not isinstance(got, torch.Tensor):
        return f"expected a tensor of shape {tuple(expected.shape)}, got {type(got).__name__} {short(got)}"
    if got.shape != expected.shape:
        return f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
    if expected.dtype == torch.bool:
        if got.dtype != torch.bool:
            return f"expected a boolean tensor (True/False), got dtype {got.dtype}"
        wrong = got != expected
        if not wrong.any():
            return None
        i = tuple(wrong.nonzero()[0].tolist())
        return (
            f"{int(wrong.sum())} of {wrong.numel()} entries are wrong; the first at index {i}, where you have "
            f"{bool(got[i])}" + yours(got)
        )
    if expected.is_floating_point() and not got.is_floating_point():
        return f"expected a floating-point tensor, got dtype {got.dtype}"
    g, e = got.detach().double().cpu(), expected.detach().double().cpu()
    if torch.isnan(g).any() and not torch.isnan(e).any():
        i = tuple(torch.isnan(g).nonzero()[0].tolist())
        return f"the result contains NaN (first at index {i})"
    wrong = ~torch.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    if not wrong.any():
        return None
    if e.dim() == 0:
        return f"got {g.item():.5g}, which is too {'high' if g > e else 'low'}"
    i = tuple(wrong.nonzero()[0].tolist())
    return (
        f"{int(wrong.sum())} of {wrong.numel()} values are wrong; the first at index {i}, where you have "
        f"{g[i].item():.5g} (too {'high' if g[i] > e[i] else 'low'})" + yours(g)
    )


def yours(got: torch.Tensor) -> str:
    """The student's tensor in full, when it is small enough to read."""
    if got.numel() > 24:
        return ""
    values = got.tolist() if got.dtype == torch.bool else got.double().round(decimals=4).tolist()
    return f" (you returned {values})"


def value_problem(got, expected) -> str | None:
    """What is wrong with ``got`` (a dict, list or plain value), without giving the right answer away."""
    if got == expected:
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"expected a dict, got {type(got).__name__} {short(got)}"
        for key, value in expected.items():
            if key not in got:
                return f"{key!r} is missing"
            if got[key] != value:
                return f"{key!r} has code {got[key]!r}, which is not its place in the vocabulary"
        extra = next((k for k in got if k not in expected), None)
        return f"{extra!r} should not be in it" if extra is not None else "the codes are not right"
    if isinstance(expected, list):
        if isinstance(got, torch.Tensor):
            got = got.tolist()
        if not isinstance(got, (list, tuple)):
            return f"expected a list, got {type(got).__name__} {short(got)}"
        got = list(got)
        if got == expected:
            return None
        i = next(
            (i for i, (g, e) in enumerate(zip(got, expected, strict=False)) if g != e),
            min(len(got), len(expected)),
        )
        if len(got) != len(expected):  # said first: a wrong length explains the items that follow
            items = f"{len(got)} item{'' if len(got) == 1 else 's'}"
            return f"you returned {short(got)}: {items}, where {len(expected)} are wanted"
        return f"you returned {short(got)}; the first wrong item is at position {i}: {got[i]!r}"
    return f"you returned {short(got)}, which is not right"


def pair(got, what: str) -> tuple:
    if not isinstance(got, tuple) or len(got) != 2:
        fail(f"{what} should return a pair (out, weights), got {type(got).__name__} {short(got)}")
    return got


_BROADCAST = re.compile(r"size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\)")


def broadcast_sizes(error: str) -> tuple[int, int] | None:
    """The two sizes that did not match in a broadcast error's description, or None if it is not one."""
    found = _BROADCAST.search(error)
    return (int(found.group(1)), int(found.group(2))) if found else None


def answer_line(error: str) -> str:
    """The line of the answer that raised, as an exception's description quotes it (else "")."""
    found = re.search(r"`(.*)`\)$", error)
    return found.group(1) if found else ""
