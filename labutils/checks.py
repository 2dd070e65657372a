"""Exercise checks: a student's function tested against the package's own, with feedback to act on.

A check cell calls one function of this module with the function its answer cell defines::

    checks.masked_attention(masked_attention)

The contract (the grader, :mod:`labutils.grading`, relies on it):

* A check runs named tests of the answer against the package's implementation (or PyTorch's). Each test
  passes or fails; ``points = round(max_points * passed / (passed + failed), 2)``.
* A check never raises. An unsolved stub (``NotImplementedError``, nbgrader's ``raise NotImplementedError()``)
  is "not done yet" and earns 0; an exception in the answer is reported by its one-line message and the line
  of the answer that raised it.
* A wrong result is compared with what the typical mistakes would give (no 1/√d, softmax over the wrong axis,
  mask inverted, ...): if it equals one, the message names that mistake (``Hint: ...``). Messages say what
  came back for a test input and where it is wrong (type, shape, dtype, the first wrong entry), never the
  reference answer's output or code.
* While the answer runs, the labutils functions the exercise asks the student to write (with their
  re-exports, and any name in the answer's globals bound to them) are switched off: calling one raises
  :class:`ForbiddenCall`, so an answer that only calls the package earns nothing, and the feedback says why.
* A check call publishes exactly one display output, a bundle holding ``text/plain``, ``text/html`` and
  :data:`MIME_TYPE` (``application/vnd.labutils.check+json``) with::

      {"grade_id": "04_attention.masked_attention", "points": 1.5, "max_points": 2,
       "messages": ["✓ no key masked", ..., "✗ padding mask: weights: ... Hint: ..."],
       "passed": ["no key masked", ...], "failed": ["padding mask"], "feedback": "Exercise 4.2 ..."}

  ``messages`` holds one line per test, ``"✓ name"`` or ``"✗ name: what to change"`` (or, for an unsolved
  stub, the single "not done yet" line); ``feedback`` is the summary line followed by the same lines.

  Outside IPython the feedback is printed instead. The call returns None (a returned object would be a
  second output), so it is the last statement of its cell. Under nbgrader (``NBGRADER_EXECUTION`` set to
  ``autograde`` or ``validate``) it returns the points instead: nbgrader scores an "autograder tests" cell
  by the number the cell returns, and by its full points when it returns nothing.
* Hidden tests sit in the check cell *before* the check call, registered with :func:`hidden_test`; the
  check runs them after its own tests and their results join the same single output::

      ### BEGIN HIDDEN TESTS
      @checks.hidden_test("04_attention.masked_attention")
      def fully_masked_row(masked_attention):
          ...
          assert torch.equal(weights[0, 1], torch.zeros(3)), "a query with no key left must get zero weights"
      ### END HIDDEN TESTS
      checks.masked_attention(masked_attention)

  A hidden test receives the answer (switched-off functions and all) and passes when it returns; it fails
  with its ``AssertionError`` message (another exception: its one-line message). It is named
  ``"hidden: <function name>"`` in ``passed``/``failed``. The next check of that grade_id consumes it.
* :data:`EXERCISES` maps each grade_id to its :class:`Exercise` (number, function name, points).
* ``with checks.capture() as results:`` collects :class:`CheckResult` objects instead of displaying them.
"""

from __future__ import annotations

import contextlib
import functools
import html
import linecache
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import import_module

import torch
import torch.nn.functional as F

from labutils import attention as _attention
from labutils import model as _model
from labutils import tokens as _tokens
from labutils.tokens import EOS_IDX, PAD_IDX, SOS_IDX, SOURCE_VOCAB, TARGET_VOCAB

MIME_TYPE = "application/vnd.labutils.check+json"

__all__ = ["MIME_TYPE", "EXERCISES", "Exercise", "CheckResult", "ForbiddenCall", "capture", "hidden_test"]


class ForbiddenCall(RuntimeError):
    """Raised by a labutils function switched off while a check runs the answer meant to replace it."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: ``grade_id`` is ``"<notebook>.<function>"``; ``forbidden``: what it replaces."""

    grade_id: str
    number: str  # "4.2": notebook 4, second exercise
    points: int
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
        return f"{_number(self.points)} of {ex.points} point{'s' if ex.points != 1 else ''}"

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


def _number(x: float) -> str:
    return f"{x:g}"


# ------------------------------------------------------------------------------------------ publishing

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


# --------------------------------------------------------------------------------- switching functions off


class _Blocked:
    """Stands in for a switched-off function: calling it, or reading an attribute of it, raises."""

    def __init__(self, path: str):
        self._path = path

    def _refuse(self):
        raise ForbiddenCall(
            f"your answer calls {self._path}, which this exercise asks you to write yourself "
            "(it is switched off while the check runs)"
        )

    def __call__(self, *args, **kwargs):
        self._refuse()

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        self._refuse()


def _resolve(path: str) -> tuple[object, str, object]:
    """``"labutils.tokens.Vocabulary.encode"`` → (the class Vocabulary, "encode", the function)."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:-1]:
            owner = getattr(owner, name)
        return owner, parts[-1], getattr(owner, parts[-1])
    raise ImportError(f"cannot resolve {path}")


def _targets(forbidden: tuple[str, ...], answer: Callable) -> list[tuple[object, str, object]]:
    """Every place a forbidden object is reachable from: its owner, re-exports, the answer's globals."""
    spaces: list[object] = [m for name, m in sys.modules.items() if name.split(".")[0] == "labutils" and m]
    answer_globals = getattr(answer, "__globals__", None)
    targets = []
    for path in forbidden:
        owner, name, original = _resolve(path)
        blocked = _Blocked(path)
        found = {(id(owner), name): (owner, name, blocked)}
        for space in spaces:
            for attr, value in list(vars(space).items()):
                if value is original:
                    found[(id(space), attr)] = (space, attr, blocked)
        if answer_globals is not None:
            for attr, value in list(answer_globals.items()):
                if value is original:
                    found[(id(answer_globals), attr)] = (answer_globals, attr, blocked)
        targets.extend(found.values())
    return targets


_INHERITED = object()  # an attribute a class inherits: restored by deleting the stand-in


@contextlib.contextmanager
def _switched_off(targets: list[tuple[object, str, object]]) -> Iterator[None]:
    saved = []
    try:
        for where, name, blocked in targets:
            if isinstance(where, dict):
                saved.append((where, name, where[name]))
                where[name] = blocked
            else:
                saved.append((where, name, vars(where).get(name, _INHERITED)))
                setattr(where, name, blocked)
        yield
    finally:
        for where, name, value in reversed(saved):
            if isinstance(where, dict):
                where[name] = value
            elif value is _INHERITED:
                delattr(where, name)
            else:
                setattr(where, name, value)


class _NotAttempted(Exception):
    pass


def _describe(error: BaseException, answer: Callable) -> str:
    """``TypeError: … (line 4 of your masked_attention: `w = …`)``: the message and where in the answer."""
    if isinstance(error, ForbiddenCall):
        return str(error)
    lines = str(error).strip().splitlines()
    text = type(error).__name__ + (f": {lines[0][:200]}" if lines else "")
    code = getattr(answer, "__code__", None)
    where = None
    tb = error.__traceback__
    while tb is not None and code is not None:
        if tb.tb_frame.f_code.co_filename == code.co_filename:
            where = tb.tb_lineno
        tb = tb.tb_next
    if where is not None:
        source = linecache.getline(code.co_filename, where).strip()
        line = where - code.co_firstlineno + 1
        text += f" (line {line} of your {answer.__name__}" + (f": `{source}`" if source else "") + ")"
    return text


