"""Grading a class's submitted notebooks: ``python -m labutils grade``.

Each submission runs in its own fresh kernel, in an empty temporary folder, under a time limit per cell,
a cap on its output and a limit on its resident memory. The grader trusts nothing in a submission: it finds
the notebook by ``metadata.labutils.notebook`` and the exercises by their ``grade_id``, runs the student's
cells in order, and right after the last copy of each answer cell runs *its own* check cell, taken from the
source notebooks (with the hidden tests the students never saw). Only the check outputs
(``application/vnd.labutils.check+json``) of the cells the grader sent itself count, so an edited check
cell or a printed "passed" gains nothing. Results go to a CSV file one whole submission at a time, so an
interrupted batch loses nothing and ``--resume`` continues it.

This protects the checks from the students; it does not protect the machine from their code (see the README).
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from labutils import checks
from labutils.checks import guard
from labutils.checks.core import Exercise
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
    totals_path,
    write_file,
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
)

CHECK_MIME = checks.MIME_TYPE  # what a check cell publishes
GRADER_MIME = "application/vnd.labutils.grader+json"  # what the grader's own inspection cell publishes
DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "solutions"
PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep  # labutils/
# The package's files that run answers rather than replace them: never "the package" to the guard.
NOT_THE_PACKAGE = (PACKAGE + "checks" + os.sep, PACKAGE + "instructor" + os.sep)

__all__ = [
    "COLUMNS", "TOTAL_COLUMNS", "GRADED", "INCOMPLETE", "FAILED", "ERROR", "GradingError", "SubmissionError",
    "Limits", "Source", "Result", "Report", "Ledger", "load_sources", "read_notebook", "identify",
    "make_plan", "grade_submission", "grade", "totals_path", "feedback_names", "class_summary",
    "kill_all_kernels",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------- the plan

#: Student code that reaches into the grading machinery: a hint for the instructor, not a proof.
_SUSPICIOUS = re.compile(
    r"display_pub|publish_display_data|settrace|setprofile|linecache|vnd\.labutils|_labutils_grader"
    r"|hidden_test|sys\.modules\s*\[|\blabutils\.checks\.\w+\s*=[^=]|\.(allclose|isclose|equal)\s*=[^=]"
)


@dataclass
class Step:
    code: str
    timeout: float
    role: str  # "student", or the grader's own "on", "visible", "full", "off"
    cell: int = 0  # the student's cell number, from 1
    exercise: Exercise | None = None


@dataclass
class Plan:
    steps: list[Step]
    exercise_notes: dict[str, list[str]]  # shown in the feedback of one exercise
    missing: set[str]  # grade_ids whose answer was not found
    notes: list[str]  # shown once in the feedback
    review: list[str]  # for the instructor only


#: The guard's source, run in the student's kernel without importing labutils there.
_GUARD = Path(guard.__file__).read_text(encoding="utf-8")


def _guard_code(exercise: Exercise, nonce: str) -> str:
    """The grader's cell before a check: :func:`labutils.checks.guard.watch` on the answer, left no name."""
    values = (exercise.function, exercise.forbidden, PACKAGE, NOT_THE_PACKAGE, nonce, GRADER_MIME)
    return (
        f"# {nonce}\n_labutils_guard = {{'__name__': 'labutils_grader_guard'}}\n"
        f"exec({_GUARD!r}, _labutils_guard)\n"
        f"_labutils_guard['watch']({', '.join(repr(value) for value in values)}, globals())\n"
        "del _labutils_guard\n"
    )


def _fresh(exercise: Exercise, nonce: str) -> str:
    """The start of each grader check cell: its nonce, and no hidden tests registered by student code."""
    return (
        f"# {nonce}\n__import__('sys').modules.get('labutils.checks') is None or getattr("
        f"__import__('sys').modules['labutils.checks'], '_HIDDEN', {{}}).pop({exercise.grade_id!r}, None)\n"
    )


