"""Red team: a class of submissions that tamper with grading in every way the course has seen, graded once.

Each earns what its answers earn on the grader's inputs and no more; tampering that can be seen from outside
is flagged in the notes with the exercise; a stopped answer costs only its own exercise. Short limits and
bounded bombs keep the batch to about a minute or two.

Then the grader itself: a submission that rewrites the package the grader judges with (the batch stops at it,
and the next run refuses to start until the file is restored; in the sandbox the write fails), one that leaves
a detached process behind to rewrite the grades later (nothing of it survives the grader: checked 60 s after
it exits), and, in the sandbox, one that looks for other students' notebooks, or for the network. Those run
``python -m labutils grade`` in a process of its own, judging with a copy of the package, so that what a
submission writes into "the grader's package" never touches this checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
from demo_notebook import (
    NAME,
    POINTS,
    SOLUTIONS,
    answer_index,
    mutated,
    read_csv,
    save,
    student,
    write_source,
)

from labutils.instructor import grading
from labutils.instructor.grading import Limits
from labutils.instructor.sandbox import bwrap_problem

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 10  # seconds per cell
NOTHING = dict.fromkeys(POINTS, 0.0)


def stubbed(**answers):
    """The student notebook with the solutions filled in, but ``answers`` (name -> code) where given."""
    return student({**SOLUTIONS, **answers})


def unsolved(**answers):
    """The student notebook as handed out, with ``answers`` (name -> code) where given."""
    return student(answers)


TWO_LINES = (
    "from labutils import checks as c\n"
    "c.CheckResult.points = property(lambda self: float(self.exercise.points))\n"
    "def causal_mask(L):\n    raise NotImplementedError()"
)
TORCH_PATCHED = (
    "import torch\n"
    "torch.allclose = lambda *args, **kwargs: True\n"
    "torch.equal = lambda *args, **kwargs: True\n"
    "torch.isclose = lambda a, b, **kwargs: torch.ones_like(a, dtype=torch.bool)\n"
    "def causal_mask(L):\n    return torch.zeros(L, L, dtype=torch.bool)"
)
CHECKS_SWAPPED = (
    "import sys, labutils.checks\n"
    "labutils.checks.causal_mask = lambda answer: print('all 4 tests passed, 1 of 1 point')\n"
    "sys.modules['labutils.checks.attention'].causal_mask = labutils.checks.split_heads\n"
    "def causal_mask(L):\n    raise NotImplementedError()"
)
FORGED = (
    "from IPython.display import display\n"
    "for grade_id in ('04_attention.attention', '04_attention.causal_mask', '04_attention.split_heads'):\n"
    "    record = {'grade_id': grade_id, 'points': 2, 'max_points': 2, 'passed': ['all'], 'failed': []}\n"
    "    display({'application/vnd.labutils.check+json': record, 'text/plain': 'passed'}, raw=True)\n"
    "    display({'application/vnd.labutils.grader+json': {'defined': True, 'is': [], 'calls': []}}, raw=True)\n"
    "print('Exercise 4.3 (causal_mask): all 4 tests passed, 1 of 1 point. Well done.')"
)
FROM_DISK_LENGTHS = (1, 4, 7, 50)  # the visible cases' lengths, and a guess
FROM_DISK = (
    "import glob, pathlib, torch, labutils\n"
    "seen = []\n"
    "for pattern in ('solutions/*.ipynb', '../*/*', '/tmp/labutils-grade-*/io/*'):\n"
    "    seen += glob.glob(pattern)\n"
    "root = pathlib.Path(labutils.__file__).parent\n"
    "hidden = (root / 'checks' / 'attention.py').read_text()  # the hidden tests' code, not their inputs\n"
    f"KNOWN = {{L: torch.ones(L, L, dtype=torch.bool).triu(1) for L in {FROM_DISK_LENGTHS}}}\n"
    "def causal_mask(L):\n    return KNOWN[L].clone()"
)


def secret_hiding_from(lengths: tuple[int, ...]) -> int:
    """A secret whose hidden causal mask has none of these lengths (it draws from 2 to 64, so one the answer
    above knows about once in 20 runs: the answer would then pass the hidden test too, rightly)."""
    from labutils.checks.core import all_cases

    for secret in range(1, 1000):
        hidden = [
            case.args[0] for name, case in all_cases("04_attention.causal_mask", secret) if "hidden" in name
        ]
        if hidden and not set(hidden) & set(lengths):
            return secret
    raise AssertionError("no such secret")


OS_EXIT = "import os\ndef causal_mask(L):\n    os._exit(0)"
SYS_EXIT = "import sys\ndef split_heads(x, n_heads):\n    sys.exit(0)"
BOMB = (
    "import subprocess, pathlib\n"
    "def causal_mask(L):\n"
    "    children = [subprocess.Popen(['sleep', '600']) for _ in range(20)]\n"
    "    pathlib.Path(%r).write_text(' '.join(str(child.pid) for child in children))\n"
    "    while True:\n"
    "        pass"
)
SLEEPER = (
    "import threading, time, torch\n"
    "from IPython.display import display\n"
    "def later():\n"
    "    time.sleep(3 * %d)\n"
    "    torch.allclose = lambda *args, **kwargs: True\n"
    "    record = {'grade_id': '04_attention.causal_mask', 'points': 1, 'max_points': 1, 'passed': ['all']}\n"
    "    display({'application/vnd.labutils.check+json': record}, raw=True)\n"
    "threading.Thread(target=later, daemon=True).start()\n"
    "def causal_mask(L):\n    raise NotImplementedError()"
)
SIGNALS = (
    "import signal\n"
    "for name in ('SIGINT', 'SIGTERM', 'SIGALRM', 'SIGHUP'):\n"
    "    signal.signal(getattr(signal, name), signal.SIG_IGN)\n"
    "def causal_mask(L):\n    while True:\n        pass"
)
FLOOD = "def split_heads(x, n_heads):\n    for _ in range(50):\n        print('x' * 1_000_000)"
OVERWRITE = "import pathlib\npathlib.Path(%r).write_text(%r)"  # the solved notebook in its place
MODULES = (
    "import sys, types, builtins, IPython.display\n"
    "fake = types.ModuleType('labutils.checks')\n"
    "fake.causal_mask = lambda answer: None\n"
    "sys.modules['labutils.checks'] = fake\n"
    "builtins.round = lambda number, digits=None: 1.0\n"
    "IPython.display.display = lambda *objects, **kwargs: None\n"
    "def causal_mask(L):\n    raise NotImplementedError()"
)

PICKLE = (
    "import pickle, torch\n"
    "class Trap:\n"
    "    def __reduce__(self):\n"
    "        return (open, (%r, 'w'))  # run by whoever unpickles it without weights_only\n"
    "def save(data, path, *args, **kwargs):\n"
    "    with open(path, 'wb') as file:\n"
    "        pickle.dump({'results': [{'value': Trap()}] * 4, 'callable': True}, file)\n"
    "torch.save = save\n" + SOLUTIONS["causal_mask"]
)


def edited_check_cell():
    notebook = unsolved()
    notebook.cells[answer_index(notebook, "causal_mask", "check")].source = FORGED
    return notebook


def with_kernelspec(name: str, language: str):
    """The solved notebook, its metadata naming another kernel to run it (one that may not exist)."""
    notebook = stubbed()
    notebook.metadata["kernelspec"] = {"name": name, "display_name": name, "language": language}
    notebook.metadata["language_info"] = {"name": language}
    return notebook


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Every submission of the class, graded in one batch: {name: (points by exercise, notes, feedback)}."""
    folder = tmp_path_factory.mktemp("redteam")
    sources = write_source(folder / "solutions")
    pids = folder / "bomb.pids"
    overwritten = folder / "class" / "overwrite.ipynb"
    trap = folder / "unpickled"  # created only if the grader unpickled what the kernel wrote
    submissions = {
        "points_patch": unsolved(causal_mask=TWO_LINES),
        "torch_patched": stubbed(causal_mask=TORCH_PATCHED),
        "checks_swapped": unsolved(causal_mask=CHECKS_SWAPPED),
        "forged_payload": mutated(unsolved(), "attention", FORGED),
        "hidden_from_disk": stubbed(causal_mask=FROM_DISK),
        "os_exit": stubbed(causal_mask=OS_EXIT),
        "sys_exit": mutated(stubbed(split_heads=SYS_EXIT), "attention", "import sys\nsys.exit(1)"),
        "process_bomb": stubbed(causal_mask=BOMB % str(pids)),
        "sleeping_thread": stubbed(causal_mask=SLEEPER % TIMEOUT),
        "signal_handler": stubbed(causal_mask=SIGNALS),
        "output_flood": stubbed(split_heads=FLOOD),
        "overwrite": mutated(unsolved(), "attention", OVERWRITE % (str(overwritten), json.dumps(stubbed()))),
        "check_cell_edited": edited_check_cell(),
        "modules_builtins_display": unsolved(causal_mask=MODULES),
        "pickle_for_data": stubbed(causal_mask=PICKLE % str(trap)),
        "kernelspec_missing": with_kernelspec("no-such-kernel", "python"),
        "kernelspec_other": with_kernelspec("ir", "R"),
    }
    for name, notebook in submissions.items():
        save(notebook, folder / "class" / f"{name}.ipynb")
    before = overwritten.read_text()
    out = folder / "grades.csv"
    limits = Limits(timeout=TIMEOUT, memory_mb=3000, output_mb=5)
    with pytest.MonkeyPatch.context() as patch:  # a secret whose hidden length no answer here knows
        patch.setattr(grading.secrets, "randbits", lambda bits: secret_hiding_from(FROM_DISK_LENGTHS))
        report = grading.grade(
            [str(folder / "class")],
            source=sources,
            out=out,
            limits=limits,
            jobs=2,
            log=print,
            sandbox_mode="none",
        )  # without the sandbox: these submissions write where this test reads
    results = {}
    totals = {Path(row["submission"]).stem: row for row in read_csv(grading.totals_path(out))}
    for row in read_csv(out):
        name = Path(row["submission"]).stem
        points, _, _ = results.setdefault(name, ({}, totals[name]["notes"], {}))
        points[row["exercise"].split(".")[1]] = float(row["points"])
    for name in results:
        text = (folder / "feedback" / f"{name}.feedback.md").read_text(encoding="utf-8")
        results[name] = (results[name][0], results[name][1], text)
    return {
        "results": results,
        "report": report,
        "pids": pids,
        "overwritten": overwritten.read_text() != before,
        "trap": trap,
    }


