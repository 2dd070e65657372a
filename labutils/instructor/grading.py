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

import ast
import csv
import io
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from labutils import checks
from labutils.checks import guard
from labutils.checks.core import Exercise
from labutils.files import atomic_write
from labutils.instructor import release

CHECK_MIME = checks.MIME_TYPE  # what a check cell publishes
GRADER_MIME = "application/vnd.labutils.grader+json"  # what the grader's own inspection cell publishes
COLUMNS = ("submission", "notebook", "exercise", "points", "max_points", "feedback")
TOTAL_COLUMNS = ("submission", "notebook", "points", "max_points", "status", "notes")
DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "solutions"
PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep  # labutils/
# The package's files that run answers rather than replace them: never "the package" to the guard.
NOT_THE_PACKAGE = (PACKAGE + "checks" + os.sep, PACKAGE + "instructor" + os.sep)
MAX_NOTEBOOK_BYTES = 200_000_000

#: statuses in the totals file; ``error`` (the grader's own failure) is graded again by --resume
GRADED, INCOMPLETE, FAILED, ERROR = "graded", "incomplete", "failed", "error"


class GradingError(Exception):
    """A problem with the grader's inputs (source notebooks, output files): a usage error of the command."""


class SubmissionError(Exception):
    """A submission that cannot be graded at all (not JSON, not a lab notebook): one row with zero points."""


@dataclass(frozen=True)
class Limits:
    """What one submission may use. Times in seconds, sizes in megabytes."""

    timeout: float = 120.0  # per cell
    long_timeout: float = 600.0  # per cell tagged ``long`` (no more such cells than the source has)
    memory_mb: float = 4096.0  # resident memory of the kernel and its children
    output_mb: float = 10.0  # everything the submission prints or displays
    startup: float = 60.0  # for the kernel to start


# ---------------------------------------------------------------------------------------------- notebooks


@dataclass(frozen=True)
class CheckCell:
    """The grader's copy of an exercise's check cell."""

    visible: str  # the check cell as students see it
    full: str | None  # the check cell with its hidden tests, None when it has none
    long: bool = False


@dataclass(frozen=True)
class Source:
    """A source notebook: its exercises (forbidden: as :mod:`labutils.checks` says, else the answer cell's
    ``forbidden`` or its function's name) and their check cells by grade_id."""

    notebook: str
    version: str
    exercises: tuple[Exercise, ...]
    check_cells: dict[str, CheckCell]
    long_cells: int  # code cells tagged ``long``

    @property
    def max_points(self) -> float:
        return sum(exercise.points for exercise in self.exercises)


def _text(source) -> str:
    return "".join(source) if isinstance(source, list) else str(source or "")


def _labutils_meta(holder) -> dict:
    """``metadata.labutils`` with only well-typed string values: a submission's metadata may be anything."""
    meta = holder.get("metadata") if isinstance(holder, dict) else None
    value = meta.get("labutils") if isinstance(meta, dict) else None
    return (
        {k: v for k, v in value.items() if isinstance(v, (str, int, float))}
        if isinstance(value, dict)
        else {}
    )


def _tags(cell: dict) -> list:
    tags = cell.get("metadata", {}).get("tags") if isinstance(cell.get("metadata"), dict) else None
    return tags if isinstance(tags, list) else []


def _parse(code: str) -> ast.Module | None:
    """The cell as Python, IPython magics and shell lines blanked out; None if it still does not parse."""
    try:
        return ast.parse(code)
    except SyntaxError:
        pass
    lines = [
        line[: len(line) - len(line.lstrip())] + "pass"
        if line.lstrip()[:1] in "%!" and line.strip()
        else line
        for line in code.split("\n")
    ]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def defined_names(code: str) -> list[str]:
    """Names a cell defines at top level with ``def`` or ``class``, in order."""
    tree = _parse(code)
    if tree is None:
        return re.findall(r"^(?:async\s+def|def|class)\s+(\w+)", code, flags=re.M)
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return [node.name for node in tree.body if isinstance(node, kinds)]


def assigned_names(code: str) -> set[str]:
    """Names a cell binds at top level by assignment (``f = …``): an answer without metadata or ``def``."""
    tree = _parse(code)
    names: set[str] = set()
    for node in tree.body if tree else ():
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            if isinstance(target, ast.Name):
                names.add(target.id)
    return names


