"""The grader: every way a submission can fail, cheat or be mangled costs only that submission's points.

Synthetic lab notebooks keep this fast: their check cells are self-contained (no torch in the kernels), but
they follow the conventions that ``labutils.instructor.release`` checks, and publish what ``labutils.checks`` publishes.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from labutils import cli
from labutils.instructor import grading, release
from labutils.instructor.grading import Limits

ROOT = Path(__file__).resolve().parents[1]
NAME = "01_demo"

# A check in the style of labutils.checks: named tests, one display output with the grader's MIME type.
CHECK = """def _check(grade_id, answer, tests, points):
    from IPython.display import display
    passed, failed = [], []
    for name, test in tests:
        try:
            ok = bool(test(answer))
        except Exception:
            ok = False
        (passed if ok else failed).append(name)
    result = {"grade_id": grade_id, "points": round(points * len(passed) / len(tests), 2),
              "max_points": points, "passed": passed, "failed": failed,
              "feedback": f"{len(passed)} of {len(tests)} tests passed"}
    display({"application/vnd.labutils.check+json": result, "text/plain": result["feedback"]}, raw=True)
"""

# (function, points, solution body, visible tests, hidden tests)
EXERCISES = [
    (
        "double",
        2,
        "return FACTOR * x",
        '[("double(1) is 2", lambda f: f(1) == 2)]',
        '[("hidden: secret_big_number", lambda f: f(12345) == 24690)]',
    ),
    (
        "square",
        1,
        "return x * x",
        '[("square(3) is 9", lambda f: f(3) == 9), ("square(-2) is 4", lambda f: f(-2) == 4)]',
        None,
    ),
    ("negate", 1, "return -x", '[("negate(5) is -5", lambda f: f(5) == -5)]', None),
]
SOLUTIONS = {name: f"def {name}(x):\n    {body}" for name, _, body, _, _ in EXERCISES}


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
    """A solution notebook with three exercises, the first with a hidden test."""
    cells = [nbformat.v4.new_markdown_cell("# Demo"), code_cell("FACTOR = 2")]
    for name, points, body, tests, hidden in EXERCISES:
        grade_id = f"{NAME}.{name}"
        answer = f"def {name}(x):\n    ### BEGIN SOLUTION\n    {body}\n    ### END SOLUTION"
        cells.append(code_cell(answer, {"grade_id": grade_id, "kind": "answer", "points": points}))
        check = CHECK + f"tests = {tests}\n"
        if hidden:
            check += f"### BEGIN HIDDEN TESTS\ntests += {hidden}\n### END HIDDEN TESTS\n"
        check += f"_check({grade_id!r}, {name}, tests, {points})"
        cells.append(code_cell(check, {"grade_id": grade_id, "kind": "check"}))
        cells.append(code_cell(f"print({name}(2))"))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["labutils"] = {"notebook": NAME, "version": "1.0"}
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return with_nbgrader(notebook)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("solutions")
    nbformat.write(source_notebook(), folder / f"{NAME}.ipynb")
    return folder


def student(answers: dict | None = None):
    """The student version of the demo notebook, with these answers (name -> code) filled in."""
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


def save(notebook, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(notebook), encoding="utf-8")
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def by_exercise(rows: list[dict], submission: str) -> dict[str, dict]:
    return {row["exercise"].split(".")[-1]: row for row in rows if row["submission"] == submission}


def with_cell(notebook, after: int, source: str):
    """A copy of ``notebook`` with a plain code cell inserted after cell ``after``."""
    notebook = copy.deepcopy(notebook)
    notebook.cells.insert(after + 1, code_cell(source))
    return notebook


def mutated(notebook, name: str, source: str):
    """A copy whose cell right after the check of ``name`` (``print(name(2))``) is replaced by ``source``."""
    notebook = copy.deepcopy(notebook)
    notebook.cells[answer_index(notebook, name, "check") + 1] = code_cell(source)
    return notebook


FORGED = (
    'from IPython.display import display\nprint("passed")\n'
    'display({"application/vnd.labutils.check+json": {"grade_id": "01_demo.%s", "points": 2, "max_points": 2,'
    ' "passed": ["everything"], "failed": [], "feedback": "all passed"}}, raw=True)'
)


def tricky():
    """Duplicated, renamed, moved and deleted answer cells; an edited check cell; forged results."""
    notebook = student(SOLUTIONS)
    cells = notebook.cells
    # double: the answer cell duplicated, the last copy wrong; its check cell edited to claim full points.
    index = answer_index(notebook, "double")
    cells.insert(index + 1, copy.deepcopy(cells[index]))
    cells[index + 1].source = "def double(x):\n    return x"
    cells[answer_index(notebook, "double", "check")].source = FORGED % "double"
    # square: renamed (an unknown grade_id) and moved to the end; a plain cell forges its result.
    index = answer_index(notebook, "square")
    moved = cells.pop(index)
    moved.metadata["labutils"]["grade_id"] = f"{NAME}.sq"
    cells.append(moved)
    cells.insert(1, code_cell(FORGED % "square"))
    # negate: deleted.
    del cells[answer_index(notebook, "negate")]
    return notebook


@pytest.fixture(scope="module")
def batch(sources, tmp_path_factory):
    """One batch holding a submission for every failure mode, graded once through the command."""
    folder = tmp_path_factory.mktemp("batch")
    good = student(SOLUTIONS)
    save(good, folder / "good.ipynb")
    save(
        student({**SOLUTIONS, "double": "def double(x):\n    return 2 if x == 1 else 0"}),
        folder / "hidden.ipynb",
    )
    save(
        student({**SOLUTIONS, "square": "def square(x):\n    while True:\n        pass"}),
        folder / "loop.ipynb",
    )
    save(mutated(good, "double", "import os\nos.abort()"), folder / "crash.ipynb")
    save(mutated(good, "double", 'for _ in range(50):\n    print("x" * 1_000_000)'), folder / "output.ipynb")
    save(
        mutated(good, "double", 'import os\nos.write(2, b"x" * 20_000_000)\nimport time\ntime.sleep(5)'),
        folder / "stderr.ipynb",
    )
    memory = "import time\nblocks = []\nfor _ in range(40):\n    blocks.append(b'x' * 50_000_000)\n"
    memory += "    time.sleep(0.05)"
    save(mutated(good, "double", memory), folder / "memory.ipynb")
    (folder / "invalid.ipynb").write_text('{"cells": [', encoding="utf-8")
    save(
        nbformat.v4.new_notebook(cells=[code_cell("def double(x):\n    return 2 * x")]),
        folder / "plain.ipynb",
    )
    other = student(SOLUTIONS)
    other.metadata["labutils"]["notebook"] = "99_other"
    save(other, folder / "unknown.ipynb")
    save(tricky(), folder / "tricky.ipynb")
    out = folder / "grades.csv"
    args = [
        str(folder),
        "--source",
        str(sources),
        "--out",
        str(out),
        "--timeout",
        "4",
        "--memory",
        "500",
        "--max-output",
        "5",
        "--jobs",
        "2",
    ]
    start = time.perf_counter()
    status = cli.main(["grade", *args])
    seconds = time.perf_counter() - start
    rows, totals = read_csv(out), {row["submission"]: row for row in read_csv(grading.totals_path(out))}
    feedback = {path.name: path.read_text(encoding="utf-8") for path in (folder / "feedback").rglob("*.md")}
    return {
        "folder": folder,
        "status": status,
        "rows": rows,
        "totals": totals,
        "feedback": feedback,
        "seconds": seconds,
    }


def rows_of(batch, name: str) -> dict[str, dict]:
    return by_exercise(batch["rows"], str(batch["folder"] / name))


def total(batch, name: str) -> dict:
    return batch["totals"][str(batch["folder"] / name)]


def test_the_batch_grades_every_submission_once_and_exits_1(batch):
    assert batch["status"] == 1  # some submissions could not be graded completely
    assert len(batch["totals"]) == 11
    assert {row["submission"] for row in batch["rows"]} == set(batch["totals"])
    assert len(batch["feedback"]) == 11
    for row in batch["rows"]:
        assert list(row) == list(grading.COLUMNS)
        assert 0 <= float(row["points"]) <= float(row["max_points"])


def test_a_correct_submission_gets_full_points(batch):
    rows = rows_of(batch, "good.ipynb")
    assert {name: float(row["points"]) for name, row in rows.items()} == {
        "double": 2,
        "square": 1,
        "negate": 1,
    }
    assert total(batch, "good.ipynb")["status"] == "graded"
    assert "4 / 4 points" in batch["feedback"]["good.feedback.md"]
    assert "hidden tests: 1 of 1 passed" in rows["double"]["feedback"]


def test_hidden_tests_count_but_never_appear_in_the_feedback(batch):
    rows = rows_of(batch, "hidden.ipynb")
    assert float(rows["double"]["points"]) == 1.0  # the visible test passes, the hidden one fails
    assert "hidden tests: 0 of 1 passed" in rows["double"]["feedback"]
    everything = (batch["folder"] / "grades.csv").read_text() + "".join(batch["feedback"].values())
    for secret in ("secret_big_number", "12345", "24690", "BEGIN HIDDEN"):
        assert secret not in everything


def test_an_infinite_loop_keeps_the_points_earned_before_it(batch):
    rows = rows_of(batch, "loop.ipynb")
    assert float(rows["double"]["points"]) == 2
    assert float(rows["square"]["points"]) == 0 and "ran longer than 4 s" in rows["square"]["feedback"]
    assert float(rows["negate"]["points"]) == 0 and "not graded" in rows["negate"]["feedback"]
    assert total(batch, "loop.ipynb")["status"] == "incomplete"


@pytest.mark.parametrize(
    "name, reason",
    [
        ("crash.ipynb", "crashed the kernel (SIGABRT)"),
        ("output.ipynb", "printed more than 5 MB"),
        ("stderr.ipynb", "printed more than 5 MB"),
        ("memory.ipynb", "used more than 500 MB of memory"),
    ],
)
def test_a_kernel_stopped_by_a_limit_keeps_the_points_earned_before_it(batch, name, reason):
    rows = rows_of(batch, name)
    assert float(rows["double"]["points"]) == 2  # graded before the failing cell
    assert float(rows["square"]["points"]) == 0 and reason in rows["square"]["feedback"]
    assert total(batch, name)["status"] == "incomplete"
    assert reason in total(batch, name)["notes"]
    assert reason in batch["feedback"][name.replace(".ipynb", ".feedback.md")]


@pytest.mark.parametrize(
    "name, reason",
    [
        ("invalid.ipynb", "not valid JSON"),
        ("plain.ipynb", "not a lab notebook"),
        ("unknown.ipynb", "unknown lab notebook '99_other'"),
    ],
)
def test_a_file_that_is_not_a_lab_notebook_gets_one_row_with_the_reason(batch, name, reason):
    rows = [row for row in batch["rows"] if row["submission"] == str(batch["folder"] / name)]
    assert len(rows) == 1 and rows[0]["points"] == "0" and reason in rows[0]["feedback"]
    assert total(batch, name)["status"] == "failed"


def test_edited_check_cells_and_forged_results_gain_nothing(batch):
    rows = rows_of(batch, "tricky.ipynb")
    assert float(rows["double"]["points"]) == 0  # the student's check cell said 2 / 2
    assert "appears 2 times" in rows["double"]["feedback"]
    assert (
        "touches the grading machinery" in total(batch, "tricky.ipynb")["notes"]
    )  # a hint to the instructor


def test_renamed_moved_and_deleted_answer_cells_are_handled_and_explained(batch):
    rows = rows_of(batch, "tricky.ipynb")
    assert float(rows["square"]["points"]) == 1  # found by the function it defines, at the end
    assert "found by the name `square`" in rows["square"]["feedback"]
    assert float(rows["negate"]["points"]) == 0 and "answer cell not found" in rows["negate"]["feedback"]
    text = batch["feedback"]["tricky.feedback.md"]
    assert "unknown exercise '01_demo.sq' (renamed?)" in text
    assert total(batch, "tricky.ipynb")["status"] == "graded"


def test_the_summary_puts_the_hardest_exercise_first(batch):
    rows = [[row[c] for c in grading.COLUMNS] for row in batch["rows"]]
    lines = grading.class_summary(rows).splitlines()
    assert lines[0].split()[0] == "exercise"
    means = [float(line.split()[2]) / float(line.split()[4]) for line in lines[1:]]
    assert means == sorted(means) and len(means) == 3


# ---------------------------------------------------------------------------------------------- copying


MASK_CHECK = """import torch
from IPython.display import display
ok = torch.equal(%s(4), torch.ones(4, 4, dtype=torch.bool).triu(1).%s)
display({"application/vnd.labutils.check+json": {"grade_id": "02_masks.%s", "points": int(ok),
         "max_points": 1, "passed": ["L = 4"] if ok else [], "failed": [] if ok else ["L = 4"]}}, raw=True)"""


def test_an_answer_that_only_calls_the_package_earns_nothing(tmp_path):
    """However it reaches labutils' own function (a default argument, an alias), the copy earns 0."""
    cells = [code_cell("import torch")]
    for name, transposed, forbidden in [
        ("causal_mask", False, None),  # by default: labutils' function of the same name
        ("upper", False, ["labutils.attention.causal_mask"]),
        ("lower", True, ["labutils.attention.scaled_dot_product_attention"]),
    ]:
        meta = {"grade_id": f"02_masks.{name}", "kind": "answer", "points": 1}
        if forbidden:
            meta["forbidden"] = forbidden
        body = "return torch.ones(L, L, dtype=torch.bool).triu(1)" + (".T" if transposed else "")
        cells.append(
            code_cell(f"def {name}(L):\n    ### BEGIN SOLUTION\n    {body}\n    ### END SOLUTION", meta)
        )
        check = MASK_CHECK % (name, "T" if transposed else "clone()", name)
        cells.append(code_cell(check, {"grade_id": f"02_masks.{name}", "kind": "check"}))
    source = with_nbgrader(nbformat.v4.new_notebook(cells=cells))
    source.metadata["labutils"] = {"notebook": "02_masks", "version": "1"}
    save(source, tmp_path / "source" / "02_masks.ipynb")
    answers = {
        "causal_mask": "import labutils.attention as A\n\n"
        "def causal_mask(L, _mask=A.causal_mask):\n    return _mask(L)",  # hidden in a default argument
        "upper": "upper = A.causal_mask",
        "lower": "def lower(L):\n    return A.causal_mask(L).T",  # another labutils function: allowed here
    }
    submission = release.student_notebook(source, "02_masks")
    for cell in submission.cells:
        grade_id = cell.metadata.get("labutils", {}).get("grade_id", "")
        if cell.metadata.get("labutils", {}).get("kind") == "answer":
            cell.source = answers[grade_id.split(".")[1]]
    path = save(submission, tmp_path / "copy.ipynb")
    result = grading.grade_submission(path, grading.load_sources(tmp_path / "source"), Limits(timeout=60))
    points = {exercise.split(".")[1]: (points, feedback) for exercise, points, _, feedback in result.rows}
    assert points["lower"][0] == 1, points["lower"]
    assert (
        points["causal_mask"][0] == 0 and "calls `labutils.attention.causal_mask`" in points["causal_mask"][1]
    )
    assert points["upper"][0] == 0 and "is `labutils.attention.causal_mask`" in points["upper"][1]