def make_plan(notebook: dict, source: Source, limits: Limits, nonce: str) -> Plan:
    """Which of the student's cells run, in order, and where the grader's check cells go."""
    known = {exercise.grade_id: exercise for exercise in source.exercises}
    cells = [
        (number, cell)
        for number, cell in enumerate(notebook["cells"], start=1)
        if cell.get("cell_type") == "code"
    ]
    tagged: dict[str, list[int]] = {grade_id: [] for grade_id in known}
    check_cells, notes, review = set(), [], []
    for number, cell in cells:
        meta = labutils_meta(cell)
        if meta.get("kind") == "check":
            check_cells.add(number)  # the student's copy never runs: the grader brings its own
        elif meta.get("kind") == "answer" and meta.get("grade_id") in known:
            tagged[meta["grade_id"]].append(number)
        elif meta.get("kind") == "answer":
            notes.append(
                f"cell {number} is marked as the answer to an unknown exercise {meta.get('grade_id')!r} "
                "(renamed?); it was run as an ordinary cell"
            )
    chosen: dict[str, int] = {}
    exercise_notes: dict[str, list[str]] = {grade_id: [] for grade_id in known}
    for exercise in source.exercises:
        said = exercise_notes[exercise.grade_id]
        if tagged[exercise.grade_id]:
            chosen[exercise.grade_id] = tagged[exercise.grade_id][-1]
            if len(tagged[exercise.grade_id]) > 1:
                copies = ", ".join(str(n) for n in tagged[exercise.grade_id])
                said.append(
                    f"the answer cell appears {len(tagged[exercise.grade_id])} times (cells {copies}); "
                    "the last copy was graded"
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
                    f"answer cell found by the name `{exercise.function}` it defines (cell {found[-1]}); "
                    "its grading metadata was missing or renamed"
                )
                break
        else:
            said.append(f"answer cell not found: no cell defines `{exercise.function}` (deleted?)")
    order = [chosen[e.grade_id] for e in source.exercises if e.grade_id in chosen]
    for exercise in source.exercises:
        number = chosen.get(exercise.grade_id)
        if number is not None and any(number < earlier for earlier in order[: order.index(number)]):
            exercise_notes[exercise.grade_id].append(
                f"the answer cell was moved (now cell {number}); graded there"
            )
    steps, long_left = [], source.long_cells
    last = max(chosen.values(), default=0)
    for number, cell in cells:
        if number > last:
            break  # nothing after the last answer can change a grade
        code = cell_text(cell.get("source"))
        if number in check_cells or not code.strip():
            continue
        if _SUSPICIOUS.search(code):
            review.append(
                f"cell {number} touches the grading machinery ({_SUSPICIOUS.search(code).group(0)!r})"
            )
        long = "long" in cell_tags(cell) and long_left > 0
        long_left -= long
        steps.append(Step(code, limits.long_timeout if long else limits.timeout, "student", number))
        for exercise in source.exercises:
            if chosen.get(exercise.grade_id) != number:
                continue
            check = source.check_cells[exercise.grade_id]
            timeout = limits.long_timeout if check.long else limits.timeout
            steps.append(Step(_guard_code(exercise, nonce), limits.timeout, "on", number, exercise))
            steps.append(Step(_fresh(exercise, nonce) + check.visible, timeout, "visible", number, exercise))
            if check.full is not None:
                steps.append(Step(_fresh(exercise, nonce) + check.full, timeout, "full", number, exercise))
            steps.append(Step(f"_labutils_grader_off()  # {nonce}", limits.timeout, "off", number, exercise))
    missing = set(known) - set(chosen)
    return Plan(steps, exercise_notes, missing, notes, review)


# ---------------------------------------------------------------------------------------------- scoring


@dataclass
class Result:
    """One graded submission: its rows for grades.csv, its line in the totals file, its feedback file."""

    submission: str
    notebook: str
    rows: list[tuple[str, float, float, str]]  # (exercise, points, max_points, feedback)
    status: str
    notes: str = ""  # for the instructor (totals file)
    text: str = ""  # the feedback file

    @property
    def points(self) -> float:
        return round(sum(row[1] for row in self.rows), 2)

    @property
    def max_points(self) -> float:
        return round(sum(row[2] for row in self.rows), 2)


