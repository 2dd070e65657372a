"""Notebook 07's checks beyond what every check is held to (``test_checks.py``, whose typical mistakes include
07's from ``gpt_mistakes.py``): a right answer is never failed by rounding, the cache test sees what an
answer feeds the model, the hidden tests pass the reference and fail a mistake, the exercise agrees with the
package's decoding on the shipped model, and ``labutils grade`` grades notebook 07 as it grades the others.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from gpt_mistakes import MISTAKES
from test_checks import REFERENCE, define, run_check

import labutils
from labutils import checks
from labutils.checks import gpt as gpt_checks
from labutils.checks.core import CheckResult, all_cases, call_with_fresh_arguments, judge_returned
from labutils.instructor import grading
from labutils.instructor.grading import Limits
from labutils.instructor.release import student_notebook
from labutils.models import load_shipped

ROOT = Path(__file__).resolve().parents[1]
SEQUENCE, GENERATE = "07_gpt.build_sequence", "07_gpt.greedy_generate"


def answer(grade_id: str, source: str | None = None):
    return define(source or REFERENCE[grade_id], checks.EXERCISES[grade_id].function)


def mistake(grade_id: str, hint_piece: str) -> str:
    return next(source for source, hint in MISTAKES[grade_id] if hint_piece in hint)


def hidden_outcomes(grade_id: str, function, secrets=range(6)) -> list[bool]:
    """Whether ``function`` passes each hidden test drawn from each secret, judged as the grader judges."""
    passed = []
    for secret in secrets:
        for name, case in all_cases(grade_id, secret):
            if name.startswith("hidden test: "):
                returned = (case.call or call_with_fresh_arguments)(function, case.args)
                result = CheckResult(checks.EXERCISES[grade_id])
                judge_returned(result, name, case, {"value": returned})
                passed.append(result.outcomes[-1].passed)
    return passed


# ------------------------------------------------------------------------------------------- 7.2's models


def test_each_token_of_the_visible_cases_is_chosen_by_a_clear_margin():
    """Decoding with and without padding in the prompt differs in the last bits: a near tie could flip."""
    for name, case in gpt_checks._generate_cases().items():
        model, max_len = case.args
        for source in gpt_checks._SOURCES:
            assert gpt_checks._margin(model, source, max_len) > 1e-3, (name, source)


def test_the_cases_cover_a_model_that_runs_to_max_len_one_that_stops_and_one_that_stops_at_once():
    lengths = {}
    for name, case in gpt_checks._generate_cases().items():
        model, max_len = case.args
        written = [gpt_checks._expected_series(model, s, max_len)[0] for s in gpt_checks._SOURCES]
        lengths[name] = [len(labutils.tokenize(w)) if w else 0 for w in written], max_len
    runs, stops, at_once = (lengths[n] for n in list(lengths)[:3])
    assert all(n == runs[1] for n in runs[0])
    assert all(0 < n < stops[1] for n in stops[0])
    assert at_once[0] == [0, 0, 0]


def test_the_cache_test_sees_the_positions_each_run_of_the_model_reads():
    case = gpt_checks._generate_cases()["the cache: after the prompt, one new position per step"]
    returned = gpt_checks._generate_each_source(answer(GENERATE), case.args)
    for source, seen in zip(gpt_checks._SOURCES, returned, strict=True):
        prompt = 2 + len(labutils.tokenize(source))  # <sos> source <sep>
        assert seen["reads"] == [prompt] + [1] * (case.args[1] - 1)
        assert seen["calls_after_eos"] == 0
    # The prompt fed one token at a time is as cached as it can be.
    one_by_one = REFERENCE[GENERATE].replace(
        "    codes = torch.tensor([prompt])  # (1, Lp): the first step reads the whole prompt\n",
        "    for code in prompt[:-1]:\n        model.run(torch.tensor([[code]]), cache=cache)\n"
        "    codes = torch.tensor([prompt[-1:]])\n",
    )
    assert one_by_one != REFERENCE[GENERATE]
    result = run_check(GENERATE, answer(GENERATE, one_by_one))
    assert result.failed == [], result.feedback()


def test_an_answer_without_the_cache_loses_only_the_cache_test():
    source = mistake(GENERATE, "each step after the prompt feeds only the token just written")
    result = run_check(GENERATE, answer(GENERATE, source))
    assert result.failed == ["the cache: after the prompt, one new position per step"], result.feedback()
    assert result.points == 1.5


def test_greedy_generate_writes_what_the_package_decodes_with_the_shipped_model():
    model, mine = load_shipped("decoder-only"), answer(GENERATE)
    sources = ["cosh(a*x)**3+tanh(b*x)", "tan(h*x)+sinh(g*x)", "exp(-b*x)*sin(c*x)"]
    with torch.no_grad():
        assert [mine(model, s, 200) for s in sources] == labutils.translate(model, sources, max_len=200)


# --------------------------------------------------------------------------------------------- hidden tests


def test_the_reference_passes_every_hidden_test_whatever_the_secret():
    assert all(hidden_outcomes(SEQUENCE, answer(SEQUENCE)))
    assert all(hidden_outcomes(GENERATE, answer(GENERATE)))


@pytest.mark.parametrize(
    "grade_id, hint_piece, always",
    [
        (SEQUENCE, "your mask counts every position", True),
        (SEQUENCE, "your input holds no <sep>", True),
        (GENERATE, "generation stops as soon as the model writes it", False),  # a model that stops at once
        (GENERATE, "one token too many", False),  # a model that never writes <eos>
    ],
)
def test_a_typical_mistake_fails_the_hidden_tests(grade_id, hint_piece, always):
    outcomes = hidden_outcomes(grade_id, answer(grade_id, mistake(grade_id, hint_piece)), secrets=range(12))
    assert not any(outcomes) if always else not all(outcomes), outcomes


def test_the_hidden_models_choose_each_token_by_a_clear_margin():
    for secret in range(6):
        for name, case in all_cases(GENERATE, secret):
            if name.startswith("hidden test: "):
                model, max_len = case.args
                assert min(gpt_checks._margin(model, s, max_len) for s in gpt_checks._SOURCES) > 1e-3


# -------------------------------------------------------------------------------------------------- grading


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def submission(tmp_path: Path, answers: dict[str, str]) -> Path:
    """The student version of notebook 07 with ``answers`` (grade_id → source) written into its cells."""
    import nbformat

    notebook = student_notebook(nbformat.read(ROOT / "solutions" / "07_gpt.ipynb", as_version=4), "07_gpt")
    for cell in notebook.cells:
        info = cell.metadata.get("labutils", {})
        if info.get("kind") == "answer" and info["grade_id"] in answers:
            cell.source = answers[info["grade_id"]]
    path = tmp_path / "student" / "07_gpt.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


def test_the_grader_gives_notebook_07s_solutions_every_point(tmp_path):
    report = grading.grade(
        [str(ROOT / "solutions" / "07_gpt.ipynb")],
        out=tmp_path / "grades.csv",
        limits=Limits(timeout=300),
        log=print,
    )
    rows = read_rows(tmp_path / "grades.csv")
    assert report.status == 0, report.problems
    assert sorted(row["exercise"] for row in rows) == [SEQUENCE, GENERATE]
    assert all(row["points"] == row["max_points"] for row in rows), rows


def test_the_grader_gives_the_untouched_student_notebook_07_zero(tmp_path):
    report = grading.grade(
        [str(submission(tmp_path, {}))], out=tmp_path / "grades.csv", limits=Limits(timeout=300), log=print
    )
    rows = read_rows(tmp_path / "grades.csv")
    assert report.status == 0, report.problems
    assert rows and all(float(row["points"]) == 0 < float(row["max_points"]) for row in rows)
    assert all("not done yet" in row["feedback"] for row in rows), rows


def test_the_grader_gives_a_typical_mistake_part_of_the_points_and_its_hint(tmp_path):
    """07's cases run in the student's kernel (a hook on the model sees what the answer feeds it) and come back
    as data; the verdict, the hidden tests' included, is the check's."""
    uncached = mistake(GENERATE, "each step after the prompt feeds only the token just written")
    wrong_mask = mistake(SEQUENCE, "your mask counts the position whose target is <sep>")
    path = submission(tmp_path, {GENERATE: uncached, SEQUENCE: wrong_mask})
    report = grading.grade(
        [str(path)],
        out=tmp_path / "grades.csv",
        feedback=tmp_path / "feedback",
        limits=Limits(timeout=300),
        log=print,
    )
    rows = {row["exercise"]: row for row in read_rows(tmp_path / "grades.csv")}
    assert report.status == 0, report.problems
    generate, sequence = rows[GENERATE], rows[SEQUENCE]
    assert 0 < float(generate["points"]) < float(generate["max_points"])
    assert float(sequence["points"]) == 0  # every case, and the hidden test, has the mask wrong
    (feedback,) = [p.read_text(encoding="utf-8") for p in (tmp_path / "feedback").rglob("*.md")]
    assert "each step after the prompt feeds only the token just written" in feedback
    assert "your mask counts the position whose target is <sep>" in feedback
