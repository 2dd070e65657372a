"""The core of the checks: an exercise, its cases, running an answer on them, and publishing the result.

An exercise is declared in its notebook's module with :func:`exercise`, in three parts:

* its **cases**: named inputs (:class:`Case`), made by a function so that random ones come from the check's
  own seeded generator;
* the **call** that runs the student's function on a case, in the student's kernel: by default
  ``answer(*args)`` on fresh copies of the arguments; a case may bring its own (call twice, keep the list
  it passed in);
* the **judge**, a pure function of the case's arguments and the data that came back: it returns a short
  note when the answer is right and raises ``AssertionError`` with what to change when it is not (with the
  hint of the typical mistake it recognises, see :mod:`labutils.checks.compare`).

The decorated judge becomes the check itself, ``check(answer)``, which the notebook's check cell calls.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from labutils.checks.compare import number_text, short
from labutils.checks.guard import describe, switched_off, targets
from labutils.model import ModelConfig, Seq2SeqTransformer

MIME_TYPE = "application/vnd.labutils.check+json"


@dataclass(frozen=True)
class Exercise:
    """One exercise: ``grade_id`` is ``"<notebook>.<function>"``; ``forbidden``: what it replaces."""

    grade_id: str
    number: str  # "4.2": notebook 4, second exercise
    points: float
    forbidden: tuple[str, ...] = ()

    @property
    def notebook(self) -> str:
        return self.grade_id.split(".")[0]

    @property
    def function(self) -> str:
        return self.grade_id.split(".")[1]

    @property
    def title(self) -> str:
        return f"Exercise {self.number} ({self.function})"


Judge = Callable[..., "str | None"]
#: What an exception the answer raised on a case says about its mistake: ``(args, description) -> hint``.
Explainer = Callable[[tuple, str], "str | None"]
Explain = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Case:
    """One input of an exercise: the answer's arguments, and (rarely) a call or a judge of its own.

    ``call(answer, args)`` returns the data the judge gets (default: ``answer(*args)`` on fresh copies of
    the arguments); ``judge(args, got)`` replaces the exercise's judge for this case.
    """

    args: tuple
    call: Callable[[Callable, tuple], Any] | None = None
    judge: Judge | None = None


def fresh(value):
    """A copy of a case's argument that the answer may change freely: tensors cloned, containers copied."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, list):
        return [fresh(v) for v in value]
    if isinstance(value, tuple):
        return tuple(fresh(v) for v in value)
    if isinstance(value, dict):
        return {k: fresh(v) for k, v in value.items()}
    return value


def call_with_fresh_arguments(answer: Callable, args: tuple):
    """The default call: ``answer(*args)`` on fresh copies."""
    return answer(*fresh(args))


