"""A small lab notebook for the grading tests: three of notebook 04's exercises, as the course declares them.

The grader judges only exercises that :mod:`labutils.checks` declares, so this notebook uses real ones
(``attention``, 2 points; ``causal_mask`` and ``split_heads``, 1 point each) with a cell of its own between
them; it follows the conventions that :mod:`labutils.instructor.release` checks.
"""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import nbformat

from labutils.instructor import release

NAME = "04_attention"

# (function, points, arguments, solution body)
EXERCISES = [
    (
        "attention",
        2,
        "Q, K, V",
        "weights = torch.softmax(Q @ K.transpose(-2, -1) / Q.size(-1) ** 0.5, dim=-1)\n    return weights @ V, weights",
    ),
    ("causal_mask", 1, "L", "return torch.ones(L, L, dtype=torch.bool).triu(1)"),
    (
        "split_heads",
        1,
        "x, n_heads",
        "B, L, d = x.shape\n    return x.view(B, L, n_heads, d // n_heads).transpose(1, 2)",
    ),
]
SOLUTIONS = {name: f"def {name}({args}):\n    {body}" for name, _, args, body in EXERCISES}
POINTS = {name: points for name, points, _, _ in EXERCISES}


def code_cell(source: str, labutils: dict | None = None, tags: list | None = None):
    cell = nbformat.v4.new_code_cell(source)
    if labutils:
        cell.metadata["labutils"] = labutils
    if tags:
        cell.metadata["tags"] = tags
    return cell


def with_nbgrader(notebook):
    """``notebook`` with nbgrader's metadata on its answer and check cells, as solution notebooks carry it."""
    points = {}
    for cell in notebook.cells:
        info = cell.metadata.get("labutils", {})
        if info.get("kind") == "answer":
            points[info["grade_id"]] = info["points"]
        if info.get("kind") in ("answer", "check"):
            cell.metadata["nbgrader"] = release.nbgrader_metadata(
                info["kind"], info["grade_id"], points[info["grade_id"]]
            )
    return notebook


def source_notebook():
    """The solution notebook: an import cell, then each exercise's answer, check and a cell that uses it."""
    cells = [
        nbformat.v4.new_markdown_cell("# Attention"),
        code_cell("import torch\nfrom labutils import checks"),
    ]
    for name, points, args, body in EXERCISES:
        grade_id = f"{NAME}.{name}"
        answer = f"def {name}({args}):\n    ### BEGIN SOLUTION\n    {body}\n    ### END SOLUTION"
        cells.append(code_cell(answer, {"grade_id": grade_id, "kind": "answer", "points": points}))
        cells.append(code_cell(f"checks.{name}({name})", {"grade_id": grade_id, "kind": "check"}))
        cells.append(code_cell(f"print({name}.__name__)"))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["labutils"] = {"notebook": NAME, "version": "1.0"}
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return with_nbgrader(notebook)


def write_source(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(source_notebook(), folder / f"{NAME}.ipynb")
    return folder


def student(answers: dict | None = None):
    """The student version of the notebook, with these answers (name -> code) filled in."""
    notebook = release.student_notebook(source_notebook(), NAME)
    for cell in notebook.cells:
        function = cell.metadata.get("labutils", {}).get("grade_id", ".").split(".")[1]
        if cell.metadata.get("labutils", {}).get("kind") == "answer" and function in (answers or {}):
            cell.source = answers[function]
    return notebook


def answer_index(notebook, name: str, kind: str = "answer") -> int:
    """The index of the answer (or check) cell of exercise ``name``."""
    for index, cell in enumerate(notebook.cells):
        meta = cell.metadata.get("labutils", {})
        if meta.get("grade_id") == f"{NAME}.{name}" and meta.get("kind") == kind:
            return index
    raise LookupError(name)


def mutated(notebook, name: str, source: str):
    """A copy whose plain cell right after the check of ``name`` is replaced by ``source``."""
    notebook = copy.deepcopy(notebook)
    notebook.cells[answer_index(notebook, name, "check") + 1] = code_cell(source)
    return notebook


def with_answer(notebook, name: str, source: str):
    """A copy whose answer cell of ``name`` holds ``source``."""
    notebook = copy.deepcopy(notebook)
    notebook.cells[answer_index(notebook, name)].source = source
    return notebook


def save(notebook, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(notebook), encoding="utf-8")
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def by_exercise(rows: list[dict], submission: str) -> dict[str, dict]:
    return {row["exercise"].split(".")[-1]: row for row in rows if row["submission"] == submission}


def points_of(result) -> dict[str, float]:
    """Exercise name -> points, from a :class:`labutils.instructor.grading.Result`."""
    return {exercise.split(".")[-1]: points for exercise, points, _, _ in result.rows}