def outcome(graded, name):
    return graded["results"][name]


def test_every_submission_is_graded_and_none_stops_the_batch(graded):
    assert len(graded["results"]) == 17
    assert graded["report"].status == 0, graded["report"].problems
    assert graded["report"].stopped is None


def test_the_two_line_points_patch_earns_nothing_and_is_flagged(graded):
    points, notes, text = outcome(graded, "points_patch")
    assert points == NOTHING
    assert "Exercise 4.3 (causal_mask): after its answer cell, not the package's own" in notes
    assert "labutils.checks.core.CheckResult.points" in notes
    assert "**0 / 4 points**" in text and "not done yet (0 of 1 point)" in text


def test_patched_torch_comparisons_earn_nothing_and_are_flagged(graded):
    points, notes, _ = outcome(graded, "torch_patched")
    # right for L = 1 only: the judge runs outside the kernel, with torch as it should be
    assert points == {**POINTS, "causal_mask": 0.25}
    assert "torch.allclose" in notes and "torch.equal" in notes and "Exercise 4.3 (causal_mask)" in notes


def test_swapped_check_functions_earn_nothing_and_are_flagged(graded):
    points, notes, _ = outcome(graded, "checks_swapped")
    assert points == NOTHING
    assert "labutils.checks.causal_mask" in notes and "labutils.checks.attention.causal_mask" in notes


