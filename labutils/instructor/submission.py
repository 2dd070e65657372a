"""Grading one submitted notebook: which cells run, in its own kernel, and the points of each exercise.

The trust boundary: points are decided in the grader's process, which student code never reaches. Each
submission runs in a fresh kernel (:mod:`~labutils.instructor.kernel`: below a supervisor of its own, in an
empty temporary folder, importing a private copy of the package, inside the sandbox when there is one),
under a time limit per cell, a cap on its output and a limit on its memory. The grader finds the notebook by
``metadata.labutils.notebook`` and the exercises by their ``grade_id``, runs the student's cells in order
(never the notebook's check cells), and right after the last copy of each answer cell sends one cell of its
own (:mod:`~labutils.instructor.runner`): it runs the student's function on the grader's inputs and hands
back data only. The cases, visible and hidden, are built here, the hidden ones from a secret drawn for the
grading run; the judge, the points and the feedback are computed here too
(:func:`labutils.checks.core.judge_returned`).

Each exercise stands alone: when an answer runs too long, crashes the kernel or passes a limit, that exercise
gets 0, the kernel is started again (everything of the old one ended), the cells before are replayed with the
failing answer replaced by its stub, and grading goes on. The same cell also reports the fingerprints of what
the checks rely on (the package, torch's comparisons, builtins), which the grader compares with its own: a
change is flagged in the notes with the exercise.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from labutils.checks import guard
from labutils.checks.core import CheckResult, Exercise, all_cases, judge_returned
from labutils.instructor import calling
from labutils.instructor.gradebook import ERROR, FAILED, GRADED, INCOMPLETE, Result
from labutils.instructor.kernel import Kernel, Limits, Run, Stopped
from labutils.instructor.sandbox import View
from labutils.instructor.similarity import similar_to_package
from labutils.instructor.sources import (
    Source,
    SubmissionError,
    assigned_names,
    cell_tags,
    cell_text,
    defined_names,
    identify,
    labutils_meta,
    read_notebook,
)

# ---------------------------------------------------------------------------------------------- the plan


@dataclass
class Step:
    code: str
    timeout: float
    role: str  # "student", or "call": the grader's own cell that runs an answer on its cases
    exercise: Exercise | None = None  # the exercise this answer cell (or call) is for
    after: Exercise | None = None  # the exercise whose answer comes last before this cell


@dataclass
class Plan:
    steps: list[Step]
    exercise_notes: dict[str, list[str]]  # shown in the feedback of one exercise
    missing: set[str]  # grade_ids whose answer was not found
    notes: list[str]  # shown once in the feedback


def where(step: Step) -> str:
    """Where a cell is, in the words of the notebook (JupyterLab shows no cell numbers)."""
    if step.role == "call":
        return f"running your {step.exercise.function} on the tests of {step.exercise.title}"
    if step.exercise is not None:
        return f"the answer cell of {step.exercise.title}"
    if step.after is not None:
        return f"a cell after {step.after.title}"
    return "a cell before the first exercise"


def make_plan(notebook: dict, source: Source, limits: Limits) -> Plan:
    """Which of the student's cells run, in order, and where the grader's own cells go."""
    known = {exercise.grade_id: exercise for exercise in source.exercises}
    cells = [
        (number, cell)
        for number, cell in enumerate(notebook["cells"], start=1)
        if cell.get("cell_type") == "code"
    ]
    tagged: dict[str, list[int]] = {grade_id: [] for grade_id in known}
    check_cells, notes = set(), []
    for number, cell in cells:
        meta = labutils_meta(cell)
        if meta.get("kind") == "check":
            check_cells.add(number)  # the student's copy never runs: the grader judges in its own process
        elif meta.get("kind") == "answer" and meta.get("grade_id") in known:
            tagged[meta["grade_id"]].append(number)
        elif meta.get("kind") == "answer":
            notes.append(
                f"a cell is marked as the answer to an unknown exercise {meta.get('grade_id')!r} "
                "(renamed?); it was run as an ordinary cell"
            )
    chosen: dict[str, int] = {}
    exercise_notes: dict[str, list[str]] = {grade_id: [] for grade_id in known}
    for exercise in source.exercises:
        said = exercise_notes[exercise.grade_id]
        if tagged[exercise.grade_id]:
            chosen[exercise.grade_id] = tagged[exercise.grade_id][-1]
            if len(tagged[exercise.grade_id]) > 1:
                said.append(
                    f"the answer cell appears {len(tagged[exercise.grade_id])} times; the last copy was graded"
                )
            continue
        # Metadata lost or renamed: the last cell that defines the function (an assignment as a last resort).
        for finder in (defined_names, assigned_names):
            found = [
                n
                for n, cell in cells
                if n not in check_cells and exercise.function in finder(cell_text(cell.get("source")))
            ]
            if found:
                chosen[exercise.grade_id] = found[-1]
                said.append(
                    f"answer cell found by the name `{exercise.function}` it defines; "
                    "its grading metadata was missing or renamed"
                )
                break
        else:
            said.append(f"answer cell not found: no cell defines `{exercise.function}` (deleted?)")
    order = [chosen[e.grade_id] for e in source.exercises if e.grade_id in chosen]
    for exercise in source.exercises:
        number = chosen.get(exercise.grade_id)
        if number is not None and any(number < earlier for earlier in order[: order.index(number)]):
            exercise_notes[exercise.grade_id].append("the answer cell was moved; graded where it is now")
    steps, long_left, after = [], source.long_cells, None
    last = max(chosen.values(), default=0)
    for number, cell in cells:
        if number > last:
            break  # nothing after the last answer can change a grade
        code = cell_text(cell.get("source"))
        answered = [e for e in source.exercises if chosen.get(e.grade_id) == number]
        if number in check_cells or (not code.strip() and not answered):
            continue
        long = "long" in cell_tags(cell) and long_left > 0
        long_left -= long
        timeout = limits.long_timeout if long else limits.timeout
        steps.append(Step(code, timeout, "student", answered[0] if answered else None, after))
        for exercise in answered:
            long = source.check_cells[exercise.grade_id].long
            timeout = limits.long_timeout if long else limits.timeout
            steps.append(Step("", timeout, "call", exercise, exercise))
            after = exercise
    return Plan(steps, exercise_notes, set(known) - set(chosen), notes)


# ---------------------------------------------------------------------------------------------- scoring


@dataclass
class Scored:
    """One exercise: its points, the feedback lines (the first a summary that agrees with the points)."""

    points: float
    lines: list[str]
    short: str
    instructor: list[str] = field(default_factory=list)


def score(exercise: Exercise, cases: list, returned: dict | None) -> Scored:
    """Judge what came back against the package's reference, in this process, and say so line by line."""
    of = _points(exercise)
    if returned is None:
        reason = "the grader could not read what your function returned"
        return Scored(
            0.0, [f"{exercise.title}: 0 of {of}: {reason}."], reason, [f"{exercise.title}: {reason}"]
        )
    result = CheckResult(exercise)
    results = returned.get("results") or []
    if not returned.get("callable"):
        result.add(
            "is a function",
            False,
            f"expected the function {exercise.function} defined in its answer cell, got "
            f"{returned.get('type', 'nothing')}",
        )
    elif len(results) != len(cases):
        reason = "the grader could not read what your function returned"
        return Scored(
            0.0, [f"{exercise.title}: 0 of {of}: {reason}."], reason, [f"{exercise.title}: {reason}"]
        )
    else:
        import torch

        # As a check in the notebook judges: no gradients, and random numbers of its own.
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            for (name, case), one in zip(cases, results, strict=True):
                one = calling.judge_data(one) if isinstance(one, dict) else {}
                judge_returned(result, name, case, one)
    copied = guard.copied(exercise.function, exercise.forbidden, returned.get("verdict"))
    if copied:
        return Scored(
            0.0, [f"{exercise.title}: 0 of {of}: {copied}."], copied, [f"{exercise.title}: {copied}"]
        )
    blocked = sorted({o.message for o in result.outcomes if "switched off while the check runs" in o.message})
    instructor = [f"{exercise.title}: {_one_line(message, 200)}" for message in blocked[:1]]
    hidden = [o for o in result.outcomes if o.name.startswith("hidden test: ")]
    text = result.feedback()
    short = text.splitlines()[0]
    if result.failed:
        short += " Failed: " + "; ".join(result.failed)
    if hidden and not result.not_attempted:
        short += f" (hidden tests: {sum(o.passed for o in hidden)} of {len(hidden)} passed)"
    return Scored(result.points, text.splitlines(), short, instructor)


