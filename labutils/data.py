"""The course task's data: expressions of the family and their Taylor series, and the shipped data set.

An expression is one *term* ``f(k*x)`` or ``f(k*x)**p``, or two terms joined by ``+ - * /``, where k is a
symbol (``a b c d f g h m``), a symbol times 2 or 3, or a whole number 1 to 5 (``sin(x)``, ``exp(2*x)``); it is
built with sympy and simplified with ``sympy.simplify``, and its source string is sympy's printing without
spaces.
Its target is the series about x = 0 up to ``O(x**6)`` (Laurent where a quotient needs it), printed
canonically by :func:`labutils.series.format_series`.

One idea, the family, in its sections: drawing a member, reading what a person types and deciding whether
it is a member (:func:`outside_family`), generating pairs, and the shipped data set's files and splits. Each
section uses the one above, so they stay together.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import itertools
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import sympy as sp

from labutils.files import atomic_write
from labutils.series import ORDER, UnsupportedExpression, series_text, taylor_coefficients, x
from labutils.series import format_series as format_series
from labutils.tokens import (
    SOURCE_SYMBOLS,
    SOURCE_VOCAB,
    SYMBOLS,
    TARGET_VOCAB,
    VARIABLE,
    TokenizationError,
    tokenize,
)

# ------------------------------------------------------------------------------------- the family

FUNCTION_NAMES = ("sin", "cos", "tan", "sinh", "cosh", "tanh", "exp")
OPERATORS = "+-*/"
P_SINGLE_TERM = 0.1  # share of expressions with a single term
P_POWER = 0.25  # share of function occurrences raised to a power (2 or 3)
P_MULTIPLIER = 0.05  # share of symbolic arguments k*x multiplied by 2 or 3
P_NUMBER = 0.4  # share of arguments n*x with a whole number n instead of a symbol
NUMBERS = (1, 2, 3, 4, 5)
P_SAME_SYMBOL = 0.35  # share of two symbolic terms made to share their symbol (besides chance)
SPLITS = ("train", "validation", "test", "structures")

_PLACEHOLDERS = (sp.Symbol("a"), sp.Symbol("b"))


@dataclass(frozen=True)
class Term:
    """``function(multiplier*k*x)**power`` where k is the term's symbol slot (0 or 1), or 1 if ``slot`` is None."""

    function: str
    multiplier: int = 1
    power: int = 1
    slot: int | None = 0


@dataclass(frozen=True)
class Draw:
    """One random member of the family: its shape (terms, operator) and the symbols filling the slots."""

    terms: tuple[Term, ...]
    operator: str | None
    symbols: tuple[str, ...]

    @property
    def shape(self) -> tuple:
        """Everything but the symbol names: draws of one shape simplify the same way."""
        return (self.terms, self.operator)


def draw(rng: random.Random, shared: bool = False) -> Draw:
    """Draw one expression of the family.

    ``shared`` draws only from its hardest part, where coefficients must be combined: two terms on the same
    symbol, a third of their arguments multiplied by 2 or 3 (``sin(2*b*x)+sinh(b*x)``).
    """
    n_terms = 2 if shared else 1 if rng.random() < P_SINGLE_TERM else 2
    symbols: list[str] = []
    terms = []
    for _ in range(n_terms):
        function = rng.choice(FUNCTION_NAMES)
        power = rng.choice((2, 3)) if rng.random() < P_POWER else 1
        if not shared and rng.random() < P_NUMBER:
            terms.append(Term(function, rng.choice(NUMBERS), power, slot=None))
            continue
        same = symbols and (shared or rng.random() < P_SAME_SYMBOL)
        symbol = symbols[0] if same else rng.choice(SYMBOLS)
        if symbol not in symbols:
            symbols.append(symbol)
        multiplier = rng.choice((2, 3)) if rng.random() < (1 / 3 if shared else P_MULTIPLIER) else 1
        terms.append(Term(function, multiplier, power, symbols.index(symbol)))
    operator = rng.choice(OPERATORS) if n_terms == 2 else None
    return Draw(tuple(terms), operator, tuple(symbols))