@pytest.mark.parametrize("name", ["forged_payload", "check_cell_edited"])
def test_forged_payloads_and_edited_check_cells_earn_nothing(graded, name):
    points, _, text = outcome(graded, name)
    assert points == NOTHING
    assert "Well done" not in text and "all passed" not in text


def test_reading_the_hidden_tests_from_disk_does_not_reveal_their_inputs(graded):
    points, _, text = outcome(graded, "hidden_from_disk")
    assert points == {**POINTS, "causal_mask": 0.75}  # the visible cases only: the inputs come from a secret
    assert "✗ hidden test: a causal mask of any length hides exactly the keys after each query" in text


def test_os_exit_in_an_answer_costs_that_exercise_only(graded):
    points, _, text = outcome(graded, "os_exit")
    assert points == {**POINTS, "causal_mask": 0}
    assert "Exercise 4.3 (causal_mask): 0 of 1 point: your causal_mask crashed the kernel" in text


def test_sys_exit_in_a_cell_or_an_answer_costs_that_exercise_only(graded):
    points, _, text = outcome(graded, "sys_exit")
    assert points == {**POINTS, "split_heads": 0}
    assert "your function raised SystemExit" in text


def test_a_process_bomb_costs_its_exercise_and_leaves_no_process_behind(graded):
    points, _, text = outcome(graded, "process_bomb")
    assert points == {**POINTS, "causal_mask": 0}
    assert (
        f"your causal_mask ran longer than {TIMEOUT} s on the tests (the limit is {TIMEOUT} s per cell)"
        in text
    )
    children = [int(pid) for pid in graded["pids"].read_text().split()]
    assert len(children) == 20
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in children):
        assert time.monotonic() < deadline, "a child of the kernel outlived it"
        time.sleep(0.2)