def _guard(answer: Callable, exercise: Exercise) -> Callable:
    """The answer, run with the exercise's forbidden functions switched off and its errors labelled."""
    targets = _targets(exercise.forbidden, answer)

    @functools.wraps(answer)
    def guarded(*args, **kwargs):
        with _switched_off(targets):
            try:
                return answer(*args, **kwargs)
            except NotImplementedError as error:
                raise _NotAttempted() from error
            except Exception as error:  # re-raised as it is (a hidden test may expect it), labelled
                error._labutils_answer = _describe(error, answer)  # type: ignore[attr-defined]
                raise

    return guarded


# ------------------------------------------------------------------------------------------ running tests


class _Tests:
    """Runs an exercise's tests one by one: ``@t.test("name")`` on a function runs it at once."""

    def __init__(self, result: CheckResult):
        self.result = result

    def test(self, name: str) -> Callable[[Callable[[], str | None]], None]:
        def run(body: Callable[[], str | None]) -> None:
            if self.result.not_attempted:
                self.result.add(name, False, "not done yet")
                return
            try:
                message = body()
            except _NotAttempted:
                self.result.not_attempted = not self.result.passed
                self.result.add(name, False, "not done yet (NotImplementedError)")
            except Exception as error:
                if hasattr(error, "_labutils_answer"):  # raised inside the answer
                    message = f"your function raised {error._labutils_answer}"
                elif isinstance(
                    error, AssertionError
                ):  # a comparison of the check, or a hidden test's assert
                    message = str(error)
                else:  # a hidden test's own code, or a bug of the check
                    lines = str(error).strip().splitlines()
                    message = f"{type(error).__name__}: {lines[0] if lines else ''}"
                self.result.add(name, False, message)
            else:
                self.result.add(name, True, message or "")

        return run


_HIDDEN: dict[str, dict[str, Callable]] = {}


def hidden_test(grade_id: str) -> Callable[[Callable], Callable]:
    """Register a test ``fn(answer)`` that the next check of ``grade_id`` runs after its own tests."""
    if grade_id not in EXERCISES:
        raise ValueError(f"unknown grade_id {grade_id!r}")

    def register(fn: Callable) -> Callable:
        _HIDDEN.setdefault(grade_id, {})[fn.__name__] = fn
        return fn

    return register


EXERCISES: dict[str, Exercise] = {}


def _exercise(grade_id: str, number: str, points: int, forbidden: tuple[str, ...] = ()):
    """Declare an exercise; the decorated ``tests(t, answer)`` becomes the check ``check(answer)``."""
    exercise = Exercise(grade_id, number, points, forbidden)
    EXERCISES[grade_id] = exercise

    def register(tests: Callable[[_Tests, Callable], None]) -> Callable[[Callable], None]:
        def check(answer: Callable) -> float | None:
            result = _run(exercise, tests, answer)
            _publish(result)
            return result.points if _under_nbgrader() else None

        check.__name__ = check.__qualname__ = exercise.function
        check.__doc__ = f"Check exercise {number}: test ``{exercise.function}`` and show what to fix."
        check.exercise = exercise  # type: ignore[attr-defined]
        check.tests = tests  # type: ignore[attr-defined]
        return check

    return register


def _under_nbgrader() -> bool:
    """True while nbgrader runs the notebook to grade or validate it."""
    return os.environ.get("NBGRADER_EXECUTION", "").lower() in ("autograde", "validate")


def _run(exercise: Exercise, tests: Callable[[_Tests, Callable], None], answer: Callable) -> CheckResult:
    """Run the tests and the registered hidden tests of ``exercise`` on ``answer``; never raises."""
    result = CheckResult(exercise)
    hidden = _HIDDEN.pop(exercise.grade_id, {})
    if not callable(answer):
        result.add(
            "is a function",
            False,
            f"expected the function {exercise.function} defined in the cell above, got "
            f"{type(answer).__name__} {_short(answer)}: pass the function itself, without calling it",
        )
        return result
    t = _Tests(result)
    try:
        guarded = _guard(answer, exercise)
        # The check's own random numbers must not change the notebook's: a forked RNG, seeded.
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            tests(t, guarded)
            for name, fn in hidden.items():
                t.test(f"hidden: {name}")(functools.partial(fn, guarded))
    except Exception as error:  # a bug in the check itself: say so, never raise into the notebook
        result.add(
            "check", False, f"the check itself failed ({type(error).__name__}: {error}); tell your instructor"
        )
    return result


# ------------------------------------------------------------------------------------------ comparisons