def _build(terms: Sequence[Term], operator: str | None) -> sp.Expr:
    parts = [getattr(sp, t.function)(t.multiplier * _slot(t.slot) * x) ** t.power for t in terms]
    if operator is None:
        return parts[0]
    left, right = parts
    return {"+": left + right, "-": left - right, "*": left * right, "/": left / right}[operator]


def _slot(slot: int | None) -> sp.Expr:
    return sp.Integer(1) if slot is None else _PLACEHOLDERS[slot]


@functools.cache
def _simplified_shape(shape: tuple, typed: bool = False) -> tuple[sp.Expr, str | None]:
    """The simplified (or, ``typed``, the unsimplified) expression of a shape (symbols a, b) and its canonical
    series coefficients, computed once."""
    expr = _build(*shape) if typed else sp.simplify(_build(*shape))
    if not expr.has(x):
        return expr, None
    try:
        coeffs = taylor_coefficients(expr)
    except UnsupportedExpression:
        return expr, None
    # Renaming the symbols keeps a coefficient canonical only if its denominator is a monomial.
    if any(len(sp.Add.make_args(sp.denom(c))) > 1 for c in coeffs.values()):
        return expr, None
    return expr, coeffs


def simplified(d: Draw) -> sp.Expr:
    """The draw built with sympy and simplified (symbols renamed after ``simplify`` of the shape)."""
    expr, _ = _simplified_shape(d.shape)
    return expr.xreplace(_renaming(d))


def _renaming(d: Draw) -> dict:
    return {p: sp.Symbol(s) for p, s in zip(_PLACEHOLDERS, d.symbols)}


class Rejected(Exception):
    """A candidate pair that is not part of the data set (the reason is counted)."""


def pair_of(d: Draw, typed: bool = False) -> tuple[str, str]:
    """The (source, target) pair of a draw, or :class:`Rejected` with the reason.

    The source is the draw simplified by ``sympy.simplify``, or with ``typed`` the draw as a student types
    it (``sin(x)*cos(x)``, not ``sin(2*x)/2``): what sympy reads of it, unsimplified.
    """
    renaming = _renaming(d)
    expr, coeffs = _simplified_shape(d.shape, typed)
    expr = expr.xreplace(renaming)
    if not expr.has(x):
        raise Rejected("does not depend on x")
    source = expression_text(expr)
    _check_vocabulary(source, SOURCE_VOCAB, "source")
    if coeffs is None:
        target = series_text(expr)
    else:
        target = format_series({k: c.xreplace(renaming) for k, c in coeffs.items()})
    _check_vocabulary(target, TARGET_VOCAB, "target")
    return source, target


def _check_vocabulary(text: str, vocab, side: str) -> None:
    try:
        vocab.encode(tokenize(text))
    except TokenizationError as error:
        raise Rejected(f"{side} outside the vocabulary") from error


def expression_text(expr: sp.Expr) -> str:
    """How the data set prints an expression: sympy's printing without spaces."""
    return str(expr).replace(" ", "")


def structure(source: str | sp.Expr) -> str:
    """The expression with its symbols renamed canonically: the smallest printing over all renamings.

    ``tan(h*x)+sinh(g*x)`` and ``tan(a*x)+sinh(b*x)`` share a structure. Taking the minimum over renamings
    keeps sympy's name-dependent order of terms from giving one structure two names.
    """
    expr = parse_expression(source) if isinstance(source, str) else source
    symbols = sorted((s for s in expr.free_symbols if s != x), key=str)
    names = [sp.Symbol(c) for c in SYMBOLS[: len(symbols)]]
    return min(
        expression_text(expr.xreplace(dict(zip(symbols, perm)))) for perm in itertools.permutations(names)
    )


# ------------------------------------------------------------------------------------- reading expressions

#: The names an expression may use, for sympy's parser.
SYMPY_NAMES = {name: sp.Symbol(name) for name in SOURCE_SYMBOLS + VARIABLE} | {
    name: getattr(sp, name) for name in FUNCTION_NAMES
}
#: What sympy's parser needs besides: nothing else of sympy's namespace is reachable from the input.
SYMPY_GLOBALS = {"Integer": sp.Integer, "Rational": sp.Rational, "Symbol": sp.Symbol, "Float": sp.Float}


