"""How good is a translation? Exact match of the token string, and mathematical equivalence by sympy.

Two series can be equal and print differently only if the model wrote a term in another form, so the
string match is a lower bound and sympy's verdict is the real one. Each sympy check runs with a time limit
in a worker process (no SIGALRM, so it works on every system); a prediction that does not parse or runs out
of time counts as wrong and is reported. Every verdict, and the words that say it to a person
(:func:`verdict_text`), comes from here.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import sympy as sp

from labutils.data import SYMPY_GLOBALS, SYMPY_NAMES, parse_expression
from labutils.series import series_text, x
from labutils.tokens import TARGET_VOCAB, tokenize

OK, WRONG, TIMEOUT, UNPARSABLE = "ok", "wrong", "timeout", "unparsable"
ERROR = "error"  # sympy itself failed: its worker crashed
UNWRITABLE = "unwritable"  # sympy's series needs tokens the model cannot write (sin(n*x)): nobody's mistake

_SERIES_NAMES = SYMPY_NAMES | {"O": sp.Order}


def parse_series(text: str) -> sp.Expr:
    """A series in the target vocabulary as a sympy expression, the ``O(x**6)`` term removed."""
    TARGET_VOCAB.encode(tokenize(text))  # TokenizationError for anything outside the vocabulary
    try:
        expr = sp.parse_expr(
            text, local_dict=dict(_SERIES_NAMES), global_dict=dict(SYMPY_GLOBALS), evaluate=True
        )
    except Exception as error:  # sympy raises SyntaxError, TypeError, TokenError … for malformed input
        raise ValueError(f"cannot read {text!r} as a series") from error
    if not isinstance(expr, sp.Expr):
        raise ValueError(f"cannot read {text!r} as a series")
    return expr.removeO()


def equivalent(prediction: str, truth: str) -> bool:
    """True when the two series are equal as mathematics (``simplify(prediction - truth) == 0``)."""
    difference = sp.expand(parse_series(prediction) - parse_series(truth))
    return difference == 0 or sp.simplify(difference) == 0


def writable(series: str) -> bool:
    """Whether a series can be written with the target vocabulary (sympy's series of ``sin(n*x)`` cannot)."""
    try:
        TARGET_VOCAB.encode(tokenize(series))
    except ValueError:
        return False
    return True


def _verdict(prediction: str, truth: str) -> str:
    if not writable(truth):
        return UNWRITABLE  # the truth is out of the model's reach: not the model's mistake
    try:
        return OK if equivalent(prediction, truth) else WRONG
    except (ValueError, TypeError):  # TokenizationError is a ValueError: an empty or malformed series
        return UNPARSABLE


def verdict_text(verdict: str, timeout: float, detail: str | None = None) -> str:
    """A verdict in words, as the explorer and the figures show it (``timeout``: the seconds sympy had)."""
    return {
        OK: "✓ the same series as sympy's",
        WRONG: "✗ not sympy's series",
        UNPARSABLE: "✗ not a well-formed series",
        UNWRITABLE: "? sympy's series needs tokens the model cannot write",
        TIMEOUT: f"? sympy needed more than {timeout:g} s",
    }.get(verdict, f"? sympy failed: {detail}")


def check_equivalence(
    predictions: Sequence[str], truths: Sequence[str], timeout: float = 10.0, workers: int = 1, progress=None
) -> list[str]:
    """A verdict for each (prediction, truth) pair, in order: ``ok``, ``wrong``, ``unparsable`` (the
    prediction cannot be read), ``unwritable`` (the truth cannot be written with the target vocabulary),
    ``timeout``, or ``error`` (sympy's worker crashed).

    Predictions equal to their truth as strings are ``ok`` without asking sympy.
    """
    from labutils.pool import TimedPool

    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} truths")
    verdicts: list[str | None] = [OK if p == t else None for p, t in zip(predictions, truths)]
    todo = [i for i, v in enumerate(verdicts) if v is None]
    if progress:
        progress(len(predictions) - len(todo))
    if todo:
        with TimedPool(min(workers, len(todo)), timeout) as pool:
            outcomes = pool.map_ordered(_verdict, ((predictions[i], truths[i]) for i in todo))
            for i, outcome in zip(todo, outcomes):
                if outcome.error is None:
                    verdicts[i] = outcome.value
                else:
                    verdicts[i] = TIMEOUT if outcome.error == "timed out" else ERROR
                if progress:
                    progress(1)
    return verdicts  # type: ignore[return-value]


