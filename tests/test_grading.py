"""The grader: every way a submission can fail, cheat or be mangled costs only what it should.

The submissions are made from a small lab notebook with three of notebook 04's real exercises
(``tests/demo_notebook.py``): the grader judges only what :mod:`labutils.checks` declares. Tampering of every
kind is in ``test_redteam.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from demo_notebook import (
    NAME,
    POINTS,
    SOLUTIONS,
    answer_index,
    by_exercise,
    code_cell,
    mutated,
    points_of,
    read_csv,
    save,
    student,
    with_answer,
    write_source,
)

from labutils import cli
from labutils.instructor import grading
from labutils.instructor.gradebook import write_gradebook
from labutils.instructor.grading import Limits
from labutils.instructor.similarity import similar_to_package
from labutils.instructor.sources import find_submissions, student_of

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 20  # seconds per cell: an import of torch on a busy machine stays well inside it
HARD_CODED = (
    "def causal_mask(L):\n"
    "    return {1: torch.zeros(1, 1, dtype=torch.bool),\n"
    "            4: torch.ones(4, 4, dtype=torch.bool).triu(1),\n"
    "            7: torch.ones(7, 7, dtype=torch.bool).triu(1)}[L]"
)  # right for the visible cases only


def secret_hiding_from(lengths: tuple[int, ...]) -> int:
    """A secret whose hidden causal mask has none of these lengths (it draws from 2 to 64, so 4 or 7 about
    once in 30 runs: an answer right for the visible cases only would then pass the hidden one too, rightly)."""
    from labutils.checks.core import all_cases

    for secret in range(1, 1000):
        hidden = [case.args[0] for name, case in all_cases(f"{NAME}.causal_mask", secret) if "hidden" in name]
        if hidden and not set(hidden) & set(lengths):
            return secret
    raise AssertionError("no such secret")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    return write_source(tmp_path_factory.mktemp("solutions"))


def with_cell(notebook, after: int, source: str):
    """A copy of ``notebook`` with a plain code cell inserted after cell ``after``."""
    notebook = copy.deepcopy(notebook)
    notebook.cells.insert(after + 1, code_cell(source))
    return notebook


FORGED = (
    'from IPython.display import display\nprint("passed")\n'
    'display({"application/vnd.labutils.check+json": {"grade_id": "04_attention.%s", "points": 2, '
    '"max_points": 2, "passed": ["everything"], "failed": [], "feedback": "all passed"}}, raw=True)'
)


def tricky():
    """Duplicated, renamed, moved and deleted answer cells; an edited check cell; forged results."""
    notebook = student(SOLUTIONS)
    cells = notebook.cells
    # attention: the answer cell duplicated, the last copy wrong; its check cell edited to claim full points.
    index = answer_index(notebook, "attention")
    cells.insert(index + 1, copy.deepcopy(cells[index]))
    cells[index + 1].source = "def attention(Q, K, V):\n    return Q, K"
    cells[answer_index(notebook, "attention", "check")].source = FORGED % "attention"
    # causal_mask: renamed (an unknown grade_id) and moved to the end; a plain cell forges its result.
    index = answer_index(notebook, "causal_mask")
    moved = cells.pop(index)
    moved.metadata["labutils"]["grade_id"] = f"{NAME}.mask"
    cells.append(moved)
    cells.insert(1, code_cell(FORGED % "causal_mask"))
    # split_heads: deleted.
    del cells[answer_index(notebook, "split_heads")]
    return notebook


@pytest.fixture(scope="module")
def batch(sources, tmp_path_factory):
    """One batch holding a submission for every failure mode, graded once through the command."""
    folder = tmp_path_factory.mktemp("batch")
    good = student(SOLUTIONS)
    save(good, folder / "good.ipynb")
    save(with_answer(good, "causal_mask", HARD_CODED), folder / "hidden.ipynb")
    loop = "def causal_mask(L):\n    while True:\n        pass"
    save(with_answer(good, "causal_mask", loop), folder / "loop.ipynb")
    save(mutated(good, "attention", "import os\nos.abort()"), folder / "crash.ipynb")
    flood = 'for _ in range(50):\n    print("x" * 1_000_000)'
    save(mutated(good, "attention", flood), folder / "output.ipynb")
    stderr = 'import os\nos.write(2, b"x" * 20_000_000)\nimport time\ntime.sleep(5)'
    save(mutated(good, "attention", stderr), folder / "stderr.ipynb")
    memory = "import time\nblocks = []\nfor _ in range(40):\n    blocks.append(b'x' * 50_000_000)\n"
    memory += "    time.sleep(0.05)"
    save(mutated(good, "attention", memory), folder / "memory.ipynb")
    (folder / "invalid.ipynb").write_text('{"cells": [', encoding="utf-8")
    plain = {"cells": [{"cell_type": "code", "source": "def f(x):\n    return x", "metadata": {}}]}
    (folder / "plain.ipynb").write_text(json.dumps(plain), encoding="utf-8")
    other = student(SOLUTIONS)
    other.metadata["labutils"]["notebook"] = "99_other"
    save(other, folder / "unknown.ipynb")
    save(tricky(), folder / "tricky.ipynb")
    out = folder / "results" / "grades.csv"  # a folder that does not exist yet: made
    args = [str(folder), "--source", str(sources), "--out", str(out), "--timeout", str(TIMEOUT)]
    args += ["--memory", "1500", "--max-output", "5", "--jobs", "2"]
    with pytest.MonkeyPatch.context() as patch:  # a secret whose hidden length HARD_CODED does not know
        patch.setattr(grading.secrets, "randbits", lambda bits: secret_hiding_from((1, 4, 7)))
        status = cli.main(["grade", *args])  # in the sandbox when bubblewrap runs here
    rows, totals = read_csv(out), {row["submission"]: row for row in read_csv(grading.totals_path(out))}
    feedback = {path.name: path.read_text(encoding="utf-8") for path in out.parent.glob("feedback/**/*.md")}
    gradebook = read_csv(grading.gradebook_path(out))
    return {
        "folder": folder,
        "status": status,
        "rows": rows,
        "totals": totals,
        "feedback": feedback,
        "gradebook": gradebook,
    }


def rows_of(batch, name: str) -> dict[str, dict]:
    return by_exercise(batch["rows"], str(batch["folder"] / name))


def total(batch, name: str) -> dict:
    return batch["totals"][str(batch["folder"] / name)]


def points(batch, name: str) -> dict[str, float]:
    return {exercise: float(row["points"]) for exercise, row in rows_of(batch, name).items()}


def test_the_batch_grades_every_submission_once_and_exits_1(batch):
    assert batch["status"] == 1  # some files are not lab notebooks
    assert len(batch["totals"]) == 11
    assert {row["submission"] for row in batch["rows"]} == set(batch["totals"])
    assert len(batch["feedback"]) == 11
    for row in batch["rows"]:
        assert list(row) == list(grading.COLUMNS)
        assert 0 <= float(row["points"]) <= float(row["max_points"])


def test_a_correct_submission_gets_full_points_and_no_notes(batch):
    assert points(batch, "good.ipynb") == POINTS
    assert total(batch, "good.ipynb")["status"] == "graded"
    notes = total(batch, "good.ipynb")["notes"]  # nothing tampered with, nothing copied
    assert not any(
        word in notes for word in ("review", "builtins", "torch.", "checks.core", "checks.attention")
    )
    assert "**4 / 4 points**" in batch["feedback"]["good.feedback.md"]
    assert "(hidden tests: 1 of 1 passed)" in rows_of(batch, "good.ipynb")["causal_mask"]["feedback"]


def test_a_failed_hidden_test_names_its_requirement_and_never_its_inputs(batch):
    row = rows_of(batch, "hidden.ipynb")["causal_mask"]
    assert float(row["points"]) == 0.75  # three visible cases of four tests
    assert "(hidden tests: 0 of 1 passed)" in row["feedback"]
    text = batch["feedback"]["hidden.feedback.md"]
    assert "## Exercise 4.3 (causal_mask): 0.75 / 1 points" in text
    assert "3 of 4 tests passed, 0.75 of 1 point." in text
    assert "✗ hidden test: a causal mask of any length hides exactly the keys after each query\n" in text
    assert "KeyError" not in text  # what the answer raised on the hidden input would tell the input


def test_feedback_agrees_with_the_points_line_by_line(batch):
    """Each exercise's heading, summary and test lines tell the same points and the same count of tests."""
    sections = 0
    for text in batch["feedback"].values():
        for heading, summary, body in re.findall(
            r"## (Exercise [^\n]*)\n\n- ([^\n]*)\n((?:    - [^\n]*\n)*)", text
        ):
            sections += 1
            got, maximum = re.search(r": ([\d.]+) / ([\d.]+) points$", heading).groups()
            assert f"{got} of {maximum} point" in summary, (heading, summary)
            marks = re.findall(r"^    - ([✓✗])", body, flags=re.M)
            counted = re.search(r"(\d+) of (\d+) tests passed|all (\d+) tests passed", summary)
            if counted and counted.group(3):
                assert marks == ["✓"] * int(counted.group(3)), (summary, body)
            elif counted:
                assert marks.count("✓") == int(counted.group(1)) and len(marks) == int(counted.group(2))
            assert (float(got) == float(maximum)) == ("Well done" in summary), summary
    assert sections >= 20