def parse_expression(text: str) -> sp.Expr:
    """Read an expression written with the lab's tokens; implicit multiplication is allowed (``tan(hx)``).

    A run of letters is one function name, or symbols and ``x`` one by one (``hx`` is ``h*x``); anything
    else (``atan``, ``sina``, ``log``, ``sqrt``) is refused rather than read another way, and so is a function
    name without its parenthesis (``sin a x``). Raises :class:`TokenizationError` (unknown character or name,
    unbalanced parentheses, tokens outside the source vocabulary) or ``ValueError`` (text that is not an
    expression) with a one-line message.
    """
    _check_names(text)
    tokens = tokenize(text)
    SOURCE_VOCAB.encode(tokens)
    explicit = []
    for token in tokens:
        if explicit and _ends_operand(explicit[-1]) and _starts_operand(token, explicit[-1]):
            explicit.append("*")
        explicit.append(token)
    try:
        expr = sp.parse_expr(
            "".join(explicit), local_dict=dict(SYMPY_NAMES), global_dict=dict(SYMPY_GLOBALS), evaluate=True
        )
    except Exception as error:  # sympy raises SyntaxError, TypeError, TokenError … for malformed input
        raise ValueError(f"cannot read {text!r} as an expression") from error
    if not isinstance(expr, sp.Expr) or expr.has(sp.zoo, sp.nan, sp.oo):
        raise ValueError(f"cannot read {text!r} as an expression")
    return expr


_LETTERS = re.compile(r"[A-Za-z_]+")
_FUNCTION_LIST = ", ".join(FUNCTION_NAMES)


def _check_names(text: str) -> None:
    """Refuse a run of letters that is neither a function name nor symbols, and a function without ``(``."""
    for run in _LETTERS.finditer(text if isinstance(text, str) else ""):
        name, position = run.group(), run.start()
        if name in FUNCTION_NAMES:
            rest = text[run.end() :].lstrip()
            if not rest.startswith("("):
                raise TokenizationError(
                    f"function {name!r} at position {position} in {text!r} needs its argument in "
                    f"parentheses, as in {name}(a*x)"
                )
        elif not set(name) <= set(SYMPY_NAMES):
            raise TokenizationError(
                f"{name!r} at position {position} in {text!r} is not a function or symbol of the lab; "
                f"the functions are {_FUNCTION_LIST}"
            )


def _ends_operand(token: str) -> bool:
    return token == ")" or token.isalnum() and token not in FUNCTION_NAMES


def _starts_operand(token: str, previous: str) -> bool:
    if token.isdigit() and previous.isdigit():
        return False  # digits of one number
    return token == "(" or token.isalnum()