@dataclass(frozen=True)
class Check:
    """sympy's verdict on one prediction: ``ok``, ``wrong``, ``unparsable``, ``timeout`` or ``error``."""

    verdict: str
    truth: str | None = None  # sympy's series (None when it ran out of time or failed)
    detail: str | None = None  # the reason, for ``error``


def sympy_check(expression: str, prediction: str) -> tuple[str, str]:
    """(sympy's series of ``expression``, the verdict on ``prediction``): runs in a worker process."""
    truth = series_text(parse_expression(expression))
    return truth, OK if prediction == truth else _verdict(prediction, truth)


def _ready() -> bool:
    return True


class SympyChecker:
    """sympy's series and verdict with a time limit, in one worker process kept alive between checks.

    The worker starts on the first check (importing torch and sympy takes seconds); a check that runs past
    ``timeout`` seconds is stopped and the worker replaced. ``TimedPool`` counts a worker's start-up in its
    first task's time, so each new worker first gets a trivial task with a generous limit.
    """

    def __init__(self, timeout: float = 10.0, startup_timeout: float = 120.0):
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self._pool = None
        self._fresh = True  # the worker has not run a task yet
        self._lock = threading.Lock()

    def check(self, expression: str, prediction: str) -> Check:
        """sympy's verdict on the model's ``prediction`` for the (normalized) ``expression``."""
        from labutils.pool import TimedPool

        with self._lock:
            if self._pool is None:
                self._pool = TimedPool(1, self.timeout)
                self._fresh = True
            if self._fresh:
                self._pool.timeout = self.startup_timeout
                list(self._pool.map_ordered(_ready, [()]))
                self._fresh = False
            self._pool.timeout = self.timeout
            (outcome,) = self._pool.map_ordered(sympy_check, [(expression, prediction)])
            if outcome.error in ("timed out", "worker crashed"):
                self._fresh = True  # a new worker took its place
        if outcome.error is None:
            truth, verdict = outcome.value
            return Check(verdict, truth)
        if outcome.error == "timed out":
            return Check(TIMEOUT)
        return Check(ERROR, detail=outcome.error)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close(kill=True)
                self._pool = None


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion (sensible near 0 and 1, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class Accuracy:
    """Exact-match and sympy-equivalence accuracy of a set of predictions, with 95% intervals."""

    n: int
    exact: int
    equivalent: int
    verdicts: Counter

    @classmethod
    def of(cls, predictions: Sequence[str], truths: Sequence[str], verdicts: Sequence[str]) -> Accuracy:
        return cls(
            n=len(truths),
            exact=sum(p == t for p, t in zip(predictions, truths)),
            equivalent=sum(v == OK for v in verdicts),
            verdicts=Counter(verdicts),
        )

    @property
    def exact_interval(self) -> tuple[float, float]:
        return wilson_interval(self.exact, self.n)

    @property
    def equivalent_interval(self) -> tuple[float, float]:
        return wilson_interval(self.equivalent, self.n)

    def __str__(self) -> str:
        def line(name: str, k: int, interval: tuple[float, float]) -> str:
            low, high = interval
            return f"{name:<22}{100 * k / max(self.n, 1):6.2f}%  [{100 * low:.2f}, {100 * high:.2f}]  ({k}/{self.n})"

        return "\n".join(
            [
                line("exact match", self.exact, self.exact_interval),
                line("sympy-equivalent", self.equivalent, self.equivalent_interval),
                f"{'timeouts':<22}{self.verdicts[TIMEOUT]}   unparsable: {self.verdicts[UNPARSABLE]}"
                + "".join(
                    f"   {name}: {self.verdicts[verdict]}"
                    for verdict, name in ((UNWRITABLE, "not writable"), (ERROR, "sympy failed"))
                    if self.verdicts[verdict]
                ),
            ]
        )


# ---------------------------------------------------------------------------------------------- categories

#: The questions ``evaluate --by category`` asks of each pair, in the order it prints them.
CATEGORIES = ("terms", "operator", "symbols", "series", "coefficients", "target length")


def categories(source: str, target: str) -> dict[str, str]:
    """Where a pair stands on each of :data:`CATEGORIES` but the target's length (:func:`by_category` adds it).

    Terms are counted as the model reads the source: ``exp(x*(a+b))``, simplified from a product of two
    exponentials, is one term.
    """
    expr = parse_expression(source)
    functions = sorted(expr.atoms(sp.Function), key=str)
    symbols_of = [f.args[0].free_symbols - {x} for f in functions]
    if len(functions) < 2:
        terms, operator, symbols = "one term", "none", "one term"
    else:
        terms = "two terms"
        if expr.is_Add:
            operator = "-" if any(t.could_extract_minus_sign() for t in expr.args) else "+"
        else:
            operator = "/" if any(f.as_base_exp()[1].is_negative for f in sp.Mul.make_args(expr)) else "*"
        shared = len(symbols_of[0]) == 1 and all(s == symbols_of[0] for s in symbols_of)
        symbols = "one symbol in both terms" if shared else "different symbols, or numbers"
    numbers = any(not s for s in symbols_of)
    named = any(s for s in symbols_of)
    coefficients = "numbers and symbols" if numbers and named else "numbers" if numbers else "symbols"
    laurent = any(k < 0 for k in _powers(target))
    return {
        "terms": terms,
        "operator": operator,
        "symbols": symbols,
        "series": "Laurent (negative powers)" if laurent else "Taylor",
        "coefficients": coefficients,
    }


def _powers(series: str) -> list[int]:
    """The powers of x in a series (read with sympy)."""
    try:
        expr = sp.expand(parse_series(series))
    except ValueError:
        return []
    return [int(term.as_coeff_exponent(x)[1]) for term in sp.Add.make_args(expr)]


@dataclass(frozen=True)
class CategoryRow:
    """The accuracy of one value of one category: ``ok`` of ``n`` sympy-equivalent."""

    category: str
    value: str
    n: int
    ok: int

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.ok, self.n)


