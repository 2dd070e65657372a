"""Student versions of the notebooks: ``solutions/`` is the single source, ``notebooks/`` is made from it.

``python -m labutils student`` writes them; ``--check`` only compares and lists the notebooks that differ.
A student version is its solution notebook with

* the region between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` of each answer cell replaced by
  ``raise NotImplementedError("Exercise 4.2: write masked_attention (see the text above)")`` at the
  region's indentation (the exercise number is the notebook's number and the answer's rank in it);
* the region between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` of each check cell removed;
* outputs and execution counts cleared, the run-time ``execution`` metadata dropped, every other piece of
  metadata kept (``metadata.labutils`` of the notebook and of its cells above all);
* cell ids ``<notebook>-<index>``, nbformat 4.5, written the way ``nbformat`` writes (sorted keys), so the
  same source always gives the same bytes.

Cells are recognised by ``metadata.labutils.kind``: ``"answer"`` (defines one function, holds one solution
region) and ``"check"`` (right after its answer cell, same ``grade_id``). Markers anywhere else are an error,
so that nothing of a solution can leak into a student notebook.
"""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import nbformat

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
_MARKERS = (BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN, END_HIDDEN)


class ReleaseError(ValueError):
    """A solution notebook that cannot be turned into a student version (the message names the cell)."""


def cell_id(notebook: str, index: int) -> str:
    """The stable id of cell ``index`` of ``notebook``: ``04_attention-007``."""
    return f"{notebook}-{index:03d}"


def _info(cell) -> dict:
    info = cell.get("metadata", {}).get("labutils", {})
    return info if isinstance(info, dict) else {}


def _replace_regions(
    source: str, begin: str, end: str, where: str, replacement: str | None
) -> tuple[str, int]:
    """Replace each ``begin`` … ``end`` region (markers included) by ``replacement``, at its indentation."""
    out: list[str] = []
    regions, inside = 0, None
    for number, line in enumerate(source.split("\n"), start=1):
        stripped = line.strip()
        if stripped == begin:
            if inside is not None:
                raise ReleaseError(f"{where}: {begin!r} at line {number} inside another region")
            inside = line[: len(line) - len(line.lstrip())]
            regions += 1
            if replacement is not None:
                out.append(inside + replacement)
        elif stripped == end:
            if inside is None:
                raise ReleaseError(f"{where}: {end!r} at line {number} without {begin!r}")
            inside = None
        elif inside is None:
            out.append(line)
    if inside is not None:
        raise ReleaseError(f"{where}: {begin!r} is never closed by {end!r}")
    return "\n".join(out), regions


def _function_name(source: str, where: str) -> str:
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise ReleaseError(
            f"{where}: the answer cell is not valid Python ({error.msg}, line {error.lineno})"
        ) from None
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    if len(functions) != 1 or len(tree.body) != 1:
        raise ReleaseError(f"{where}: an answer cell defines exactly one function and nothing else")
    return functions[0].name


def _notebook_number(name: str) -> int:
    match = re.match(r"(\d+)_", name)
    if not match:
        raise ReleaseError(f"{name}: a notebook's name starts with its number, as in 04_attention")
    return int(match.group(1))