def outside_family(expr: sp.Expr) -> str | None:
    """Why an expression is outside the family the model was trained on, or None if it is inside.

    Inside: what the generator draws, as a student types it (one term ``f(k*x)**p``, two joined by
    ``+ - * /``, k a symbol, 2 or 3 times a symbol, or a whole number 1 to 5, at most two symbols), or a
    source of the shipped data set (``sympy.simplify`` rewrites some draws: ``cosh(d*x)**2-1-sinh(b*x)``).
    The command line, the explorer and the figures all ask this one function.
    """
    if expression_text(expr) in _shipped_sources():
        return None
    reasons = []
    symbols = sorted(str(s) for s in expr.free_symbols - {x})
    if "n" in symbols:
        reasons.append("it uses the symbol n, which no series of the lab is written with")
    if len(symbols) > 2:
        reasons.append(f"it has {len(symbols)} symbols ({', '.join(symbols)}); the family has at most two")
    terms = sp.Add.make_args(expr)
    if len(terms) > 2:
        reasons.append(f"it has {len(terms)} terms; the family joins at most two")
    factors = [factor for term in terms for factor in sp.Mul.make_args(term)]
    n_functions = sum(1 for factor in factors if factor.has(x))
    if n_functions > 2:
        reasons.append(f"it has {n_functions} function factors; the family has at most two")
    for term in terms:
        if not term.has(x):
            reasons.append(f"the term {expression_text(term)} holds no function of x")
            continue
        number, _ = term.as_coeff_Mul()
        # a - b reads as -b + a, and a + a as 2*a
        if number != 1 and not (number == -1 and len(terms) == 2 or number == 2 and len(terms) == 1):
            reasons.append(f"the factor {expression_text(number)} stands outside the functions")
    for factor in factors:
        if not factor.has(x):
            continue
        base, power = (factor, sp.Integer(1)) if factor.func == sp.exp else factor.as_base_exp()
        if base == x:
            reasons.append("x stands outside the functions")
        elif base.func.__name__ not in FUNCTION_NAMES or len(base.args) != 1:
            reasons.append(f"{expression_text(factor)} is not a function of the family")
        else:
            largest = 3 if n_functions > 1 else 6  # sympy reads sin(x)**3*sin(x)**3 as sin(x)**6
            if not (power.is_Integer and 1 <= abs(power) <= largest):
                reasons.append(
                    f"the power {power} of {expression_text(base)}; the family's powers are 2 and 3"
                )
            k = sp.cancel(base.args[0] / x)
            if k.has(sp.Symbol("n")):
                continue  # said once above
            if k.has(x) or not _family_coefficient(k, exp=base.func == sp.exp):
                reasons.append(
                    f"the argument {expression_text(base.args[0])} of {base.func.__name__}; the family's "
                    "arguments are k*x with k a symbol, 2 or 3 times a symbol, or a whole number 1 to 5"
                )
    unique = list(dict.fromkeys(reasons))
    return "; ".join(unique) if unique else None


def _family_coefficient(k: sp.Expr, exp: bool) -> bool:
    """k of an argument k*x: a whole number 1 to 5, or 1, 2 or 3 times a symbol.

    sympy folds powers and products of exp into one exp as it reads them (``exp(4*x)**3`` is ``exp(12*x)``,
    ``exp(2*x)/exp(3*x)**3`` is ``exp(-7*x)``, ``exp(a*x)/exp(2*x)`` is ``exp(x*(a-2))``): there k is a sum
    of at most two parts, each a whole number or a whole multiple of a symbol, as large as two terms with
    powers up to 3 can make them.
    """
    if not exp:
        number, rest = k.as_coeff_Mul()
        return number in NUMBERS if rest == 1 else number in (1, 2, 3) and str(rest) in SYMBOLS
    parts = sp.Add.make_args(sp.expand(k))
    largest = {True: 2 * max(NUMBERS) * 3, False: 2 * 3 * 3}  # whole number, multiple of a symbol
    for part in parts:
        number, rest = part.as_coeff_Mul()
        if not (number.is_Integer and (rest == 1 or str(rest) in SYMBOLS)):
            return False
        if not 1 <= abs(number) <= largest[rest == 1]:
            return False
    return len(parts) <= 2


@functools.cache
def _shipped_sources() -> frozenset[str]:
    try:
        return frozenset(source for split in SPLITS for source, _ in _load_split(split))
    except FileNotFoundError:
        return frozenset()


def normalize(text: str) -> str:
    """An expression as the data set prints it (``tan(hx)+sinh(gx)`` → ``tan(h*x)+sinh(g*x)``)."""
    return expression_text(parse_expression(text))


def simplest_sources() -> list[str]:
    """The first things a student types, as the reader prints them: every ``f(k*x)`` and ``f(k*x)**p`` with
    k 1 to 5 and p 2 or 3, and the sums, differences, products and quotients of two such terms with k 1 or 2
    (sympy's reading merges some: ``sin(x)+cos(x)`` and ``cos(x)+sin(x)``; those without x, like
    ``sin(x)/sin(x)``, are left out)."""

    def terms(ks: Sequence[int]) -> list[sp.Expr]:
        return [getattr(sp, f)(k * x) ** p for f in FUNCTION_NAMES for k in ks for p in (1, 2, 3)]

    combine = {"+": sp.Add, "-": lambda u, v: u - v, "*": sp.Mul, "/": lambda u, v: u / v}
    exprs = terms(NUMBERS) + [
        combine[op](u, v) for u in terms((1, 2)) for v in terms((1, 2)) for op in OPERATORS
    ]
    return sorted({expression_text(e) for e in exprs if e.has(x)})