def test_an_endless_loop_costs_only_its_own_exercise(batch):
    assert points(batch, "loop.ipynb") == {**POINTS, "causal_mask": 0}
    row = rows_of(batch, "loop.ipynb")["causal_mask"]
    assert (
        f"your causal_mask ran longer than {TIMEOUT} s on the tests (the limit is {TIMEOUT} s per cell)"
        in row["feedback"]
    )
    assert total(batch, "loop.ipynb")["status"] == "graded"
    assert not re.search(r"\bcell \d", batch["feedback"]["loop.feedback.md"])  # JupyterLab shows no numbers


@pytest.mark.parametrize(
    "name, reason",
    [
        ("crash.ipynb", "crashed the kernel (SIGABRT)"),
        ("output.ipynb", "printed more than 5 MB"),
        ("stderr.ipynb", "printed more than 5 MB"),
        ("memory.ipynb", "used more than 1500 MB of memory"),
    ],
)
def test_a_cell_stopped_by_a_limit_is_skipped_and_the_exercises_after_it_graded(batch, name, reason):
    assert points(batch, name) == POINTS  # the cell after exercise 4.1 is nobody's answer
    assert total(batch, name)["status"] == "graded"
    assert (
        f"a cell after Exercise 4.1 (attention) {reason}; it was skipped"
        in batch["feedback"][name.replace(".ipynb", ".feedback.md")]
    )


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
    assert float(rows["attention"]["points"]) == 0  # its check cell said 2 / 2, a plain cell printed "passed"
    assert "appears 2 times; the last copy was graded" in rows["attention"]["feedback"]