# ---------------------------------------------------------------------------------------------- resuming


def test_a_killed_batch_resumes_without_losing_or_repeating_a_grade(sources, tmp_path, monkeypatch):
    """kill -9 in the middle of a batch, with a half-written row, then --resume: every grade exactly once."""
    hold, pid = tmp_path / "hold", tmp_path / "kernel.pid"
    wait = (
        f"import os, pathlib, time\nif pathlib.Path({str(hold)!r}).exists():\n"
        f"    pathlib.Path({str(pid)!r}).write_text(f'{{os.getpid()}} {{os.getcwd()}}')\n    time.sleep(120)"
    )
    solved = student(SOLUTIONS)
    for name in ("alice", "bob", "carol"):  # three files named 01_demo.ipynb: their feedback must not collide
        save(
            with_cell(solved, 0, wait) if name == "bob" else solved,
            tmp_path / "class" / name / "01_demo.ipynb",
        )
    hold.touch()
    out = tmp_path / "grades.csv"
    command = [
        sys.executable,
        "-m",
        "labutils",
        "grade",
        "class",
        "--source",
        str(sources),
        "--out",
        str(out),
    ]
    grader = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while not pid.exists():  # alice is graded, bob's kernel is waiting
            assert grader.poll() is None and time.monotonic() < deadline, "the grader never reached bob"
            time.sleep(0.2)
        os.kill(grader.pid, signal.SIGKILL)
        grader.wait()
    finally:
        if grader.poll() is None:
            grader.kill()
        if pid.exists():  # the kernel this test left orphaned, and its temporary folder
            number, folder = pid.read_text().split(" ", 1)
            os.kill(int(number), signal.SIGKILL)
            if Path(folder).parent.name.startswith("labutils-grade-"):
                shutil.rmtree(Path(folder).parent, ignore_errors=True)
    hold.unlink()
    totals = grading.totals_path(out)
    assert [row["submission"] for row in read_csv(totals)] == [
        os.path.join("class", "alice", "01_demo.ipynb")
    ]
    # As if the kill had struck while bob's rows were being written: whole rows, then half of one.
    bob = os.path.join("class", "bob", "01_demo.ipynb")
    with open(out, "a", encoding="utf-8") as file:
        file.write(f"{bob},01_demo,01_demo.double,2,2,fine\n{bob},01_demo,01_demo.squ")
    with open(totals, "a", encoding="utf-8") as file:
        file.write(f"{bob},01_demo,4,")

    assert cli.main(["grade", "class", "--source", str(sources), "--out", str(out)]) == 2  # never overwritten
    monkeypatch.chdir(tmp_path)
    report = grading.grade(["class"], source=sources, out=out, resume=True)
    assert (report.graded, report.skipped, report.status) == (2, 1, 0)
    rows = read_csv(out)
    assert sorted((row["submission"], row["exercise"]) for row in rows) == sorted(
        (os.path.join("class", name, "01_demo.ipynb"), f"{NAME}.{exercise}")
        for name in ("alice", "bob", "carol")
        for exercise in ("double", "square", "negate")
    )
    assert all(row["points"] == row["max_points"] for row in rows)
    assert [row["status"] for row in read_csv(totals)] == ["graded"] * 3
    for name in ("alice", "bob", "carol"):
        text = (tmp_path / "feedback" / name / "01_demo.feedback.md").read_text(encoding="utf-8")
        assert os.path.join("class", name, "01_demo.ipynb") in text and "4 / 4 points" in text


