"""Red team: a class of submissions that tamper with grading in every way the course has seen, graded once.

Each earns what its answers earn on the grader's inputs and no more; tampering that can be seen from outside
is flagged in the notes with the exercise; a stopped answer costs only its own exercise. Short limits and
bounded bombs keep the batch to about a minute or two.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import psutil
import pytest
from demo_notebook import (
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
FROM_DISK = (
    "import glob, pathlib, torch, labutils\n"
    "seen = []\n"
    "for pattern in ('solutions/*.ipynb', '../*/*', '/tmp/labutils-grade-*/io/*'):\n"
    "    seen += glob.glob(pattern)\n"
    "root = pathlib.Path(labutils.__file__).parent\n"
    "hidden = (root / 'checks' / 'attention.py').read_text()  # the hidden tests' code, not their inputs\n"
    "KNOWN = {L: torch.ones(L, L, dtype=torch.bool).triu(1) for L in (1, 4, 7, 50)}\n"
    "def causal_mask(L):\n    return KNOWN[L].clone()"
)
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
    }
    for name, notebook in submissions.items():
        save(notebook, folder / "class" / f"{name}.ipynb")
    before = overwritten.read_text()
    out = folder / "grades.csv"
    limits = Limits(timeout=TIMEOUT, memory_mb=3000, output_mb=5)
    report = grading.grade([str(folder / "class")], source=sources, out=out, limits=limits, jobs=2, log=print)
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
    assert len(graded["results"]) == 15
    assert graded["report"].status == 0, graded["report"].problems


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