def randn(*shape: int, seed: int) -> torch.Tensor:
    """A case's random tensor, from a generator of its own (the same numbers whatever ran before)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


#: Tokens of the longest series a hidden test gives the small model of :func:`tiny_model` (``max_tgt_len`` 64,
#: ``<sos>`` and ``<eos>`` included).
TINY_SERIES_TOKENS = 59


def tiny_model(**changes) -> Seq2SeqTransformer:
    """A small random model in eval mode for the cases (``changes``: other ModelConfig fields)."""
    fields = dict(
        d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32, dropout=0.0, max_src_len=64,
        max_tgt_len=64, positional="sinusoidal", norm_first=True, tie_embeddings=True,
    )  # fmt: skip
    return Seq2SeqTransformer(ModelConfig(**{**fields, **changes})).eval()


# --------------------------------------------------------------------------------------------------- results


@dataclass
class Outcome:
    name: str
    passed: bool
    message: str = ""


@dataclass
class CheckResult:
    """The tests of one check of one answer; :meth:`payload` is what the check publishes."""

    exercise: Exercise
    outcomes: list[Outcome] = field(default_factory=list)
    not_attempted: bool = False

    def add(self, name: str, passed: bool, message: str = "") -> None:
        self.outcomes.append(Outcome(name, bool(passed), message))

    @property
    def passed(self) -> list[str]:
        return [o.name for o in self.outcomes if o.passed]

    @property
    def failed(self) -> list[str]:
        return [o.name for o in self.outcomes if not o.passed]

    @property
    def points(self) -> float:
        if not self.outcomes or self.not_attempted:
            return 0.0
        return round(self.exercise.points * len(self.passed) / len(self.outcomes), 2)

    def _of(self) -> str:
        ex = self.exercise
        return f"{number_text(self.points)} of {number_text(ex.points)} point{'s' if ex.points != 1 else ''}"

    def messages(self) -> list[str]:
        """One line per test, ``"✓ name"`` or ``"✗ name: what to change"``; a stub gets one "not done yet" line."""
        if self.not_attempted:
            return [
                f"{self.exercise.title}: not done yet ({self._of()}). Replace `raise NotImplementedError()` "
                "in the cell above with your code, run that cell, then run this one again."
            ]
        return [
            f"{'✓' if o.passed else '✗'} {o.name}" + (f": {o.message}" if o.message else "")
            for o in self.outcomes
        ]

    def feedback(self) -> str:
        """Plain text: a summary line, then the :meth:`messages` (what failed says what to change)."""
        if self.not_attempted:
            return self.messages()[0]
        ex, n = self.exercise, len(self.outcomes)
        if n and len(self.passed) == n:
            summary = f"{ex.title}: all {n} tests passed, {self._of()}. Well done."
        else:
            summary = f"{ex.title}: {len(self.passed)} of {n} tests passed, {self._of()}."
        return "\n".join([summary, *(f"  {line}" for line in self.messages())])

    def payload(self) -> dict:
        return {
            "grade_id": self.exercise.grade_id,
            "points": self.points,
            "max_points": self.exercise.points,
            "messages": self.messages(),
            "passed": self.passed,
            "failed": self.failed,
            "feedback": self.feedback(),
        }

    def html(self) -> str:
        if self.not_attempted:
            colour = "#757575"
        elif self.outcomes and not self.failed:
            colour = "#2e7d32"
        else:
            colour = "#e65100" if self.passed else "#c62828"
        summary, *lines = self.feedback().split("\n")
        items = "".join(f'<li style="margin:2px 0">{html.escape(line.strip())}</li>' for line in lines)
        body = f'<ul style="list-style:none;margin:4px 0 0 0;padding-left:8px">{items}</ul>' if items else ""
        return (
            f'<div style="border-left:5px solid {colour};padding:4px 10px;margin:4px 0">'
            f"<b>{html.escape(summary)}</b>{body}</div>"
        )

    def bundle(self) -> dict:
        """The display bundle: one output with text, HTML and the JSON the grader reads."""
        return {"text/plain": self.feedback(), "text/html": self.html(), MIME_TYPE: self.payload()}


# ------------------------------------------------------------------------------------------------ publishing

_captures: list[list[CheckResult]] = []


@contextlib.contextmanager
def capture() -> Iterator[list[CheckResult]]:
    """Collect the results of the checks run inside the block, instead of displaying them."""
    results: list[CheckResult] = []
    _captures.append(results)
    try:
        yield results
    finally:
        _captures.remove(results)


def _publish(result: CheckResult) -> None:
    if _captures:
        _captures[-1].append(result)
        return
    ipython = sys.modules.get("IPython")
    if ipython is not None and ipython.get_ipython() is not None:
        from IPython.display import display

        display(result.bundle(), raw=True)
    else:
        print(result.feedback())


def _under_nbgrader() -> bool:
    """True while nbgrader runs the notebook to grade or validate it."""
    return os.environ.get("NBGRADER_EXECUTION", "").lower() in ("autograde", "validate")


# ------------------------------------------------------------------------------------------------ the answer


class _NotAttempted(Exception):
    pass


def _guarded(answer: Callable, exercise: Exercise) -> Callable:
    """The answer, run with the exercise's forbidden functions switched off and its errors labelled."""
    places = targets(exercise.forbidden, answer)

    @functools.wraps(answer)
    def guarded(*args, **kwargs):
        with switched_off(places):
            try:
                return answer(*args, **kwargs)
            except NotImplementedError as error:
                raise _NotAttempted() from error
            except Exception as error:  # re-raised as it is (a hidden test may expect it), labelled
                error._labutils_answer = describe(error, answer)  # type: ignore[attr-defined]
                raise

    return guarded


def _test(
    result: CheckResult, name: str, body: Callable[[], str | None], explain: Explain | None = None
) -> None:
    """Run one named test of the answer and record how it went; an error is a failure, never raised.

    ``explain(error)`` turns the one-line description of an exception the answer raised into a hint.
    """
    if result.not_attempted:
        result.add(name, False, "not done yet")
        return
    try:
        message = body()
    except _NotAttempted:
        result.not_attempted = not result.passed
        result.add(name, False, "not done yet (NotImplementedError)")
    except Exception as error:
        if hasattr(error, "_labutils_answer"):  # raised inside the answer
            described = error._labutils_answer
            if described.startswith("your answer calls"):
                message = described
            else:
                message = f"your function raised {described}"
                hint = _explained(explain, described)
                message += f". Hint: {hint}" if hint else ""
        elif isinstance(error, AssertionError):  # a judge's comparison, or a hidden test's assert
            message = str(error)
        else:  # a hidden test's own code, or a bug of the check
            lines = str(error).strip().splitlines()
            message = f"{type(error).__name__}: {lines[0] if lines else ''}"
        result.add(name, False, message)
    else:
        result.add(name, True, message or "")