def test_renamed_moved_and_deleted_answer_cells_are_handled_and_explained(batch):
    rows = rows_of(batch, "tricky.ipynb")
    assert float(rows["causal_mask"]["points"]) == 1  # found by the function it defines, at the end
    assert "found by the name `causal_mask`" in rows["causal_mask"]["feedback"]
    assert float(rows["split_heads"]["points"]) == 0
    assert "answer cell not found" in rows["split_heads"]["feedback"]
    text = batch["feedback"]["tricky.feedback.md"]
    assert "unknown exercise '04_attention.mask' (renamed?)" in text
    assert total(batch, "tricky.ipynb")["status"] == "graded"


def test_the_summary_puts_the_hardest_exercise_first(batch):
    rows = [[row[c] for c in grading.COLUMNS] for row in batch["rows"]]
    lines = grading.class_summary(rows).splitlines()
    assert lines[0].split()[0] == "exercise"
    means = [float(line.split()[2]) / float(line.split()[4]) for line in lines[1:]]
    assert means == sorted(means) and len(means) == 3


def test_the_gradebook_has_one_row_per_student_with_a_column_per_notebook(batch):
    rows = {row["student"]: row for row in batch["gradebook"]}
    assert list(batch["gradebook"][0]) == ["student", NAME, "total"]
    assert rows["good"][NAME] == "4" and rows["good"]["total"] == "4"
    assert rows["loop"][NAME] == "3"
    assert rows["invalid"][NAME] == "0"  # a file that is not a notebook counts zero