def _records(run: Run | None, grade_id: str) -> list[dict]:
    """The valid check results a cell published for this exercise."""
    records = []
    for data in run.displays if run else ():
        record = data.get(CHECK_MIME)
        if not isinstance(record, dict) or record.get("grade_id", grade_id) != grade_id:
            continue
        points, maximum = record.get("points"), record.get("max_points")
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (points, maximum))
        if numbers and maximum > 0:
            records.append(record)
    return records


def _names(records: list[dict], key: str) -> list[str]:
    return [
        str(name)
        for record in records
        for name in (record.get(key) or [])
        if isinstance(record.get(key), list)
    ]


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def score(
    exercise: Exercise, visible: Run, full: Run | None, verdict: dict | None
) -> tuple[float, list[str], list[str]]:
    """(points, feedback lines, the same in short) of one exercise.

    What the student reads comes from the visible check only, the one they ran themselves; the full check
    with the hidden tests gives the points and, of the hidden tests, only how many passed.
    """
    shown = _records(visible, exercise.grade_id)
    counted = shown if full is None else _records(full, exercise.grade_id)
    lines, short = [], []
    if shown:
        text = "\n".join(line.rstrip() for line in str(shown[-1].get("feedback") or "").strip().splitlines())
        failed = _names(shown, "failed")
        if text:
            lines.append(text)
            short.append(text.splitlines()[0])
        else:
            lines += [
                f"{key}: {', '.join(_names(shown, key))}"
                for key in ("passed", "failed")
                if _names(shown, key)
            ]
        if failed:
            short.append("failed: " + ", ".join(failed))
    if visible.error:
        lines.append(f"the check stopped with {_one_line(visible.error, 200)}")
    elif not shown:
        lines.append("the check published no result")
    fraction = 0.0
    if counted and not (full or visible).error:
        total = sum(float(r["max_points"]) for r in counted)
        fraction = min(max(sum(float(r["points"]) for r in counted) / total, 0.0), 1.0)
    if full is not None and not visible.error:
        lines.append(_hidden_summary(shown, counted, full, fraction))
    copied = guard.copied(exercise.function, exercise.forbidden, verdict)
    if copied:
        fraction = 0.0
        lines.append(copied)
    short += [
        line for line in lines if line not in short and "\n" not in line and not line.startswith("passed")
    ]
    return round(exercise.points * fraction, 2), lines, short


def _hidden_summary(shown: list[dict], counted: list[dict], full: Run, fraction: float) -> str:
    if full.error or not counted:
        return "hidden tests: failed"
    total = (
        len(_names(counted, "passed"))
        + len(_names(counted, "failed"))
        - len(_names(shown, "passed"))
        - len(_names(shown, "failed"))
    )
    failed = len(_names(counted, "failed")) - len(_names(shown, "failed"))
    if 0 <= failed <= total and total > 0:
        return f"hidden tests: {total - failed} of {total} passed"
    return "hidden tests: passed" if fraction >= 1 else "hidden tests: some failed"


def _verdict(run: Run, nonce: str) -> dict | None:
    for data in run.displays:
        verdict = data.get(GRADER_MIME)
        if isinstance(verdict, dict) and verdict.get("nonce") == nonce:
            return verdict
    return None


def grade_submission(
    path: str | os.PathLike,
    sources: dict[str, Source],
    limits: Limits = Limits(),
    submission: str | None = None,
) -> Result:
    """Grade one submitted notebook. Never raises: every failure is a Result with the reason."""
    submission = str(path) if submission is None else submission
    notebook_name = ""
    try:
        notebook = read_notebook(Path(path))
        source, identified = identify(notebook, sources)
    except SubmissionError as error:
        return _single(submission, notebook_name, 0.0, FAILED, str(error))
    notebook_name = source.notebook
    try:
        return _grade(notebook, source, limits, submission, identified)
    except Exception as error:  # the grader's own failure: --resume tries again
        return _single(
            submission,
            notebook_name,
            source.max_points,
            ERROR,
            f"grader error ({type(error).__name__}: {_one_line(error, 200)})",
        )


def _items(lines: list[str]) -> str:
    """A Markdown list; the further lines of an item (a check's one line per test) become its sub-items."""
    text = ""
    for line in lines:
        first, *more = line.split("\n")
        text += f"- {first}\n" + "".join(f"    - {item.strip()}\n" for item in more if item.strip())
    return text