def read_notebook(path: Path) -> dict:
    """A notebook's JSON, checked only as far as grading needs. Raises SubmissionError."""
    try:
        if path.stat().st_size > MAX_NOTEBOOK_BYTES:
            raise SubmissionError(f"the file is larger than {MAX_NOTEBOOK_BYTES // 1_000_000} MB")
        notebook = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SubmissionError(f"not a notebook: the file is not valid JSON ({error})") from None
    except (OSError, RecursionError) as error:
        raise SubmissionError(f"cannot read the file ({type(error).__name__}: {error})") from None
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise SubmissionError("not a Jupyter notebook: there is no list of cells")
    notebook["cells"] = [cell for cell in notebook["cells"] if isinstance(cell, dict)]
    return notebook


def load_source(path: Path) -> Source | None:
    """The exercises of one source notebook, or None for a notebook that is not a lab notebook.

    The visible part of each check is taken from the student version that ``labutils.release`` makes, so it
    is exactly what the students ran; the full check cell adds the hidden tests.
    """
    import nbformat

    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception as error:  # JSON or schema errors
        raise GradingError(f"source {path}: not a readable notebook ({error})") from None
    name = _labutils_meta(notebook).get("notebook")
    if not isinstance(name, str) or not name:
        return None
    try:
        student = release.student_notebook(notebook, name)
    except release.ReleaseError as error:
        raise GradingError(f"source {path}: {error}") from None
    exercises, check_cells, long_cells = [], {}, 0
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        long_cells += "long" in _tags(cell)
        meta = _labutils_meta(cell)
        if meta.get("kind") != "check":
            continue
        answer = notebook.cells[index - 1].metadata["labutils"]  # release checked: the answer is just before
        grade_id, function = meta["grade_id"], defined_names(notebook.cells[index - 1].source)[0]
        visible = student.cells[index].source
        full = cell.source if visible.strip() != cell.source.strip() else None
        known = checks.EXERCISES.get(grade_id)
        if known is not None:
            number, forbidden = known.number, known.forbidden
        else:  # bare names match any labutils function or class of that name
            number, forbidden = "", tuple(answer.get("forbidden") or (function,))
        exercises.append(Exercise(grade_id, number, float(answer["points"]), forbidden))
        check_cells[grade_id] = CheckCell(visible, full, "long" in _tags(cell))
    version = _labutils_meta(notebook).get("version", "")
    return Source(name, str(version), tuple(exercises), check_cells, long_cells)