def _explained(explain: Explain | None, described: str) -> str | None:
    """The hint ``explain`` gives for an exception's description; None when it has none, or fails itself."""
    if explain is None:
        return None
    try:
        return explain(described)
    except Exception:  # a hint is a help, never a second failure
        return None


# ------------------------------------------------------------------------------------------------- exercises

#: Every exercise by grade_id.
EXERCISES: dict[str, Exercise] = {}
#: Each exercise's cases and judge, by grade_id: what the grader rebuilds and judges in its own process.
CHECKS: dict[str, tuple[Callable[[], dict[str, Case]], Judge]] = {}
#: Each exercise's explainer, by grade_id (if it has one): hints for the exceptions a typical mistake raises.
EXPLAINERS: dict[str, Explainer] = {}


def _explain_for(grade_id: str, args: tuple) -> Explain | None:
    explainer = EXPLAINERS.get(grade_id)
    return None if explainer is None else functools.partial(explainer, args)


_HIDDEN: dict[str, dict[str, Callable]] = {}  # tests a notebook's check cell registers (nbgrader's form)


@dataclass(frozen=True)
class HiddenTest:
    """A test the students never see: ``make(generator)`` draws a case's inputs from the grader's secret.

    It is judged like the visible cases (by the case's judge, else the exercise's), so it can only vary the
    inputs; when it fails, the feedback names its ``requirement``, never its inputs or the expected output.
    """

    name: str
    requirement: str
    make: Callable[[torch.Generator], Case]


#: The hidden tests of each exercise, by grade_id, in the order they were declared.
HIDDEN_TESTS: dict[str, list[HiddenTest]] = {}


def hidden_test(grade_id: str, requirement: str | None = None) -> Callable[[Callable], Callable]:
    """Declare a hidden test of ``grade_id``: ``make(generator) -> Case``, failing with ``requirement``.

    ``requirement`` is one sentence, what the test holds the answer to ("a fully masked row must give zeros,
    not NaN"). The grader draws each hidden test's generator from a secret of its grading run; a check in a
    notebook runs them only under nbgrader, with a seed of its own.

    Without ``requirement`` it is the older form a notebook's check cell uses, ``fn(answer)`` run in the
    kernel by the next check of ``grade_id`` (``labutils grade`` never runs it: it judges outside the kernel).
    """
    if grade_id not in EXERCISES:
        raise ValueError(f"unknown grade_id {grade_id!r}")

    def register(fn: Callable) -> Callable:
        if requirement is None:
            _HIDDEN.setdefault(grade_id, {})[fn.__name__] = fn
        else:
            tests = HIDDEN_TESTS.setdefault(grade_id, [])
            tests[:] = [test for test in tests if test.name != fn.__name__]
            tests.append(HiddenTest(fn.__name__, requirement, fn))
        return fn

    return register


def integer(generator: torch.Generator, low: int, high: int) -> int:
    """A hidden test's whole number, ``low`` to ``high`` inclusive, drawn from its generator."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def pick(generator: torch.Generator, options: list):
    """One of ``options``, drawn from a hidden test's generator."""
    return options[integer(generator, 0, len(options) - 1)]


def family_pair(rng, max_series_tokens: int | None = None) -> tuple[str, str]:
    """A hidden test's (source, series) pair of the family, drawn with ``rng`` (a ``random.Random``).

    A draw the family rejects (``sin(a*x)-sin(a*x)`` does not depend on x), or one whose series has more
    than ``max_series_tokens`` tokens, is drawn again.
    """
    from labutils import data
    from labutils.tokens import tokenize

    while True:
        try:
            source, series = data.pair_of(data.draw(rng))
        except data.Rejected:
            continue
        if max_series_tokens is None or len(tokenize(series)) <= max_series_tokens:
            return source, series