def _score_call(exercise: Exercise, cases: list, returned: dict | None) -> Scored:
    scored = score(exercise, cases, returned)
    if returned is not None:
        changed = sorted(
            set(calling.tampered(returned.get("before"))) | set(calling.tampered(returned.get("after")))
        )
        if changed:
            shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
            scored.instructor.append(
                f"{exercise.title}: after its answer cell, not the package's own: {shown}"
            )
    return scored


# ---------------------------------------------------------------------------------------------- one submission


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def grade_submission(
    path: str | os.PathLike,
    sources: dict[str, Source],
    limits: Limits = Limits(),
    submission: str | None = None,
    secret: int | None = None,
    student: str = "",
    view: View | None = None,
) -> Result:
    """Grade one submitted notebook. Never raises: every failure is a Result with the reason.

    ``secret`` draws the hidden tests' inputs: one per grading run (a fresh one when None). ``view``: the
    sandbox and the private copies of the package of the batch (without one: no sandbox, a copy of its own).
    """
    submission = str(path) if submission is None else submission
    secret = secrets.randbits(63) if secret is None else secret
    notebook_name = ""
    try:
        notebook = read_notebook(Path(path))
        source, identified = identify(notebook, sources)
    except SubmissionError as error:
        return _single(submission, notebook_name, 0.0, FAILED, str(error), student)
    notebook_name = source.notebook
    own = view is None
    view = View("none", limits.memory_mb) if own else view
    package = None
    try:
        package = view.package()
        result = _grade(
            notebook,
            source,
            limits,
            submission,
            identified,
            secret,
            _Place(view, package, Path(path).resolve()),
        )
    except Exception as error:  # the grader's own failure: --resume tries again
        reason = f"grader error ({type(error).__name__}: {_one_line(error, 200)})"
        return _single(submission, notebook_name, source.max_points, ERROR, reason, student)
    finally:
        if package is not None:
            view.release(package)
        if own:
            view.close()
    result.student = student
    return result