# ---------------------------------------------------------------------------------------------- the class


def test_students_are_found_by_folder_nbgrader_layout_or_pattern():
    assert student_of(Path("submitted/alice/ps4/04_attention.ipynb"), None) == "alice"
    assert student_of(Path("course/submitted/bob/ps4/04_attention.ipynb"), None) == "bob"
    assert student_of(Path("carol/ps4/04_attention.ipynb"), None) == "carol"
    assert student_of(Path("dave/04_attention.ipynb"), None) == "dave"
    assert student_of(Path("erin_04_attention.ipynb"), None) == "erin_04_attention"
    pattern = re.compile(r"^(?P<student>[a-z]+)_")
    assert student_of(Path("x/erin_04_attention.ipynb"), pattern) == "erin"
    assert student_of(Path("04_attention.ipynb"), pattern) is None


def test_the_nbgrader_layout_is_read_and_a_file_outside_the_pattern_is_marked(tmp_path):
    for name in ("alice", "bob"):
        save({"cells": []}, tmp_path / "submitted" / name / "ps4" / f"{NAME}.ipynb")
    found = find_submissions([str(tmp_path)])
    assert [(s.student, s.file.name) for s in found] == [("alice", f"{NAME}.ipynb"), ("bob", f"{NAME}.ipynb")]
    found = find_submissions([str(tmp_path)], re.compile(r"^(?P<student>x)"))
    assert {s.student for s in found} == {f"? {NAME}.ipynb"}


def test_the_gradebook_counts_missing_notebooks_zero_and_reports_duplicates(tmp_path):
    totals = [
        ["a/01.ipynb", "01_tokenization", "3", "4", "graded", "", "alice"],
        ["a/04.ipynb", "04_attention", "5.5", "6", "graded", "", "alice"],
        ["a/04-copy.ipynb", "04_attention", "2", "6", "graded", "", "alice"],
        ["b/04.ipynb", "04_attention", "6", "6", "graded", "", "bob"],
        ["b/x.ipynb", "", "0", "0", "failed", "not JSON", "bob"],
    ]
    path = tmp_path / "grades-gradebook.csv"
    duplicates = write_gradebook(path, totals, ["01_tokenization", "04_attention"])
    assert read_csv(path) == [
        {"student": "alice", "01_tokenization": "3", "04_attention": "5.5", "total": "8.5"},
        {"student": "bob", "01_tokenization": "0", "04_attention": "6", "total": "6"},
    ]
    assert duplicates == ["alice: 2 files of 04_attention (a/04-copy.ipynb, a/04.ipynb); the best counted"]


def test_a_student_pattern_without_its_group_is_a_usage_error(sources, tmp_path, capsys):
    save(student(), tmp_path / "x.ipynb")
    args = ["grade", str(tmp_path / "x.ipynb"), "--source", str(sources), "--out", str(tmp_path / "g.csv")]
    assert cli.main([*args, "--student-pattern", "^(?P<name>.*)_"]) == 2
    err = capsys.readouterr().err
    assert "needs a group (?P<student>...)" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------- hidden tests