# ------------------------------------------------------------------------------------- generation


def candidate(seed: int, index: int, shared: bool = False) -> Draw:
    """Candidate ``index`` of a run with ``seed``: drawn from a generator seeded by both, so any worker can make it."""
    return draw(random.Random(f"labutils:{seed}:{index}"), shared)


def _make(seed: int, index: int, typed: bool = False, shared: bool = False) -> tuple[str, str]:
    return pair_of(candidate(seed, index, shared), typed)


def _target_of_source(text: str) -> tuple[str, str]:
    expr = parse_expression(text)
    return expression_text(expr), series_text(expr)


@dataclass
class Report:
    """What a generation run did: pairs made, and candidates dropped, by reason."""

    made: int = 0
    dropped: Counter = field(default_factory=Counter)

    def __str__(self) -> str:
        drops = ", ".join(f"{n} {reason}" for reason, n in self.dropped.most_common()) or "none"
        return f"{self.made} pairs; dropped: {drops}"


def generate_pairs(
    n: int,
    seed: int,
    workers: int = 1,
    timeout: float = 30.0,
    progress: Callable[[int], None] | None = None,
    typed: bool = False,
    shared: bool = False,
) -> tuple[list[tuple[str, str]], Report]:
    """``n`` unique pairs (by source), the same for any number of workers.

    Candidates are numbered; candidate i is drawn from a generator seeded by (seed, i) and accepted in
    index order, so the result does not depend on which worker computed what. Each candidate gets
    ``timeout`` seconds; a time-out is counted, never fatal. ``typed``: sources as a student types them,
    not simplified (:func:`pair_of`); ``shared``: only pairs of terms on one symbol (:func:`draw`).
    """
    if n < 1:
        raise ValueError("the number of pairs must be at least 1")
    from labutils.pool import TimedPool

    report = Report()
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    with TimedPool(workers, timeout) as pool:
        for outcome in pool.map_ordered(
            _make, ((seed, i, typed, shared) for i in itertools.count()), key=_shape_key(seed, shared)
        ):
            if outcome.error is not None:
                report.dropped[outcome.error] += 1
                continue
            source, target = outcome.value
            if source in seen:
                report.dropped["duplicate"] += 1
                continue
            seen.add(source)
            pairs.append((source, target))
            report.made += 1
            if progress:
                progress(1)
            if len(pairs) == n:
                break
    return pairs, report


def _shape_key(seed: int, shared: bool = False) -> Callable[[tuple], int]:
    """Send candidates of one shape to one worker, so each worker simplifies a shape once."""

    def key(arguments: tuple) -> int:
        digest = hashlib.blake2b(
            repr(candidate(*arguments[:2], shared).shape).encode(), digest_size=8
        ).digest()
        return int.from_bytes(digest, "big")

    return key


def pairs_for_sources(
    sources: Sequence[str], workers: int = 1, timeout: float = 30.0, progress=None
) -> list[tuple[int, str | None, str | None, str | None]]:
    """Targets for given sources: ``(line, source, target, error)`` for each, in order."""
    from labutils.pool import TimedPool

    results = []
    with TimedPool(workers, timeout) as pool:
        for line, outcome in enumerate(pool.map_ordered(_target_of_source, ((s,) for s in sources)), start=1):
            if outcome.error is None:
                results.append((line, *outcome.value, None))
            else:
                results.append((line, None, None, outcome.error))
            if progress:
                progress(1)
    return results


# ------------------------------------------------------------------------------------- files


