"""What the package does at fixed inputs, printed: run it before and after a refactor and diff the outputs.

    .venv/bin/python tests/golden.py > /tmp/before.txt    # … refactor …
    .venv/bin/python tests/golden.py > /tmp/after.txt && diff /tmp/before.txt /tmp/after.txt

It is not a test (pytest does not collect it) and it asserts nothing: it pins behaviour that a refactor must
keep. The inputs are fixed whatever happens to the shipped files: the weights, their training log and the
pairs come from the git history of this repository (commit ``GOLDEN_COMMIT``), not from ``labutils/``, so
new shipped weights or a new data set change nothing here. It prints

1. ``translate`` (the command): greedy and beam series of a few expressions, with sympy's verdicts;
2. ``evaluate`` (the command, ``--json``) on 200 test pairs, and every prediction of the library's
   ``translate`` on them;
3. a tiny training run (the ``tiny`` preset on 3,500 fixed pairs, one thread): its losses and accuracies,
   and the series its best weights write;
4. the grading of two notebooks: the solution of notebook 01, and notebook 04 with a correct answer, a
   typical mistake, a copy of the package's function and an unsolved stub;
5. the figures' manifest (weights named ``<weights>``).

Run it from the repository root (it needs ``git``); it takes a few minutes on two CPU cores.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_COMMIT = "b74fa10"
EXPRESSIONS = ["tan(h*x)+sinh(g*x)", "cosh(a*x)**3+tanh(b*x)", "sin(a*x)", "exp(b*x)*cos(c*x)"]


def from_git(path: str, into: Path) -> Path:
    """The file ``path`` as it was at ``GOLDEN_COMMIT``, written into the folder ``into``."""
    data = subprocess.run(
        ["git", "show", f"{GOLDEN_COMMIT}:{path}"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    target = into / Path(path).name
    target.write_bytes(data)
    return target


def pairs_file(path: Path, n: int, out: Path) -> Path:
    """The first ``n`` lines of a gzipped pairs file, as a plain pairs file."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [line for _, line in zip(range(n), f)]
    out.write_text("".join(lines), encoding="utf-8")
    return out


def command(*args: str) -> str:
    """Standard output of ``python -m labutils ARGS`` (its exit status appended when not 0)."""
    done = subprocess.run(
        [sys.executable, "-m", "labutils", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return done.stdout + (f"[exit status {done.returncode}]\n" if done.returncode else "")


def section(title: str) -> None:
    print(f"\n===== {title}")


def translate_section(weights: Path) -> None:
    section("translate (command)")
    print(command("translate", "--checkpoint", str(weights), "--check", *EXPRESSIONS), end="")
    print(command("translate", "--checkpoint", str(weights), "--beam", "3", *EXPRESSIONS), end="")
    print(command("translate", "--checkpoint", str(weights), "tan(hx)+sinh(gx)"), end="")


def evaluate_section(weights: Path, pairs: Path) -> None:
    from labutils.decode import translate, translate_beams
    from labutils.model import load_weights

    section("evaluate (command) on 200 test pairs")
    result = json.loads(
        command("evaluate", "--split", str(pairs), "--checkpoint", str(weights), "--json", "--workers", "1")
    )
    result.pop("seconds")
    print(json.dumps(result, sort_keys=True))
    section("translate (library) on the same pairs: prediction, then whether it is the true series")
    model = load_weights(weights)
    sources, truths = zip(*(line.split("\t") for line in pairs.read_text().splitlines()))
    for prediction, truth in zip(translate(model, list(sources)), truths):
        print(prediction, prediction == truth)
    section("translate_beams (library): the first 5 pairs, beam 3, scores to 4 decimals")
    for hypotheses in translate_beams(model, list(sources[:5]), beam=3):
        print([(series, round(score, 4)) for series, score in hypotheses])


def training_section(pairs: Path, out: Path) -> None:
    from labutils import train as training
    from labutils.decode import translate
    from labutils.model import load_weights

    section("tiny training run (3,500 fixed pairs, 120 steps, one thread)")
    overrides = {"data": str(pairs), "threads": 1, "max_steps": 120, "val_every": 40}
    config = training.make_config("tiny", overrides)
    summary = training.train(config, out, device="cpu", progress=False)
    for key in ("steps", "finished", "stopped", "best_step", "best_val_exact", "best_val_loss"):
        print(f"{key}: {summary[key]}")
    with open(summary["log"], newline="") as f:
        for row in csv.DictReader(f):
            print({k: row[k] for k in ("step", "lr", "train_loss", "val_loss", "val_exact")})
    model = load_weights(summary["best"])
    print(translate(model, EXPRESSIONS, max_len=40))


def _answer(notebook: dict, function: str, source: str) -> None:
    for cell in notebook["cells"]:
        meta = cell.get("metadata", {}).get("labutils", {})
        if meta.get("kind") == "answer" and meta.get("grade_id", "").endswith("." + function):
            cell["source"] = source


def grading_section(work: Path) -> None:
    import nbformat

    from labutils.instructor import grading, release

    section("grading two notebooks")
    sources = work / "sources"
    sources.mkdir()
    for name in ("01_tokenization", "04_attention"):
        (sources / f"{name}.ipynb").write_bytes((ROOT / "solutions" / f"{name}.ipynb").read_bytes())
    loaded = grading.load_sources(sources)
    solution = nbformat.read(sources / "04_attention.ipynb", as_version=4)
    submission = json.loads(release.render(release.student_notebook(solution, "04_attention")))
    _answer(
        submission,
        "attention",
        "def attention(Q, K, V):\n"
        "    weights = torch.softmax(Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1)), -1)\n"
        "    return weights @ V, weights",
    )
    _answer(
        submission,
        "masked_attention",
        "def masked_attention(Q, K, V, mask):\n"
        "    scores = (Q @ K.transpose(-2, -1) / math.sqrt(Q.size(-1))).masked_fill(mask, 0.0)\n"
        "    weights = torch.softmax(scores, -1)\n    return weights @ V, weights",
    )
    _answer(submission, "causal_mask", "causal_mask = labutils.attention.causal_mask")
    (work / "04_attention.ipynb").write_text(json.dumps(submission), encoding="utf-8")
    limits = grading.Limits(timeout=300)
    submissions = {
        "01_solved.ipynb": sources / "01_tokenization.ipynb",
        "04_mixed.ipynb": work / "04_attention.ipynb",
    }
    for name, path in submissions.items():
        result = grading.grade_submission(path, loaded, limits, submission=name)
        print(f"{name}: {result.points:g} / {result.max_points:g} {result.status} notes={result.notes!r}")
        for row in result.rows:
            print("  ", row)
        print(result.text)


def figures_section(weights: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from labutils.instructor import figures

    section("figures' manifest")
    found = figures.find_weights(weights)
    manifest = figures.make_figures(out, found, timeout=120, echo=lambda line: None)
    manifest["weights"] = "<weights>"
    print(json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False))


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="labutils-golden-") as scratch:
        work = Path(scratch)
        (work / "weights").mkdir()
        weights = from_git("labutils/weights/model.pt", work / "weights")
        from_git("labutils/weights/log.csv", work / "weights")
        test = pairs_file(from_git("labutils/datasets/test.tsv.gz", work), 200, work / "test200.tsv")
        train = pairs_file(from_git("labutils/datasets/train.tsv.gz", work), 3500, work / "train3500.tsv")
        translate_section(weights)
        evaluate_section(weights, test)
        training_section(train, work / "run")
        grading_section(work)
        figures_section(weights, work / "figures")


if __name__ == "__main__":
    main()