def _single(submission: str, notebook: str, max_points: float, status: str, reason: str) -> Result:
    text = f"# Feedback on {notebook or 'your submission'}\n\n{submission}\n\n0 points: {reason}\n"
    return Result(submission, notebook, [("", 0.0, max_points, _one_line(reason))], status, reason, text)


def _grade(notebook: dict, source: Source, limits: Limits, submission: str, identified: str | None) -> Result:
    nonce = secrets.token_hex(16)
    plan = make_plan(notebook, source, limits, nonce)
    notes = [identified] if identified else []
    version = labutils_meta(notebook).get("version")
    if source.version and version and str(version) != source.version:
        notes.append(f"made from version {version} of the notebook; graded with version {source.version}")
    notes += plan.notes
    results: dict[str, tuple[float, list[str]]] = {}
    for grade_id in plan.missing:
        results[grade_id] = (0.0, [], [])
    stopped, runs = None, {}
    if plan.steps:
        with Kernel(limits) as kernel:
            for step in plan.steps:
                try:
                    run = kernel.run(step.code, step.timeout)
                except Stopped as stop:
                    where = (
                        f"cell {step.cell}"
                        if step.role == "student"
                        else f"the check of your answer (cell {step.cell})"
                    )
                    stopped = (step, f"{where} {stop}")
                    break
                if step.role == "student" and run.ename:
                    ename = run.ename if re.fullmatch(r"[A-Za-z_][\w.]{0,60}", run.ename) else "an exception"
                    notes.append(f"cell {step.cell} raised {ename}")
                elif step.role in ("visible", "full"):
                    runs[step.role] = run
                elif step.role == "off":
                    exercise = step.exercise
                    results[exercise.grade_id] = score(
                        exercise, runs["visible"], runs.get("full"), _verdict(run, nonce)
                    )
                    runs = {}
    rows, sections = [], []
    for exercise in source.exercises:
        points, lines, short = results.get(exercise.grade_id, (0.0, None, None))
        if lines is None:  # never reached
            step, reason = stopped
            if step.exercise is exercise:
                lines = [f"not graded: {reason}"]
            else:
                lines = [f"not graded: the notebook stopped before this exercise ({reason})"]
            short = lines
        lines, short = (
            plan.exercise_notes[exercise.grade_id] + lines,
            plan.exercise_notes[exercise.grade_id] + short,
        )
        rows.append((exercise.grade_id, points, exercise.points, _one_line("; ".join(short), 2000)))
        sections.append(
            f"## {exercise.grade_id}: {points:g} / {exercise.points:g} points\n\n" + _items(lines)
        )
    if stopped:
        notes.append(f"grading stopped: {stopped[1]}; later exercises got no points")
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
    instructor = ([stopped[1]] if stopped else []) + plan.review
    return Result(submission, source.notebook, rows, status, _one_line("; ".join(instructor), 1000), text)


@dataclass
class Report:
    graded: int  # submissions graded in this run
    skipped: int  # already done (--resume)
    problems: list[str]  # "submission: status (why)" for every submission not fully graded
    summary: str

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
) -> Report:
    """Grade every submission; write grades.csv, its totals file and the feedback files as results arrive."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    paths = list(paths)
    sources = load_sources(source)
    submissions = find_submissions(paths)
    feedback = Path(feedback) if feedback is not None else Path(out).parent / "feedback"
    if feedback.exists() and not feedback.is_dir():
        raise GradingError(f"--feedback {feedback}: not a folder")
    ledger = Ledger(out, resume=resume, force=force)
    names = dict(
        zip([key for key, _ in submissions], feedback_names([file for _, file in submissions]), strict=True)
    )
    todo = [(key, file) for key, file in submissions if key not in ledger.done]
    skipped = len(submissions) - len(todo)
    if skipped:
        log(f"{skipped} submission(s) already graded in {ledger.out}: skipped")
    stop, errors = threading.Event(), []

    def work(key: str, file: Path) -> Result | None:
        return None if stop.is_set() else grade_submission(file, sources, limits, key)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(work, key, file) for key, file in todo]
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
    return Report(len(todo), skipped, problems, class_summary(ledger.rows()))