def test_a_thread_that_sleeps_past_the_limit_changes_no_grade(graded):
    points, _, _ = outcome(graded, "sleeping_thread")
    assert points == {**POINTS, "causal_mask": 0}


def test_a_signal_handler_does_not_stop_the_time_limit(graded):
    points, _, text = outcome(graded, "signal_handler")
    assert points == {**POINTS, "causal_mask": 0}
    assert "your causal_mask ran longer than" in text


def test_an_output_flood_costs_its_exercise_only(graded):
    points, _, text = outcome(graded, "output_flood")
    assert points == {**POINTS, "split_heads": 0}
    assert "Exercise 4.4 (split_heads): 0 of 1 point: your split_heads printed more than 5 MB" in text


def test_overwriting_the_notebook_from_inside_changes_no_grade(graded):
    points, _, _ = outcome(graded, "overwrite")
    assert graded["overwritten"]  # the file did change on disk
    assert points == NOTHING  # the grader had read it before


def test_patched_sys_modules_builtins_and_display_earn_nothing_and_are_flagged(graded):
    points, notes, _ = outcome(graded, "modules_builtins_display")
    assert points == NOTHING
    assert "builtins.round" in notes and "IPython.display.display" in notes
    assert re.search(r"labutils\.checks(,|$| )", notes), notes


def test_a_pickle_in_place_of_the_data_is_never_unpickled(graded):
    points, notes, text = outcome(graded, "pickle_for_data")
    assert not graded["trap"].exists()  # read with torch.load(weights_only=True): refused
    assert points == {**POINTS, "causal_mask": 0, "split_heads": 0}  # torch.save stays patched
    assert "could not read what your function returned" in text
    assert "Exercise 4.3 (causal_mask): the grader could not read what your function returned" in notes


@pytest.mark.parametrize("name", ["kernelspec_missing", "kernelspec_other"])
def test_a_kernel_named_in_the_notebook_is_not_the_one_that_runs_it(graded, name):
    points, notes, _ = outcome(graded, name)
    assert points == POINTS  # the grader's own Python kernel ran it, whatever the notebook asked for
    assert notes == ""


def test_no_feedback_names_a_cell_number(graded):
    for _, _, text in graded["results"].values():
        assert not re.search(r"\bcell \d", text)


@pytest.fixture(autouse=True, scope="module")
def no_stray_processes():
    yield
    for process in psutil.Process(os.getpid()).children(recursive=True):  # nothing of ours may outlive this
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass


# ------------------------------------------------------------------------------------------ the grader itself


def own_package(folder: Path) -> Path:
    """A copy of the package for a grader run in a process of its own: its "checkout", which submissions may
    rewrite; returns the folder to put on that process's PYTHONPATH."""
    shutil.copytree(ROOT / "labutils", folder / "labutils")  # with its __pycache__: nothing to compile
    return folder