# ---------------------------------------------------------------------------------------------- small parts


def test_feedback_file_names_never_collide(tmp_path):
    files = [
        tmp_path / "alice" / "04.ipynb",
        tmp_path / "bob" / "04.ipynb",
        tmp_path / "x.ipynb",
        tmp_path / "x",
    ]
    names = grading.feedback_names(files)
    assert [str(name) for name in names] == [
        os.path.join("alice", "04.feedback.md"),
        os.path.join("bob", "04.feedback.md"),
        "x.feedback.md",
        "x-2.feedback.md",
    ]


def test_a_cut_short_line_is_not_a_graded_submission(tmp_path):
    out = tmp_path / "grades.csv"
    out.write_text(
        "submission,notebook,exercise,points,max_points,feedback\na.ipynb,01_demo,01_demo.double,2,2,ok\n"
    )
    grading.totals_path(out).write_text(
        "submission,notebook,points,max_points,status,notes\na.ipynb,01_demo,2,2,graded,\nb.ipynb,01_demo,1"
    )
    ledger = grading.Ledger(out, resume=True)
    assert list(ledger.done) == ["a.ipynb"]
    assert grading.totals_path(out).read_text().endswith("graded,\n")  # the cut line is gone
    (tmp_path / "other.csv").write_text("name,score\nalice,3\n")
    with pytest.raises(grading.GradingError, match="not a file written by the grader"):
        grading.Ledger(tmp_path / "other.csv", resume=True)