def test_hidden_inputs_come_from_the_secret_of_the_run_and_every_exercise_has_some():
    from labutils.checks.core import CHECKS, HIDDEN_TESTS, all_cases

    for grade_id in CHECKS:
        tests = HIDDEN_TESTS.get(grade_id, [])
        assert tests and all(test.requirement.strip() for test in tests), grade_id
    shapes = {
        secret: [tuple(case.args[0].shape) for name, case in all_cases(f"{NAME}.attention", secret)]
        for secret in range(1, 9)
    }
    visible = {tuple(shape[:-1]) for shape in shapes.values()}
    assert len(visible) == 1  # the visible cases are the notebook's own
    assert len({shape[-1] for shape in shapes.values()}) > 1  # the hidden one changes with the secret
    again = all_cases(f"{NAME}.attention", 3)[-1][1].args[0]
    assert again.equal(all_cases(f"{NAME}.attention", 3)[-1][1].args[0])  # the same secret, the same inputs


# ---------------------------------------------------------------------------------------------- copying


def test_an_answer_that_is_or_calls_the_package_earns_nothing(sources, tmp_path):
    """However it reaches labutils' own function (a default argument, an alias), the copy earns 0."""
    answers = {
        "causal_mask": "import labutils.attention as A\n\n"
        "def causal_mask(L, _mask=A.causal_mask):\n    return _mask(L)",  # hidden in a default argument
        "split_heads": "import labutils.attention as A\n"
        "split_heads = lambda x, n_heads: A.MultiHeadAttention(x.size(-1), n_heads).split_heads(x)",
        "attention": "import labutils.attention as A\n"
        + SOLUTIONS["attention"].replace("return", "A.causal_mask(2)  # allowed here\n    return"),
    }
    path = save(student(answers), tmp_path / "copy.ipynb")
    result = grading.grade_submission(path, grading.load_sources(sources), Limits(timeout=TIMEOUT))
    feedback = {exercise.split(".")[1]: text for exercise, _, _, text in result.rows}
    assert points_of(result) == {"attention": 2, "causal_mask": 0, "split_heads": 0}, result.rows
    assert "calls `labutils.attention.causal_mask`" in feedback["causal_mask"]
    assert "Exercise 4.3 (causal_mask): your answer calls `labutils.attention.causal_mask`" in result.notes
    assert "Exercise 4.4 (split_heads): your answer calls labutils.attention" in result.notes  # flagged
    section = result.text.split("## Exercise 4.4")[1]  # switched off while it ran: told why it failed
    assert "calls labutils.attention.MultiHeadAttention.split_heads, which this exercise asks you" in section


def test_an_answer_like_the_package_s_own_code_is_noted_for_review():
    package_like = (
        "def causal_mask(length):\n"
        "    ones = torch.ones(length, length, dtype=torch.bool, device=None)\n"
        "    return torch.triu(ones, diagonal=1)\n"
    )
    import inspect

    import labutils.attention

    source = inspect.getsource(inspect.unwrap(labutils.attention.scaled_dot_product_attention))
    renamed = source.replace("scaled_dot_product_attention", "attention").replace("scores", "s")
    forbidden = ("labutils.attention.scaled_dot_product_attention",)
    assert "matches labutils.attention.scaled_dot_product_attention" in similar_to_package(
        renamed, "attention", forbidden
    )
    assert similar_to_package(SOLUTIONS["attention"], "attention", forbidden) is None  # a few lines: never
    assert similar_to_package(package_like, "causal_mask", ("labutils.attention.causal_mask",)) is None


# ---------------------------------------------------------------------------------------------- resuming