def _short(value, limit: int = 160) -> str:
    if isinstance(value, torch.Tensor):
        if value.numel() > 24:
            return f"tensor of shape {tuple(value.shape)}"
        value = value.tolist()
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _matches(got, expected, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
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


def _diagnose(got, mistakes, atol: float = 1e-5, rtol: float = 1e-4) -> str | None:
    """The hint of the first known mistake whose result ``got`` equals, if any."""
    for make, hint in mistakes:
        try:
            candidate = make()
        except Exception:  # a mistake that cannot happen for this input
            continue
        if _matches(got, candidate, atol, rtol):
            return hint
    return None


def _expect(
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
    if isinstance(expected, torch.Tensor):
        problem = _tensor_problem(got, expected, atol, rtol)
    else:
        problem = _value_problem(got, expected)
    if problem is None:
        return
    hint = _diagnose(got, mistakes, atol if mistake_atol is None else mistake_atol, rtol) or hint
    _fail(f"{what}: {problem}" + (f". Hint: {hint}" if hint else ""))


def _fail(message: str):
    raise AssertionError(message)


def _tensor_problem(got, expected: torch.Tensor, atol: float, rtol: float) -> str | None:
    """What is wrong with ``got``: its type, shape or dtype, else where it differs (never the right values)."""
    if not isinstance(got, torch.Tensor):
        return f"expected a tensor of shape {tuple(expected.shape)}, got {type(got).__name__} {_short(got)}"
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
            f"{bool(got[i])}" + _yours(got)
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
        f"{g[i].item():.5g} (too {'high' if g[i] > e[i] else 'low'})" + _yours(g)
    )


def _yours(got: torch.Tensor) -> str:
    """The student's tensor in full, when it is small enough to read."""
    if got.numel() > 24:
        return ""
    values = got.tolist() if got.dtype == torch.bool else got.double().round(decimals=4).tolist()
    return f" (you returned {values})"


def _value_problem(got, expected) -> str | None:
    """What is wrong with ``got`` (a dict, list or plain value), without giving the right answer away."""
    if got == expected:
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"expected a dict, got {type(got).__name__} {_short(got)}"
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
            return f"expected a list, got {type(got).__name__} {_short(got)}"
        got = list(got)
        if got == expected:
            return None
        i = next(
            (i for i, (g, e) in enumerate(zip(got, expected, strict=False)) if g != e),
            min(len(got), len(expected)),
        )
        if i < len(got) and i < len(expected):
            at = f"the first wrong item is at position {i}: {got[i]!r}"
        else:
            at = f"{len(got)} items are too {'many' if len(got) > len(expected) else 'few'}"
        return f"you returned {_short(got)}; {at}"
    return f"you returned {_short(got)}, which is not right"


def _pair(got, what: str) -> tuple:
    if not isinstance(got, tuple) or len(got) != 2:
        _fail(f"{what} should return a pair (out, weights), got {type(got).__name__} {_short(got)}")
    return got


# ================================================================================ 01_tokenization


def _reference_tokens(text: str) -> list[str]:
    return _tokens.tokenize(text)


def _split_functions(tokens: list[str]) -> list[str]:
    out = []
    for tok in tokens:
        out += [tok[:-1], "h"] if tok in ("sinh", "cosh", "tanh") else [tok]
    return out


def _split_power(tokens: list[str]) -> list[str]:
    out = []
    for tok in tokens:
        out += ["*", "*"] if tok == "**" else [tok]
    return out


def _split_big_o(tokens: list[str]) -> list[str]:
    out = []
    for tok in tokens:
        out += ["O", "(", "x", "**", "6", ")"] if tok == _tokens.BIG_O else [tok]
    return out


def _join_numbers(tokens: list[str]) -> list[str]:
    out: list[str] = []
    for tok in tokens:
        if tok.isdigit() and out and out[-1].isdigit():
            out[-1] += tok
        else:
            out.append(tok)
    return out


def _join_letters(tokens: list[str]) -> list[str]:
    """What ``[a-z]+`` makes of the tokens: neighbouring one-letter variables become one word (hx)."""
    out: list[str] = []
    joinable = False  # the last token out is a run of one-letter variables
    for tok in tokens:
        single = len(tok) == 1 and tok.isalpha()
        if single and joinable:
            out[-1] += tok
        else:
            out.append(tok)
        joinable = single
    return out


def _lost_characters(got, text: str) -> str | None:
    """A hint when the tokens leave out characters of ``text`` (spaces apart), else None."""
    if not isinstance(got, (list, tuple)) or not all(isinstance(tok, str) for tok in got):
        return None
    lost = Counter(text.replace(" ", "")) - Counter("".join(got))
    if not lost:
        return None
    return (
        f"no token holds {' '.join(repr(c) for c in sorted(lost))}: every character but a space belongs to "
        "a token, so add what is missing to your pattern (inside [...] write \\- for a minus sign)"
    )


_TOKENIZE_CASES = {
    "the slide's expression tan(h*x)+sinh(g*x)": "tan(h*x)+sinh(g*x)",
    "cosh is one token, and ** is one token": "cosh(a*x)**3+tanh(b*x)",
    "the slide's spelling without *": "tan(hx)+sinh(gx)",
    "a series: each digit is a token, O(x**6) is one token": "a*x-a**3*x**3/6+a**5*x**5/120+O(x**6)",
    "spaces are ignored": "exp(-b*x) * sin(c*x)",
}


@_exercise("01_tokenization.split_tokens", "1.1", 2, ("labutils.tokens.tokenize", "labutils.tokens._TOKEN"))
def split_tokens(t: _Tests, answer: Callable) -> None:
    for name, text in _TOKENIZE_CASES.items():

        @t.test(name)
        def _(text=text):
            expected = _reference_tokens(text)
            got = answer(text)
            _expect(
                got,
                expected,
                f"split_tokens({text!r})",
                hint=_lost_characters(got, text)
                or "compare your pattern with the list of tokens the vocabulary holds",
                mistakes=[
                    (
                        lambda: _split_functions(expected),
                        "cosh was read as cos then h: put the longer names "
                        "first in the alternation (sinh|cosh|tanh before sin|cos|tan)",
                    ),
                    (
                        lambda: _split_power(expected),
                        "** was read as two *: put \\*\\* before \\* in the pattern",
                    ),
                    (
                        lambda: _split_big_o(expected),
                        "O(x**6) is a single token of the target vocabulary: "
                        "put O\\(x\\*\\*6\\) first in the alternation",
                    ),
                    (
                        lambda: _join_numbers(expected),
                        "each digit is its own token: the vocabulary has 0 … 9, not 120; use [0-9], not [0-9]+",
                    ),
                    (
                        lambda: _join_letters(expected),
                        "letters side by side are separate variables (hx is h times x): match one letter "
                        "with [a-z], not [a-z]+, after the function names",
                    ),
                ],
            )
            return f"{len(expected)} tokens"


_SLIDE_TOKENS = ["tan", "(", "h", "*", "x", ")", "+", "sinh", "(", "g", "*", "x", ")"]


def _vocabulary(token_lists) -> dict[str, int]:
    return _tokens.Vocabulary([tok for tokens in token_lists for tok in tokens]).stoi


def _in_order_of_appearance(tokens: list[str]) -> dict[str, int]:
    stoi = {"<pad>": 0, "<sos>": 1, "<eos>": 2}
    for tok in tokens:
        stoi.setdefault(tok, len(stoi))
    return stoi


def _vocabulary_mistakes(token_lists):
    tokens = [tok for lst in token_lists for tok in lst]
    specials = ["<pad>", "<sos>", "<eos>"]
    return [
        (
            lambda: {tok: i for i, tok in enumerate(sorted(set(tokens)))},
            "the special tokens come first: '<pad>': 0, '<sos>': 1, '<eos>': 2, then the sorted tokens",
        ),
        (
            lambda: _in_order_of_appearance(tokens),
            "sort the tokens (sorted(set(...))): codes follow the sorted order, not the order of appearance",
        ),
        (
            lambda: {tok: i for i, tok in enumerate(specials + sorted(set(tokens)))},
            "a special token met in the input got a second, later code: take '<pad>', '<sos>', '<eos>' "
            "out of the set before sorting the other tokens",
        ),
        (
            lambda: {tok: i + 3 for i, tok in enumerate(sorted(set(tokens) - set(specials)))},
            "the special tokens '<pad>', '<sos>', '<eos>' must be in the vocabulary too, with codes 0, 1, 2",
        ),
    ]


@_exercise("01_tokenization.build_vocabulary", "1.2", 2, ("labutils.tokens.Vocabulary",))
def build_vocabulary(t: _Tests, answer: Callable) -> None:
    cases = {
        "the slide's expression": [list(_SLIDE_TOKENS)],
        "a token seen several times gets one code": [["x", "+", "x"], ["x", "*", "x"]],
        "special tokens in the input keep their codes": [["<sos>", "sin", "(", "x", ")", "<eos>"]],
        "no tokens: only the special ones": [],
    }
    for name, token_lists in cases.items():

        @t.test(name)
        def _(token_lists=token_lists):
            expected = _vocabulary(token_lists)
            got = answer([list(tokens) for tokens in token_lists])
            _expect(got, expected, "build_vocabulary", mistakes=_vocabulary_mistakes(token_lists))

    @t.test("reproduces the lecture's source vocabulary")
    def _():
        tokens = SOURCE_VOCAB.itos[3:]
        scrambled = [tokens[i::4][::-1] + tokens[: 4 + i] for i in range(4)]  # every token, some twice
        got = answer(scrambled)
        _expect(got, dict(SOURCE_VOCAB.stoi), "build_vocabulary", mistakes=_vocabulary_mistakes(scrambled))
        return f"{len(SOURCE_VOCAB)} entries, as on the slide"


# ================================================================================ 02_coding_and_padding


@_exercise(
    "02_coding_and_padding.encode", "2.1", 1, ("labutils.tokens.code", "labutils.tokens.Vocabulary.encode")
)
def encode(t: _Tests, answer: Callable) -> None:
    cases = {
        "the slide's example tan(hx)+sinh(gx)": ("tan(hx)+sinh(gx)", SOURCE_VOCAB),
        "an expression of the data set": ("cosh(a*x)**3+tanh(b*x)", SOURCE_VOCAB),
        "a series, with the target vocabulary": ("1+b*x+3*a**2*x**2/2-b**3*x**3/3+O(x**6)", TARGET_VOCAB),
    }
    for name, (text, vocab) in cases.items():

        @t.test(name)
        def _(text=text, vocab=vocab):
            expected = _tokens.code(text, vocab)
            got = answer(text, dict(vocab.stoi))
            _expect(
                got,
                expected,
                f"encode({text!r}, …)",
                mistakes=[
                    (
                        lambda: expected[1:-1],
                        "delimit the sequence: <sos> (code 1) first, <eos> (code 2) last",
                    ),
                    (lambda: expected[:-1], "end the sequence with <eos> (code 2)"),
                    (lambda: expected[1:], "start the sequence with <sos> (code 1)"),
                    (
                        lambda: [EOS_IDX, *expected[1:-1], SOS_IDX],
                        "<sos> and <eos> are swapped: <sos> (code 1) opens the sequence, <eos> (code 2) closes it",
                    ),
                ],
            )
            return ", ".join(map(str, expected)) if len(expected) < 16 else ""


_SLIDE_CODES = [1, 34, 3, 29, 36, 4, 7, 33, 3, 28, 36, 4, 2]


def _pad_mistakes(codes, length, layout):
    other = "lecture" if layout == "package" else "package"
    padding = [PAD_IDX] * (length - len(codes))
    return [
        (
            lambda: _tokens.pad(codes, length, other),
            f"this is the {other!r} layout; layout={layout!r} asks for "
            + ("<sos> tokens <eos> <pad> …" if layout == "package" else "<sos> tokens <pad> … <eos>"),
        ),
        (lambda: padding + list(codes), "pad at the end, not at the front"),
        (
            lambda: _tokens.pad(codes, len(codes) + length, layout),
            f"pad up to length {length} in all, not by {length} more",
        ),
        (
            lambda: list(codes) + padding[1:] + [EOS_IDX],
            "<eos> appears twice: in the 'lecture' layout move the sequence's own <eos> to the end "
            "(codes[:-1] + padding + [codes[-1]]) instead of adding another",
        ),
    ]


@_exercise("02_coding_and_padding.pad_codes", "2.2", 2, ("labutils.tokens.pad",))
def pad_codes(t: _Tests, answer: Callable) -> None:
    cases = {
        "the slide's layout: <eos> last": (_SLIDE_CODES, 16, "lecture"),
        "the package's layout: <eos> right after the last token": (_SLIDE_CODES, 16, "package"),
        "a sequence that already has the length": (_SLIDE_CODES, 13, "package"),
        "a short sequence, long padding": ([1, 36, 2], 8, "lecture"),
    }
    for name, (codes, length, layout) in cases.items():

        @t.test(name)
        def _(codes=codes, length=length, layout=layout):
            expected = _tokens.pad(codes, length, layout)
            got = answer(list(codes), length, layout)
            _expect(
                got,
                expected,
                f"pad_codes(…, {length}, {layout!r})",
                mistakes=_pad_mistakes(codes, length, layout),
            )
            return ", ".join(map(str, expected)) if layout == "lecture" and length == 16 else ""

    @t.test("layout='package' is the default")
    def _():
        _expect(
            answer([1, 36, 2], 5),
            [1, 36, 2, 0, 0],
            "pad_codes([1, 36, 2], 5)",
            hint='give the argument a default: def pad_codes(codes, length, layout="package")',
            mistakes=_pad_mistakes([1, 36, 2], 5, "package"),
        )

    @t.test("leaves its input unchanged")
    def _():
        codes = list(_SLIDE_CODES)
        answer(codes, 16, "package")
        _expect(
            codes,
            _SLIDE_CODES,
            "the list passed in",
            hint="build a new list (codes + padding) instead of appending to the caller's list",
        )


@_exercise(
    "02_coding_and_padding.make_batch", "2.3", 2, ("labutils.tokens.pad_batch", "labutils.tokens.collate")
)
def make_batch(t: _Tests, answer: Callable) -> None:
    batches = {
        "two sequences of different lengths": [_SLIDE_CODES, [1, 36, 2]],
        "three sequences": [[1, 5, 6, 2], [1, 2], _SLIDE_CODES],
        "one sequence: nothing to pad": [_SLIDE_CODES],
    }
    for name, sequences in batches.items():

        @t.test(name)
        def _(sequences=sequences):
            codes, mask = _tokens.pad_batch(sequences)
            got = answer([list(s) for s in sequences])
            if not isinstance(got, tuple) or len(got) != 2:
                _fail(
                    f"make_batch should return a pair (codes, mask), got {type(got).__name__} {_short(got)}"
                )
            got_codes, got_mask = got
            length = max(map(len, sequences))
            _expect(
                got_codes,
                codes,
                "codes",
                mistakes=[
                    (
                        lambda: torch.tensor([_tokens.pad(s, length, "lecture") for s in sequences]),
                        "use the package's layout here: <sos> tokens <eos> <pad> …",
                    ),
                    (
                        lambda: codes.T,
                        "the batch goes first, codes (B, L), one row per sequence: pad_sequence puts it "
                        "second unless you pass batch_first=True",
                    ),
                ],
            )
            if isinstance(got_codes, torch.Tensor) and got_codes.dtype != torch.long:
                _fail(
                    f"codes: dtype {got_codes.dtype}. Hint: codes index the embedding table, so they must be "
                    "integers: create them with dtype=torch.long"
                )
            _expect(
                got_mask,
                mask,
                "padding mask",
                mistakes=[
                    (
                        lambda: ~mask,
                        "the mask is inverted: in this package True marks <pad> (not allowed to attend)",
                    ),
                    *(
                        (
                            lambda dtype=dtype: mask.to(dtype),
                            "the mask must be boolean, True at <pad>, as masked_fill needs: "
                            "compare, codes == PAD_IDX, instead of filling a tensor with 0 and 1",
                        )
                        for dtype in (torch.float32, torch.int64, torch.int32, torch.uint8)
                    ),
                ],
            )
            return f"shape {tuple(codes.shape)}"


# ================================================================================ 03_embedding


def _sinusoid(max_len: int, d_model: int) -> torch.Tensor:
    return _model.SinusoidalPositionalEncoding(d_model, max_len).pe.clone()


def _sinusoid_mistakes(max_len: int, d_model: int):
    position = torch.arange(max_len, dtype=torch.float32)[:, None]

    def angles(exponent):
        return position / 10000 ** (exponent / d_model)

    def interleave(even, odd):
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2], pe[:, 1::2] = even, odd
        return pe

    pairs = torch.arange(0, d_model, 2, dtype=torch.float32)  # 2i
    columns = torch.arange(d_model, dtype=torch.float32)
    return [
        (
            lambda: interleave(torch.cos(angles(pairs)), torch.sin(angles(pairs))),
            "sin and cos are swapped: sin goes in the even columns 0, 2, 4 …, cos in the odd ones",
        ),
        (
            lambda: interleave(torch.sin(angles(pairs / 2)), torch.cos(angles(pairs / 2))),
            "the exponent is 2i/d_model, twice the pair number i: take torch.arange(0, d_model, 2), "
            "not torch.arange(d_model // 2)",
        ),
        (
            lambda: interleave(torch.sin(angles(columns[0::2])), torch.cos(angles(columns[1::2]))),
            "columns 2i and 2i+1 share one frequency: the cos column 2i+1 also uses the exponent "
            "2i/d_model, not (2i+1)/d_model",
        ),
        (
            lambda: interleave(
                *(f(position.double() * 10000 ** (pairs.double() / d_model)) for f in (torch.sin, torch.cos))
            ),
            "divide the position by 10000**(2i/d_model), do not multiply (in the exp form: "
            "exp(-2i·ln(10000)/d_model), mind the minus sign): the wavelengths grow along the columns",
        ),
        (
            lambda: torch.cat([torch.sin(angles(pairs)), torch.cos(angles(pairs))], dim=1),
            "interleave the columns (pe[:, 0::2] = sin, pe[:, 1::2] = cos), do not put all sines first",
        ),
    ]


