"""Student notebooks: made from solutions/ by stripping solutions and hidden tests, deterministic, in sync."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import labutils
from labutils import checks, cli
from labutils.instructor import release

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))

ANSWER = '''def masked_attention(Q, K, V, mask):
    """Attention with a mask."""
    d = Q.size(-1)
    if mask is not None:
        ### BEGIN SOLUTION
        scores = Q @ K.transpose(-2, -1) / d**0.5
        return scores.masked_fill(mask, float("-inf")).softmax(-1) @ V
        ### END SOLUTION
    return None'''

CHECK = """### BEGIN HIDDEN TESTS
@checks.hidden_test("04_attention.masked_attention")
def secret(masked_attention):
    assert True
### END HIDDEN TESTS
checks.masked_attention(masked_attention)"""


POINTS = {"04_attention.attention": 2, "04_attention.masked_attention": 2}


def labelled(cell, **info):
    cell.metadata["labutils"] = info
    cell.metadata["nbgrader"] = release.nbgrader_metadata(
        info["kind"], info["grade_id"], POINTS[info["grade_id"]]
    )
    return cell


def solution_notebook() -> nbformat.NotebookNode:
    first = new_code_cell(
        "def attention(Q, K, V):\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"
    )
    answer = new_code_cell(ANSWER, execution_count=3, outputs=[nbformat.v4.new_output("stream", text="hi\n")])
    answer.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00"}
    nb = new_notebook(
        cells=[
            new_markdown_cell("# Attention"),
            labelled(first, grade_id="04_attention.attention", kind="answer", points=2),
            labelled(
                new_code_cell("checks.attention(attention)"), grade_id="04_attention.attention", kind="check"
            ),
            labelled(answer, grade_id="04_attention.masked_attention", kind="answer", points=2),
            labelled(new_code_cell(CHECK), grade_id="04_attention.masked_attention", kind="check"),
        ]
    )
    nb.metadata["labutils"] = {"notebook": "04_attention", "version": "0.1.0"}
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_solutions_become_nbgraders_stubs_at_their_indentation():
    student = release.student_notebook(solution_notebook(), "04_attention")
    assert student.cells[1].source == (
        "def attention(Q, K, V):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    )
    assert student.cells[3].source == (
        'def masked_attention(Q, K, V, mask):\n    """Attention with a mask."""\n    d = Q.size(-1)\n'
        "    if mask is not None:\n"
        "        # YOUR CODE HERE\n"
        "        raise NotImplementedError()\n"
        "    return None"
    )
    scope: dict = {}
    exec(student.cells[3].source, scope)  # a stub defines its function; it raises only when called
    with pytest.raises(NotImplementedError):
        scope["masked_attention"](Q=torch.ones(2), K=None, V=None, mask=True)


def test_exercise_cells_carry_nbgraders_metadata_and_are_locked_for_students():
    solution = solution_notebook()
    answer, check = solution.cells[3].metadata["nbgrader"], solution.cells[4].metadata["nbgrader"]
    assert answer == {"grade": False, "grade_id": "04_attention-masked_attention", "locked": False,
                      "points": 0, "schema_version": 3, "solution": True}  # fmt: skip
    assert check == {"grade": True, "grade_id": "04_attention-masked_attention-check", "locked": True,
                     "points": 2, "schema_version": 3, "solution": False}  # fmt: skip
    student = release.student_notebook(solution, "04_attention")
    assert student.cells[3].metadata["nbgrader"] == answer and student.cells[4].metadata["nbgrader"] == check
    assert student.cells[3].metadata["deletable"] is False and "editable" not in student.cells[3].metadata
    assert student.cells[4].metadata["deletable"] is False and student.cells[4].metadata["editable"] is False
    assert "deletable" not in student.cells[0].metadata


def test_hidden_tests_are_removed_and_the_check_call_stays():
    student = release.student_notebook(solution_notebook(), "04_attention")
    assert student.cells[4].source == "checks.masked_attention(masked_attention)"


def test_outputs_are_cleared_metadata_kept_and_ids_stable():
    solution = solution_notebook()
    student = release.student_notebook(solution, "04_attention")
    answer = student.cells[3]
    assert answer.outputs == [] and answer.execution_count is None
    assert "execution" not in answer.metadata
    assert answer.metadata["labutils"] == {
        "grade_id": "04_attention.masked_attention",
        "kind": "answer",
        "points": 2,
    }
    assert student.cells[4].metadata["labutils"] == {
        "grade_id": "04_attention.masked_attention",
        "kind": "check",
    }
    assert student.metadata["labutils"] == solution.metadata["labutils"]
    assert student.metadata["kernelspec"]["name"] == "python3"
    assert [cell.id for cell in student.cells] == [f"04_attention-{i:03d}" for i in range(5)]
    assert (student.nbformat, student.nbformat_minor) == (4, 5)
    assert solution.cells[3].outputs, "the source notebook is left as it was"


def test_widget_state_is_dropped_and_what_nbgrader_needs_is_kept():
    solution = solution_notebook()
    state = {"state": {"0a1b": {"model_name": "IntSliderModel", "state": {"value": 3}}}, "version_major": 2}
    solution.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": state}
    solution.cells[3].metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": state}
    student = release.student_notebook(solution, "04_attention")
    assert "widgets" not in student.metadata and "widgets" not in student.cells[3].metadata
    assert "IntSliderModel" not in release.render(student)
    assert student.metadata["kernelspec"] == solution.metadata["kernelspec"]
    assert student.cells[3].metadata["nbgrader"] == solution.cells[3].metadata["nbgrader"]
    assert student.cells[4].metadata["nbgrader"] == solution.cells[4].metadata["nbgrader"]
    assert "widgets" in solution.metadata, "the source notebook is left as it was"


def test_the_same_source_gives_the_same_bytes(tmp_path):
    texts = {release.render(release.student_notebook(solution_notebook(), "04_attention")) for _ in range(2)}
    assert len(texts) == 1
    (tmp_path / "src").mkdir()
    nbformat.write(solution_notebook(), tmp_path / "src" / "04_attention.ipynb")
    release.write(tmp_path / "src", tmp_path / "a")
    release.write(tmp_path / "src", tmp_path / "b")
    assert (tmp_path / "a" / "04_attention.ipynb").read_bytes() == (
        tmp_path / "b" / "04_attention.ipynb"
    ).read_bytes()
    assert (tmp_path / "a" / "04_attention.ipynb").read_bytes() == texts.pop().encode()


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda nb: nb.cells[0].__setitem__("source", "### BEGIN SOLUTION"),
            "outside an answer or check cell",
        ),
        (lambda nb: nb.cells.pop(2), "must be followed by its check cell"),
        (
            lambda nb: nb.cells[3].__setitem__("source", ANSWER.replace("        ### END SOLUTION\n", "")),
            "never closed",
        ),
        (
            lambda nb: nb.cells[3].__setitem__(
                "source", ANSWER.replace("### BEGIN SOLUTION", "#").replace("### END SOLUTION", "#")
            ),
            "holds one ###",
        ),
        (lambda nb: nb.cells[3].__setitem__("source", "import math\n" + ANSWER), "exactly one function"),
        (
            lambda nb: nb.cells[3].metadata["labutils"].__setitem__("grade_id", "04_attention.other"),
            "does not name",
        ),
        (lambda nb: nb.metadata.pop("labutils"), "metadata.labutils"),
        (lambda nb: nb.cells[1].metadata.pop("nbgrader"), "answer cell of 04_attention.attention needs"),
        (
            lambda nb: nb.cells[4].metadata["nbgrader"].__setitem__("points", 5),
            "check cell of 04_attention.masked_attention needs metadata.nbgrader",
        ),
    ],
)
def test_a_broken_source_is_refused_with_the_cell_named(change, message):
    nb = solution_notebook()
    change(nb)
    with pytest.raises(release.ReleaseError, match=re.escape(message)):
        release.student_notebook(nb, "04_attention")


def test_student_check_detects_drift_and_write_repairs_it(tmp_path, capsys):
    src, out = tmp_path / "solutions", tmp_path / "notebooks"
    src.mkdir()
    nbformat.write(solution_notebook(), src / "04_attention.ipynb")
    args = ["student", "--source", str(src), "--out", str(out)]
    assert cli.main([*args, "--check"]) == 1
    assert "04_attention.ipynb: missing" in capsys.readouterr().err
    assert not out.exists(), "--check writes nothing"
    assert cli.main(args) == 0
    assert cli.main([*args, "--check"]) == 0
    target = out / "04_attention.ipynb"
    target.write_text(target.read_text().replace("YOUR CODE HERE", "my code here"))  # a hand edit
    (out / "99_stale.ipynb").write_text(target.read_text())
    assert cli.main([*args, "--check"]) == 1
    err = capsys.readouterr().err
    assert "04_attention.ipynb: differs" in err and "99_stale.ipynb: has no source" in err
    assert cli.main(args) == 0
    assert cli.main([*args, "--check"]) == 0 and not (out / "99_stale.ipynb").exists()


def test_student_usage_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["student", "--source", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.main(["student", "--source", str(tmp_path), "--out", str(tmp_path)]) == 2
    (tmp_path / "04_attention.ipynb").write_text("{not json")
    assert cli.main(["student", "--source", str(tmp_path), "--out", str(tmp_path / "out"), "--check"]) == 2
    assert "not a readable notebook" in capsys.readouterr().err


def test_the_repository_notebooks_are_in_sync():
    done = subprocess.run(
        [sys.executable, "-m", "labutils", "student", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------------- the course's notebooks


def test_there_are_seven_solution_notebooks():
    assert [path.stem for path in SOLUTIONS] == [
        "01_tokenization", "02_coding_and_padding", "03_embedding", "04_attention", "05_transformer",
        "06_translation", "07_gpt",
    ]  # fmt: skip


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_notebooks_follow_the_conventions(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["labutils"] == {"notebook": path.stem, "version": nb.metadata["labutils"]["version"]}
    assert nb.metadata["kernelspec"]["name"] == "python3"
    answers = release.validate(nb, path.stem)  # every answer cell followed by its check cell
    assert 2 <= len(answers) <= 5
    for rank, info in enumerate(answers, start=1):
        exercise = checks.EXERCISES[info["grade_id"]]
        assert exercise.number == f"{int(path.stem[:2])}.{rank}"
        assert info["points"] == exercise.points
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code_cells] == list(range(1, len(code_cells) + 1)), (
        "solutions are stored run top to bottom, with their outputs: make artifacts"
    )
    for cell in code_cells:
        assert "raises-exception" not in cell.metadata.get("tags", [])
        for output in cell.outputs:
            assert output.output_type != "error", f"cell {cell.id} stored an error"
            text = nbformat.writes(
                nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=[output])])
            )
            assert str(ROOT) not in text and "Traceback" not in text, (
                f"cell {cell.id} shows a path or traceback"
            )
        info = cell.metadata.get("labutils", {})
        if info.get("kind") == "check":
            function = info["grade_id"].split(".")[1]
            assert cell.source.strip().endswith(f"checks.{function}({function})"), "the check call comes last"
    assert path.stat().st_size < 3_000_000


#: The cells that reproduce the lecture, whose stored outputs nbval compares (# NBVAL_CHECK_OUTPUT).
LECTURE_CELLS = {
    "01_tokenization": ['tokenize("tan(hx)+sinh(gx)")', "SOURCE_VOCAB.stoi == LECTURE_SOURCE"],
    "02_coding_and_padding": ["assert codes == [34, 3, 29", 'pad(slide, 16, layout="lecture")'],
    "04_attention": ["scores = Q @ K.T", "weights = e / a", "out = weights @ V"],
}


@pytest.mark.parametrize("name", sorted(LECTURE_CELLS))
def test_the_lectures_examples_are_compared_with_their_stored_outputs(name):
    nb = nbformat.read(ROOT / "solutions" / f"{name}.ipynb", as_version=4)
    for needle in LECTURE_CELLS[name]:
        cell = next(cell for cell in nb.cells if cell.cell_type == "code" and needle in cell.source)
        assert cell.source.startswith("# NBVAL_CHECK_OUTPUT\n"), (
            f"{needle!r}: mark its cell # NBVAL_CHECK_OUTPUT"
        )
        assert any(output.get("text") for output in cell.outputs), (
            f"{needle!r}: store the cell's printed output"
        )


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_the_first_code_cell_checks_the_version_in_the_metadata(path, monkeypatch, capsys):
    nb = nbformat.read(path, as_version=4)
    first = next(cell for cell in nb.cells if cell.cell_type == "code")
    version = nb.metadata["labutils"]["version"]
    assert f'labutils.require("{version}")' in first.source
    exec(first.source, {})
    assert f"labutils {labutils.__version__}" in capsys.readouterr().out
    monkeypatch.setattr(labutils, "__version__", "0.0.1")  # an older labutils: one clear error
    with pytest.raises(ImportError, match=r"older than this notebook .*run `make lab`"):
        exec(first.source, {})


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_student_notebooks_hold_no_solution(path):
    student = ROOT / "notebooks" / path.name
    text = student.read_text()
    for marker in (release.BEGIN_SOLUTION, release.END_SOLUTION, release.BEGIN_HIDDEN, release.END_HIDDEN):
        assert marker not in text
    nb = nbformat.read(student, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            ast.parse(re.sub(r"^\s*[%!].*$", "", cell.source, flags=re.M))  # magics and shell lines aside
            assert cell.outputs == []
    grade_ids = [cell.metadata["labutils"]["grade_id"] for cell in nb.cells if "labutils" in cell.metadata]
    assert grade_ids and all(g.startswith(path.stem + ".") for g in grade_ids)


def test_the_notebook_version_is_the_package_version_or_older():
    def version(text):
        return tuple(int(part) for part in re.findall(r"\d+", text)[:3])

    for path in SOLUTIONS:
        assert version(nbformat.read(path, as_version=4).metadata["labutils"]["version"]) <= version(
            labutils.__version__
        )


# ------------------------------------------------------------------------------- the release for students


def test_release_holds_the_student_notebooks_and_a_wheel_and_no_solution(tmp_path, capsys):
    out = tmp_path / "release"
    assert cli.main(["release", "--out", str(out), "--source", str(ROOT / "solutions")]) == 0
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    wheel = next(name for name in names if name.endswith(".whl"))
    assert names == sorted(["README.md", wheel, *(f"notebooks/{path.name}" for path in SOLUTIONS)])
    for path in SOLUTIONS:  # exactly the student notebooks of the repository
        assert (out / "notebooks" / path.name).read_bytes() == (ROOT / "notebooks" / path.name).read_bytes()
    members = zipfile.ZipFile(out / wheel).namelist()
    assert "labutils/weights/model.pt" in members and "labutils/checks/__init__.py" in members
    assert "labutils/instructor/grading.py" in members  # the same package the instructor installs
    assert not any("solutions" in member or member.endswith(".ipynb") for member in members)
    assert release.leaks(out, ROOT / "solutions") == []
    assert wheel in (out / "README.md").read_text()
    assert cli.main(["release", "--out", str(out)]) == 2  # never over an earlier release
    assert "not empty" in capsys.readouterr().err


def test_the_leak_check_finds_a_solution_however_it_is_indented(tmp_path):
    hidden = release.secrets(ROOT / "solutions")
    assert len(hidden) >= 2 * len(checks.EXERCISES)  # a solution and a hidden test per exercise at least
    where, region = next(iter(hidden.items()))
    (tmp_path / "notes.py").write_text(
        "def f():\n" + "\n".join("        " + line for line in region.splitlines())
    )
    with zipfile.ZipFile(tmp_path / "pkg.whl", "w") as archive:
        archive.writestr("pkg/answers.py", region)
    nb = solution_notebook()
    nbformat.write(nb, tmp_path / "04_attention.ipynb")  # markers in a notebook are a leak too
    found = release.leaks(tmp_path, ROOT / "solutions")
    assert f"notes.py: holds the text of {where}" in found
    assert f"pkg.whl:pkg/answers.py: holds the text of {where}" in found
    assert any(line.startswith("04_attention.ipynb: holds the marker") for line in found)


def test_a_failed_release_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(release, "leaks", lambda folder, source: ["README.md: holds the text of a solution"])
    with pytest.raises(release.ReleaseError, match="would give away solutions"):
        release.release(ROOT / "solutions", tmp_path / "out", ROOT)
    assert list(tmp_path.iterdir()) == []