def load_sources(folder: str | os.PathLike) -> dict[str, Source]:
    """The lab notebooks of a folder (searched recursively), by notebook name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GradingError(f"--source {folder}: no such folder")
    sources: dict[str, Source] = {}
    for path in sorted(folder.rglob("*.ipynb")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        source = load_source(path)
        if source is None:
            continue
        if source.notebook in sources:
            raise GradingError(f"--source {folder}: two notebooks are named {source.notebook!r}")
        sources[source.notebook] = source
    if not sources:
        raise GradingError(f"--source {folder}: no lab notebooks (with metadata.labutils.notebook) there")
    return sources


def identify(notebook: dict, sources: dict[str, Source]) -> tuple[Source, str | None]:
    """(the source a submission was made from, a note when the notebook's own metadata did not say)."""
    name = _labutils_meta(notebook).get("notebook")
    if isinstance(name, str) and name:
        if name in sources:
            return sources[name], None
        raise SubmissionError(f"unknown lab notebook {name!r} (known: {', '.join(sorted(sources))})")
    # The metadata is gone (a copy into a fresh notebook): recognise the exercises instead.
    grade_ids = {_labutils_meta(cell).get("grade_id") for cell in notebook["cells"]}
    codes = [_text(cell.get("source")) for cell in notebook["cells"] if cell.get("cell_type") == "code"]
    defined = {name for code in codes for name in defined_names(code)}
    scores = []
    for source in sources.values():
        ids = sum(exercise.grade_id in grade_ids for exercise in source.exercises)
        names = sum(exercise.function in defined for exercise in source.exercises)
        scores.append((max(ids, names) / max(len(source.exercises), 1), source))
    scores.sort(key=lambda pair: -pair[0])
    if scores and scores[0][0] >= 0.5 and (len(scores) == 1 or scores[1][0] < scores[0][0]):
        source = scores[0][1]
        return (
            source,
            f"the notebook had lost its labutils metadata; recognised as {source.notebook} by its exercises",
        )
    raise SubmissionError(
        "not a lab notebook: it has no metadata.labutils.notebook and none of the exercises"
    )


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
        meta = _labutils_meta(cell)
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
                if n not in check_cells and exercise.function in finder(_text(cell.get("source")))
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
        code = _text(cell.get("source"))
        if number in check_cells or not code.strip():
            continue
        if _SUSPICIOUS.search(code):
            review.append(
                f"cell {number} touches the grading machinery ({_SUSPICIOUS.search(code).group(0)!r})"
            )
        long = "long" in _tags(cell) and long_left > 0
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


# ---------------------------------------------------------------------------------------------- the kernel


class Stopped(Exception):
    """The kernel was stopped (time, memory, output) or died; the message says why."""


@dataclass
class Run:
    """What one cell did: its error (``Name: message``) and the display outputs it published."""

    error: str | None = None
    ename: str | None = None
    displays: list[dict] = field(default_factory=list)


_LIVE: set[Kernel] = set()  # every running kernel, so that an interrupt can kill them all
_LIVE_LOCK = threading.Lock()


def _own_python_specs():
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class OwnPython(KernelSpecManager):
        """Always this Python (the project's environment), whatever kernels the machine has registered."""

        def get_kernel_spec(self, kernel_name):
            argv = [
                sys.executable,
                "-m",
                "ipykernel_launcher",
                "-f",
                "{connection_file}",
                "--HistoryManager.hist_file=:memory:",
            ]  # kernels running side by side share no history file
            return KernelSpec(argv=argv, display_name="labutils grader", language="python", resource_dir="")

    return OwnPython()


class Kernel:
    """A fresh python3 kernel in an empty temporary folder, killed on any limit; a context manager."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.folder = Path(tempfile.mkdtemp(prefix="labutils-grade-"))
        self.work = self.folder / "work"  # the kernel's working folder; its log stays out of reach
        self.work.mkdir()
        self.output_bytes = 0
        self.reason: str | None = None  # set by the watcher when it kills the kernel
        self._done = threading.Event()
        self.manager = self.client = self.process = None

    def __enter__(self) -> Kernel:
        from jupyter_client import KernelManager

        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self.manager = KernelManager(
                kernel_name="labutils-grader", kernel_spec_manager=_own_python_specs()
            )
            self._log = open(self.folder / "kernel.log", "wb")  # noqa: SIM115 (closed in __exit__)
            self.manager.start_kernel(cwd=str(self.work), stdout=subprocess.DEVNULL, stderr=self._log)
            self.process = self.manager.provisioner.process
            self.client = self.manager.client()
            self.client.start_channels()
            self.client.wait_for_ready(timeout=self.limits.startup)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def _processes(self):
        import psutil

        try:
            kernel = psutil.Process(self.process.pid)
            return [kernel, *kernel.children(recursive=True)]
        except psutil.Error:
            return []

    def kill(self, reason: str | None = None) -> None:
        import psutil

        if reason and self.reason is None:
            self.reason = reason
        for process in self._processes():
            try:
                process.kill()
            except psutil.Error:
                pass

    def _watch(self) -> None:
        import psutil

        limit = self.limits.memory_mb * 1e6
        while not self._done.wait(0.05):
            rss = 0
            for process in self._processes():
                try:
                    rss += process.memory_info().rss
                except psutil.Error:
                    pass
            if rss > limit:
                return self.kill(f"used more than {self.limits.memory_mb:g} MB of memory")
            if self._log_size() > self.limits.output_mb * 1e6:
                return self.kill(f"printed more than {self.limits.output_mb:g} MB")

    def _log_size(self) -> int:
        try:
            return os.path.getsize(self.folder / "kernel.log")
        except OSError:
            return 0

    def _dead(self) -> str | None:
        status = self.process.poll()
        if status is None:
            return None
        if self.reason:
            return self.reason
        if status < 0:
            try:
                return f"crashed the kernel ({signal.Signals(-status).name})"
            except ValueError:
                pass
        return f"crashed the kernel (exit status {status})"

    def run(self, code: str, timeout: float) -> Run:
        """Execute one cell; raises Stopped when it runs too long, prints too much or the kernel dies."""
        msg_id = self.client.execute(code, store_history=False, allow_stdin=False, stop_on_error=False)
        deadline, result = time.monotonic() + timeout, Run()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill(f"ran longer than {timeout:g} s")
                raise Stopped(self.reason)
            try:
                message = self.client.get_iopub_msg(timeout=min(remaining, 0.1))
            except queue.Empty:
                reason = self._dead()
                if reason:
                    raise Stopped(reason) from None
                continue
            content, kind = message.get("content", {}), message.get("msg_type")
            self.output_bytes += _size(content) if kind != "status" else 0
            if self.output_bytes > self.limits.output_mb * 1e6:
                self.kill(f"printed more than {self.limits.output_mb:g} MB")
                raise Stopped(self.reason)
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue  # output of a thread started by an earlier cell: never a result
            if kind in ("display_data", "execute_result", "update_display_data"):
                result.displays.append(content.get("data") or {})
            elif kind == "error":
                result.ename = str(content.get("ename", ""))
                result.error = f"{result.ename}: {content.get('evalue', '')}"
            elif kind == "status" and content.get("execution_state") == "idle":
                return result

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self.process is not None:
            self.kill()
        for close in (
            lambda: self.client.stop_channels(),
            lambda: self.manager.shutdown_kernel(now=True),
            lambda: self._log.close(),
        ):
            try:
                close()
            except Exception:
                pass
        shutil.rmtree(self.folder, ignore_errors=True)
        with _LIVE_LOCK:
            _LIVE.discard(self)


def _size(content: dict) -> int:
    if "text" in content:
        return len(content["text"])
    data = content.get("data") or {}
    return sum(
        len(value) if isinstance(value, str) else len(json.dumps(value)) for value in data.values()
    ) + len("".join(content.get("traceback") or ()))


def kill_all_kernels() -> None:
    """Kill every kernel this process started (on an interrupt: no student's code outlives the grader)."""
    with _LIVE_LOCK:
        kernels = list(_LIVE)
    for kernel in kernels:
        kernel.kill("the grader was interrupted")


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
    version = _labutils_meta(notebook).get("version")
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


# ---------------------------------------------------------------------------------------------- the files


def totals_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}-totals{out.suffix or '.csv'}")


def _csv_line(values: Iterable) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def _number(value: float) -> str:
    return f"{round(value, 2):g}"


def _safe(text: str) -> str:
    """One line, and never a spreadsheet formula."""
    text = " ".join(str(text).split())
    return "'" + text if text[:1] in ("=", "+", "@") else text


def _read_lines(path: Path, columns: tuple[str, ...]) -> list[list[str]]:
    """The complete rows of a file this module wrote; a last line cut short by a crash is dropped."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    lines.pop()  # after the last newline: empty, or a line cut short
    rows = []
    for number, line in enumerate(lines):
        try:
            row = next(csv.reader([line]))
        except (csv.Error, StopIteration):
            continue
        if number == 0:
            if tuple(row) != columns:
                raise GradingError(f"{path}: not a file written by the grader (its header is {line!r})")
            continue
        if len(row) == len(columns):
            rows.append(row)
    return rows


def _replace(path: Path, text: str) -> None:
    """Write a whole file so that a crash leaves either the old or the new one."""
    with atomic_write(path, "w", encoding="utf-8", newline="") as file:
        file.write(text)


class Ledger:
    """grades.csv and its totals file, appended one whole submission at a time.

    A submission is done once its line is in the totals file. Its rows in grades.csv are written and synced
    first, so a crash at any moment leaves either a done submission or one whose stray rows ``--resume``
    drops before grading it again: nothing is lost and nothing is counted twice.
    """

    def __init__(self, out: str | os.PathLike, resume: bool = False, force: bool = False):
        self.out, self.totals = Path(out), totals_path(out)
        self.done: dict[str, list[str]] = {}
        if not self.out.parent.is_dir():
            raise GradingError(f"--out {self.out}: folder {self.out.parent} does not exist")
        if self.out.is_dir():
            raise GradingError(f"--out {self.out}: is a folder, expected a file name")
        exists = self.out.exists() or self.totals.exists()
        if exists and not (resume or force):
            raise GradingError(f"{self.out} exists: add --resume to continue it or --force to start again")
        rows: list[list[str]] = []
        if exists and resume:
            for row in _read_lines(self.totals, TOTAL_COLUMNS):
                if row[4] == ERROR:
                    self.done.pop(row[0], None)
                else:
                    self.done[row[0]] = row
            rows = [row for row in _read_lines(self.out, COLUMNS) if row[0] in self.done]
        _replace(self.out, "".join(_csv_line(r) for r in [COLUMNS, *rows]))
        _replace(self.totals, "".join(_csv_line(r) for r in [TOTAL_COLUMNS, *self.done.values()]))

    def write(self, result: Result) -> None:
        rows = [
            (result.submission, result.notebook, exercise, _number(points), _number(maximum), _safe(feedback))
            for exercise, points, maximum, feedback in result.rows
        ]
        total = (
            result.submission,
            result.notebook,
            _number(result.points),
            _number(result.max_points),
            result.status,
            _safe(result.notes),
        )
        for path, lines in ((self.out, rows), (self.totals, [total])):
            with open(path, "a", encoding="utf-8", newline="") as file:
                file.write("".join(_csv_line(line) for line in lines))
                file.flush()
                os.fsync(file.fileno())
        if result.status != ERROR:
            self.done[result.submission] = list(total)

    def rows(self) -> list[list[str]]:
        return _read_lines(self.out, COLUMNS)


def find_submissions(paths: Iterable[str]) -> list[tuple[str, Path]]:
    """(the path as given, the file) of every notebook: files as named, folders searched recursively."""
    found, seen = [], set()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files = []
            for file in sorted(path.rglob("*.ipynb")):
                relative = file.relative_to(path)
                if not any(
                    part.startswith(".") for part in relative.parts
                ):  # .ipynb_checkpoints, ._x (macOS)
                    files.append((os.path.join(given, *relative.parts), file))
        elif path.is_file():
            files = [(given, path)]
        else:
            raise GradingError(f"{given}: no such file or folder")
        for key, file in files:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                found.append((key, file))
    if not found:
        raise GradingError(f"no notebooks found in {', '.join(paths)}")
    return found


def feedback_names(files: list[Path]) -> list[Path]:
    """Feedback file names that mirror the submissions' paths below their common folder: never the same twice.

    ``alice/04.ipynb`` and ``bob/04.ipynb`` become ``alice/04.feedback.md`` and ``bob/04.feedback.md``.
    """
    resolved = [file.resolve() for file in files]
    root = Path(os.path.commonpath([path.parent for path in resolved])) if resolved else Path()
    names, used = [], set()
    for path in resolved:
        relative = path.relative_to(root)
        stem = relative.name[: -len(".ipynb")] if relative.name.endswith(".ipynb") else relative.name
        name, n = relative.with_name(f"{stem}.feedback.md"), 1
        while name in used:
            n += 1
            name = relative.with_name(f"{stem}-{n}.feedback.md")
        used.add(name)
        names.append(name)
    return names


def class_summary(rows: list[list[str]]) -> str:
    """Points per exercise across the class, hardest first."""
    table: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row[2]:
            table.setdefault(row[2], []).append((float(row[3]), float(row[4])))
    if not table:
        return "no exercises were graded"
    width = max(len("exercise"), *(len(name) for name in table))
    lines = [f"{'exercise':<{width}}  {'n':>4}  {'mean':>11}  {'full':>5}  {'zero':>5}"]

    def hardness(item):
        scores = item[1]
        return sum(p / m if m else 1 for p, m in scores) / len(scores), item[0]

    for name, scores in sorted(table.items(), key=hardness):
        n, maximum = len(scores), max(m for _, m in scores)
        mean = sum(p for p, _ in scores) / n
        full = sum(p >= m for p, m in scores) / n
        zero = sum(p == 0 for p, _ in scores) / n
        lines.append(
            f"{name:<{width}}  {n:>4}  {f'{mean:.2f} / {maximum:g}':>11}  {full:>5.0%}  {zero:>5.0%}"
        )
    return "\n".join(lines)


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
                _replace(target, result.text)
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