@_exercise("03_embedding.sinusoidal_encoding", "3.1", 2, ("labutils.model.SinusoidalPositionalEncoding",))
def sinusoidal_encoding(t: _Tests, answer: Callable) -> None:
    for name, (max_len, d_model) in {
        "4 positions, d_model = 6": (4, 6),
        "the model's source encoding: 64 positions, d_model = 128": (64, 128),
        "one position, d_model = 2": (1, 2),
    }.items():

        @t.test(name)
        def _(max_len=max_len, d_model=d_model):
            got = answer(max_len, d_model)
            _expect(
                got,
                _sinusoid(max_len, d_model),
                f"sinusoidal_encoding({max_len}, {d_model})",
                mistakes=_sinusoid_mistakes(max_len, d_model),
                atol=1e-4,
                mistake_atol=1e-3,  # the angles of a mistake may reach 1e3 rad: float32 rounding shows in sin
            )


def _tiny_model(**changes) -> _model.Seq2SeqTransformer:
    fields = dict(
        d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32, dropout=0.0, max_tgt_len=64
    )
    return _model.Seq2SeqTransformer(_model.ModelConfig(**{**fields, **changes})).eval()


@_exercise("03_embedding.embed", "3.2", 2, ("labutils.model.Seq2SeqTransformer.encode",))
def embed(t: _Tests, answer: Callable) -> None:
    model = _tiny_model()
    table, pe, d = model.src_embed.weight.detach(), model.src_pos.pe, model.config.d_model
    slide = torch.tensor([_SLIDE_CODES])
    batch, _ = _tokens.pad_batch([_tokens.code("cosh(a*x)**3+tanh(b*x)", SOURCE_VOCAB), _SLIDE_CODES])
    for name, codes in {"the slide's sequence": slide, "a padded batch of two": batch}.items():

        @t.test(name)
        def _(codes=codes):
            expected = model.src_pos(model.src_embed(codes) * math.sqrt(d))
            L = codes.size(1)
            got = answer(codes.clone(), table.clone(), pe.clone())
            _expect(
                got,
                expected,
                "embed(codes, table, pe)",
                mistakes=[
                    (
                        lambda: table[codes] + pe[:L],
                        "multiply the embeddings by √d_model before adding the encodings",
                    ),
                    (
                        lambda: table[codes] * math.sqrt(d),
                        "add the positional encodings pe[:L] (L = codes.size(1))",
                    ),
                    (lambda: table[codes] * d + pe[:L], "the scale is √d_model, not d_model"),
                    (
                        lambda: table[codes] / math.sqrt(d) + pe[:L],
                        "multiply the embeddings by √d_model, do not divide (1/√d is attention's scale)",
                    ),
                    (
                        lambda: (table[codes] + pe[:L]) * math.sqrt(d),
                        "scale the embeddings only, then add the encodings: table[codes] * √d_model + pe[:L]",
                    ),
                    (
                        lambda: table[codes] * math.sqrt(table.size(0)) + pe[:L],
                        "d_model is the width of the table, table.size(1), not the vocabulary size "
                        "table.size(0)",
                    ),
                ],
            )
            return f"shape {tuple(expected.shape)}"