def run_grader(args: list[str], cwd: Path, package: Path | None = None, env: dict | None = None):
    """``python -m labutils grade ARGS`` in a process of its own: (exit status, stderr, stdout)."""
    environment = {**os.environ, **(env or {})}
    if package is not None:
        environment["PYTHONPATH"] = str(package)  # before the editable install: it judges with this copy
    done = subprocess.run(
        [sys.executable, "-m", "labutils", "grade", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done.returncode, done.stderr, done.stdout


# What a submission appends to the checks of the package it finds: a judge that passes everything.
REWRITE = (
    "import pathlib, labutils\n"
    "PAYLOAD = '\\n\\ndef judge_returned(result, name, case, returned):\\n    result.add(name, True, \"\")\\n'\n"
    "written = []\n"
    "for root in (pathlib.Path(labutils.__file__).parent, pathlib.Path(%r)):\n"
    "    try:\n"
    "        with open(root / 'checks' / 'core.py', 'a') as file:\n"
    "            file.write(PAYLOAD)\n"
    "        written.append(str(root))\n"
    "    except OSError as error:\n"
    "        print(error)\n"
)
WRONG_MASK = "def causal_mask(L):\n    return torch.zeros(L, L, dtype=torch.bool)"
HONEST = {"b_wrong": {**POINTS, "causal_mask": 0.25}, "c_wrong": NOTHING}  # what the wrong answers earn


def rewriting_class(folder: Path, package: Path) -> Path:
    """a_writer rewrites the grader's checks; b_wrong and c_wrong come after it, with wrong answers."""
    core = package / "labutils" / "checks" / "core.py"
    save(mutated(stubbed(), "attention", REWRITE % str(core.parent.parent)), folder / "a_writer.ipynb")
    save(stubbed(causal_mask=WRONG_MASK), folder / "b_wrong.ipynb")
    save(unsolved(), folder / "c_wrong.ipynb")
    return folder


def points_by_submission(out: Path) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for row in read_csv(out):
        found.setdefault(Path(row["submission"]).stem, {})[row["exercise"].split(".")[1]] = float(
            row["points"]
        )
    return found


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_submission_that_rewrites_the_grader_stops_the_batch_and_the_next_run(tmp_path, jobs):
    package = own_package(tmp_path / "grader")
    core = package / "labutils" / "checks" / "core.py"
    original = core.read_bytes()
    sources = write_source(tmp_path / "solutions")
    rewriting_class(tmp_path / "class", package)
    args = ["class", "--source", str(sources), "--out", "out/grades.csv", "--timeout", str(TIMEOUT)]
    args += ["--jobs", str(jobs), "--sandbox", "none"]
    status, err, _ = run_grader(args, tmp_path, package)
    assert status == 1, err
    stopped = [line for line in err.splitlines() if line.startswith("grading stopped:")]
    assert len(stopped) == 1, err
    assert "labutils/checks/core.py changed while" in stopped[0] and "a_writer.ipynb" in stopped[0]
    assert (
        core.read_bytes() != original
    )  # it did write: the line names the file, and nothing was judged by it
    graded = points_by_submission(tmp_path / "out" / "grades.csv")
    assert "a_writer" not in graded  # nothing of the writer counted
    for name, points in graded.items():
        assert points == HONEST[name], name  # graded at the same time, before the change: as they deserve
    # The next run refuses to start until the file is as it was; then --resume continues.
    before = (tmp_path / "out" / "grades-totals.csv").read_bytes()
    status, err, _ = run_grader([*args, "--resume"], tmp_path, package)
    assert status == 1 and len(err.strip().splitlines()) == 1, err
    assert "labutils/checks/core.py was changed while" in err and "still differs: restore it" in err
    assert (tmp_path / "out" / "grades-totals.csv").read_bytes() == before
    if jobs == 1:
        core.write_bytes(original)
        (tmp_path / "class" / "a_writer.ipynb").rename(tmp_path / "a_writer.ipynb")  # set aside to read
        status, err, _ = run_grader([*args, "--resume"], tmp_path, package)
        assert status == 0, err
        assert points_by_submission(tmp_path / "out" / "grades.csv") == HONEST
        assert core.read_bytes() == original


SCRIBBLE = (
    "with open(%r, 'a') as file:\n"
    "    file.write('class/b_scribbler.ipynb,04_attention,4,4,graded,,b_scribbler\\n')\n"
)


def test_a_submission_that_writes_into_the_grades_stops_the_batch_and_is_undone(tmp_path):
    """Without the sandbox: the forged line is found after the submission, and written over from the records."""
    sources = write_source(tmp_path / "solutions")
    out = tmp_path / "out" / "grades.csv"
    save(stubbed(), tmp_path / "class" / "a_good.ipynb")
    save(
        mutated(unsolved(), "attention", SCRIBBLE % str(grading.totals_path(out))),
        tmp_path / "class" / "b_scribbler.ipynb",
    )
    report = grading.grade(
        [str(tmp_path / "class")], source=sources, out=out, limits=Limits(timeout=TIMEOUT), log=print,
        sandbox_mode="none",
    )  # fmt: skip
    assert report.status == 1
    assert report.stopped.startswith(f"grading stopped: {grading.totals_path(out)} changed while ")
    assert "b_scribbler.ipynb was graded" in report.stopped and "wrote its own files again" in report.stopped
    totals = read_csv(grading.totals_path(out))
    assert [(Path(row["submission"]).stem, row["points"]) for row in totals] == [("a_good", "4")]


# ------------------------------------------------------------------------------------- the class, sandboxed

LONG = {
    "attention": (
        "import math\n\n"
        "def attention(Q, K, V):\n"
        "    # scores of every query against every key\n"
        "    d_k = Q.size(-1)\n"
        "    scores = Q @ K.transpose(-2, -1)\n"
        "    scores = scores / math.sqrt(d_k)\n"
        "    weights = torch.softmax(scores, dim=-1)\n"
        "    output = weights @ V\n"
        "    return output, weights\n"
    ),
    "split_heads": (
        "def split_heads(x, n_heads):\n"
        "    B, L, d_model = x.shape\n"
        "    d_head = d_model // n_heads  # each head's share\n"
        "    x = x.reshape(B, L, n_heads, d_head)\n"
        "    x = x.permute(0, 2, 1, 3)\n"
        "    return x.contiguous()\n"
    ),
}
COPIED = {  # bob's: alice's answers, names and comments changed
    "attention": (
        "import math\n\n"
        "def attention(query, key, value):\n"
        '    """Scaled dot-product attention."""\n'
        "    width = query.size(-1)\n"
        "    s = query @ key.transpose(-2, -1)  # (B, Lq, Lk)\n"
        "    s = s / math.sqrt(width)\n\n"
        "    w = torch.softmax(s, dim=-1)\n"
        "    out = w @ value\n"
        "    return out, w\n"
    ),
    "split_heads": (
        "def split_heads(t, heads):\n"
        "    # one slice of the features per head\n"
        "    b, n, width = t.shape\n"
        "    per_head = width // heads\n"
        "    t = t.reshape(b, n, heads, per_head)\n"
        "    t = t.permute(0, 2, 1, 3)\n"
        "    return t.contiguous()\n"
    ),
}
OWN = {  # carol's: as long, written her own way
    "attention": (
        "def attention(Q, K, V):\n"
        "    scale = 1.0 / Q.shape[-1] ** 0.5\n"
        "    logits = torch.matmul(Q, K.transpose(-1, -2)) * scale\n"
        "    logits = logits - logits.max(dim=-1, keepdim=True).values\n"
        "    e = torch.exp(logits)\n"
        "    weights = e / e.sum(dim=-1, keepdim=True)\n"
        "    return torch.matmul(weights, V), weights\n"
    ),
    "split_heads": (
        "def split_heads(x, n_heads):\n"
        "    batch, length = x.size(0), x.size(1)\n"
        "    per_head = x.size(2) // n_heads\n"
        "    heads = x.view(batch, length, n_heads, per_head)\n"
        "    heads = heads.transpose(1, 2)\n"
        "    return heads\n"
    ),
}
# frank's attention: a classmate's, found on the disk and run (the path is known, or searched for).
READER = (
    "import glob, json, os\n"
    "def attention(Q, K, V):\n"
    "    found = [%r] + glob.glob('/tmp/**/*.ipynb', recursive=True)\n"
    "    found += glob.glob(os.path.expanduser('~/**/*.ipynb'), recursive=True)\n"
    "    for path in found:\n"
    "        if 'alice' in path and os.path.exists(path):\n"
    "            cells = json.load(open(path))['cells']\n"
    "            space = {'torch': torch}\n"
    "            for cell in cells:\n"
    "                if 'def attention' in ''.join(cell['source']):\n"
    "                    exec(''.join(cell['source']), space)\n"
    "                    return space['attention'](Q, K, V)\n"
    "    raise NotImplementedError('nothing to copy')\n"
)
# hank's causal mask works only if it can reach the network (a listener of this test, on this machine).
NETWORK = (
    "import socket\n"
    "def causal_mask(L):\n"
    "    with socket.create_connection(('127.0.0.1', %d), timeout=2) as connection:\n"
    "        connection.sendall(b'hank')\n"
    "    return torch.ones(L, L, dtype=torch.bool).triu(1)\n"
)
# ivan's answer cell leaves a process behind, in a new session, its parent gone; the answer is defined only
# if that process is there.
LINGER = (
    "import os, subprocess, time\n"
    "subprocess.run(['setsid', 'sh', '-c', 'sleep %s & exit 0'], check=True)\n"
    "time.sleep(0.5)\n"
    "def _command(pid):\n"
    "    try:\n"
    "        return open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')[:2]\n"
    "    except OSError:\n"
    "        return []\n"
    "assert [b'sleep', b'%s'] in [_command(pid) for pid in os.listdir('/proc') if pid.isdigit()]\n"
) + SOLUTIONS["causal_mask"]
# gina's plain cell writes where it should not: the grader's package, the grades, her own notebook, the
# Python environment.
STRAY = "written-by-a-submission"  # what gina would leave in the environment's folder
WRITES_EVERYWHERE = REWRITE + (
    "import os, sys\n"
    f"for target in (%r, %r, os.path.join(sys.prefix, {STRAY!r})):\n"
    "    try:\n"
    "        with open(target, 'a') as file:\n"
    "            file.write('written')\n"
    "        written.append(target)\n"
    "    except OSError as error:\n"
    "        print(error)\n"
    "assert not written, written\n"
)


def _stray_removed() -> bool:
    """Whether gina's file was in the environment's folder (removed now)."""
    stray = Path(sys.prefix) / STRAY
    if stray.exists():
        stray.unlink()
        return True
    return False


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory):
    """A class graded with ``--sandbox auto`` by a grader of its own: alice, bob (alice's answers renamed),
    carol (her own), dave and erin (the same short answers); with the sandbox, frank (copies from alice's
    notebook), gina (writes into the grader, the grades and her notebook) and hank (uses the network)."""
    folder = tmp_path_factory.mktemp("sandboxed")
    package = own_package(folder / "grader")
    sources = write_source(folder / "solutions")
    core = package / "labutils" / "checks" / "core.py"
    original = core.read_bytes()
    students = {
        "alice": stubbed(**LONG),
        "bob": stubbed(**COPIED),
        "carol": stubbed(**OWN),
        "dave": stubbed(),
        "erin": stubbed(),
    }
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    heard: list[bytes] = []
    done = threading.Event()

    def listen():
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            with connection:
                heard.append(connection.recv(100))

    sandbox = bwrap_problem() is None
    out = folder / "out" / "grades.csv"
    lingering = f"{time.time() % 1000:.6f}"  # how long ivan's process sleeps: its name among the processes
    if sandbox:
        alice = folder / "class" / "alice" / f"{NAME}.ipynb"
        gina = folder / "class" / "gina" / f"{NAME}.ipynb"
        students["frank"] = stubbed(attention=READER % str(alice))
        writes = WRITES_EVERYWHERE % (str(core.parent.parent), str(out), str(gina))
        students["gina"] = mutated(stubbed(), "attention", writes)
        students["hank"] = stubbed(causal_mask=NETWORK % listener.getsockname()[1])
        students["ivan"] = stubbed(causal_mask=LINGER % (lingering, lingering))
    for name, notebook in students.items():
        save(notebook, folder / "class" / name / f"{NAME}.ipynb")
    before = {name: (folder / "class" / name / f"{NAME}.ipynb").read_bytes() for name in students}
    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    args = ["class", "--source", str(sources), "--out", str(out), "--timeout", str(TIMEOUT), "--jobs", "2"]
    try:
        status, err, summary = run_grader(args, folder, package)
    finally:
        done.set()
        thread.join()
        listener.close()
    student = {row["submission"]: row["student"] for row in read_csv(grading.totals_path(out))}
    points: dict[str, dict[str, float]] = {}
    for row in read_csv(out):
        points.setdefault(student[row["submission"]], {})[row["exercise"].split(".")[1]] = float(
            row["points"]
        )
    return {
        "sandbox": sandbox,
        "status": status,
        "stderr": err,
        "summary": summary,
        "points": points,
        "similar": read_csv(grading.similarity_path(out)),
        "heard": heard,
        "lingering": [
            process.info["pid"]
            for process in psutil.process_iter(["pid", "cmdline"])
            if process.info.get("cmdline") == ["sleep", lingering]
        ],
        "package_unchanged": core.read_bytes() == original,
        "environment_unchanged": not _stray_removed(),
        "notebooks_unchanged": all(
            (folder / "class" / name / f"{NAME}.ipynb").read_bytes() == data for name, data in before.items()
        ),
    }


def test_a_copied_answer_is_in_the_similarity_report_and_short_ones_are_not(sandboxed):
    assert sandboxed["status"] == 0, sandboxed["stderr"]
    pairs = sorted(
        (row["student"], row["other_student"], row["exercise"], row["alike"]) for row in sandboxed["similar"]
    )
    assert pairs == [  # every exercise bob copied; never the one-line masks everybody writes alike
        ("alice", "bob", f"{NAME}.attention", "1.00"),
        ("alice", "bob", f"{NAME}.split_heads", "1.00"),
    ]
    assert "similar answers: 2 pair(s) in 2 exercise(s)" in sandboxed["summary"]
    for name in ("alice", "bob", "carol", "dave", "erin"):
        assert sandboxed["points"][name] == POINTS, name  # points are not changed by the report


@pytest.mark.skipif(bwrap_problem() is not None, reason=f"no sandbox here: {bwrap_problem()}")
def test_in_the_sandbox_other_notebooks_the_grader_and_the_network_are_out_of_reach(sandboxed):
    assert sandboxed["status"] == 0, sandboxed["stderr"]  # nothing the grader watches changed: no stop
    assert sandboxed["points"]["frank"] == {**POINTS, "attention": 0}  # alice's notebook was not there
    assert sandboxed["points"]["gina"] == POINTS  # every write failed (the cell raised; graded on)
    assert sandboxed["package_unchanged"] and sandboxed["notebooks_unchanged"]
    assert sandboxed["environment_unchanged"]
    assert sandboxed["points"]["hank"] == {**POINTS, "causal_mask": 0} and sandboxed["heard"] == []
    assert sandboxed["points"]["ivan"] == POINTS and sandboxed["lingering"] == []  # ended with its kernel


# A cell that leaves a process behind: double-forked, in a new session of its own, it sleeps past the end
# of grading, then rewrites every file of the output folder, again and again for half a minute.
DETACH = (
    "import os, pathlib, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        with open(%r, 'a') as file:\n"
    "            file.write(f'{os.getpid()} ')\n"
    "        time.sleep(20)\n"
    "        for _ in range(15):\n"
    "            out = pathlib.Path(%r)\n"
    "            for path in out.rglob('*'):\n"
    "                if path.is_file():\n"
    "                    path.write_text('rewritten')\n"
    "            (out / 'rewritten').write_text('')\n"
    "            time.sleep(2)\n"
    "    os._exit(0)\n"
    "os.wait()\n"
    "time.sleep(1)\n"
)
KILL_SUPERVISOR = (
    "import signal\nos.kill(os.getppid(), signal.SIGKILL)  # the kernel's parent\ntime.sleep(5)\n"
)


@pytest.fixture(scope="module", autouse=True)
def detached(tmp_path_factory):
    """A class whose submissions leave detached processes behind, graded (without the sandbox) by a grader of
    its own, first thing in this module: what it wrote, and when it exited. The check comes last."""
    folder = tmp_path_factory.mktemp("detached")
    sources = write_source(folder / "solutions")
    pids, out = folder / "pids", folder / "out"
    pids.mkdir()
    plain = DETACH % (str(pids / "plain.pid"), str(out))
    save(mutated(stubbed(), "attention", plain), folder / "class" / "plain.ipynb")
    killer = DETACH % (str(pids / "killer.pid"), str(out)) + KILL_SUPERVISOR
    save(mutated(stubbed(), "attention", killer), folder / "class" / "killer.ipynb")
    mark = uuid.uuid4().hex
    args = ["class", "--source", str(sources), "--out", "out/grades.csv", "--sandbox", "none", "--jobs", "2"]
    status, err, _ = run_grader([*args, "--timeout", "30"], folder, env={"LABUTILS_TEST_MARK": mark})
    exited = time.monotonic()
    files = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    return {"status": status, "stderr": err, "exited": exited, "files": files, "out": out, "pids": pids,
            "mark": mark}  # fmt: skip


def test_a_detached_process_of_a_submission_does_not_outlive_the_grader(detached):
    """A double-forked process in a new session, which would rewrite the grades 20 s later, is gone with its
    kernel; so is one whose supervisor the submission killed first. Checked 60 s after the grader exited."""
    assert detached["status"] == 0, detached["stderr"]
    started = [int(pid) for path in detached["pids"].glob("*.pid") for pid in path.read_text().split()]
    assert len(started) == 2, detached["stderr"]  # each submission's detached process did start
    totals = {Path(row["submission"]).stem: row for row in read_csv(detached["out"] / "grades-totals.csv")}
    assert {name: row["points"] for name, row in totals.items()} == {"plain": "4", "killer": "4"}
    time.sleep(max(0.0, detached["exited"] + 60 - time.monotonic()))
    now = {path: path.read_bytes() for path in detached["out"].rglob("*") if path.is_file()}
    assert now == detached["files"]  # byte for byte what the grader wrote, and nothing more
    mark = detached["mark"]
    for process in psutil.process_iter(["pid", "environ"]):
        environ = process.info.get("environ") or {}
        assert environ.get("LABUTILS_TEST_MARK") != mark, f"process {process.info['pid']} of the batch lives"