def test_a_killed_batch_resumes_without_losing_or_repeating_a_grade(sources, tmp_path, monkeypatch):
    """kill -9 in the middle of a batch, with a half-written row, then --resume: every grade exactly once."""
    hold, pid = tmp_path / "hold", tmp_path / "kernel.pid"
    wait = (
        f"import os, pathlib, time\nif pathlib.Path({str(hold)!r}).exists():\n"
        f"    pathlib.Path({str(pid)!r}).write_text(f'{{os.getpid()}} {{os.getcwd()}}')\n    time.sleep(120)"
    )
    solved = student(SOLUTIONS)
    for name in ("alice", "bob", "carol"):  # three files of the same name: their feedback must not collide
        save(
            with_cell(solved, 0, wait) if name == "bob" else solved,
            tmp_path / "class" / name / f"{NAME}.ipynb",
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
        "--sandbox",
        "none",  # the kernel writes where this test reads
    ]
    grader = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while not pid.exists():  # alice is graded, bob's kernel is waiting
            assert grader.poll() is None and time.monotonic() < deadline, "the grader never reached bob"
            time.sleep(0.2)
        os.kill(grader.pid, signal.SIGKILL)
        grader.wait()
        deadline = time.monotonic() + 30  # its supervisor sees the grader's pipe end, and ends it
        while psutil.pid_exists(number := int(pid.read_text().split(" ", 1)[0])):
            try:
                if psutil.Process(number).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            assert time.monotonic() < deadline, "bob's kernel outlived the grader killed with -9"
            time.sleep(0.2)
    finally:
        if grader.poll() is None:
            grader.kill()
        if pid.exists():  # the kernel's temporary folder (and the kernel, if this test failed)
            number, folder = pid.read_text().split(" ", 1)
            try:
                os.kill(int(number), signal.SIGKILL)
            except ProcessLookupError:
                pass
            if Path(folder).parent.name.startswith("labutils-grade-"):
                shutil.rmtree(Path(folder).parent, ignore_errors=True)
    hold.unlink()
    totals = grading.totals_path(out)
    assert [row["submission"] for row in read_csv(totals)] == [
        os.path.join("class", "alice", f"{NAME}.ipynb")
    ]
    # As if the kill had struck while bob's rows were being written: whole rows, then half of one.
    bob = os.path.join("class", "bob", f"{NAME}.ipynb")
    with open(out, "a", encoding="utf-8") as file:
        file.write(f"{bob},{NAME},{NAME}.attention,2,2,fine\n{bob},{NAME},{NAME}.cau")
    with open(totals, "a", encoding="utf-8") as file:
        file.write(f"{bob},{NAME},4,")

    assert cli.main(["grade", "class", "--source", str(sources), "--out", str(out)]) == 2  # never overwritten
    monkeypatch.chdir(tmp_path)
    report = grading.grade(["class"], source=sources, out=out, resume=True, sandbox_mode="none")
    assert (report.graded, report.skipped, report.status) == (2, 1, 0)
    rows = read_csv(out)
    assert sorted((row["submission"], row["exercise"]) for row in rows) == sorted(
        (os.path.join("class", name, f"{NAME}.ipynb"), f"{NAME}.{exercise}")
        for name in ("alice", "bob", "carol")
        for exercise in POINTS
    )
    assert all(row["points"] == row["max_points"] for row in rows)
    assert [row["status"] for row in read_csv(totals)] == ["graded"] * 3
    for name in ("alice", "bob", "carol"):
        text = (tmp_path / "feedback" / name / f"{NAME}.feedback.md").read_text(encoding="utf-8")
        assert os.path.join("class", name, f"{NAME}.ipynb") in text and "4 / 4 points" in text


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
        "submission,notebook,exercise,points,max_points,feedback\na.ipynb,04_attention,04_attention.attention,2,2,ok\n"
    )
    grading.totals_path(out).write_text(
        "submission,notebook,points,max_points,status,notes,student\na.ipynb,04_attention,2,2,graded,,a\nb.ipynb,04_attention,1"
    )
    ledger = grading.Ledger(out, resume=True)
    assert list(ledger.done) == ["a.ipynb"]
    assert grading.totals_path(out).read_text().endswith("graded,,a\n")  # the cut line is gone
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
        (["x.ipynb", "--out", "x.ipynb/grades.csv"], "--out x.ipynb/grades.csv: cannot make its folder"),
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
    plan = grading.make_plan(notebook, source, Limits(timeout=1, long_timeout=99))
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
    plan = grading.make_plan(notebook, source, Limits())
    assert {step.role for step in plan.steps} == {"student", "call"}