def test_an_existing_output_needs_resume_or_force(sources, tmp_path, capsys):
    out = tmp_path / "grades.csv"
    out.write_text("precious\n")
    args = ["grade", str(tmp_path / "nothing.ipynb"), "--source", str(sources), "--out", str(out)]
    (tmp_path / "nothing.ipynb").write_text("not json")
    assert cli.main(args) == 2
    assert "add --resume to continue it or --force to start again" in capsys.readouterr().err
    assert out.read_text() == "precious\n"
    assert cli.main([*args, "--force"]) == 1  # the one submission is not a notebook
    assert "not valid JSON" in out.read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.ipynb"], "missing.ipynb: no such file or folder"),
        (["x.ipynb", "--source", "empty"], "no lab notebooks"),
        (["x.ipynb", "--out", "no/grades.csv"], "does not exist"),
        (["x.ipynb", "--timeout", "0"], "expected a positive number"),
        (["x.ipynb", "--resume", "--force"], "not allowed with argument"),
    ],
)
def test_usage_errors_exit_2_with_one_line(sources, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    save(student(), tmp_path / "x.ipynb")
    (tmp_path / "empty").mkdir()
    if "--source" not in args:
        args = [*args, "--source", str(sources)]
    try:
        status = cli.main(["grade", *args])
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_long_cells_get_the_long_timeout_but_no_more_of_them_than_the_source_has(sources):
    source = grading.load_sources(sources)[NAME]
    source = dataclasses.replace(source, long_cells=1)
    notebook = json.loads(json.dumps(student(SOLUTIONS)))
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code" and "labutils" not in cell["metadata"]:
            cell["metadata"]["tags"] = ["long"]  # a student tags every cell long
    plan = grading.make_plan(notebook, source, Limits(timeout=1, long_timeout=99), "nonce")
    student_steps = [step for step in plan.steps if step.role == "student"]
    assert [step.timeout for step in student_steps].count(99) == 1
    assert student_steps[0].timeout == 99  # the first one


def test_metadata_of_any_shape_is_a_plan_not_a_crash(sources):
    notebook = json.loads(json.dumps(student(SOLUTIONS)))
    notebook["cells"][3]["metadata"] = {"labutils": {"grade_id": ["a list"], "kind": {"a": "dict"}}}
    notebook["cells"][4]["metadata"] = ["not", "a", "dict"]
    notebook["cells"].append({"cell_type": "code", "source": None})
    notebook["cells"].append("not a cell")
    notebook = grading.read_notebook(save(notebook, sources.parent / "odd" / "odd.ipynb"))
    source, _ = grading.identify(notebook, grading.load_sources(sources))
    plan = grading.make_plan(notebook, source, Limits(), "nonce")
    assert {step.role for step in plan.steps} >= {"student", "on", "visible", "off"}


def test_a_notebook_without_its_metadata_is_recognised_by_its_exercises(sources):
    notebook = json.loads(json.dumps(student(SOLUTIONS)))
    del notebook["metadata"]["labutils"]
    source, note = grading.identify(notebook, grading.load_sources(sources))
    assert source.notebook == NAME and "recognised as 01_demo" in note


# ---------------------------------------------------------------------------------------------- the solutions


@pytest.mark.skipif(not list((ROOT / "solutions").glob("*.ipynb")), reason="no solution notebooks yet")
def test_the_solution_notebooks_get_full_points(tmp_path):
    report = grading.grade(
        [str(ROOT / "solutions")], out=tmp_path / "grades.csv", limits=Limits(timeout=300), jobs=2, log=print
    )
    rows = read_csv(tmp_path / "grades.csv")
    assert report.status == 0, report.problems
    short = [(row["exercise"], row["points"], row["max_points"], row["feedback"]) for row in rows]
    assert rows and [row for row in short if row[1] != row[2]] == []


def test_the_untouched_student_attention_notebook_gets_zero_without_errors(tmp_path):
    submission = tmp_path / "student" / "04_attention.ipynb"
    submission.parent.mkdir()
    submission.write_bytes((ROOT / "notebooks" / "04_attention.ipynb").read_bytes())
    report = grading.grade(
        [str(submission)], out=tmp_path / "grades.csv", limits=Limits(timeout=300), log=print
    )
    rows = read_csv(tmp_path / "grades.csv")
    assert report.status == 0, report.problems
    assert rows and all(row["notebook"] == "04_attention" for row in rows)
    assert all(float(row["points"]) == 0 < float(row["max_points"]) for row in rows)
    assert all("not done yet" in row["feedback"] for row in rows), rows
