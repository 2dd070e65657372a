"""sympy's verdicts: equivalence, its time limit in a worker process, and the words that say a verdict."""

import hashlib
import json

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


# ------------------------------------------------------------------------------------- the shipped table


WEIGHTS = hashlib.sha256(b"some weights").hexdigest()


def _table(categories, **top):
    return {
        "split": "test",
        "n": 3,
        "decoding": "greedy",
        "weights": WEIGHTS,
        "equivalent": 2 / 3,
        **top,
        "categories": categories,
    }


def _row(category="terms", value="two terms", n=3, equivalent=2 / 3):
    return {"category": category, "value": value, "n": n, "equivalent": equivalent,
            "equivalent_low": 0.2, "equivalent_high": 0.9}  # fmt: skip


def test_a_table_by_category_is_read_back_as_rows_that_print(tmp_path):
    path = tmp_path / "categories.json"
    path.write_text(json.dumps(_table([_row(), _row("series", "Laurent (negative powers)", 4, 0.25)])))
    table = metrics.shipped_categories(path)
    assert (table.split, table.n, table.decoding, table.weights) == ("test", 3, "greedy", WEIGHTS)
    assert table.rows == [
        metrics.CategoryRow("terms", "two terms", 3, 2),
        metrics.CategoryRow("series", "Laurent (negative powers)", 4, 1),
    ]
    assert table.rows[0].interval == pytest.approx(metrics.wilson_interval(2, 3))
    printed = metrics.category_table(table.rows)
    assert (
        "| terms | two terms | 3 | 66.7% |" in printed
        and "| series | Laurent (negative powers) | 4 | 25.0% |" in printed
    )


def test_the_table_that_evaluate_writes_is_the_table_that_is_read(tmp_path, capsys):
    """What `evaluate --json --by category` prints loads, as it is, as by_category's rows."""
    from tiny_models import writer

    from labutils import cli
    from labutils.model import save_weights

    pairs = [("sin(a*x)", "a*x-a**3*x**3/6+a**5*x**5/120+O(x**6)"), ("exp(2*x)*cos(b*x)", "1+2*x+O(x**6)"),
             ("tan(h*x)+sinh(g*x)", "x*(g+h)+x**3*(g**3/6+h**3/3)+x**5*(g**5/120+2*h**5/15)+O(x**6)")]  # fmt: skip
    (tmp_path / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs))
    checkpoint = save_weights(writer(), tmp_path / "model.pt")
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--split", str(tmp_path / "pairs.tsv")]
    assert cli.main([*argv, "--by", "category", "--json", "--workers", "1", "--threads", "1"]) == 0
    (tmp_path / "categories.json").write_text(capsys.readouterr().out)
    table = metrics.shipped_categories(tmp_path / "categories.json")
    sources, truths = zip(*pairs)
    wrong = [metrics.WRONG] * len(pairs)  # the writer model writes "1" over and over
    assert table.rows == metrics.by_category(sources, truths, wrong)
    assert table.weights == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert (table.split, table.decoding, table.n, table.equivalent) == (
        str(tmp_path / "pairs.tsv"),
        "greedy",
        3,
        0.0,
    )


@pytest.mark.parametrize(
    "table, message",
    [
        ({**_table([]), "n": None}, "n must be int, not None"),
        (_table([{**_row(), "n": "3"}]), "categories[0].n must be int, not '3'"),
        (_table([_row(equivalent=0.5)]), "categories[0].equivalent 0.5 is not a share of 3 pairs"),
        (_table([_row(equivalent=1.5)]), "equivalent 1.5 is not a share"),
        (_table([{**_row(), "category": None}]), "categories[0].category must be str"),
        (_table("rows"), "categories must be list"),
        ({**_table([]), "weights": None}, "weights must be str, not None"),
        (_table([], weights="model.pt"), "weights must be the sha256 of the weights measured"),
    ],
)
def test_a_damaged_table_is_refused_in_one_line_that_names_the_file(tmp_path, table, message):
    path = tmp_path / "categories.json"
    path.write_text(json.dumps(table))
    with pytest.raises(ValueError) as error:
        metrics.shipped_categories(path)
    assert (
        str(error.value).startswith(f"{path}: ")
        and message in str(error.value)
        and "\n" not in str(error.value)
    )
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        metrics.shipped_categories(path)


def test_a_missing_table_says_how_to_measure_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="evaluate --split test --by category --json"):
        metrics.shipped_categories(tmp_path / "none.json")


def test_the_shipped_table_covers_every_category_of_its_pairs():
    try:
        table = metrics.shipped_categories()
    except FileNotFoundError as error:
        assert str(error).startswith(metrics.SHIPPED_CATEGORIES)  # not shipped (yet): the message names it
        return
    assert table.split in ("train", "validation", "test", "structures") and table.decoding in (
        "greedy",
        "beam",
    )
    for category in metrics.CATEGORIES:
        assert sum(row.n for row in table.rows if row.category == category) == table.n, category
    assert sum(row.ok for row in table.rows if row.category == "terms") == round(table.equivalent * table.n)


@pytest.mark.parametrize("model", ["encoder-decoder", "decoder-only"])
def test_the_shipped_table_measured_the_shipped_weights(model):
    """categories.json is never stale: when the shipped weights change, the table must be measured again."""
    from labutils.model import shipped_weights_path

    try:
        table = metrics.shipped_categories(model=model)
    except FileNotFoundError:
        pytest.skip(f"the package ships no table by category for the {model} model")
    weights = shipped_weights_path(model)
    assert weights.is_file(), f"the {model} table by category is shipped without the weights it measured"
    assert table.weights == hashlib.sha256(weights.read_bytes()).hexdigest(), (
        f"the {model} table by category was measured on other weights than {weights}: run `python -m "
        f"labutils evaluate --model {model} --split test --by category --json` and save its output there"
    )