def by_category(sources: Sequence[str], truths: Sequence[str], verdicts: Sequence[str]) -> list[CategoryRow]:
    """Sympy-equivalent accuracy for every value of every category; target length by quartile of tokens."""
    lengths = [len(tokenize(t)) for t in truths]
    cuts = _quartile_cuts(lengths)
    counts: dict[tuple[str, str], list[int]] = {}
    for source, truth, verdict, length in zip(sources, truths, verdicts, lengths):
        where = categories(source, truth)
        quartile = next(q for q, (low, high) in enumerate(cuts) if low <= length <= high)
        low, high = cuts[quartile]
        where["target length"] = f"Q{quartile + 1}: {low}-{high} tokens"
        for category in CATEGORIES:
            tally = counts.setdefault((category, where[category]), [0, 0])
            tally[0] += 1
            tally[1] += verdict == OK
    order = {c: i for i, c in enumerate(CATEGORIES)}
    return [
        CategoryRow(category, value, n, ok)
        for (category, value), (n, ok) in sorted(counts.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))
    ]


def _quartile_cuts(lengths: Sequence[int]) -> list[tuple[int, int]]:
    """Four (lowest, highest) ranges of lengths holding about a quarter of the pairs each."""
    ordered = sorted(lengths)
    n = len(ordered)
    bounds = [ordered[min(n - 1, (n * q) // 4)] for q in (1, 2, 3)]
    cuts, low = [], ordered[0] if ordered else 0
    for bound in bounds:
        cuts.append((low, bound))
        low = bound + 1
    cuts.append((low, ordered[-1] if ordered else 0))
    return [(lo, hi) for lo, hi in cuts if lo <= hi] or [(0, 0)]


def category_table(rows: Sequence[CategoryRow]) -> str:
    """The rows as a Markdown table (the README's, and what ``evaluate --by category`` prints)."""
    lines = [
        "| category | value | pairs | sympy-equivalent | 95% interval |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for row in rows:
        low, high = row.interval
        lines.append(
            f"| {row.category} | {row.value} | {row.n} | {100 * row.ok / max(row.n, 1):.1f}% "
            f"| [{100 * low:.1f}, {100 * high:.1f}] |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- the shipped table

#: The shipped model's table by category, beside its weights: what ``evaluate --json --by category`` printed.
SHIPPED_CATEGORIES = "labutils/weights/categories.json"


@dataclass(frozen=True)
class MeasuredCategories:
    """A table by category as measured: on ``n`` pairs of ``split``, ``decoding``, ``equivalent`` overall.

    ``weights`` is the sha256 of the weights file measured, so that a table can be told stale when the
    weights change.
    """

    split: str
    n: int
    decoding: str
    equivalent: float
    rows: list[CategoryRow]
    weights: str


def shipped_categories(
    path: str | os.PathLike | None = None, model: str = "encoder-decoder"
) -> MeasuredCategories:
    """The shipped model's accuracy by category, read from the table the package ships (or ``path``).

    ``model="decoder-only"`` reads the decoder-only model's table (``labutils/weights/decoder_only/``).

    The file is what ``evaluate --json --by category`` prints, so a notebook shows the measurement without
    running it; ``category_table(table.rows)`` prints the rows, and ``table.weights`` is the sha256 of the
    weights file measured. Raises ``FileNotFoundError`` or ``ValueError`` with one line that names the file.
    """
    folder = "weights" if model == "encoder-decoder" else f"weights/{model.replace('-', '_')}"
    name = f"labutils/{folder}/categories.json" if path is None else str(path)
    where = resources.files("labutils") / folder / "categories.json" if path is None else Path(path)
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{name}: no table by category; `python -m labutils evaluate --split test --by category --json` "
            "measures one"
        ) from None
    try:
        table = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{name} is not JSON: {error}") from None

    def field(entry, key: str, kind: type | tuple[type, ...], at: str = ""):
        value = entry.get(key) if isinstance(entry, dict) else None
        if isinstance(value, bool) or not isinstance(value, kind):
            kinds = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise ValueError(f"{name}: {at}{key} must be {kinds}, not {value!r}")
        return value

    weights = field(table, "weights", str)
    if not re.fullmatch(r"[0-9a-f]{64}", weights):
        raise ValueError(
            f"{name}: weights must be the sha256 of the weights measured (64 hex digits), not {weights!r}"
        )
    rows = []
    for i, entry in enumerate(field(table, "categories", list)):
        at = f"categories[{i}]."
        n = field(entry, "n", int, at)
        share = field(entry, "equivalent", (int, float), at)
        ok = round(share * n)
        if n < 0 or not 0 <= share <= 1 or abs(share - ok / max(n, 1)) > 5e-4:
            raise ValueError(f"{name}: {at}equivalent {share!r} is not a share of {n} pairs")
        rows.append(CategoryRow(field(entry, "category", str, at), field(entry, "value", str, at), n, ok))
    return MeasuredCategories(
        field(table, "split", str),
        field(table, "n", int),
        field(table, "decoding", str),
        float(field(table, "equivalent", (int, float))),
        rows,
        weights,
    )