def write_pairs(path: str | Path, pairs: Iterable[tuple[str, str]]) -> None:
    """Write ``source<TAB>target`` lines atomically (gzip if the name ends in .gz): all or nothing."""
    path = Path(path)
    text = "".join(f"{s}\t{t}\n" for s, t in pairs).encode()
    if path.suffix == ".gz":
        text = gzip.compress(text, mtime=0)  # mtime=0: the same pairs give the same bytes
    with atomic_write(path) as file:
        file.write(text)


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """Read ``source<TAB>target`` lines; a malformed line raises ValueError naming the file and line."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return _parse_pairs(f, str(path))


def _parse_pairs(lines: Iterable[str], name: str) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0] or not fields[1]:
            raise ValueError(f"{name}, line {number}: expected 'source<TAB>target', got {line[:60]!r}")
        pairs.append((fields[0], fields[1]))
    return pairs


@functools.cache
def _load_split(split: str) -> tuple[tuple[str, str], ...]:
    data = resources.files("labutils") / "datasets" / f"{split}.tsv.gz"
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        return tuple(_parse_pairs(f, f"labutils/datasets/{split}.tsv.gz"))


def load_pairs(split: str) -> list[tuple[str, str]]:
    """The shipped data set's pairs of one split: ``train``, ``validation``, ``test`` or ``structures``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    return list(_load_split(split))


# ------------------------------------------------------------------------------------- splits


def split_pairs(
    pairs: Sequence[tuple[str, str]],
    seed: int,
    n_test: int = 5000,
    n_validation: int = 2000,
    structure_share: float = 0.03,
    workers: int = 1,
    previous: dict[str, Sequence[tuple[str, str]]] | None = None,
) -> dict[str, list[tuple[str, str]]]:
    """Split unique pairs into the four splits.

    About ``structure_share`` of the structures (chosen by a hash of the structure, so the choice does not
    depend on the order of the pairs) form the ``structures`` split; of the rest, ``n_test`` and
    ``n_validation`` random pairs form the test and validation splits, and the remainder is for training.

    ``previous`` (a data set's splits, as :func:`load_pairs` gives them) grows an existing data set: each of
    its pairs stays in its split, and only the new sources are split as above, so weights trained on the
    previous ``train`` never meet a source of it in ``validation``, ``test`` or ``structures``. With the
    previous data set's seed, the structures it held out are held out again.
    """
    from labutils.pool import TimedPool

    previous = {name: list(previous.get(name, ())) for name in SPLITS} if previous else {}
    kept = {source: name for name, split in previous.items() for source, _ in split}
    pairs = [pair for pair in pairs if pair[0] not in kept]
    with TimedPool(workers, timeout=60) as pool:
        outcomes = list(pool.map_ordered(structure, ((source,) for source, _ in pairs)))
    structures_split, rest = [], []
    for pair, outcome in zip(pairs, outcomes):
        if outcome.error is not None:
            raise ValueError(f"cannot find the structure of {pair[0]!r}: {outcome.error}")
        digest = hashlib.sha256(f"{seed}:{outcome.value}".encode()).digest()
        held_out = int.from_bytes(digest[:8], "big") / 2**64 < structure_share
        (structures_split if held_out else rest).append(pair)
    rest = sorted(rest)
    random.Random(seed).shuffle(rest)
    if len(rest) < n_test + n_validation + 1:
        raise ValueError(
            f"{len(rest)} pairs are too few for {n_test} test and {n_validation} validation pairs"
        )
    splits = {
        "test": rest[:n_test],
        "validation": rest[n_test : n_test + n_validation],
        "train": rest[n_test + n_validation :],
        "structures": structures_split,
    }
    if not previous:
        return {**splits, "structures": sorted(structures_split)}
    # Old and new pairs mixed in a fixed random order, so that the first pairs of a split stand for all.
    merged = {}
    for name, new in splits.items():
        merged[name] = sorted([*previous[name], *new])
        if name != "structures":
            random.Random(f"{seed}:{name}").shuffle(merged[name])
    return merged


__all__ = [
    "ORDER",
    "Draw",
    "Term",
    "draw",
    "simplified",
    "pair_of",
    "structure",
    "parse_expression",
    "normalize",
    "outside_family",
    "simplest_sources",
    "expression_text",
    "generate_pairs",
    "pairs_for_sources",
    "read_pairs",
    "write_pairs",
    "load_pairs",
    "split_pairs",
]