@dataclass(frozen=True)
class _Place:
    """Where a submission's kernels run: the batch's view, the submission's copy of the package, its file."""

    view: View
    package: Path
    notebook: Path


def _items(lines: list[str]) -> str:
    """A Markdown list; the further lines of an item (a check's one line per test) become its sub-items."""
    text = ""
    for line in lines:
        first, *more = line.split("\n")
        text += f"- {first}\n" + "".join(f"    - {item.strip()}\n" for item in more if item.strip())
    return text


def _single(
    submission: str, notebook: str, max_points: float, status: str, reason: str, student=""
) -> Result:
    text = f"# Feedback on {notebook or 'your submission'}\n\n{submission}\n\n0 points: {reason}\n"
    row = [("", 0.0, max_points, _one_line(reason))]
    return Result(submission, notebook, row, status, reason, text, student)


class _Session:
    """The submission's kernel, started again (and the cells before replayed) after an exercise stops it."""

    def __init__(self, limits: Limits, budget: int, place: _Place):
        self.limits, self.budget, self.place = limits, budget, place
        self.kernel: Kernel | None = None
        self.done: list[tuple[Step, str | None]] = []  # student cells run so far, with the code they ran
        self.notes: list[str] = []
        self.left: list[str] = []  # processes of its kernels that could not be ended

    def start(self) -> None:
        self.close()
        place = self.place
        self.kernel = Kernel(self.limits, place.view, place.package, place.notebook).__enter__()

    def close(self) -> None:
        """End the kernel and every process it started (a restart, or the submission done)."""
        if self.kernel is not None:
            kernel, self.kernel = self.kernel, None
            kernel.__exit__(None, None, None)
            self.left += kernel.left

    def run(self, code: str, timeout: float) -> Run:
        if self.kernel is None:
            self.start()
        return self.kernel.run(code, timeout)

    def restart(self) -> bool:
        """A fresh kernel with the cells run so far replayed (skipped: those that stop again); False when the
        budget of restarts is spent."""
        while self.budget > 0:
            self.budget -= 1
            self.start()
            for index, (step, code) in enumerate(self.done):
                if code is None:
                    continue
                try:
                    self.kernel.run(code, step.timeout)
                except Stopped as stop:
                    self.notes.append(f"{where(step)} {stop} when it was run again; it was skipped")
                    self.done[index] = (step, None)
                    break
            else:
                return True
        return False


