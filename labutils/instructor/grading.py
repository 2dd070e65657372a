"""Grading a class's submitted notebooks: ``python -m labutils grade``.

The trust boundary: points are decided in the grader's process, which student code never reaches. Each
submission runs in a fresh kernel, in an empty temporary folder, under a time limit per cell, a cap on its
output and a limit on its memory. The grader finds the notebook by ``metadata.labutils.notebook`` and the
exercises by their ``grade_id``, runs the student's cells in order (never the notebook's check cells), and
right after the last copy of each answer cell sends one cell of its own (:mod:`~labutils.instructor.runner`):
it runs the student's function on the grader's inputs and hands back data only. The cases, visible and hidden,
are built here, the hidden ones from a secret drawn for the grading run; the judge, the points and the feedback
are computed here too (:func:`labutils.checks.core.judge_returned`).

Each exercise stands alone: when an answer runs too long, crashes the kernel or passes a limit, that exercise
gets 0, the kernel is started again, the cells before are replayed with the failing answer replaced by its
stub, and grading goes on. The same cell also reports the fingerprints of what the checks rely on (the
package, torch's comparisons, builtins), which the grader compares with its own: a change is flagged in the
notes with the exercise. Results go to a CSV file one whole submission at a time, so an interrupted batch loses
nothing and ``--resume`` continues it; at the end, a gradebook with one row per student.

This protects the points from the students; it does not protect the machine from their code (see the README).
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from labutils.checks import guard
from labutils.checks.core import CheckResult, Exercise, all_cases, judge_returned
from labutils.instructor import calling
from labutils.instructor.calling import NOT_THE_PACKAGE, PACKAGE
from labutils.instructor.gradebook import (
    COLUMNS,
    ERROR,
    FAILED,
    GRADED,
    INCOMPLETE,
    TOTAL_COLUMNS,
    Ledger,
    class_summary,
    feedback_names,
    gradebook_path,
    totals_path,
    write_file,
    write_gradebook,
)
from labutils.instructor.kernel import Kernel, Limits, Run, Stopped, kill_all_kernels
from labutils.instructor.sources import (
    GradingError,
    Source,
    SubmissionError,
    assigned_names,
    cell_tags,
    cell_text,
    defined_names,
    find_submissions,
    identify,
    labutils_meta,
    load_sources,
    read_notebook,
    similar_to_package,
)

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "solutions"

__all__ = [
    "COLUMNS", "TOTAL_COLUMNS", "GRADED", "INCOMPLETE", "FAILED", "ERROR", "GradingError", "SubmissionError",
    "Limits", "Source", "Result", "Report", "Ledger", "load_sources", "read_notebook", "identify",
    "make_plan", "grade_submission", "grade", "totals_path", "gradebook_path", "feedback_names",
    "class_summary", "kill_all_kernels", "PACKAGE", "NOT_THE_PACKAGE", "compile_student_pattern", "where", "score",
]  # fmt: skip


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


# ---------------------------------------------------------------------------------------------- results


@dataclass
class Result:
    """One graded submission: its rows for grades.csv, its line in the totals file, its feedback file."""

    submission: str
    notebook: str
    rows: list[tuple[str, float, float, str]]  # (exercise, points, max_points, feedback)
    status: str
    notes: str = ""  # for the instructor (totals file)
    text: str = ""  # the feedback file
    student: str = ""

    @property
    def points(self) -> float:
        return round(sum(row[1] for row in self.rows), 2)

    @property
    def max_points(self) -> float:
        return round(sum(row[2] for row in self.rows), 2)


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
) -> Result:
    """Grade one submitted notebook. Never raises: every failure is a Result with the reason.

    ``secret`` draws the hidden tests' inputs: one per grading run (a fresh one when None).
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
    try:
        result = _grade(notebook, source, limits, submission, identified, secret)
    except Exception as error:  # the grader's own failure: --resume tries again
        reason = f"grader error ({type(error).__name__}: {_one_line(error, 200)})"
        return _single(submission, notebook_name, source.max_points, ERROR, reason, student)
    result.student = student
    return result


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

    def __init__(self, limits: Limits, budget: int):
        self.limits, self.budget = limits, budget
        self.kernel: Kernel | None = None
        self.done: list[tuple[Step, str | None]] = []  # student cells run so far, with the code they ran
        self.notes: list[str] = []

    def start(self) -> None:
        self.close()
        self.kernel = Kernel(self.limits).__enter__()

    def close(self) -> None:
        if self.kernel is not None:
            self.kernel.__exit__(None, None, None)
            self.kernel = None

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
    notebook: dict, source: Source, limits: Limits, submission: str, identified: str | None, secret: int
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
    session = _Session(limits, budget=len(source.exercises) + 2)
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
    return Result(submission, source.notebook, rows, status, _one_line("; ".join(instructor), 2000), text)


