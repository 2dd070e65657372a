"""The notebooks as grading reads them: the source notebooks' exercises and check cells, and submissions.

A submission's JSON is trusted for nothing: :func:`read_notebook` checks only what grading needs, and
:func:`identify` finds its source notebook by its metadata or, when that is gone, by its exercises.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from labutils import checks
from labutils.checks.core import CHECKS, Exercise
from labutils.instructor import release

MAX_NOTEBOOK_BYTES = 200_000_000


class GradingError(Exception):
    """A problem with the grader's inputs (source notebooks, output files): a usage error of the command."""


class SubmissionError(Exception):
    """A submission that cannot be graded at all (not JSON, not a lab notebook): one row with zero points."""


@dataclass(frozen=True)
class CheckCell:
    """What the grader keeps of an exercise's cells: the answer's stub, and whether its check is long."""

    stub: str  # the answer cell as students got it: replays put it in place of an answer that stopped
    long: bool = False


@dataclass(frozen=True)
class Source:
    """A source notebook: its exercises, as :mod:`labutils.checks` declares them, and their cells by grade_id."""

    notebook: str
    version: str
    exercises: tuple[Exercise, ...]
    check_cells: dict[str, CheckCell]
    long_cells: int  # code cells tagged ``long``

    @property
    def max_points(self) -> float:
        return sum(exercise.points for exercise in self.exercises)


def cell_text(source) -> str:
    return "".join(source) if isinstance(source, list) else str(source or "")


def labutils_meta(holder) -> dict:
    """``metadata.labutils`` with only well-typed string values: a submission's metadata may be anything."""
    meta = holder.get("metadata") if isinstance(holder, dict) else None
    value = meta.get("labutils") if isinstance(meta, dict) else None
    return (
        {k: v for k, v in value.items() if isinstance(v, (str, int, float))}
        if isinstance(value, dict)
        else {}
    )


def cell_tags(cell: dict) -> list:
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

    Each exercise must be declared in :mod:`labutils.checks`: the grader rebuilds its cases and judges them
    in its own process, and never runs the notebook's check cells. The stubs are taken from the student
    version that :mod:`labutils.instructor.release` makes, so they are exactly what the students got.
    """
    import nbformat

    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception as error:  # JSON or schema errors
        raise GradingError(f"source {path}: not a readable notebook ({error})") from None
    name = labutils_meta(notebook).get("notebook")
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
        long_cells += "long" in cell_tags(cell)
        meta = labutils_meta(cell)
        if meta.get("kind") != "check":
            continue
        answer = notebook.cells[index - 1].metadata["labutils"]  # release checked: the answer is just before
        grade_id = meta["grade_id"]
        known = checks.EXERCISES.get(grade_id)
        if known is None or grade_id not in CHECKS:
            raise GradingError(
                f"source {path}: exercise {grade_id!r} is not declared in labutils.checks; the grader judges "
                "only exercises whose cases and judge the package holds"
            )
        exercises.append(Exercise(grade_id, known.number, float(answer["points"]), known.forbidden))
        check_cells[grade_id] = CheckCell(student.cells[index - 1].source, "long" in cell_tags(cell))
    version = labutils_meta(notebook).get("version", "")
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
    name = labutils_meta(notebook).get("notebook")
    if isinstance(name, str) and name:
        if name in sources:
            return sources[name], None
        raise SubmissionError(f"unknown lab notebook {name!r} (known: {', '.join(sorted(sources))})")
    # The metadata is gone (a copy into a fresh notebook): recognise the exercises instead.
    grade_ids = {labutils_meta(cell).get("grade_id") for cell in notebook["cells"]}
    codes = [cell_text(cell.get("source")) for cell in notebook["cells"] if cell.get("cell_type") == "code"]
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


@dataclass(frozen=True)
class Submission:
    """A submitted file: ``key`` is its path as given (the grades' first column), ``student`` who sent it."""

    key: str
    file: Path
    student: str


def student_of(relative: Path, pattern: re.Pattern | None) -> str | None:
    """Who submitted a file, from its path below the folder given to ``grade``.

    With a ``pattern`` (a regular expression with a group ``student``): searched in the file's name, None
    when it does not match. Without: nbgrader's layout, ``[submitted/]<student>/<assignment>/<notebook>``,
    or ``<student>/<notebook>``; a file alone in a flat folder is its own student, named by its file name.
    """
    if pattern is not None:
        match = pattern.search(relative.name)
        return match.group("student") if match and match.group("student") else None
    parts = relative.parts
    if "submitted" in parts[:-1]:
        index = len(parts) - 1 - parts[::-1].index("submitted")
        if index + 1 < len(parts) - 1:
            return parts[index + 1]
    if len(parts) >= 2:
        return parts[-3] if len(parts) >= 3 else parts[0]
    return relative.name.removesuffix(".ipynb")


def find_submissions(paths: Iterable[str], pattern: re.Pattern | None = None) -> list[Submission]:
    """Every notebook: files as named, folders searched recursively; each with its student."""
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
                    files.append((os.path.join(given, *relative.parts), file, relative))
        elif path.is_file():
            files = [(given, path, Path(path.name))]
        else:
            raise GradingError(f"{given}: no such file or folder")
        for key, file, relative in files:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                student = student_of(relative, pattern)
                found.append(Submission(key, file, student if student is not None else f"? {relative.name}"))
    if not found:
        raise GradingError(f"no notebooks found in {', '.join(paths)}")
    return found