def _grade(
    notebook: dict,
    source: Source,
    limits: Limits,
    submission: str,
    identified: str | None,
    secret: int,
    place: _Place,
) -> Result:
    plan = make_plan(notebook, source, limits)
    notes = [identified] if identified else []
    version = labutils_meta(notebook).get("version")
    if source.version and version and str(version) != source.version:
        notes.append(f"made from version {version} of the notebook; graded with version {source.version}")
    notes += plan.notes
    scored: dict[str, Scored] = {}
    instructor: list[str] = []
    stopped: str | None = None  # why grading ended early
    session = _Session(limits, len(source.exercises) + 2, place)
    try:
        for step in plan.steps:
            if stopped:
                break
            exercise = step.exercise
            if step.role == "student":
                if exercise is not None and exercise.grade_id in scored:
                    continue  # its answer already failed: the stub stands in
                try:
                    run = session.run(step.code, step.timeout)
                except Stopped as stop:
                    if exercise is not None:  # the answer cell itself: that exercise gets 0
                        reason = f"the answer cell {stop}"
                        scored[exercise.grade_id] = _stopped(exercise, reason, step.timeout)
                        session.done.append((step, source.check_cells[exercise.grade_id].stub))
                    else:
                        session.notes.append(f"{where(step)} {stop}; it was skipped")
                        session.done.append((step, None))
                    if not session.restart():
                        stopped = f"the kernel stopped too often ({stop})"
                    continue
                session.done.append((step, step.code))
                if run.ename:
                    ename = run.ename if re.fullmatch(r"[A-Za-z_][\w.]{0,60}", run.ename) else "an exception"
                    notes.append(f"{where(step)} raised {ename}")
                if exercise is not None:
                    similar = similar_to_package(step.code, exercise.function, exercise.forbidden)
                    if similar:
                        instructor.append(f"{exercise.title}: review the answer: {similar}")
                continue
            if exercise.grade_id in scored:
                continue
            cases = all_cases(exercise.grade_id, secret)
            if session.kernel is None:
                session.start()
            job, out = calling.write_job(session.kernel, exercise, cases)
            try:
                session.kernel.run(calling.call_code(job, out), step.timeout)
            except Stopped as stop:
                reason = f"your {exercise.function} {stop} on the tests"
                scored[exercise.grade_id] = _stopped(exercise, reason, step.timeout)
                for index, (done, _) in enumerate(session.done):
                    if done.exercise is exercise:
                        session.done[index] = (done, source.check_cells[exercise.grade_id].stub)
                if not session.restart():
                    stopped = f"the kernel stopped too often ({stop})"
                continue
            result = _score_call(exercise, cases, calling.read_returned(out))
            scored[exercise.grade_id] = result
            instructor += result.instructor
    finally:
        session.close()
    notes += session.notes
    if session.left:
        instructor.insert(
            0, f"processes of the submission that could not be ended: {', '.join(session.left)}"
        )
    rows, sections = [], []
    for exercise in source.exercises:
        said = plan.exercise_notes[exercise.grade_id]
        if exercise.grade_id in scored:
            result = scored[exercise.grade_id]
        elif exercise.grade_id in plan.missing:
            result = Scored(0.0, [f"{exercise.title}: 0 of {_points(exercise)}."], "0 points")
        else:
            reason = f"not graded: {stopped}"
            result = Scored(0.0, [f"{exercise.title}: 0 of {_points(exercise)}, {reason}."], reason)
        rows.append(
            (
                exercise.grade_id,
                result.points,
                exercise.points,
                _one_line("; ".join([*said, result.short]), 2000),
            )
        )
        summary, *tests = result.lines
        sections.append(
            f"## {exercise.title}: {result.points:g} / {exercise.points:g} points\n\n"
            + _items(["\n".join([summary, *tests]), *said])
        )
    if stopped:
        instructor.insert(0, f"grading stopped: {stopped}; later exercises got no points")
    if not source.exercises:
        rows.append(("", 0.0, 0.0, "this notebook has no graded exercises"))
    total = sum(row[1] for row in rows)
    text = (
        f"# Feedback on {source.notebook}\n\n{submission}\n\n**{total:g} / {source.max_points:g} points**\n\n"
        + "\n".join(sections)
    )
    if notes:
        text += "\n## Notes\n\n" + "".join(f"- {_one_line(note, 600)}\n" for note in notes[:20])
    status = INCOMPLETE if stopped else GRADED
    answers = {s.exercise.grade_id: s.code for s in plan.steps if s.role == "student" and s.exercise}
    return Result(
        submission,
        source.notebook,
        rows,
        status,
        _one_line("; ".join(instructor), 2000),
        text,
        answers=answers,
        left=session.left,
    )


def _points(exercise: Exercise) -> str:
    return f"{exercise.points:g} point{'s' if exercise.points != 1 else ''}"


def _stopped(exercise: Exercise, reason: str, timeout: float) -> Scored:
    """An exercise whose answer stopped the kernel: 0, and which limit it passed."""
    if "ran longer than" in reason:
        reason += f" (the limit is {timeout:g} s per cell)"
    text = f"{exercise.title}: 0 of {_points(exercise)}: {reason}."
    return Scored(0.0, [text], reason)