def _pca(X: torch.Tensor) -> torch.Tensor:
    centred = X - X.mean(dim=0)
    _, _, Vh = torch.linalg.svd(centred.double(), full_matrices=False)
    return (centred.double() @ Vh[:2].T).to(X.dtype)


def _align_signs(got: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Principal axes have no sign of their own: flip each column of ``got`` to point like ``expected``.

    (A mistake's result is aligned with the answer's, not with the reference: two principal columns are
    orthogonal, so a column compared with the other one would get a random sign.)
    """
    signs = torch.sign((got.double() * expected.double()).sum(dim=0))
    return got * torch.where(signs == 0, 1.0, signs).to(got.dtype)


@_exercise("03_embedding.project_2d", "3.3", 1)
def project_2d(t: _Tests, answer: Callable) -> None:
    g = torch.Generator().manual_seed(3)
    cloud = torch.randn(8, 3, generator=g) * torch.tensor([5.0, 2.0, 0.1]) + torch.tensor([10.0, -4.0, 1.0])
    table = (
        torch.randn(37, 4, generator=g)
        @ torch.randn(4, 64, generator=g)
        * torch.tensor([3.0, 2.0, 1.0, 0.5]).repeat(16)
    )
    for name, X in {"8 points in 3-D, off the origin": cloud, "37 token vectors in 64-D": table}.items():

        @t.test(name)
        def _(X=X):
            expected = _pca(X)
            got = answer(X.clone())
            if isinstance(got, torch.Tensor) and got.shape == expected.shape:
                got = _align_signs(got, expected)
            centred = X - X.mean(0)
            _, _, Vh = torch.linalg.svd(centred.double())  # (d, d): the axes, by decreasing spread
            _expect(
                got,
                expected,
                "project_2d(X)",
                atol=1e-3,
                rtol=1e-3,
                mistakes=[
                    (
                        lambda: _align_signs(X @ torch.linalg.svd(X, full_matrices=False)[2][:2].T, got),
                        "centre the points first (X - X.mean(dim=0)): PCA measures spread about the mean",
                    ),
                    (
                        lambda: _align_signs(torch.linalg.svd(centred, full_matrices=False)[0][:, :2], got),
                        "U[:, :2] alone has unit length: the coordinates are "
                        "centred @ V[:, :2] (= U[:, :2] * S[:2])",
                    ),
                    *(
                        (  # mixes the axes: as the answer's own svd call would, signs and all
                            lambda full=full: _align_signs(
                                centred @ torch.linalg.svd(centred, full_matrices=full)[2][:, :2], got
                            ),
                            "the principal axes are the rows of Vh (torch.linalg.svd returns Vᵀ): "
                            "project on Vh[:2].T, not Vh[:, :2]",
                        )
                        for full in (True, False)
                    ),
                    (
                        lambda: _align_signs(centred.double() @ Vh[[-1, -2]].T, got),
                        "these are the two axes of least spread: torch.linalg.eigh sorts the eigenvalues "
                        "in ascending order, so the principal axes are its last columns",
                    ),
                    (
                        lambda: _align_signs(expected[:, [1, 0]], got),
                        "the two axes are in the wrong order: the first column is the axis of largest "
                        "spread (eigh's last eigenvector, vecs[:, -1])",
                    ),
                ],
            )
            return "equal up to the sign of each axis"


# ================================================================================ 04_attention


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


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
    got_out, got_weights = _pair(got, what)
    if not _matches(got_weights, weights) and _matches(got_out, weights) and _matches(got_weights, out):
        _fail(
            f"{what}: out and weights are swapped. Hint: return the pair in this order: weights @ V, weights"
        )
    return got_out, got_weights


@_exercise(
    "04_attention.attention",
    "4.1",
    2,
    (
        "labutils.attention.scaled_dot_product_attention",
        "torch.nn.functional.scaled_dot_product_attention",
        "labutils.attention.MultiHeadAttention",
    ),
)
def attention(t: _Tests, answer: Callable) -> None:
    cases = {
        "the lecture's two-token example": (TWO_TOKENS["Q"], TWO_TOKENS["K"], TWO_TOKENS["V"]),
        "a batch, more keys than queries (cross-attention)": (
            _randn(2, 3, 8, seed=1),
            _randn(2, 5, 8, seed=2),
            _randn(2, 5, 4, seed=3),
        ),
        "4 heads at once (B, H, L, d)": (
            _randn(2, 4, 6, 16, seed=4),
            _randn(2, 4, 6, 16, seed=5),
            _randn(2, 4, 6, 16, seed=6),
        ),
    }
    for name, (Q, K, V) in cases.items():

        @t.test(name)
        def _(Q=Q, K=K, V=V):
            out, weights = _attention.scaled_dot_product_attention(Q, K, V)
            got_out, got_weights = _attention_pair(
                answer(Q.clone(), K.clone(), V.clone()), out, weights, "attention"
            )
            _expect(got_weights, weights, "weights", mistakes=_attention_mistakes(Q, K, V))
            _expect(
                got_out,
                F.scaled_dot_product_attention(Q, K, V),
                "out (compared with PyTorch's)",
                hint="out = weights @ V",
            )
            return "weights and out equal PyTorch's scaled_dot_product_attention"


def _masked_case(seed: int, front: tuple[int, ...], Lq: int, Lk: int, d: int, mask: torch.Tensor):
    """Q (*front, Lq, d), K and V (*front, Lk, d), and the mask; ``front`` is (B,) or (B, H)."""
    Q, K, V = (_randn(*front, L, d, seed=seed + i) for i, L in enumerate((Lq, Lk, Lk)))
    return Q, K, V, mask


@_exercise(
    "04_attention.masked_attention",
    "4.2",
    2,
    (
        "labutils.attention.scaled_dot_product_attention",
        "torch.nn.functional.scaled_dot_product_attention",
        "labutils.attention.MultiHeadAttention",
    ),
)
def masked_attention(t: _Tests, answer: Callable) -> None:
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
    for name, (Q, K, V, mask) in cases.items():

        @t.test(name)
        def _(Q=Q, K=K, V=V, mask=mask):
            out, weights = _attention.scaled_dot_product_attention(Q, K, V, mask)
            got_out, got_weights = _attention_pair(
                answer(Q.clone(), K.clone(), V.clone(), mask.clone()), out, weights, "masked_attention"
            )
            scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1))  # (..., Lq, Lk)
            _expect(
                got_weights,
                weights,
                "weights",
                mistakes=[
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
                ],
            )
            expected_out = F.scaled_dot_product_attention(
                Q, K, V, attn_mask=~mask
            )  # PyTorch: True = may attend
            _expect(got_out, expected_out, "out (compared with PyTorch's)", hint="out = weights @ V")
            return "equal to PyTorch's scaled_dot_product_attention with attn_mask=~mask"


@_exercise(
    "04_attention.causal_mask",
    "4.3",
    1,
    ("labutils.attention.causal_mask", "labutils.attention._causal_mask"),
)
def causal_mask(t: _Tests, answer: Callable) -> None:
    for L in (4, 1, 7):

        @t.test(f"L = {L}")
        def _(L=L):
            expected = _attention.causal_mask(L)
            ones = torch.ones(L, L, dtype=torch.bool)
            _expect(
                answer(L),
                expected,
                f"causal_mask({L})",
                mistakes=[
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
                ],
            )


@_exercise("04_attention.split_heads", "4.4", 1, ("labutils.attention.MultiHeadAttention._split",))
def split_heads(t: _Tests, answer: Callable) -> None:
    for name, (B, L, d_model, H) in {
        "B=2, L=5, d_model=8 into 2 heads": (2, 5, 8, 2),
        "B=1, L=3, d_model=12 into 3 heads": (1, 3, 12, 3),
    }.items():

        @t.test(name)
        def _(B=B, L=L, d_model=d_model, H=H):
            x = torch.arange(B * L * d_model, dtype=torch.float32).view(B, L, d_model)  # readable values
            expected = _attention.MultiHeadAttention(d_model, H)._split(x)
            got = answer(x.clone(), H)
            d_head = d_model // H
            _expect(
                got,
                expected,
                f"split_heads(x, {H})",
                mistakes=[
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
                ],
                hint="head h holds features h*d_head … (h+1)*d_head - 1 of every position",
            )


# ================================================================================ 05_transformer


_POST_NORM_HINT = (
    "this is the paper's post-norm order; the package's layers are pre-norm: x + sublayer(norm(x))"
)


def _layer_input(B: int, L: int, d: int, seed: int) -> torch.Tensor:
    return _randn(B, L, d, seed=seed)


def _distinct_norms(layer: torch.nn.Module, seed: int) -> torch.nn.Module:
    """``layer`` with a gain and bias of its own in every LayerNorm.

    New LayerNorms are all alike (gain 1, bias 0): an answer that used norm1 where norm2 belongs would pass.
    """
    g = torch.Generator().manual_seed(seed)
    for module in layer.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.weight.data = 1 + 0.3 * torch.randn(module.weight.shape, generator=g)
            module.bias.data = 0.3 * torch.randn(module.bias.shape, generator=g)
    return layer


def _encoder_variant(
    layer, x, src_pad_mask, post_norm=False, residual=True, mask=True, causal=False, one_norm=False
):
    """The encoder layer with one typical mistake switched on (the defaults give the right layer)."""
    m = src_pad_mask if mask else None
    if post_norm:
        a, _ = layer.self_attn(x, x, x, m)
        x = layer.norm1(x + a)
        return layer.norm2(x + layer.feed_forward(x))
    h = layer.norm1(x)
    a, _ = layer.self_attn(h, h, h, m, causal)
    x = x + a if residual else a
    f = layer.feed_forward((layer.norm1 if one_norm else layer.norm2)(x))
    return x + f if residual else f


@_exercise("05_transformer.encoder_layer_forward", "5.1", 2, ("labutils.model.EncoderLayer.forward",))
def encoder_layer_forward(t: _Tests, answer: Callable) -> None:
    layer = _distinct_norms(_model.EncoderLayer(16, 2, 32, dropout=0.0).eval(), seed=12)
    x = _layer_input(2, 5, 16, seed=7)
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    for name, mask in {"no padding": None, "with a padding mask": pad}.items():

        @t.test(name)
        def _(mask=mask):
            expected, _ = layer(x, mask)
            got = answer(layer, x.clone(), None if mask is None else mask.clone())
            _expect(
                got,
                expected,
                "encoder_layer_forward",
                mistakes=[
                    (
                        lambda: _encoder_variant(layer, x, mask, post_norm=True),
                        _POST_NORM_HINT,
                    ),
                    (
                        lambda: _encoder_variant(layer, x, mask, residual=False),
                        "add the residual connections: x = x + self_attn(…), then x = x + feed_forward(…)",
                    ),
                    (
                        lambda: _encoder_variant(layer, x, mask, mask=False),
                        "pass src_pad_mask to self_attn, so that no position attends to <pad>",
                    ),
                    (
                        lambda: _encoder_variant(layer, x, mask, causal=True),
                        "the encoder reads the whole source at once: no causal mask here (that is the "
                        "decoder's), only src_pad_mask",
                    ),
                    (
                        lambda: _encoder_variant(layer, x, mask, one_norm=True),
                        "each sublayer has its own LayerNorm: norm1 before the self-attention, norm2 before "
                        "the feed-forward",
                    ),
                ],
            )


_CAUSAL_HINT = "the self-attention must be causal (causal=True): no position may read later tokens"


def _decoder_variant(
    layer,
    x,
    memory,
    spm,
    tpm,
    causal=True,
    cross_from_x=False,
    swap_masks=False,
    post_norm=False,
    cross_mask=True,
    norm2=True,
):
    """The decoder layer with one typical mistake switched on (the defaults give the right layer)."""
    if swap_masks:
        spm, tpm = tpm, spm
    if post_norm:
        a, _ = layer.self_attn(x, x, x, tpm, causal)
        x = layer.norm1(x + a)
        a, _ = layer.cross_attn(x, memory, memory, spm)
        x = layer.norm2(x + a)
        return layer.norm3(x + layer.feed_forward(x))
    h = layer.norm1(x)
    a, _ = layer.self_attn(h, h, h, tpm, causal)
    x = x + a
    h = layer.norm2(x) if norm2 else x
    kv = h if cross_from_x else memory
    a, _ = layer.cross_attn(h, kv, kv, (tpm if cross_from_x else spm) if cross_mask else None)
    x = x + a
    return x + layer.feed_forward(layer.norm3(x))


@_exercise("05_transformer.decoder_layer_forward", "5.2", 2, ("labutils.model.DecoderLayer.forward",))
def decoder_layer_forward(t: _Tests, answer: Callable) -> None:
    layer = _distinct_norms(_model.DecoderLayer(16, 2, 32, dropout=0.0).eval(), seed=13)
    x = _layer_input(2, 4, 16, seed=8)
    memories = {6: _layer_input(2, 6, 16, seed=9), 4: _layer_input(2, 4, 16, seed=11)}  # Ls: memory
    cases = {
        "no padding": (6, None, None),
        "padding in source and target": (
            6,
            torch.tensor([[False] * 6, [False] * 4 + [True] * 2]),
            torch.tensor([[False] * 4, [False, False, False, True]]),
        ),
        "padding, source as long as the target": (
            4,
            torch.tensor([[False] * 4, [False, False, True, True]]),
            torch.tensor([[False, False, False, True], [False] * 4]),
        ),
    }
    for name, (Ls, s, tm) in cases.items():

        @t.test(name)
        def _(s=s, tm=tm, memory=memories[Ls]):
            expected, _, _ = layer(x, memory, s, tm)
            got = answer(layer, x.clone(), memory.clone(), s, tm)
            _expect(
                got,
                expected,
                "decoder_layer_forward",
                mistakes=[
                    (
                        lambda: _decoder_variant(layer, x, memory, s, tm, causal=False),
                        _CAUSAL_HINT,
                    ),
                    (
                        lambda: _decoder_variant(layer, x, memory, s, tm, cross_from_x=True),
                        "the cross-attention takes its keys and values from the memory, its queries from x",
                    ),
                    (
                        lambda: _decoder_variant(layer, x, memory, s, tm, swap_masks=True),
                        "the masks are swapped: tgt_pad_mask goes with the self-attention, "
                        "src_pad_mask with the "
                        "cross-attention (its keys are source positions)",
                    ),
                    (
                        lambda: _decoder_variant(layer, x, memory, s, tm, post_norm=True),
                        _POST_NORM_HINT,
                    ),
                    (
                        lambda: _decoder_variant(layer, x, memory, s, tm, cross_mask=False),
                        "pass src_pad_mask to the cross-attention too: its keys are the source positions, "
                        "and no query may attend to a source <pad>",
                    ),
                    (
                        lambda: _decoder_variant(layer, x, memory, s, tm, norm2=False),
                        "normalize before the cross-attention as well: its queries are layer.norm2(x)",
                    ),
                ],
            )

    @t.test("a later target token does not change earlier outputs")
    def _(memory=memories[6]):
        changed = x.clone()
        changed[:, -1] = _randn(
            x.size(0), x.size(2), seed=10
        )  # not a constant shift: LayerNorm would erase it
        before, after = (
            answer(layer, x.clone(), memory, None, None),
            answer(layer, changed, memory, None, None),
        )
        if isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor) and before.shape == x.shape:
            if not torch.allclose(before[:, :-1], after[:, :-1], atol=1e-5):
                _fail(
                    f"changing the last target position changed the outputs before it. Hint: {_CAUSAL_HINT}"
                )
        else:
            _fail(f"expected a tensor of shape {tuple(x.shape)}, got {_short(before)}")


def _batch_of(pairs):
    coded = [(_tokens.code(s, SOURCE_VOCAB), _tokens.code(t, TARGET_VOCAB)) for s, t in pairs]
    return _tokens.collate(coded)


_PAIRS = [
    ("tan(h*x)+sinh(g*x)", "x*(g+h)+x**3*(g**3/6+h**3/3)+x**5*(g**5/120+2*h**5/15)+O(x**6)"),
    ("sin(a*x)", "a*x-a**3*x**3/6+a**5*x**5/120+O(x**6)"),
    ("cosh(a*x)**3+tanh(b*x)", "1+b*x+3*a**2*x**2/2-b**3*x**3/3+7*a**4*x**4/8+2*b**5*x**5/15+O(x**6)"),
]


def _loss(
    model,
    src,
    tgt,
    spm,
    tpm,
    shift=True,
    ignore=True,
    reduction="mean",
    backwards=False,
    masks=True,
    scores=None,
):
    """The loss with one typical mistake switched on (the defaults give the right loss).

    ``backwards``: reads tgt[:, 1:] to predict tgt[:, :-1]; ``scores``: "probabilities" (softmax fed to
    cross_entropy) or "logits" (fed to nll_loss).
    """
    if backwards:
        tgt_in, tgt_out, tpm_in = tgt[:, 1:], tgt[:, :-1], tpm[:, 1:]
    elif shift:
        tgt_in, tgt_out, tpm_in = tgt[:, :-1], tgt[:, 1:], tpm[:, :-1]
    else:
        tgt_in, tgt_out, tpm_in = tgt, tgt, tpm
    logits = model(src, tgt_in, spm, tpm_in) if masks else model(src, tgt_in)
    logits, tgt_out = logits.flatten(0, 1), tgt_out.flatten()
    ignore_index = PAD_IDX if ignore else -100
    if scores == "logits":
        return F.nll_loss(logits, tgt_out, ignore_index=ignore_index, reduction=reduction)
    if scores == "probabilities":
        logits = logits.softmax(-1)
    return F.cross_entropy(logits, tgt_out, ignore_index=ignore_index, reduction=reduction)


@_exercise("05_transformer.teacher_forcing_loss", "5.3", 2, ("labutils.train.evaluate",))
def teacher_forcing_loss(t: _Tests, answer: Callable) -> None:
    model = _tiny_model()
    for name, pairs in {"one pair": _PAIRS[1:2], "a padded batch of three": _PAIRS}.items():

        @t.test(name)
        def _(pairs=pairs):
            src, tgt, spm, tpm = _batch_of(pairs)
            expected = _loss(model, src, tgt, spm, tpm)
            got = answer(model, src, tgt, spm, tpm)
            if isinstance(got, torch.Tensor) and got.numel() == 1 and got.dim() > 0:
                _fail(f"return a scalar (a 0-dim tensor), got shape {tuple(got.shape)}")
            if isinstance(got, float):
                got = torch.tensor(got)
            _expect(
                got,
                expected,
                "the loss",
                mistakes=[
                    (
                        lambda: _loss(model, src, tgt, spm, tpm, shift=False),
                        "shift the target: the decoder reads tgt[:, :-1] and is scored on tgt[:, 1:]",
                    ),
                    (
                        lambda: _loss(model, src, tgt, spm, tpm, ignore=False),
                        "leave <pad> positions out of the mean: F.cross_entropy(…, ignore_index=PAD_IDX)",
                    ),
                    (
                        lambda: _loss(model, src, tgt, spm, tpm, reduction="sum"),
                        "this is the sum over tokens; the loss is the mean over the real (not <pad>) tokens",
                    ),
                    (
                        lambda: (
                            _loss(model, src, tgt, spm, tpm, reduction="sum") / (tgt.numel() - tgt.size(0))
                        ),
                        "divide by the number of real tokens, not by every position: <pad> positions "
                        "must not count in the mean",
                    ),
                    (
                        lambda: _loss(model, src, tgt, spm, tpm, backwards=True),
                        "the shift goes the other way: the decoder reads tgt[:, :-1] (from <sos>) and "
                        "predicts tgt[:, 1:] (up to <eos>)",
                    ),
                    (
                        lambda: _loss(model, src, tgt, spm, tpm, scores="probabilities"),
                        "give F.cross_entropy the raw logits: it applies log_softmax itself, so a softmax "
                        "before it is one too many",
                    ),
                    (
                        lambda: _loss(model, src, tgt, spm, tpm, scores="logits"),
                        "F.nll_loss expects log-probabilities: use F.cross_entropy on the logits "
                        "(or log_softmax first)",
                    ),
                    (
                        lambda: _loss(model, src, tgt, spm, tpm, masks=False),
                        "pass the padding masks to the model, model(src, tgt[:, :-1], src_pad_mask, "
                        "tgt_pad_mask[:, :-1]), so that no position attends to <pad>",
                    ),
                ],
            )
            return f"{expected.item():.4f}"


# ================================================================================ 06_translation


def _steering_model(seed: int, eos_bias: float) -> _model.Seq2SeqTransformer:
    """A small random model whose ``<eos>`` is made likelier: it stops after a few tokens, or at once."""
    torch.manual_seed(seed)
    model = _tiny_model(d_model=32, n_heads=4, tie_embeddings=False)
    model.generator.bias.data[EOS_IDX] += eos_bias
    model.generator.bias.data[[PAD_IDX, SOS_IDX]] -= 100.0  # as a trained one, it never writes <pad> or <sos>
    return model


_SOURCES = ["tan(h*x)+sinh(g*x)", "cosh(a*x)**3+tanh(b*x)", "exp(-b*x)*sin(c*x)"]


def _greedy_variant(model, source: str, max_len: int, stop=True, position=-1, history=True) -> str:
    """Greedy decoding with one typical mistake switched on (the defaults decode right).

    ``stop=False`` runs on past ``<eos>`` and spells every token (``<eos>`` and what follows included);
    ``position=0`` reads the first position's logits; ``history=False`` feeds only the last token.
    """
    memory = model.encode(torch.tensor([_tokens.code(source, SOURCE_VOCAB)]))  # (1, Ls, d_model)
    ys = [SOS_IDX]
    for _ in range(max_len):
        logits = model.decode(torch.tensor([ys if history else ys[-1:]]), memory)  # (1, L, V)
        next_token = int(logits[0, position].argmax())
        if stop and next_token == EOS_IDX:
            break
        ys.append(next_token)
    if not stop:
        return "".join(TARGET_VOCAB.itos[c] for c in ys[1:])
    return TARGET_VOCAB.decode(ys[1:])


@_exercise(
    "06_translation.greedy_translate",
    "6.1",
    2,
    (
        "labutils.decode.greedy_decode",
        "labutils.decode.translate",
        "labutils.decode.beam_search",
        "labutils.decode.translate_beams",
    ),
)
def greedy_translate(t: _Tests, answer: Callable) -> None:
    from labutils import decode

    models = {
        "a random model (runs to max_len)": (_steering_model(1, 0.0), 12),
        "a model that stops with <eos> after a few tokens": (_steering_model(3, 0.5), 30),
        "a model that writes <eos> at once": (_steering_model(3, 100.0), 10),
    }
    for name, (model, max_len) in models.items():

        @t.test(name)
        def _(model=model, max_len=max_len):
            for source in _SOURCES:
                expected = decode.translate(model, [source], max_len=max_len)[0]
                got = answer(model, source, max_len)
                _expect(
                    got,
                    expected,
                    f"greedy_translate(model, {source!r}, max_len={max_len})",
                    mistakes=[
                        (
                            lambda expected=expected: "<sos>" + expected,
                            "leave <sos> out of the text: decode the tokens after it",
                        ),
                        (
                            lambda expected=expected: expected + "<eos>",
                            "leave <eos> out of the text: stop when the model writes it",
                        ),
                        (
                            lambda source=source: decode.translate(model, [source], max_len=max_len + 1)[0],
                            f"one token too many: stop after max_len = {max_len} new tokens",
                        ),
                        (
                            lambda source=source: decode.translate(model, [source], max_len=max_len - 1)[0],
                            f"one token too few: generate up to max_len = {max_len} new tokens",
                        ),
                        (
                            lambda source=source: _greedy_variant(model, source, max_len, stop=False),
                            "stop at the first <eos>: the series is finished there, and what the model "
                            "writes after it is not part of it",
                        ),
                        (
                            lambda source=source: _greedy_variant(model, source, max_len, position=0),
                            "take the logits of the last position, logits[0, -1]: position 0 predicts the "
                            "token after <sos> again at every step",
                        ),
                        (
                            lambda source=source: _greedy_variant(model, source, max_len, history=False),
                            "feed the decoder the whole sequence so far, not only the last token: unlike an "
                            "RNN it keeps no state between calls",
                        ),
                    ],
                    hint="start from [<sos>], append the argmax of the last position's logits, stop at <eos> "
                    "or after max_len tokens; return TARGET_VOCAB.decode(the tokens after <sos>)",
                )
            return ""


def _log_probability(model, source: str, series: str) -> float:
    src = torch.tensor([_tokens.code(source, SOURCE_VOCAB)])
    tgt = torch.tensor([_tokens.code(series, TARGET_VOCAB)])
    logp = model(src, tgt[:, :-1]).log_softmax(-1)  # (1, Lt, V)
    return float(logp.gather(-1, tgt[:, 1:, None]).sum())


def _log_probability_mistakes(model, source, series):
    src = torch.tensor([_tokens.code(source, SOURCE_VOCAB)])
    tgt = torch.tensor([_tokens.code(series, TARGET_VOCAB)])
    logits = model(src, tgt[:, :-1])  # (1, Lt-1, V)
    logp = logits.log_softmax(-1).gather(-1, tgt[:, 1:, None])[0, :, 0]  # (Lt-1,)
    return [
        (lambda: float(logp[:-1].sum()), "count <eos> too: the model must also choose to stop"),
        (lambda: float(logp.mean()), "add the log-probabilities (sum), do not average them"),
        (lambda: float(logp.exp().sum()), "add log-probabilities (log_softmax), not probabilities"),
        (
            lambda: float(logp.exp().prod()),
            "this is the probability itself; return its logarithm, the sum of the log-probabilities",
        ),
        (
            lambda: float(logits.log_softmax(-1).gather(-1, tgt[:, :-1, None]).sum()),
            "score every position on the NEXT token: the decoder reads tgt[:, :-1] and its outputs "
            "predict tgt[:, 1:], so gather tgt[:, 1:]",
        ),
        (
            lambda: float(logits.log_softmax(1).gather(-1, tgt[:, 1:, None]).sum()),
            "take log_softmax over the vocabulary, the last axis (dim=-1), not over the positions",
        ),
    ]


@_exercise(
    "06_translation.series_log_probability",
    "6.2",
    1,
    ("labutils.decode.beam_search", "labutils.decode.translate_beams"),
)
def series_log_probability(t: _Tests, answer: Callable) -> None:
    model = _steering_model(4, 0.0)
    for name, (source, series) in {
        "sin(a*x), its true series": _PAIRS[1],
        "the slide's example": _PAIRS[0],
        "a short wrong series": ("cosh(a*x)", "1+O(x**6)"),
    }.items():

        @t.test(name)
        def _(source=source, series=series):
            expected = _log_probability(model, source, series)
            got = answer(model, source, series)
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = float(got)
            if not isinstance(got, float):
                _fail(f"return a number (a float), got {type(got).__name__} {_short(got)}")
            if not math.isclose(got, expected, rel_tol=1e-4, abs_tol=1e-4):
                hint = next(
                    (
                        h
                        for make, h in _log_probability_mistakes(model, source, series)
                        if (value := make()) != 0.0 and math.isclose(got, value, rel_tol=1e-4)
                    ),
                    None,
                )
                shown = f"{got:.4f}" if got == 0.0 or abs(got) >= 1e-3 else f"{got:.4g}"
                too = "high" if got > expected else "low"
                _fail(f"got {shown}, which is too {too}" + (f". Hint: {hint}" if hint else ""))
            return f"{expected:.3f}"
