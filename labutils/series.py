"""Fast truncated Taylor (and Laurent) series about x = 0, and their canonical printing.

``sympy.series`` is general and slow (tens to hundreds of milliseconds for one of our expressions). Our
expressions are sums, products, quotients and integer powers of ``f(k*x)`` with ``f`` one of seven
functions, so their series can be assembled from building blocks: the Taylor coefficients of each function
(computed once by sympy) and truncated arithmetic on coefficient lists. The coefficients are polynomials in
the symbols ``a b c …`` and their inverses, held in a sympy polynomial ring, which is much faster than
manipulating expression trees.

Anything outside that grammar raises :class:`UnsupportedExpression`; callers may then fall back to
``sympy.series``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy as sp
from sympy import QQ
from sympy.polys.rings import ring

from labutils.tokens import SOURCE_SYMBOLS

x = sp.Symbol("x")
ORDER = 6  # the series are written up to O(x**6)

SYMBOL_NAMES = SOURCE_SYMBOLS  # the coefficients' symbols, n included: sympy's series of sin(n*x) is written too
_INVERSE_NAMES = [f"inv_{s}" for s in SYMBOL_NAMES]
# Coefficients live in Q[a, …, n, 1/a, …, 1/n]: generator i + len(SYMBOL_NAMES) is the inverse of generator i.
_RING, *_GENS = ring(list(SYMBOL_NAMES) + _INVERSE_NAMES, QQ)
_N = len(SYMBOL_NAMES)
_GEN_OF = {sp.Symbol(s): g for s, g in zip(SYMBOL_NAMES, _GENS[:_N])}
_FROM_GEN = {sp.Symbol(s): sp.Symbol(s) for s in SYMBOL_NAMES} | {
    sp.Symbol(inv): 1 / sp.Symbol(s) for s, inv in zip(SYMBOL_NAMES, _INVERSE_NAMES)
}

FUNCTIONS = {
    sp.sin: "sin",
    sp.cos: "cos",
    sp.tan: "tan",
    sp.sinh: "sinh",
    sp.cosh: "cosh",
    sp.tanh: "tanh",
    sp.exp: "exp",
}


class UnsupportedExpression(ValueError):
    """The expression is outside what the fast series handles (use ``sympy.series`` instead)."""


class _NeedMorePrecision(Exception):
    """A denominator vanished to the working precision: retry with more terms."""


def _normalize(p):
    """Cancel ``s * inv_s`` in every monomial so that equal Laurent polynomials are equal ring elements."""
    if all(not any(m[i] and m[i + _N] for i in range(_N)) for m in p.keys()):
        return p
    terms = {}
    for monomial, c in p.terms():
        m = list(monomial)
        for i in range(_N):
            common = min(m[i], m[i + _N])
            m[i] -= common
            m[i + _N] -= common
        key = tuple(m)
        terms[key] = terms.get(key, 0) + c
    return _RING.from_dict({k: v for k, v in terms.items() if v})


def _inverse_monomial(p):
    """1/p for a ring element that is a single monomial, else UnsupportedExpression."""
    if len(p) != 1:
        raise UnsupportedExpression("division by a sum of symbols")
    ((monomial, c),) = p.terms()
    m = [0] * (2 * _N)
    for i in range(_N):
        m[i] = monomial[i + _N]
        m[i + _N] = monomial[i]
    return _RING.from_dict({tuple(m): 1 / c})


@dataclass
class Series:
    """``Σ coeffs[i] x**(val + i) + O(x**prec)``; coefficients are ring elements."""

    val: int
    coeffs: list
    prec: int

    @classmethod
    def constant(cls, c, prec: int) -> Series:
        return cls(0, [c], prec).trimmed()

    def trimmed(self) -> Series:
        """Drop known-zero leading and trailing coefficients (so ``val`` is the true valuation)."""
        coeffs = self.coeffs[: max(0, self.prec - self.val)]
        start = 0
        while start < len(coeffs) and not coeffs[start]:
            start += 1
        if start == len(coeffs):
            return Series(self.prec, [], self.prec)  # O(x**prec): nothing known to be non-zero
        end = len(coeffs)
        while not coeffs[end - 1]:
            end -= 1
        return Series(self.val + start, coeffs[start:end], self.prec)

    def coefficient(self, k: int):
        i = k - self.val
        return self.coeffs[i] if 0 <= i < len(self.coeffs) else _RING.zero

    def __add__(self, other: Series) -> Series:
        prec = min(self.prec, other.prec)
        val = min(self.val, other.val)
        coeffs = [self.coefficient(k) + other.coefficient(k) for k in range(val, prec)]
        return Series(val, coeffs, prec).trimmed()

    def __neg__(self) -> Series:
        return Series(self.val, [-c for c in self.coeffs], self.prec)

    def __mul__(self, other: Series) -> Series:
        if not self.coeffs or not other.coeffs:
            prec = min(self.prec + other.val, other.prec + self.val)
            return Series(prec, [], prec)
        prec = min(self.prec + other.val, other.prec + self.val)
        val = self.val + other.val
        n = prec - val
        coeffs = []
        for k in range(n):
            total = _RING.zero
            for i in range(max(0, k - len(other.coeffs) + 1), min(k + 1, len(self.coeffs))):
                total += self.coeffs[i] * other.coeffs[k - i]
            coeffs.append(_normalize(total))
        return Series(val, coeffs, prec).trimmed()

    def inverse(self) -> Series:
        """1/self, a Laurent series when self vanishes at x = 0."""
        if not self.coeffs:
            raise _NeedMorePrecision
        n = self.prec - self.val  # known coefficients of self / x**val
        b0_inv = _inverse_monomial(self.coeffs[0])
        d = [b0_inv]
        for k in range(1, n):
            total = _RING.zero
            for j in range(1, min(k, len(self.coeffs) - 1) + 1):
                total += self.coeffs[j] * d[k - j]
            d.append(_normalize(-b0_inv * total))
        return Series(-self.val, d, -self.val + n).trimmed()

    def __pow__(self, p: int) -> Series:
        if p < 0:
            return self.inverse() ** (-p)
        if p == 0:
            return Series.constant(_RING.one, self.prec)
        result = None
        base = self
        while p:  # binary powering
            if p & 1:
                result = base if result is None else result * base
            p >>= 1
            if p:
                base = base * base
        return result


@functools.cache
def _taylor_of_function(name: str, n: int) -> tuple:
    """The first ``n`` Taylor coefficients of ``name(y)`` about 0, as rationals (computed once by sympy)."""
    y = sp.Symbol("y")
    f = getattr(sp, name)
    expansion = sp.series(f(y), y, 0, n).removeO()
    return tuple(
        QQ.convert(expansion.coeff(y, k)) if k else QQ.convert(expansion.subs(y, 0)) for k in range(n)
    )


def _series(expr: sp.Expr, prec: int) -> Series:
    """The series of ``expr`` with absolute precision at most ``prec``."""
    if expr == x:
        return Series(1, [_RING.one], prec)
    if not expr.has(x):
        return Series.constant(_constant(expr), prec)
    if expr.is_Add:
        total = None
        for arg in expr.args:
            term = _series(arg, prec)
            total = term if total is None else total + term
        return total
    if expr.is_Mul:
        product = None
        for arg in expr.args:
            factor = _series(arg, prec)
            product = factor if product is None else product * factor
        return product
    if expr.is_Pow:
        base, exponent = expr.args
        if not exponent.is_Integer:
            raise UnsupportedExpression(f"non-integer power {exponent}")
        p = int(exponent)
        base_series = _series(base, prec)
        if p > 0 and base_series.val > 0:
            # base**p has valuation p*val: the base needs only prec - (p-1)*val terms.
            base_series = _series(base, prec - (p - 1) * base_series.val)
        elif p < 0 and base_series.val > 0:
            # 1/base**|p| loses 2*val*|p| orders of precision: ask for them up front.
            base_series = _series(base, prec + 2 * base_series.val * (-p) + base_series.val)
        return base_series**p
    if expr.func in FUNCTIONS and len(expr.args) == 1:
        return _compose(FUNCTIONS[expr.func], _series(expr.args[0], prec), prec)
    raise UnsupportedExpression(f"cannot expand {expr.func.__name__}")


def _constant(expr: sp.Expr):
    try:
        return _normalize(_RING.from_expr(expr))
    except Exception:  # sympy raises several kinds for things outside the ring
        pass
    numerator, denominator = sp.fraction(sp.together(expr))
    try:
        num = _RING.from_expr(sp.expand(numerator))
        den = _RING.from_expr(sp.expand(denominator))
    except Exception as error:
        raise UnsupportedExpression(f"constant {expr} is not a Laurent polynomial") from error
    return _normalize(num * _inverse_monomial(den))


def _compose(name: str, u: Series, prec: int) -> Series:
    """``name(u)`` for a series ``u`` that vanishes at 0."""
    if u.coeffs and u.val < 1:
        raise UnsupportedExpression(f"{name} of an argument that does not vanish at x = 0")
    prec = min(prec, u.prec)
    if not u.coeffs:
        return Series.constant(_RING(_taylor_of_function(name, 1)[0]), prec)
    n_terms = (prec - 1) // u.val + 1
    c = _taylor_of_function(name, n_terms)
    if len(u.coeffs) == 1:  # f(k*x**v): the common case, one power of k per term
        coeffs = [_RING.zero] * prec
        k_power = _RING.one
        for n in range(n_terms):
            if n * u.val < prec and c[n]:
                coeffs[n * u.val] = _normalize(k_power * c[n])
            k_power = _normalize(k_power * u.coeffs[0])
        return Series(0, coeffs, prec).trimmed()
    total = Series.constant(_RING(c[0]), prec)
    power = Series(0, [_RING.one], prec)
    for n in range(1, n_terms):
        power = power * u
        if c[n]:
            total = total + power * Series.constant(_RING(c[n]), prec)
    return total


def taylor_coefficients(expr: sp.Expr, order: int = ORDER) -> dict[int, sp.Expr]:
    """Coefficients ``{k: c_k}`` of the series of ``expr`` about x = 0, for k < ``order`` (negative k too).

    Raises :class:`UnsupportedExpression` for expressions outside the family's grammar.
    """
    prec = order + 2
    for _ in range(6):
        try:
            s = _series(expr, prec)
        except _NeedMorePrecision:
            prec += 4
            continue
        if s.prec >= order:
            return {k: _coefficient_expr(s.coefficient(k)) for k in range(s.val, order) if s.coefficient(k)}
        prec += order - s.prec
    raise UnsupportedExpression("the series did not reach the requested order")


def _coefficient_expr(c) -> sp.Expr:
    return sp.expand(c.as_expr().xreplace(_FROM_GEN))


def sympy_series_coefficients(expr: sp.Expr, order: int = ORDER) -> dict[int, sp.Expr]:
    """The same coefficients computed by ``sympy.series``: the reference the fast series is tested against."""
    expansion = sp.expand(sp.series(expr, x, 0, order).removeO())
    coeffs: dict[int, sp.Expr] = {}
    for term in sp.Add.make_args(expansion):
        c, k = term.as_coeff_exponent(x)
        coeffs[int(k)] = coeffs.get(int(k), 0) + c
    return {k: sp.expand(sp.cancel(c)) for k, c in sorted(coeffs.items()) if sp.expand(c) != 0}


def format_series(coeffs: dict[int, sp.Expr], order: int = ORDER) -> str:
    """The canonical printing: ascending powers, each term as sympy prints ``coeff*x**k``, then ``+O(x**6)``.

    >>> format_series({1: sp.Symbol("g") + sp.Symbol("h")})
    'x*(g+h)+O(x**6)'
    """
    text = ""
    for k in sorted(coeffs):
        term = str(sp.Mul(coeffs[k], x**k)).replace(" ", "")
        text += term if (not text or term.startswith("-")) else "+" + term
    big_o = f"O(x**{order})"
    return text + ("+" + big_o if text else big_o)


def series_text(expr: sp.Expr, order: int = ORDER) -> str:
    """The canonical series of ``expr``: the fast path, or ``sympy.series`` outside its grammar."""
    try:
        coeffs = taylor_coefficients(expr, order)
    except UnsupportedExpression:
        coeffs = sympy_series_coefficients(expr, order)
    return format_series(coeffs, order)
