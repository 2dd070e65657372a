"""How good is a translation? Exact match of the token string, and mathematical equivalence by sympy.

Two series can be equal and print differently only if the model wrote a term in another form, so the
string match is a lower bound and sympy's verdict is the real one. Each sympy check runs with a time limit
in a worker process (no SIGALRM, so it works on every system); a prediction that does not parse or runs out
of time counts as wrong and is reported. Every verdict, and the words that say it to a person
(:func:`verdict_text`), comes from here.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import sympy as sp

from labutils.data import SYMPY_GLOBALS, SYMPY_NAMES, parse_expression
from labutils.series import series_text
from labutils.tokens import TARGET_VOCAB, tokenize

OK, WRONG, TIMEOUT, UNPARSABLE = "ok", "wrong", "timeout", "unparsable"
ERROR = "error"  # sympy itself failed (a crash of its worker): only :class:`SympyChecker` says so

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


def _verdict(prediction: str, truth: str) -> str:
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
        TIMEOUT: f"? sympy needed more than {timeout:g} s",
    }.get(verdict, f"? sympy failed: {detail}")


def check_equivalence(
    predictions: Sequence[str], truths: Sequence[str], timeout: float = 10.0, workers: int = 1, progress=None
) -> list[str]:
    """``ok``, ``wrong``, ``unparsable`` or ``timeout`` for each (prediction, truth) pair, in order.

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
                verdicts[i] = TIMEOUT if outcome.error == "timed out" else (outcome.value or UNPARSABLE)
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
                f"{'timeouts':<22}{self.verdicts[TIMEOUT]}   unparsable: {self.verdicts[UNPARSABLE]}",
            ]
        )
