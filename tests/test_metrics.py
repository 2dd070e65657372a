"""sympy's verdicts: equivalence, its time limit in a worker process, and the words that say a verdict."""

import pytest

from labutils import metrics

LECTURE = "cosh(a*x)**3+tanh(b*x)"
LECTURE_SERIES = "1+b*x+3*a**2*x**2/2-b**3*x**3/3+7*a**4*x**4/8+2*b**5*x**5/15+O(x**6)"


def test_sympy_check_confirms_an_equivalent_series():
    truth, verdict = metrics.sympy_check(
        LECTURE, "1+x*b+3*a**2*x**2/2-b**3*x**3/3+7*a**4*x**4/8+2*b**5*x**5/15"
    )
    assert (truth, verdict) == (LECTURE_SERIES, metrics.OK)
    assert metrics.sympy_check(LECTURE, "1+b*x+O(x**6)")[1] == metrics.WRONG
    assert metrics.sympy_check(LECTURE, "((")[1] == metrics.UNPARSABLE


def test_sympy_checker_stops_a_check_that_runs_too_long():
    checker = metrics.SympyChecker(timeout=30.0)
    try:
        assert checker.check("sin(a*x)", "a*x+O(x**6)").verdict == metrics.WRONG  # the worker is up
        checker.timeout = 0.001
        assert checker.check("tan(a*x)/sin(b*x)", "x").verdict == metrics.TIMEOUT
    finally:
        checker.close()


@pytest.mark.parametrize("verdict", [metrics.OK, metrics.WRONG, metrics.UNPARSABLE, metrics.TIMEOUT, "error"])
def test_every_verdict_has_its_own_words(verdict):
    words = {v: metrics.verdict_text(v, 30.0, "worker crashed") for v in (metrics.OK, metrics.WRONG,
             metrics.UNPARSABLE, metrics.TIMEOUT, "error")}  # fmt: skip
    assert len(set(words.values())) == len(words)
    assert words[verdict].startswith("✓" if verdict == metrics.OK else ("✗", "?"))
    assert "30 s" in words[metrics.TIMEOUT] and "worker crashed" in words["error"]
