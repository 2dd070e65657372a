"""The notebooks as the grader runs them: each exercise depends only on the notebook's first two code cells.

Running every notebook end to end is nbval's job (``make test`` runs ``pytest --nbval-lax solutions
notebooks``). Here, in one IPython shell and in seconds: the setup and import cells, then each answer cell and
its check cell. A solution earns full points; a student notebook's stubs never raise at top level and every
check says "not done yet"; each check cell shows exactly one check+json output.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import nbformat
import pytest

from labutils import checks
from labutils.instructor import release

os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "solutions").glob("*.ipynb"))


@pytest.fixture(scope="module")
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    return InteractiveShell.instance()


def exercise_run(shell, nb) -> dict[str, list[dict]]:
    """Run the first two code cells, then every answer and check cell; the check outputs by grade_id."""
    from IPython.utils.capture import capture_output

    shell.reset()
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    for cell in code[:2]:
        with capture_output():
            assert shell.run_cell(cell.source).success, f"setup cell failed:\n{cell.source}"
    published: dict[str, list[dict]] = {}
    for cell in code:
        info = cell.metadata.get("labutils", {})
        if info.get("kind") not in ("answer", "check"):
            continue
        with capture_output() as captured:
            result = shell.run_cell(cell.source)
        assert result.success, f"{info['grade_id']} {info['kind']} cell raised {result.error_in_exec!r}"
        bundles = [output.data for output in captured.outputs]
        if info["kind"] == "answer":
            assert bundles == [] and captured.stdout == "", "an answer cell only defines its function"
        else:
            published[info["grade_id"]] = [b[checks.MIME_TYPE] for b in bundles if checks.MIME_TYPE in b]
            assert len(bundles) == 1, f"{info['grade_id']}: a check cell shows exactly one output"
    return published


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_solutions_earn_every_point(shell, path):
    published = exercise_run(shell, nbformat.read(path, as_version=4))
    assert published
    for grade_id, payloads in published.items():
        (payload,) = payloads
        assert payload["grade_id"] == grade_id
        assert payload["failed"] == [] and payload["points"] == payload["max_points"], payload["feedback"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_notebooks_run_and_say_not_done_yet(shell, path):
    student = nbformat.read(ROOT / "notebooks" / path.name, as_version=4)
    assert release.render(student) == release.render(
        release.student_notebook(nbformat.read(path, as_version=4), path.stem)
    )
    published = exercise_run(shell, student)
    for payloads in published.values():
        (payload,) = payloads
        assert payload["points"] == 0 and payload["passed"] == []
        assert "not done yet" in payload["feedback"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_download_nothing_and_parse(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = re.sub(r"^\s*[%!].*$", "", cell.source, flags=re.M)  # magics and shell lines
        ast.parse(source)
        forbidden = r"https?://|^\s*[!%]\s*pip\b|urlopen|requests\.get|\bwget\b|\bcurl\b"
        assert not re.search(forbidden, cell.source, re.M), cell.source
        assert "raises-exception" not in cell.metadata.get("tags", [])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_open_with_objectives_and_time(path):
    nb = nbformat.read(path, as_version=4)
    intro = nb.cells[0]
    assert intro.cell_type == "markdown" and intro.source.startswith("# Lab 9")
    assert "Learning objectives" in intro.source and re.search(
        r"\*\*Time:\*\* about \d+ minutes", intro.source
    )
    assert nb.cells[-1].cell_type == "markdown" and "Summary" in nb.cells[-1].source
