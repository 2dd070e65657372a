"""Exercise checks: a student's function tested against the package's own, with feedback to act on.

A check cell calls one function of this module with the function its answer cell defines::

    checks.masked_attention(masked_attention)

The contract (the grader, :mod:`labutils.grading`, relies on it):

* A check runs named tests of the answer against the package's implementation (or PyTorch's). Each test
  passes or fails; ``points = round(max_points * passed / (passed + failed), 2)``.
* A check never raises. An unsolved stub (``NotImplementedError``) is "not attempted yet" and earns 0; an
  exception in the answer is reported by its one-line message and the line of the answer that raised it.
* While the answer runs, the labutils functions the exercise asks the student to write (with their
  re-exports, and any name in the answer's globals bound to them) are switched off: calling one raises
  :class:`ForbiddenCall`, so an answer that only calls the package earns nothing, and the feedback says why.
* A check call publishes exactly one display output, a bundle holding ``text/plain``, ``text/html`` and
  :data:`MIME_TYPE` (``application/vnd.labutils.check+json``) with::

      {"grade_id": "04_attention.masked_attention", "points": 1.5, "max_points": 2,
       "passed": ["no key masked", ...], "failed": ["padding mask"], "feedback": "Exercise 4.2 ..."}

  Outside IPython the feedback is printed instead. The call returns None (a returned object would be a
  second output), so it is the last statement of its cell.
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
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import import_module

import torch
import torch.nn.functional as F

from labutils import attention as _attention
from labutils import model as _model
from labutils import tokens as _tokens
from labutils.tokens import EOS_IDX, PAD_IDX, SOURCE_VOCAB, TARGET_VOCAB

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

    def feedback(self) -> str:
        """Plain text: a summary line, then one line per test (what failed says what to change)."""
        ex, n = self.exercise, len(self.outcomes)
        of = f"{_number(self.points)} of {ex.points} point{'s' if ex.points != 1 else ''}"
        if self.not_attempted:
            return (
                f"{ex.title}: not attempted yet ({of}). Replace the line `raise NotImplementedError(...)` "
                f"in the cell above with your code, run that cell, then run this one again."
            )
        if n and len(self.passed) == n:
            summary = f"{ex.title}: all {n} tests passed, {of}. Well done."
        else:
            summary = f"{ex.title}: {len(self.passed)} of {n} tests passed, {of}."
        lines = [summary]
        for o in self.outcomes:
            lines.append(f"  {'✓' if o.passed else '✗'} {o.name}" + (f": {o.message}" if o.message else ""))
        return "\n".join(lines)

    def payload(self) -> dict:
        return {
            "grade_id": self.exercise.grade_id,
            "points": self.points,
            "max_points": self.exercise.points,
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
                self.result.add(name, False, "not attempted yet")
                return
            try:
                message = body()
            except _NotAttempted:
                self.result.not_attempted = not self.result.passed
                self.result.add(name, False, "not attempted yet (NotImplementedError)")
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
        def check(answer: Callable) -> None:
            _publish(_run(exercise, tests, answer))

        check.__name__ = check.__qualname__ = exercise.function
        check.__doc__ = f"Check exercise {number}: test ``{exercise.function}`` and show what to fix."
        check.exercise = exercise  # type: ignore[attr-defined]
        check.tests = tests  # type: ignore[attr-defined]
        return check

    return register


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


def _matches(got, expected) -> bool:
    try:
        if isinstance(expected, torch.Tensor):
            if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
                return False
            if expected.dtype == torch.bool:
                return bool(torch.equal(got.to(torch.bool), expected))
            return bool(torch.allclose(got.double(), expected.double(), rtol=1e-4, atol=1e-5, equal_nan=True))
        return got == expected
    except Exception:
        return False


def _diagnose(got, mistakes) -> str | None:
    """The hint of the first known mistake whose result ``got`` equals, if any."""
    for make, hint in mistakes:
        try:
            candidate = make()
        except Exception:
            continue
        if _matches(got, candidate):
            return hint
    return None


def _expect(got, expected, what: str, hint: str = "", mistakes=(), atol: float = 1e-5, rtol: float = 1e-4):
    """Fail with a specific message unless ``got`` equals ``expected`` (tensors: allclose; else ==).

    ``mistakes`` are ``(make_result, hint)`` pairs: if ``got`` equals a known wrong result, its hint is given.
    """
    if isinstance(expected, torch.Tensor):
        problem = _tensor_problem(got, expected, atol, rtol)
    else:
        problem = _value_problem(got, expected)
    if problem is None:
        return
    hint = _diagnose(got, mistakes) or hint
    _fail(f"{what}: {problem}" + (f". Hint: {hint}" if hint else ""))


def _fail(message: str):
    raise AssertionError(message)


def _tensor_problem(got, expected: torch.Tensor, atol: float, rtol: float) -> str | None:
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
            f"{int(wrong.sum())} of {wrong.numel()} entries differ; at index {i} expected "
            f"{bool(expected[i])}, got {bool(got[i])}" + _whole(got, expected)
        )
    if expected.is_floating_point() and not got.is_floating_point():
        return f"expected a floating-point tensor, got dtype {got.dtype}"
    g, e = got.detach().double().cpu(), expected.detach().double().cpu()
    if torch.isnan(g).any() and not torch.isnan(e).any():
        i = tuple(torch.isnan(g).nonzero()[0].tolist())
        return f"the result contains NaN (first at index {i}, where {e[i].item():.4g} was expected)"
    wrong = ~torch.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    if not wrong.any():
        return None
    i = tuple(wrong.nonzero()[0].tolist())
    return (
        f"{int(wrong.sum())} of {wrong.numel()} values differ; at index {i} expected {e[i].item():.5g}, "
        f"got {g[i].item():.5g}" + _whole(g, e)
    )


def _whole(got: torch.Tensor, expected: torch.Tensor) -> str:
    """The two tensors in full, when they are small enough to read."""
    if expected.numel() > 24:
        return ""
    round_ = (
        (lambda t: t.tolist())
        if expected.dtype == torch.bool
        else (lambda t: t.double().round(decimals=4).tolist())
    )
    return f" (expected {round_(expected)}, got {round_(got)})"


def _value_problem(got, expected) -> str | None:
    if got == expected:
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"expected a dict, got {type(got).__name__} {_short(got)}"
        for key, value in expected.items():
            if key not in got:
                return f"{key!r} is missing (it should have code {value})"
            if got[key] != value:
                return f"{key!r} has code {got[key]!r}, expected {value}"
        extra = next((k for k in got if k not in expected), None)
        return f"{extra!r} should not be in it" if extra is not None else f"expected {_short(expected)}"
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
        at = (
            f"position {i}: expected {expected[i]!r}, got {got[i]!r}"
            if i < len(got) and i < len(expected)
            else f"length {len(expected)} expected, got {len(got)}"
        )
        return f"expected {_short(expected)}, got {_short(got)}; first difference at {at}"
    return f"expected {_short(expected)}, got {_short(got)}"


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
                hint="compare your pattern with the list of tokens the vocabulary holds",
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
                        "numbers are split into digits: the vocabulary has "
                        "0 … 9, not 120; use [0-9], not [0-9]+",
                    ),
                ],
            )
            return f"{len(expected)} tokens"


_SLIDE_TOKENS = ["tan", "(", "h", "*", "x", ")", "+", "sinh", "(", "g", "*", "x", ")"]


def _vocabulary(token_lists) -> dict[str, int]:
    return _tokens.Vocabulary([tok for tokens in token_lists for tok in tokens]).stoi


def _vocabulary_mistakes(token_lists):
    tokens = [tok for lst in token_lists for tok in lst]
    return [
        (
            lambda: {tok: i for i, tok in enumerate(sorted(set(tokens)))},
            "the special tokens come first: '<pad>': 0, '<sos>': 1, '<eos>': 2, then the sorted tokens",
        ),
        (
            lambda: {
                tok: i for i, tok in enumerate(["<pad>", "<sos>", "<eos>"] + list(dict.fromkeys(tokens)))
            },
            "sort the tokens (sorted(set(...))): codes follow the sorted order, not the order of appearance",
        ),
        (
            lambda: {tok: i + 3 for i, tok in enumerate(sorted(set(tokens)))},
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
        (lambda: list(codes) + [PAD_IDX] * length, f"pad up to length {length} in all, not by {length} more"),
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
                ],
            )
            if isinstance(got_codes, torch.Tensor) and got_codes.dtype != torch.long:
                _fail(
                    f"codes should have dtype torch.long (an embedding looks codes up), got {got_codes.dtype}"
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

    pairs = torch.arange(0, d_model, 2, dtype=torch.float32)
    return [
        (
            lambda: interleave(torch.cos(angles(pairs)), torch.sin(angles(pairs))),
            "sin and cos are swapped: sin goes in the even columns 0, 2, 4 …, cos in the odd ones",
        ),
        (
            lambda: interleave(torch.sin(angles(pairs / 2)), torch.cos(angles(pairs / 2))),
            "the exponent is 2i/d_model with 2i the (even) column: columns 2i and 2i+1 share a frequency",
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
                ],
            )
            return f"shape {tuple(expected.shape)}"


def _pca(X: torch.Tensor) -> torch.Tensor:
    centred = X - X.mean(dim=0)
    _, _, Vh = torch.linalg.svd(centred.double(), full_matrices=False)
    return (centred.double() @ Vh[:2].T).to(X.dtype)


def _align_signs(got: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Principal axes have no sign of their own: flip each column of ``got`` to point like ``expected``."""
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
            _expect(
                got,
                expected,
                "project_2d(X)",
                atol=1e-3,
                rtol=1e-3,
                mistakes=[
                    (
                        lambda: _align_signs(X @ torch.linalg.svd(X, full_matrices=False)[2][:2].T, expected),
                        "centre the points first (X - X.mean(dim=0)): PCA measures spread about the mean",
                    ),
                    (
                        lambda: _align_signs(
                            torch.linalg.svd(centred, full_matrices=False)[0][:, :2], expected
                        ),
                        "U[:, :2] alone has unit length: the coordinates are "
                        "centred @ V[:, :2] (= U[:, :2] * S[:2])",
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
    scores = Q @ K.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    return [
        (
            lambda: torch.softmax(scores, -1),
            "divide the scores QKᵀ by √d (d = Q.size(-1)) before the softmax",
        ),
        (lambda: torch.softmax(scores / d, -1), "the scale is √d, not d: use math.sqrt(d) or d ** 0.5"),
        (
            lambda: torch.softmax(scores / math.sqrt(d), -2),
            "take the softmax over the keys, the last axis (dim=-1): each row (one query) must sum to one",
        ),
    ]


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
            got_out, got_weights = _pair(answer(Q.clone(), K.clone(), V.clone()), "attention")
            _expect(got_weights, weights, "weights", mistakes=_attention_mistakes(Q, K, V))
            _expect(
                got_out,
                F.scaled_dot_product_attention(Q, K, V),
                "out (compared with PyTorch's)",
                hint="out = weights @ V",
            )
            return "weights and out equal PyTorch's scaled_dot_product_attention"


def _masked_case(seed: int, B: int, Lq: int, Lk: int, d: int, mask: torch.Tensor):
    return _randn(B, Lq, d, seed=seed), _randn(B, Lk, d, seed=seed + 1), _randn(B, Lk, d, seed=seed + 2), mask


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
        "no key masked": _masked_case(10, 2, 3, 5, 8, torch.zeros(3, 5, dtype=torch.bool)),
        "padding mask (B, 1, Lk): the last keys of row 1 are <pad>": _masked_case(
            20, 2, 3, 5, 8, pad[:, None, :]
        ),
        "causal mask (L, L)": _masked_case(30, 2, 4, 4, 8, _attention.causal_mask(4)),
    }
    for name, (Q, K, V, mask) in cases.items():

        @t.test(name)
        def _(Q=Q, K=K, V=V, mask=mask):
            out, weights = _attention.scaled_dot_product_attention(Q, K, V, mask)
            got_out, got_weights = _pair(
                answer(Q.clone(), K.clone(), V.clone(), mask.clone()), "masked_attention"
            )
            _expect(
                got_weights,
                weights,
                "weights",
                mistakes=[
                    *_attention_mistakes(Q, K, V, mask),
                    (
                        lambda: torch.softmax(
                            (Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1))).masked_fill(
                                ~mask, float("-inf")
                            ),
                            -1,
                        ),
                        "the mask is inverted: True marks keys a query may NOT attend to (score -inf)",
                    ),
                    (
                        lambda: torch.softmax(
                            Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1)), -1
                        ).masked_fill(mask, 0.0),
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
                        "this masks the past: query i may not see keys j > i, above the diagonal",
                    ),
                    (
                        lambda: ones.tril(0),
                        "this masks the past and the diagonal: mask j > i only, above the diagonal",
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
            if isinstance(got, torch.Tensor) and got.shape == (B, L, H, d_model // H) != expected.shape:
                _fail(
                    f"split_heads(x, {H}): shape (B, L, H, d_head) = {tuple(got.shape)}; the heads go before "
                    "the positions, (B, H, L, d_head): add transpose(1, 2)"
                )
            _expect(
                got,
                expected,
                f"split_heads(x, {H})",
                mistakes=[
                    (
                        lambda: x.view(B, L, H, d_model // H),
                        "the heads go before the positions, (B, H, L, d_head): add transpose(1, 2)",
                    ),
                    (
                        lambda: x.reshape(B, H, L, d_model // H),
                        "reshaping straight to (B, H, L, d_head) mixes positions into heads: "
                        "view as (B, L, H, d_head), "
                        "then transpose(1, 2)",
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


def _encoder_variant(layer, x, src_pad_mask, post_norm=False, residual=True, mask=True):
    m = src_pad_mask if mask else None
    if post_norm:
        a, _ = layer.self_attn(x, x, x, m)
        x = layer.norm1(x + a)
        return layer.norm2(x + layer.feed_forward(x))
    h = layer.norm1(x)
    a, _ = layer.self_attn(h, h, h, m)
    x = x + a if residual else a
    f = layer.feed_forward(layer.norm2(x))
    return x + f if residual else f


@_exercise("05_transformer.encoder_layer_forward", "5.1", 2, ("labutils.model.EncoderLayer.forward",))
def encoder_layer_forward(t: _Tests, answer: Callable) -> None:
    layer = _model.EncoderLayer(16, 2, 32, dropout=0.0).eval()
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
                ],
            )


def _decoder_variant(
    layer, x, memory, spm, tpm, causal=True, cross_from_x=False, swap_masks=False, post_norm=False
):
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
    h = layer.norm2(x)
    kv = h if cross_from_x else memory
    a, _ = layer.cross_attn(h, kv, kv, tpm if cross_from_x else spm)
    x = x + a
    return x + layer.feed_forward(layer.norm3(x))


@_exercise("05_transformer.decoder_layer_forward", "5.2", 2, ("labutils.model.DecoderLayer.forward",))
def decoder_layer_forward(t: _Tests, answer: Callable) -> None:
    layer = _model.DecoderLayer(16, 2, 32, dropout=0.0).eval()
    x, memory = _layer_input(2, 4, 16, seed=8), _layer_input(2, 6, 16, seed=9)
    spm = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    tpm = torch.tensor([[False] * 4, [False, False, False, True]])
    for name, (s, tm) in {"no padding": (None, None), "padding in source and target": (spm, tpm)}.items():

        @t.test(name)
        def _(s=s, tm=tm):
            expected, _, _ = layer(x, memory, s, tm)
            got = answer(layer, x.clone(), memory.clone(), s, tm)
            _expect(
                got,
                expected,
                "decoder_layer_forward",
                mistakes=[
                    (
                        lambda: _decoder_variant(layer, x, memory, s, tm, causal=False),
                        "the self-attention must be causal (causal=True): no position may read later tokens",
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
                ],
            )

    @t.test("a later target token does not change earlier outputs")
    def _():
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
                _fail("changing the last target position changed the outputs before it: use causal=True")
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


def _loss(model, src, tgt, spm, tpm, shift=True, ignore=True, reduction="mean"):
    tgt_in, tgt_out = (tgt[:, :-1], tgt[:, 1:]) if shift else (tgt, tgt)
    logits = model(src, tgt_in, spm, tpm[:, :-1] if shift else tpm)
    return F.cross_entropy(
        logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD_IDX if ignore else -100, reduction=reduction
    )


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
                ],
            )
            return f"{expected.item():.4f}"


# ================================================================================ 06_translation


def _steering_model(seed: int, eos_bias: float) -> _model.Seq2SeqTransformer:
    """A small random model whose ``<eos>`` is made likelier: it stops after a few tokens, or at once."""
    torch.manual_seed(seed)
    model = _tiny_model(d_model=32, n_heads=4, tie_embeddings=False)
    model.generator.bias.data[EOS_IDX] += eos_bias
    return model


_SOURCES = ["tan(h*x)+sinh(g*x)", "cosh(a*x)**3+tanh(b*x)", "exp(-b*x)*sin(c*x)"]


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
    logp = model(src, tgt[:, :-1]).log_softmax(-1).gather(-1, tgt[:, 1:, None])[0, :, 0]  # (Lt,)
    return [
        (lambda: float(logp[:-1].sum()), "count <eos> too: the model must also choose to stop"),
        (lambda: float(logp.mean()), "add the log-probabilities (sum), do not average them"),
        (lambda: float(logp.exp().sum()), "add log-probabilities (log_softmax), not probabilities"),
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
                        if math.isclose(got, make(), rel_tol=1e-4, abs_tol=1e-4)
                    ),
                    None,
                )
                _fail(f"expected {expected:.4f}, got {got:.4f}" + (f". Hint: {hint}" if hint else ""))
            return f"{expected:.3f}"