def _points(exercise: Exercise) -> str:
    return f"{exercise.points:g} point{'s' if exercise.points != 1 else ''}"


def _stopped(exercise: Exercise, reason: str, timeout: float) -> Scored:
    """An exercise whose answer stopped the kernel: 0, and which limit it passed."""
    if "ran longer than" in reason:
        reason += f" (the limit is {timeout:g} s per cell)"
    text = f"{exercise.title}: 0 of {_points(exercise)}: {reason}."
    return Scored(0.0, [text], reason)


@dataclass
class Report:
    graded: int  # submissions graded in this run
    skipped: int  # already done (--resume)
    problems: list[str]  # "submission: status (why)" for every submission not fully graded
    summary: str
    duplicates: list[str] = field(default_factory=list)  # a student with two files of one notebook

    @property
    def status(self) -> int:
        return 1 if self.problems else 0


def grade(
    paths: Iterable[str],
    source: str | os.PathLike = DEFAULT_SOURCE,
    out: str | os.PathLike = "grades.csv",
    feedback: str | os.PathLike | None = None,
    limits: Limits = Limits(),
    jobs: int = 1,
    resume: bool = False,
    force: bool = False,
    log: Callable[[str], None] | None = None,
    student_pattern: str | re.Pattern | None = None,
) -> Report:
    """Grade every submission; write grades.csv, its totals file, the feedback files as results arrive, and
    the gradebook (one row per student) at the end.

    ``student_pattern``: a regular expression with a group ``student``, searched in each file's name; without
    it students are named by their folder (nbgrader's ``submitted/<student>/<assignment>/``).
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    pattern = compile_student_pattern(student_pattern)
    paths = list(paths)
    sources = load_sources(source)
    submissions = find_submissions(paths, pattern)
    feedback = Path(feedback) if feedback is not None else Path(out).parent / "feedback"
    if feedback.exists() and not feedback.is_dir():
        raise GradingError(f"--feedback {feedback}: not a folder")
    ledger = Ledger(out, resume=resume, force=force)
    names = dict(
        zip([s.key for s in submissions], feedback_names([s.file for s in submissions]), strict=True)
    )
    todo = [s for s in submissions if s.key not in ledger.done]
    skipped = len(submissions) - len(todo)
    if skipped:
        log(f"{skipped} submission(s) already graded in {ledger.out}: skipped")
    stop, errors, secret = threading.Event(), [], secrets.randbits(63)

    def work(one) -> Result | None:
        return (
            None
            if stop.is_set()
            else grade_submission(one.file, sources, limits, one.key, secret, one.student)
        )

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(work, one) for one in todo]
        try:
            for count, future in enumerate(as_completed(futures), start=1):
                result = future.result()
                target = feedback / names[result.submission]
                target.parent.mkdir(parents=True, exist_ok=True)
                write_file(target, result.text)
                ledger.write(result)
                if result.status == ERROR:
                    errors.append(result)
                why = f" ({result.notes})" if result.status != GRADED and result.notes else ""
                log(
                    f"[{count}/{len(todo)}] {result.submission}: {result.points:g} / {result.max_points:g} "
                    f"{result.status}{why}"
                )
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            kill_all_kernels()
            raise
    problems = [f"{row[0]}: {row[4]} ({row[5]})" for row in ledger.done.values() if row[4] != GRADED]
    problems += [
        f"{result.submission}: {ERROR} ({result.notes}; --resume grades it again)" for result in errors
    ]
    duplicates = write_gradebook(gradebook_path(out), ledger.done.values(), sorted(sources))
    return Report(len(todo), skipped, problems, class_summary(ledger.rows()), duplicates)


def compile_student_pattern(pattern: str | re.Pattern | None) -> re.Pattern | None:
    """The ``--student-pattern``, checked: it must compile and have a group named ``student``."""
    if pattern is None or isinstance(pattern, re.Pattern):
        compiled = pattern
    else:
        try:
            compiled = re.compile(pattern)
        except re.error as error:
            raise GradingError(f"--student-pattern {pattern!r}: not a regular expression ({error})") from None
    if compiled is not None and "student" not in compiled.groupindex:
        raise GradingError(f"--student-pattern {compiled.pattern!r}: needs a group (?P<student>...)")
    return compiled
