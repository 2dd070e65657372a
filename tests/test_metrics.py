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


ALL_VERDICTS = (
    metrics.OK,
    metrics.WRONG,
    metrics.UNPARSABLE,
    metrics.UNWRITABLE,
    metrics.TIMEOUT,
    metrics.ERROR,
)


@pytest.mark.parametrize("verdict", ALL_VERDICTS)
def test_every_verdict_has_its_own_words(verdict):
    words = {v: metrics.verdict_text(v, 30.0, "worker crashed") for v in ALL_VERDICTS}
    assert len(set(words.values())) == len(words)
    assert words[verdict].startswith("✓" if verdict == metrics.OK else ("✗", "?"))
    assert "30 s" in words[metrics.TIMEOUT] and "worker crashed" in words["error"]


def test_a_series_the_model_cannot_write_is_not_blamed_on_the_model():
    truth, verdict = metrics.sympy_check("sin(n*x)", "x+O(x**6)")
    assert "n" in truth and verdict == metrics.UNWRITABLE
    assert metrics.check_equivalence(["x+O(x**6)", "(("], [truth, "x+O(x**6)"]) == [
        metrics.UNWRITABLE,
        metrics.UNPARSABLE,
    ]
    assert "cannot write" in metrics.verdict_text(metrics.UNWRITABLE, 10.0)


def _crash(prediction, truth):
    import os

    os._exit(3)


def test_a_crashed_sympy_worker_is_a_verdict_of_its_own(monkeypatch):
    monkeypatch.setattr(metrics, "_verdict", _crash)
    assert metrics.check_equivalence(["x+O(x**6)"], ["2*x+O(x**6)"]) == [metrics.ERROR]


@pytest.mark.parametrize(
    "source, target, where",
    [
        ("sin(x)", "x-x**3/6+x**5/120+O(x**6)",
         {"terms": "one term", "operator": "none", "coefficients": "numbers", "series": "Taylor"}),
        ("sin(b*x)-sinh(b*x)", "-b**3*x**3/3+O(x**6)",
         {"terms": "two terms", "operator": "-", "symbols": "one symbol in both terms", "coefficients": "symbols"}),
        ("exp(c*x)/sinh(f*x)**3", "1/(f**3*x**3)+c/(f**3*x**2)+O(x**6)",
         {"operator": "/", "series": "Laurent (negative powers)", "symbols": "different symbols, or numbers"}),
        ("exp(2*x)*tan(a*x)", "a*x+2*a*x**2+O(x**6)", {"operator": "*", "coefficients": "numbers and symbols"}),
        ("tan(h*x)+sinh(g*x)", "x*(g+h)+O(x**6)", {"operator": "+", "symbols": "different symbols, or numbers"}),
    ],
)  # fmt: skip
def test_categories_of_a_pair(source, target, where):
    assert where.items() <= metrics.categories(source, target).items()


def test_accuracy_by_category_counts_every_pair_once_per_category():
    sources = ["sin(x)", "sin(b*x)-sinh(b*x)", "exp(c*x)/sinh(f*x)**3", "tan(h*x)+sinh(g*x)"]
    truths = [metrics.series_text(metrics.parse_expression(s)) for s in sources]
    rows = metrics.by_category(sources, truths, [metrics.OK, metrics.WRONG, metrics.OK, metrics.TIMEOUT])
    for category in metrics.CATEGORIES:
        mine = [r for r in rows if r.category == category]
        assert sum(r.n for r in mine) == 4 and sum(r.ok for r in mine) == 2, category
    laurent = next(r for r in rows if r.value.startswith("Laurent"))
    assert (laurent.n, laurent.ok) == (1, 1)
    quartiles = [r.value for r in rows if r.category == "target length"]
    assert all(v.startswith("Q") for v in quartiles) and len(quartiles) == len(set(quartiles))
    table = metrics.category_table(rows)
    assert table.count("\n") == len(rows) + 1 and "| symbols | one symbol in both terms | 1 | 0.0% |" in table
