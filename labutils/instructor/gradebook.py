"""The grader's files: a graded submission (:class:`Result`), grades.csv and its totals file, written one
whole submission at a time, the gradebook (one row per student), and the feedback files' names."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from labutils.files import atomic_write
from labutils.instructor.sources import GradingError

COLUMNS = ("submission", "notebook", "exercise", "points", "max_points", "feedback")
SIMILARITY_COLUMNS = ("student", "other_student", "exercise", "alike", "submission", "other_submission")
TOTAL_COLUMNS = ("submission", "notebook", "points", "max_points", "status", "notes", "student")
#: statuses in the totals file; ``error`` (the grader's own failure) is graded again by --resume
GRADED, INCOMPLETE, FAILED, ERROR = "graded", "incomplete", "failed", "error"


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
    answers: dict[str, str] = field(default_factory=dict)  # grade_id -> the answer cell graded (similarity)
    left: list[str] = field(default_factory=list)  # its processes that could not be ended, as "pid (name)"

    @property
    def points(self) -> float:
        return round(sum(row[1] for row in self.rows), 2)

    @property
    def max_points(self) -> float:
        return round(sum(row[2] for row in self.rows), 2)


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


def write_file(path: Path, text: str) -> None:
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
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise GradingError(f"--out {self.out}: cannot make its folder ({error.strerror})") from None
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
        self.lines = [list(row) for row in rows]  # grades.csv's rows, as written: the files can be restored
        self.totals_lines = [list(row) for row in self.done.values()]
        self.restore()

    def restore(self) -> list[Path]:
        """Write both files again from what the ledger wrote (after a change from outside); returns them."""
        write_file(self.out, "".join(_csv_line(r) for r in [COLUMNS, *self.lines]))
        write_file(self.totals, "".join(_csv_line(r) for r in [TOTAL_COLUMNS, *self.totals_lines]))
        return [self.out, self.totals]

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
            _safe(result.student),
        )
        for path, lines in ((self.out, rows), (self.totals, [total])):
            with open(path, "a", encoding="utf-8", newline="") as file:
                file.write("".join(_csv_line(line) for line in lines))
                file.flush()
                os.fsync(file.fileno())
        self.lines += [list(row) for row in rows]
        self.totals_lines.append(list(total))
        if result.status != ERROR:
            self.done[result.submission] = list(total)

    def rows(self) -> list[list[str]]:
        return [list(row) for row in self.lines]


def gradebook_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}-gradebook{out.suffix or '.csv'}")


def write_gradebook(path: Path, totals: Iterable[list[str]], notebooks: list[str]) -> list[str]:
    """One row per student: a column per notebook (0 when missing) and the total; returns the duplicates.

    A student with two files of one notebook is reported, and the better of them counted.
    """
    points: dict[str, dict[str, list[tuple[float, str]]]] = {}
    for row in totals:
        submission, notebook, value, student = row[0], row[1], row[2], row[6]
        if notebook in notebooks:
            points.setdefault(student, {}).setdefault(notebook, []).append((float(value), submission))
        else:
            points.setdefault(student, {})
    duplicates, lines = [], [("student", *notebooks, "total")]
    for student in sorted(points):
        values = []
        for notebook in notebooks:
            found = sorted(points[student].get(notebook, []), reverse=True)
            if len(found) > 1:
                files = ", ".join(submission for _, submission in sorted(found, key=lambda x: x[1]))
                duplicates.append(f"{student}: {len(found)} files of {notebook} ({files}); the best counted")
            values.append(found[0][0] if found else 0.0)
        lines.append((_safe(student), *(_number(v) for v in values), _number(sum(values))))
    write_file(path, "".join(_csv_line(line) for line in lines))
    return duplicates


def similarity_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}-similarity{out.suffix or '.csv'}")


def write_similarity(path: Path, pairs: Iterable) -> None:
    """One row per pair of students' answers alike (:class:`~labutils.instructor.similarity.Pair`)."""
    lines = [SIMILARITY_COLUMNS]
    for pair in pairs:
        first, second = pair.first, pair.second
        lines.append(
            (_safe(first.student), _safe(second.student), pair.exercise, f"{pair.alike:.2f}",
             _safe(first.submission), _safe(second.submission))
        )  # fmt: skip
    write_file(path, "".join(_csv_line(line) for line in lines))


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