def test_a_notebook_without_its_metadata_is_recognised_by_its_exercises(sources):
    notebook = json.loads(json.dumps(student(SOLUTIONS)))
    del notebook["metadata"]["labutils"]
    source, note = grading.identify(notebook, grading.load_sources(sources))
    assert source.notebook == NAME and f"recognised as {NAME}" in note


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


# ---------------------------------------------------------------------------------------------- the sandbox


def test_the_sandbox_falls_back_with_one_line_or_is_a_usage_error(sources, tmp_path, monkeypatch, capsys):
    from labutils.instructor import sandbox

    monkeypatch.setattr(sandbox, "bwrap_problem", lambda: "bubblewrap (bwrap) is not installed")
    (tmp_path / "x.ipynb").write_text("not json")  # no kernel needed: the file is not a notebook
    args = ["grade", str(tmp_path / "x.ipynb"), "--source", str(sources), "--out", str(tmp_path / "g.csv")]
    assert cli.main([*args, "--sandbox", "bwrap"]) == 2
    err = capsys.readouterr().err
    assert (
        "--sandbox bwrap: bubblewrap (bwrap) is not installed" in err and len(err.strip().splitlines()) == 1
    )
    assert not (tmp_path / "g.csv").exists()
    assert cli.main(args) == 1  # auto: graded without it (the file is not a notebook: one failed row)
    lines = capsys.readouterr().err.splitlines()
    said = [line for line in lines if line.startswith("no sandbox:")]
    assert said == [
        "no sandbox: bubblewrap (bwrap) is not installed; each submission runs with your permissions "
        "(see the README)"
    ]


# ---------------------------------------------------------------------------------------------- leftovers


def test_a_process_that_cannot_be_ended_is_named(monkeypatch):
    from labutils.instructor import kernel, supervisor

    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        monkeypatch.setattr(supervisor, "END_WITHIN", 0.3)
        monkeypatch.setattr(psutil.Process, "kill", lambda self: None)  # a process deaf to SIGKILL
        left = kernel._end([psutil.Process(sleeper.pid)])
        assert left == [f"{sleeper.pid} (sleep)"]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert kernel._end([psutil.Process(os.getpid())]) != []  # this process is running: named, not ended
    gone = subprocess.Popen(["true"])
    process = psutil.Process(gone.pid)
    gone.wait()
    assert kernel._end([process]) == []  # a process that has ended is not a leftover


def test_a_leftover_is_a_note_and_a_non_zero_exit(sources, tmp_path, monkeypatch):
    from labutils.instructor import gradebook

    def left_behind(path, sources, limits, key, secret, student, view):
        return gradebook.Result(
            key, NAME, [(f"{NAME}.attention", 2.0, 2.0, "fine")], "graded", "", "# fine\n", student,
            left=["4242 (sleep)"],
        )  # fmt: skip

    monkeypatch.setattr(grading, "grade_submission", left_behind)
    save(student(), tmp_path / "class" / "a.ipynb")
    report = grading.grade(
        [str(tmp_path / "class")], source=sources, out=tmp_path / "g.csv", log=print, sandbox_mode="none"
    )
    assert report.status == 1
    assert any("could not end 4242 (sleep)" in problem for problem in report.problems), report.problems