def hidden_generator(secret: int, grade_id: str, name: str) -> torch.Generator:
    """The generator of one hidden test: the same for every submission of one grading run, unguessable."""
    digest = hashlib.sha256(f"{secret}:{grade_id}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def hidden_name(test: HiddenTest) -> str:
    """A hidden test's name in a result: its requirement, which is all the feedback says of it."""
    return f"hidden test: {test.requirement}"


def all_cases(grade_id: str, secret: int | None) -> list[tuple[str, Case]]:
    """The named cases of an exercise, then (with a ``secret``) its hidden tests' cases drawn from it.

    Built with torch's global generator forked and seeded, so neither the notebook's nor the grader's random
    numbers change, and the visible cases are the same wherever they are built.
    """
    cases, _ = CHECKS[grade_id]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        named = list(cases().items())
        if secret is not None:
            for test in HIDDEN_TESTS.get(grade_id, []):
                named.append((hidden_name(test), test.make(hidden_generator(secret, grade_id, test.name))))
    return named


class _AnswerRaised(Exception):
    """An exception the answer raised in the student's kernel, known to the grader by its description."""

    def __init__(self, description: str):
        super().__init__(description)
        self._labutils_answer = description


def judge_returned(result: CheckResult, name: str, case: Case, returned: dict) -> None:
    """Judge one case from what came back of the student's kernel, in the grader's process.

    ``returned`` is ``{"value": data}``, ``{"error": "TypeError: … (line 3 of your …)"}`` or
    ``{"not_done": True}``. A hidden test's failure says no more than its name, the requirement it tests.
    """
    _, judge = CHECKS[result.exercise.grade_id]

    def body() -> str | None:
        if returned.get("not_done"):
            raise _NotAttempted()
        if "error" in returned:
            raise _AnswerRaised(str(returned["error"]))
        return (case.judge or judge)(case.args, returned.get("value"))

    _test(result, name, body, _explain_for(result.exercise.grade_id, case.args))
    if name.startswith("hidden test: "):
        result.outcomes[-1].message = ""


def exercise(
    grade_id: str,
    number: str,
    points: int,
    forbidden: tuple[str, ...] = (),
    *,
    cases: Callable[[], dict[str, Case]],
    explain: Explainer | None = None,
) -> Callable[[Judge], Callable[[Callable], float | None]]:
    """Declare an exercise: ``cases()`` gives its named cases; the decorated ``judge(args, got)`` judges one.

    ``explain(args, description)``, if given, says what an exception the answer raised on a case means (a
    broadcast error of a mask of the wrong shape, a pair left unpacked): the hint added to its message.

    Returns the check, ``check(answer)``: it runs every case through the guarded answer and its judge, then
    the hidden tests registered for ``grade_id``, and publishes one result.
    """
    declared = Exercise(grade_id, number, points, forbidden)
    EXERCISES[grade_id] = declared
    if explain is not None:
        EXPLAINERS[grade_id] = explain

    def register(judge: Judge) -> Callable[[Callable], float | None]:
        CHECKS[grade_id] = (cases, judge)

        def check(answer: Callable) -> float | None:
            result = run(declared, cases, judge, answer)
            _publish(result)
            return result.points if _under_nbgrader() else None

        check.__name__ = check.__qualname__ = declared.function
        check.__doc__ = f"Check exercise {number}: test ``{declared.function}`` and show what to fix."
        check.exercise = declared  # type: ignore[attr-defined]
        check.cases = cases  # type: ignore[attr-defined]
        check.judge = judge  # type: ignore[attr-defined]
        return check

    return register


def run(
    exercise: Exercise, cases: Callable[[], dict[str, Case]], judge: Judge, answer: Callable
) -> CheckResult:
    """Judge ``answer`` on every case of ``exercise``, in this process; never raises.

    Under nbgrader the hidden tests run too, from a seed of their own; the tests a check cell registered
    with the older form of :func:`hidden_test` run whenever there are some.
    """
    result = CheckResult(exercise)
    hidden = _HIDDEN.pop(exercise.grade_id, {})
    if not callable(answer):
        result.add(
            "is a function",
            False,
            f"expected the function {exercise.function} defined in the cell above, got "
            f"{type(answer).__name__} {short(answer)}: pass the function itself, without calling it",
        )
        return result
    try:
        guarded = _guarded(answer, exercise)
        secret = int.from_bytes(os.urandom(8), "little") if _under_nbgrader() else None
        named = all_cases(exercise.grade_id, secret) if exercise.grade_id in CHECKS else list(cases().items())
        # The check's own random numbers must not change the notebook's: a forked RNG, seeded.
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            for name, case in named:

                def body(case: Case = case) -> str | None:
                    got = (case.call or call_with_fresh_arguments)(guarded, case.args)
                    return (case.judge or judge)(case.args, got)

                _test(result, name, body, _explain_for(exercise.grade_id, case.args))
                if name.startswith("hidden test: "):  # its requirement, never its inputs
                    result.outcomes[-1].message = ""
            for name, fn in hidden.items():
                _test(result, f"hidden: {name}", functools.partial(fn, guarded))
    except Exception as error:  # a bug in the check itself: say so, never raise into the notebook
        result.add(
            "check", False, f"the check itself failed ({type(error).__name__}: {error}); tell your instructor"
        )
    return result
