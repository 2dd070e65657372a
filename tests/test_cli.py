"""The commands, run as a user runs them: output, exit status, and one-line errors without tracebacks."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labutils import metrics
from labutils.model import ModelConfig, Seq2SeqTransformer, save_weights


def run(*args, stdin=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "labutils", *args],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=cwd,
        timeout=300,
    )


def assert_one_line_error(result, status=2, contains=""):
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) >= 1 and contains in errors[0], result.stderr


def test_generate_is_byte_identical_for_any_number_of_workers(tmp_path):
    one, two = tmp_path / "one.tsv", tmp_path / "two.tsv"
    assert run("generate", "--n", "30", "--seed", "5", "--out", one, "--workers", "1").returncode == 0
    assert run("generate", "--n", "30", "--seed", "5", "--out", two, "--workers", "2").returncode == 0
    assert one.read_bytes() == two.read_bytes()
    assert len(one.read_text().splitlines()) == 30
    three = tmp_path / "three.tsv"
    assert run("generate", "--n", "30", "--seed", "6", "--out", three, "--workers", "2").returncode == 0
    assert three.read_bytes() != one.read_bytes()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "0"], "positive whole number"),
        (["--n", "ten"], "positive whole number"),
        (["--n", "5", "--from", "x"], "either --n"),
    ],
)
def test_generate_usage_errors(tmp_path, args, message):
    result = run("generate", *args, "--out", tmp_path / "out.tsv")
    assert_one_line_error(result, 2, message)
    assert not (tmp_path / "out.tsv").exists()


def test_generate_refuses_an_unwritable_out(tmp_path):
    result = run("generate", "--n", "3", "--out", tmp_path / "missing" / "out.tsv")
    assert_one_line_error(result, 2, "does not exist")
    result = run("generate", "--n", "3", "--out", tmp_path)
    assert_one_line_error(result, 2, "is a folder")


def test_generate_from_sources(tmp_path):
    sources = tmp_path / "sources.txt"
    sources.write_text("tan(hx)+sinh(gx)\ncosh(a*x)**3+tanh(b*x)\n")
    out = tmp_path / "pairs.tsv"
    result = run("generate", "--from", sources, "--out", out, "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert out.read_text().splitlines() == [
        "tan(h*x)+sinh(g*x)\tx*(g+h)+x**3*(g**3/6+h**3/3)+x**5*(g**5/120+2*h**5/15)+O(x**6)",
        "cosh(a*x)**3+tanh(b*x)\t1+b*x+3*a**2*x**2/2-b**3*x**3/3+7*a**4*x**4/8+2*b**5*x**5/15+O(x**6)",
    ]


def test_generate_from_bad_sources_names_file_and_line_and_writes_nothing(tmp_path):
    sources = tmp_path / "sources.txt"
    sources.write_text("sin(a*x)\nsin(a*x)+$\n\ncos((b*x)\n")
    out = tmp_path / "pairs.tsv"
    result = run("generate", "--from", sources, "--out", out)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert any("line 2" in line and "'$' at position 9" in line for line in lines)
    assert any("line 3" in line and "empty" in line for line in lines)
    assert any("line 4" in line and "unbalanced" in line for line in lines)
    assert not out.exists()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = Seq2SeqTransformer(
        ModelConfig(
            d_model=32,
            n_heads=2,
            n_encoder_layers=1,
            n_decoder_layers=1,
            d_ff=64,
            max_tgt_len=60,
            tie_embeddings=False,
        )
    )
    return save_weights(model, tmp_path_factory.mktemp("weights") / "model.pt")


def test_translate_prints_one_line_per_expression_in_order(checkpoint, tmp_path):
    exprs = ["tan(hx)+sinh(gx)", "sin(a*x)", "cosh(a*x)**3+tanh(b*x)"]
    result = run("translate", "--checkpoint", checkpoint, *exprs)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert "normalized: tan(hx)+sinh(gx) -> tan(h*x)+sinh(g*x)" in result.stderr
    one_by_one = [run("translate", "--checkpoint", checkpoint, e).stdout.strip() for e in exprs]
    assert lines == one_by_one
    listing = tmp_path / "exprs.txt"
    listing.write_text("\n".join(exprs) + "\n")
    assert run("translate", "--checkpoint", checkpoint, "--file", listing).stdout.splitlines() == lines
    assert (
        run(
            "translate", "--checkpoint", checkpoint, "--file", "-", stdin="\n".join(exprs)
        ).stdout.splitlines()
        == lines
    )


def test_translate_with_check_appends_a_verdict(checkpoint):
    result = run("translate", "--checkpoint", checkpoint, "--check", "sin(a*x)")
    assert result.returncode == 0
    assert result.stdout.rstrip("\n").split("\t")[-1] in {"ok", "wrong", "timeout", "unparsable"}


def test_translate_single_bad_expression(checkpoint):
    result = run("translate", "--checkpoint", checkpoint, "sin(a*x)+$")
    assert_one_line_error(result, 2, "unknown character '$' at position 9")
    assert result.stdout == ""
    long = "+".join(f"{f}({k}*x)" for f in ["sin", "cosh", "tan"] for k in "abcdfghm")
    assert_one_line_error(run("translate", "--checkpoint", checkpoint, long), 2, "at most")


def test_translate_several_with_a_bad_one_carries_on(checkpoint):
    result = run("translate", "--checkpoint", checkpoint, "sin(a*x)", "sin(a*x", "cos(b*x)")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and lines[1].startswith("error: ") and "unbalanced" in lines[1]
    assert "line 2" in result.stderr and "Traceback" not in result.stderr


def test_translate_file_skips_blank_lines_and_comments_keeping_line_numbers(checkpoint, tmp_path):
    listing = tmp_path / "exprs.txt"
    listing.write_text(
        "# the lecture's examples\nsin(a*x)\n\n   # an indented comment\nsin(a*x\n\ncos(b*x)\n"
    )
    result = run("translate", "--checkpoint", checkpoint, "--file", listing)
    assert result.returncode == 1  # the one bad expression, not the comments or blank lines
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and lines[1].startswith("error: ")
    assert "error: line 5: " in result.stderr  # the line in the file, comments and blank lines counted
    assert result.stderr.count("error:") == 1
    single = run("translate", "--checkpoint", checkpoint, "sin(a*x)", "cos(b*x)").stdout.splitlines()
    assert [lines[0], lines[2]] == single


def test_thread_defaults_never_oversubscribe_the_cores():
    from labutils.runtime import cores, plan_threads

    for n in (1, 2, 3, 4, 8, 16):
        threads, workers = plan_threads(n_cores=n)
        assert threads >= 1 and workers >= 1 and threads + workers <= max(n, 2)
        if n >= 2:
            assert threads + workers <= n
    assert plan_threads(n_cores=2) == (1, 1)
    assert plan_threads(threads=3, n_cores=4) == (3, 1)  # a number given is kept; the other fills in
    assert plan_threads(workers=3, n_cores=4) == (1, 3)
    assert plan_threads(2, 2, n_cores=2) == (2, 2)  # both given: as asked
    assert cores() >= 1


@pytest.mark.parametrize("command", ["translate", "evaluate", "figures", "grade"])
def test_commands_take_threads(command):
    from labutils.cli import build_parser

    parser = build_parser()
    extra = {"translate": ["sin(x)"], "grade": ["work/"]}.get(command, [])
    assert parser.parse_args([command, *extra, "--threads", "1"]).threads == 1
    assert parser.parse_args([command, *extra]).threads is None  # settled by the command: see plan_threads


def test_evaluate_uses_the_threads_and_workers_it_is_given(checkpoint, tmp_path, monkeypatch):
    from labutils import metrics, runtime

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("sin(a*x)\ta*x+O(x**3)\n")
    seen = {}
    monkeypatch.setattr(runtime, "set_threads", lambda n=None: seen.setdefault("threads", n))

    def check(predictions, truths, timeout=10.0, workers=1, progress=None):
        seen["workers"] = workers
        return ["wrong"] * len(predictions)

    monkeypatch.setattr(metrics, "check_equivalence", check)
    from labutils.cli import main

    assert main(["evaluate", "--checkpoint", str(checkpoint), "--split", str(pairs), "--json"]) == 0
    assert seen["threads"] + seen["workers"] <= max(runtime.cores(), 2)
    seen.clear()
    main(
        [
            "evaluate",
            "--checkpoint",
            str(checkpoint),
            "--split",
            str(pairs),
            "--threads",
            "2",
            "--workers",
            "1",
        ]
    )
    assert seen == {"threads": 2, "workers": 1}


def test_a_file_that_is_no_weights_gives_an_error_cut_at_no_word(checkpoint, tmp_path):
    (tmp_path / "README.md").write_text("# not a model\n" * 50)
    result = run("translate", "--checkpoint", tmp_path / "README.md", "sin(a*x)")
    assert_one_line_error(result, 2, "README.md")
    line = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert line.endswith(")") and "not a readable weights file" in line


def test_translate_warns_outside_the_family(checkpoint):
    result = run("translate", "--checkpoint", checkpoint, "sin(a*x)+cos(b*x)+tan(c*x)")
    assert result.returncode == 0
    assert "outside the training family" in result.stderr


def test_bad_checkpoint_and_options(checkpoint, tmp_path):
    assert_one_line_error(run("translate", "--checkpoint", tmp_path / "nope.pt", "sin(x)"), 2, "nope.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(Path(checkpoint).read_bytes()[:100])
    assert_one_line_error(run("translate", "--checkpoint", broken, "sin(x)"), 2, "broken.pt")
    assert_one_line_error(run("translate", "--beam", "0", "sin(x)"), 2, "--beam")
    assert_one_line_error(run("translate", "--bogus"), 2, "unrecognized")
    assert_one_line_error(run("nonsense"), 2, "invalid choice")


def test_evaluate_json(checkpoint, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("sin(a*x)\ta*x-a**3*x**3/6+a**5*x**5/120+O(x**6)\nexp(b*x)\t1+b*x+O(x**6)\n")
    result = run("evaluate", "--checkpoint", checkpoint, "--split", pairs, "--json", "--workers", "1")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) >= {
        "n",
        "exact",
        "equivalent",
        "equivalent_low",
        "equivalent_high",
        "timeouts",
        "seconds",
    }
    assert report["n"] == 2 and report["equivalent_low"] <= report["equivalent"] <= report["equivalent_high"]


def test_evaluate_by_category_prints_each_categorys_accuracy(checkpoint, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("sin(a*x)\ta*x-a**3*x**3/6+a**5*x**5/120+O(x**6)\nexp(2*x)*cos(b*x)\t1+2*x+O(x**6)\n")
    result = run(
        "evaluate", "--checkpoint", checkpoint, "--split", pairs, "--by", "category", "--workers", "1"
    )
    assert result.returncode == 0, result.stderr
    assert "| terms | one term | 1 |" in result.stdout and "| terms | two terms | 1 |" in result.stdout
    assert "| coefficients | numbers and symbols | 1 |" in result.stdout
    result = run("evaluate", "--checkpoint", checkpoint, "--split", pairs, "--by", "category", "--json",
                 "--workers", "1")  # fmt: skip
    rows = json.loads(result.stdout)["categories"]
    assert {r["category"] for r in rows} == {"terms", "operator", "symbols", "series", "coefficients",
                                             "target length"}  # fmt: skip


def test_evaluate_json_by_category_is_the_table_the_package_ships(checkpoint, tmp_path):
    """labutils/weights/categories.json is this command's output, read back by metrics.shipped_categories."""
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("sin(a*x)\ta*x-a**3*x**3/6+a**5*x**5/120+O(x**6)\nexp(2*x)*cos(b*x)\t1+2*x+O(x**6)\n")
    result = run("evaluate", "--checkpoint", checkpoint, "--split", pairs, "--by", "category", "--json",
                 "--workers", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    table_file = tmp_path / "categories.json"
    table_file.write_text(result.stdout)
    table = metrics.shipped_categories(table_file)
    assert (table.split, table.decoding, table.n) == (str(pairs), "greedy", 2)
    assert table.weights == hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()  # the weights measured
    assert {(row.category, row.value, row.n) for row in table.rows} >= {("terms", "one term", 1),
                                                                       ("terms", "two terms", 1)}  # fmt: skip


@pytest.mark.parametrize(
    "expression, why",
    [("sin(12*a*x)", "the argument 12*a*x of sin"), ("x*sin(a*x)", "x stands outside the functions"),
     ("sin(a*x)+1", "the term 1"), ("sin(n*x)", "the symbol n")],
)  # fmt: skip
def test_translate_warns_why_an_expression_is_outside_the_family(checkpoint, expression, why):
    result = run("translate", "--checkpoint", checkpoint, expression)
    assert result.returncode == 0 and result.stdout.strip()
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert why in warning and "Traceback" not in result.stderr


@pytest.mark.parametrize("expression", ["atan(a*x)", "sin a x", "log(1+a*x)", "sina*x"])
def test_translate_refuses_what_it_cannot_read(checkpoint, expression):
    assert_one_line_error(run("translate", "--checkpoint", checkpoint, expression), 2, "position 0")


def test_evaluate_bad_split(checkpoint, tmp_path):
    assert_one_line_error(run("evaluate", "--checkpoint", checkpoint, "--split", "nosuch"), 2, "not a split")