# ---------------------------------------------------------------------------------------------- similar answers


def answers_of(exercise: str, codes: dict[str, str]):
    from labutils.instructor.similarity import Answer

    return [Answer(exercise, who, f"{who}.ipynb", code, "attention") for who, code in codes.items()]


LONG = (
    "def attention(Q, K, V):\n"
    "    # scores of every query against every key\n"
    "    d_k = Q.size(-1)\n"
    "    scores = Q @ K.transpose(-2, -1)\n"
    "    scores = scores / math.sqrt(d_k)\n"
    "    weights = torch.softmax(scores, dim=-1)\n"
    "    output = weights @ V\n"
    "    return output, weights\n"
)
RENAMED = (
    "def attention(query, key, value):\n"
    '    """Attention, as in the lecture."""\n'
    "    size = query.size(-1)  # the width of a key\n"
    "    s = query @ key.transpose(-2, -1)\n"
    "    s = s / math.sqrt(size)\n\n"
    "    w = torch.softmax(s, dim=-1)\n"
    "    result = w @ value\n"
    "    return result, w\n"
)
OTHER = (
    "def attention(Q, K, V):\n"
    "    scale = 1.0 / Q.shape[-1] ** 0.5\n"
    "    logits = torch.matmul(Q, K.transpose(-1, -2)) * scale\n"
    "    logits = logits - logits.max(dim=-1, keepdim=True).values\n"
    "    e = torch.exp(logits)\n"
    "    weights = e / e.sum(dim=-1, keepdim=True)\n"
    "    return torch.matmul(weights, V), weights\n"
)


def test_answers_alike_are_paired_and_short_or_common_ones_are_not():
    from labutils.instructor.similarity import MIN_STATEMENTS, similar_pairs

    codes = {"alice": LONG, "bob": RENAMED, "carol": OTHER, "dave": SOLUTIONS["attention"]}
    codes["erin"] = SOLUTIONS["attention"]  # the same short answer, written by two honest students
    found = similar_pairs(answers_of(f"{NAME}.attention", codes))
    assert [(p.first.student, p.second.student, p.alike) for p in found.pairs] == [("alice", "bob", 1.0)]
    assert (found.compared, found.short, found.common) == (3, 2, 0)
    assert MIN_STATEMENTS == 4
    # A class of 40 where 30 wrote the notebook's own long answer: their 435 pairs are the common answer,
    # not listed; a pair that wrote something else alike is.
    codes = {f"s{n:02d}": LONG.replace("d_k", f"d{n}") for n in range(30)}
    codes.update({"x1": OTHER, "x2": OTHER.replace("logits", "z"), "y": RENAMED})
    found = similar_pairs(answers_of(f"{NAME}.attention", codes))
    assert [(p.first.student, p.second.student) for p in found.pairs] == [("x1", "x2")]
    assert found.common == 31 * 30 // 2  # y wrote the common answer too


def test_the_instructor_modules_import_each_other_without_a_circle():
    """Each module of labutils.instructor imports only modules that do not import it back, at any depth."""
    import ast

    folder = ROOT / "labutils" / "instructor"
    imports = {}
    for path in folder.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("labutils.instructor")
            ):
                names.add(node.module.split(".")[2] if node.module.count(".") >= 2 else "")
                names |= {alias.name for alias in node.names if (folder / f"{alias.name}.py").exists()}
            elif isinstance(node, ast.Import):
                names |= {
                    a.name.split(".")[2] for a in node.names if a.name.startswith("labutils.instructor.")
                }
        imports[path.stem] = names - {"", path.stem}

    def reaches(start, target, seen=()):
        return any(
            n == target or (n not in seen and reaches(n, target, (*seen, n))) for n in imports.get(start, ())
        )

    circles = sorted(name for name in imports if reaches(name, name))
    assert circles == [], circles
    assert "grading" not in imports["gradebook"]