def validate(nb, name: str) -> list[dict]:
    """Check the conventions of a solution notebook; return its answer cells' ``metadata.labutils``."""
    info = nb.get("metadata", {}).get("labutils")
    if not isinstance(info, dict) or info.get("notebook") != name or not info.get("version"):
        raise ReleaseError(f"{name}: metadata.labutils must be {{'notebook': {name!r}, 'version': …}}")
    answers = []
    cells = nb.cells
    for index, cell in enumerate(cells):
        kind, where = _info(cell).get("kind"), f"{name}, cell {index}"
        text = cell.source
        if kind == "answer":
            grade_id = _info(cell).get("grade_id", "")
            if not grade_id.startswith(f"{name}.") or not isinstance(_info(cell).get("points"), int):
                raise ReleaseError(
                    f"{where}: an answer cell needs a grade_id '{name}.<function>' and integer points"
                )
            function = _function_name(text, where)
            if grade_id != f"{name}.{function}":
                raise ReleaseError(f"{where}: grade_id {grade_id!r} does not name the function {function!r}")
            if _replace_regions(text, BEGIN_SOLUTION, END_SOLUTION, where, "")[1] != 1:
                raise ReleaseError(
                    f"{where}: an answer cell holds one {BEGIN_SOLUTION} … {END_SOLUTION} region"
                )
            after = cells[index + 1] if index + 1 < len(cells) else None
            if (
                after is None
                or _info(after).get("kind") != "check"
                or _info(after).get("grade_id") != grade_id
            ):
                raise ReleaseError(
                    f"{where}: the answer cell must be followed by its check cell ({grade_id})"
                )
            answers.append(dict(_info(cell)))
        elif kind == "check":
            _replace_regions(text, BEGIN_HIDDEN, END_HIDDEN, where, None)
            if BEGIN_SOLUTION in text or END_SOLUTION in text:
                raise ReleaseError(f"{where}: a check cell holds no solution region")
        elif any(marker in text for marker in _MARKERS):
            raise ReleaseError(f"{where}: solution or hidden-test markers outside an answer or check cell")
    return answers


def student_notebook(nb, name: str):
    """The student version of the solution notebook ``nb`` (a copy; ``nb`` is left as it is)."""
    validate(nb, name)
    nb = copy.deepcopy(nb)
    number, rank = _notebook_number(name), 0
    for index, cell in enumerate(nb.cells):
        kind, where = _info(cell).get("kind"), f"{name}, cell {index}"
        if kind == "answer":
            rank += 1
            function = _info(cell)["grade_id"].split(".", 1)[1]
            message = f"Exercise {number}.{rank}: write {function} (see the text above)"
            stub = f'raise NotImplementedError("{message}")'
            cell.source = _replace_regions(cell.source, BEGIN_SOLUTION, END_SOLUTION, where, stub)[0]
        elif kind == "check":
            cell.source = _replace_regions(cell.source, BEGIN_HIDDEN, END_HIDDEN, where, None)[0].strip("\n")
    return clean(nb, name)


def clean(nb, name: str):
    """Outputs, execution counts cleared, run-time metadata dropped, stable ids, nbformat 4.5 (in place)."""
    nb.nbformat, nb.nbformat_minor = 4, 5
    for index, cell in enumerate(nb.cells):
        cell.id = cell_id(name, index)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def render(nb) -> str:
    """The notebook's text as nbformat writes it (validated), with a final newline."""
    nbformat.validate(nb)
    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def _read(path: Path):
    try:
        return nbformat.read(path, as_version=4)
    except Exception as error:  # JSON or schema errors: name the file
        raise ReleaseError(f"{path}: not a readable notebook ({error})") from None


def build(source: str | Path, out: str | Path) -> dict[Path, str]:
    """Every student notebook's path in ``out`` and its text, from the ``*.ipynb`` of ``source``."""
    source, out = Path(source), Path(out)
    return {
        out / path.name: render(student_notebook(_read(path), path.stem))
        for path in sorted(source.glob("*.ipynb"))
    }


def differences(source: str | Path, out: str | Path) -> list[str]:
    """What is out of sync: one line per student notebook that differs, is missing, or has no source."""
    wanted = build(source, out)
    problems = []
    for path, text in wanted.items():
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.read_bytes() != text.encode("utf-8"):
            problems.append(f"{path}: differs from {Path(source) / path.name}")
    for path in sorted(Path(out).glob("*.ipynb")):
        if path not in wanted:
            problems.append(f"{path}: has no source in {source}")
    return problems


def write(source: str | Path, out: str | Path) -> tuple[list[Path], list[Path]]:
    """Write the student notebooks that changed and remove those without a source: (written, removed)."""
    wanted = build(source, out)  # everything is built before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, text in wanted.items():
        data = text.encode("utf-8")
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
            written.append(path)
    removed = [path for path in sorted(out.glob("*.ipynb")) if path not in wanted]
    for path in removed:
        path.unlink()
    return written, removed
