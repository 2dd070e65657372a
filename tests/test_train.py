"""The training loop: loss falls, the run folder, reproducibility, resuming, stopping, the command, DDP."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labutils import cli
from labutils.model import Seq2SeqTransformer, load_weights
from labutils.tokens import PAD_IDX, SOURCE_VOCAB, TARGET_VOCAB, code, collate
from labutils.train import (
    LOG_COLUMNS,
    PRESETS,
    RunError,
    TrainConfig,
    curve_of,
    decay_from,
    evaluate,
    export_weights,
    learning_rate,
    load_data,
    make_config,
    train,
)

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]

# Pairs made with sympy.series(…, x, 0, 6); the held-out validation pairs are a fixed tenth of them.
PAIRS = [
    ("sin(a*x)", "a*x-a**3*x**3/6+a**5*x**5/120+O(x**6)"),
    ("sin(b*x)", "b*x-b**3*x**3/6+b**5*x**5/120+O(x**6)"),
    ("sin(c*x)", "c*x-c**3*x**3/6+c**5*x**5/120+O(x**6)"),
    ("cos(a*x)", "1-a**2*x**2/2+a**4*x**4/24+O(x**6)"),
    ("cos(b*x)", "1-b**2*x**2/2+b**4*x**4/24+O(x**6)"),
    ("cos(c*x)", "1-c**2*x**2/2+c**4*x**4/24+O(x**6)"),
    ("tan(a*x)", "a*x+a**3*x**3/3+2*a**5*x**5/15+O(x**6)"),
    ("tan(b*x)", "b*x+b**3*x**3/3+2*b**5*x**5/15+O(x**6)"),
    ("tan(c*x)", "c*x+c**3*x**3/3+2*c**5*x**5/15+O(x**6)"),
    ("sinh(a*x)", "a*x+a**3*x**3/6+a**5*x**5/120+O(x**6)"),
    ("sinh(b*x)", "b*x+b**3*x**3/6+b**5*x**5/120+O(x**6)"),
    ("sinh(c*x)", "c*x+c**3*x**3/6+c**5*x**5/120+O(x**6)"),
    ("cosh(a*x)", "1+a**2*x**2/2+a**4*x**4/24+O(x**6)"),
    ("cosh(b*x)", "1+b**2*x**2/2+b**4*x**4/24+O(x**6)"),
    ("cosh(c*x)", "1+c**2*x**2/2+c**4*x**4/24+O(x**6)"),
    ("tanh(a*x)", "a*x-a**3*x**3/3+2*a**5*x**5/15+O(x**6)"),
    ("tanh(b*x)", "b*x-b**3*x**3/3+2*b**5*x**5/15+O(x**6)"),
    ("tanh(c*x)", "c*x-c**3*x**3/3+2*c**5*x**5/15+O(x**6)"),
    ("exp(a*x)", "1+a*x+a**2*x**2/2+a**3*x**3/6+a**4*x**4/24+a**5*x**5/120+O(x**6)"),
    ("exp(b*x)", "1+b*x+b**2*x**2/2+b**3*x**3/6+b**4*x**4/24+b**5*x**5/120+O(x**6)"),
    ("exp(c*x)", "1+c*x+c**2*x**2/2+c**3*x**3/6+c**4*x**4/24+c**5*x**5/120+O(x**6)"),
    ("sin(a*x)+cos(b*x)", "1+a*x-b**2*x**2/2-a**3*x**3/6+b**4*x**4/24+a**5*x**5/120+O(x**6)"),
    ("exp(2*c*x)", "1+2*c*x+2*c**2*x**2+4*c**3*x**3/3+2*c**4*x**4/3+4*c**5*x**5/15+O(x**6)"),
    ("cosh(a*x)**3+tanh(b*x)", "1+b*x+3*a**2*x**2/2-b**3*x**3/3+7*a**4*x**4/8+2*b**5*x**5/15+O(x**6)"),
]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.tsv"
    path.write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS))
    return path


def tiny(pairs_file: Path, **overrides) -> TrainConfig:
    """The tiny preset on the fixture: small batches so that an epoch holds a few steps."""
    settings = {"data": str(pairs_file), "max_steps": 10, "val_every": 5, "batch_size": 8, "max_tokens": None,
                "warmup_steps": 2, "threads": 1}  # fmt: skip
    return make_config("tiny", {**settings, **overrides})


def read_log(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def losses(path: Path) -> list[tuple[str, str, str]]:
    return [(row["step"], row["train_loss"], row["val_loss"]) for row in read_log(path)[1]]


@pytest.fixture(scope="module")
def run_60(pairs_file, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "run"
    return out, train(tiny(pairs_file, max_steps=60, val_every=20), out, progress=False)


# ---------------------------------------------------------------------------------------------- configs


def test_presets_make_valid_configs_and_overrides_reach_the_model():
    for name in PRESETS:
        assert make_config(name).max_steps >= 100
    config = make_config("cpu", {"d_model": 64, "max_steps": 2000, "model": {"n_heads": 2}})
    assert (config.model["d_model"], config.model["n_heads"], config.max_steps) == (64, 2, 2000)
    assert config.model_config().tgt_vocab_size == len(TARGET_VOCAB)
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("overrides", [{"nope": 1}, {"lr": "fast"}, {"d_model": 30, "n_heads": 4}])
def test_bad_overrides_are_refused(overrides):
    with pytest.raises(ValueError):
        make_config("tiny", overrides)


def test_learning_rate_warms_up_linearly_then_decays_to_the_floor():
    config = TrainConfig(lr=1e-3, min_lr=1e-5, warmup_steps=10, max_steps=110)
    assert learning_rate(0, config) == pytest.approx(1e-4)
    assert learning_rate(9, config) == pytest.approx(1e-3)
    assert learning_rate(60, config) == pytest.approx((1e-3 + 1e-5) / 2)
    assert learning_rate(110, config) == pytest.approx(1e-5)
    rates = [learning_rate(step, config) for step in range(10, 111)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))


def test_warmup_stable_decay_holds_the_rate_until_its_decay():
    config = TrainConfig(lr=1e-3, min_lr=1e-5, warmup_steps=10, max_steps=1000, schedule="wsd")
    assert learning_rate(0, config) == pytest.approx(1e-4)
    assert {learning_rate(step, config) for step in range(9, 1000)} == {1e-3}  # no decay_steps: stable
    ending = decay_from(config, step=400, decay_steps=100)
    assert (ending.max_steps, ending.decay_steps, ending.stage) == (500, 100, "decay")
    assert [learning_rate(step, ending) for step in (300, 399)] == [1e-3, 1e-3]  # the past is unchanged
    rates = [learning_rate(step, ending) for step in range(400, 500)]
    assert rates[0] < 1e-3 and rates[-1] == pytest.approx(1e-5)
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    assert learning_rate(450, ending) == pytest.approx(1e-3 + 0.51 * (1e-5 - 1e-3))


@pytest.mark.parametrize("overrides", [{"schedule": "linear"}, {"decay_steps": -1}, {"decay_steps": 20}])
def test_bad_schedules_are_refused(overrides):
    with pytest.raises(ValueError):
        TrainConfig(max_steps=10, **overrides)
    with pytest.raises(ValueError, match="warmup-stable-decay"):
        decay_from(TrainConfig(), 10, 5)


def test_a_pairs_file_gives_a_fixed_held_out_validation_subset(pairs_file):
    train_a, val_a = load_data(tiny(pairs_file, seed=1))
    train_b, val_b = load_data(tiny(pairs_file, seed=2))
    assert (train_a, val_a) == (train_b, val_b)  # the same pairs whatever the seed
    assert len(val_a) == len(PAIRS) // 10 and not set(val_a) & set(train_a)
    assert sorted(train_a + val_a) == sorted(PAIRS)
    assert len(load_data(tiny(pairs_file, train_size=5))[0]) == 5


# ---------------------------------------------------------------------------------------------- validation


class _Oracle(torch.nn.Module):
    """A 'model' whose argmax is the target, except where ``wrong`` (a (B, Lt) mask) says otherwise."""

    def __init__(self, tgt: torch.Tensor, wrong: torch.Tensor):
        super().__init__()
        answer = torch.where(wrong, (tgt[:, 1:] + 1) % len(TARGET_VOCAB), tgt[:, 1:])  # (B, Lt)
        self.logits = 20 * torch.nn.functional.one_hot(answer, len(TARGET_VOCAB)).float()  # (B, Lt, V)

    def forward(self, src, tgt_in, src_pad_mask, tgt_pad_mask):
        return self.logits


def test_val_exact_counts_sequences_right_at_every_real_position():
    batch = collate(
        [(code(s, SOURCE_VOCAB), code(t, TARGET_VOCAB)) for s, t in (PAIRS[18], PAIRS[0], PAIRS[3])]
    )
    tgt = batch[1]
    tgt_out = tgt[:, 1:]
    wrong = torch.zeros_like(tgt_out, dtype=torch.bool)
    wrong[1, 0] = True  # sequence 1: its first token is wrong
    wrong[2] = tgt_out[2] == PAD_IDX  # sequence 2: wrong only where the target is <pad>, which does not count
    assert wrong[2].any(), "the fixture needs a padded sequence"
    val_loss, val_exact = evaluate(_Oracle(tgt, wrong), [batch], torch.device("cpu"))
    assert val_exact == pytest.approx(2 / 3)
    assert 0 < val_loss < 1


# ---------------------------------------------------------------------------------------------- the loop


def test_loss_falls_and_log_csv_has_the_exact_columns(run_60):
    out, summary = run_60
    header, rows = read_log(out / "log.csv")
    assert tuple(header) == LOG_COLUMNS
    assert [int(row["step"]) for row in rows] == [20, 40, 60]
    train_losses = [float(row["train_loss"]) for row in rows]
    val_losses = [float(row["val_loss"]) for row in rows]
    assert train_losses[-1] < 0.8 * train_losses[0]
    assert val_losses[-1] < val_losses[0]
    assert all(0 <= float(row["val_exact"]) <= 1 for row in rows)
    sequences = [int(row["sequences"]) for row in rows]
    assert sequences == sorted(sequences) and sequences[0] > 0
    assert summary["steps"] == 60 and summary["finished"]
    assert {p.name for p in out.iterdir()} == {"config.json", "log.csv", "last.pt", "best.pt"}


def test_best_pt_is_the_shipped_format_with_the_validation_fields(run_60):
    out, summary = run_60
    model = load_weights(out / "best.pt")
    assert isinstance(model, Seq2SeqTransformer) and model.config.d_model == PRESETS["tiny"]["d_model"]
    payload = torch.load(out / "best.pt", weights_only=True)
    assert payload["step"] == summary["best_step"] and payload["val_exact"] == summary["best_val_exact"]
    assert payload["val_loss"] == pytest.approx(summary["best_val_loss"])


def test_the_same_seed_gives_the_same_losses(pairs_file, tmp_path):
    runs = [
        train(tiny(pairs_file, seed=seed), tmp_path / f"run{i}", progress=False)
        for i, seed in enumerate([3, 3, 4])
    ]
    first, second, other = (losses(run["log"]) for run in runs)
    assert first == second
    assert first != other


def test_minutes_stop_saves_and_resume_continues_bit_for_bit(pairs_file, tmp_path):
    straight = train(tiny(pairs_file), tmp_path / "straight", progress=False)
    stopped = train(tiny(pairs_file), tmp_path / "paused", minutes=0, progress=False)  # stops after one step
    assert (stopped["steps"], stopped["finished"], stopped["stopped"]) == (1, False, "out of time")
    assert [row[0] for row in losses(stopped["log"])] == ["1"]  # a final validation at the stop

    resumed = train(None, tmp_path / "paused", resume=True, progress=False)
    assert resumed["steps"] == 10 and resumed["finished"]
    assert [row[0] for row in losses(resumed["log"])] == ["1", "5", "10"]
    assert losses(resumed["log"])[-1][2] == losses(straight["log"])[-1][2]  # the same val_loss at step 10
    a = torch.load(straight["last"], weights_only=True)["model"]
    b = torch.load(resumed["last"], weights_only=True)["model"]
    assert all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_run_on_the_gpu_stops_and_resumes_there(pairs_file, tmp_path):
    stopped = train(tiny(pairs_file), tmp_path / "gpu", minutes=0, device="cuda", progress=False)
    assert stopped["stopped"] == "out of time"
    resumed = train(None, tmp_path / "gpu", resume=True, device="cuda", progress=False)
    assert resumed["steps"] == 10 and resumed["finished"]


def test_ctrl_c_stops_after_the_step_and_saves(pairs_file, tmp_path):
    class InterruptingBar:  # a progress bar that presses Ctrl-C during the third step
        def __init__(self, **kwargs):
            self.n = 0

        def update(self, n):
            self.n += n
            if self.n == 3:
                os.kill(os.getpid(), signal.SIGINT)

        def set_postfix(self, **kwargs):
            pass

        def write(self, text, file=None):
            pass

        def close(self):
            pass

    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a background job
    summary = train(tiny(pairs_file, max_steps=1000), tmp_path / "run", progress=InterruptingBar)
    assert (summary["steps"], summary["stopped"]) == (3, "interrupted")
    assert torch.load(summary["last"], weights_only=True)["step"] == 3
    assert signal.getsignal(signal.SIGINT) is before, "the Ctrl-C handler is put back as it was"


def test_refuses_a_non_empty_folder_and_a_resume_without_last_pt(pairs_file, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not empty"):
        train(tiny(pairs_file), tmp_path, progress=False)
    with pytest.raises(RunError, match="nothing to resume"):
        train(tiny(pairs_file), tmp_path, resume=True, progress=False)


def test_init_starts_from_given_weights_and_refuses_another_shape(run_60, pairs_file, tmp_path):
    out, _ = run_60
    start = load_weights(out / "best.pt")
    fresh = train(tiny(pairs_file, max_steps=1, val_every=1), tmp_path / "fresh", progress=False)
    continued = train(
        tiny(pairs_file, max_steps=1, val_every=1, init=str(out)), tmp_path / "init", progress=False
    )
    first_fresh, first_continued = losses(fresh["log"])[0], losses(continued["log"])[0]
    assert float(first_continued[1]) < 0.8 * float(first_fresh[1])  # the first step already knows the task
    moved = load_weights(continued["last"].parent / "best.pt").state_dict()
    assert any(not torch.equal(moved[name], value) for name, value in start.state_dict().items())
    with pytest.raises(RunError, match="d_model"):
        train(tiny(pairs_file, init=str(out), d_model=64, n_heads=2), tmp_path / "wider", progress=False)
    with pytest.raises(RunError, match="no such weights file"):
        train(tiny(pairs_file, init=str(tmp_path / "missing.pt")), tmp_path / "missing", progress=False)


# ---------------------------------------------------------------------------------------------- the command


def test_command_rejects_an_unknown_config_key_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "labutils", "train", "--preset", "tiny", "--out", str(tmp_path / "run"),
         "--config", '{"d_model": 64, "nope": 1}'],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "'nope'" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--config", "{bad json"], "invalid JSON"),
        (["--config", "[1, 2]"], "JSON object"),
        (["--data", "missing.tsv"], "not found"),
        (["--preset", "huge"], "unknown preset"),
        (["--resume"], "nothing to resume"),
        (["--init", "missing.pt"], "not found"),
        (["--init", ".", "--resume"], "only one of them"),
    ],
)
def test_command_user_errors_exit_2(arguments, message, tmp_path, capsys):
    if "--preset" not in arguments:
        arguments = ["--preset", "tiny", *arguments]
    assert cli.main(["train", "--out", str(tmp_path / "run"), *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_command_trains_and_refuses_to_overwrite(pairs_file, tmp_path, capsys):
    config = '{"max_steps": 4, "val_every": 2, "batch_size": 8}'
    arguments = ["train", "--preset", "tiny", "--out", str(tmp_path), "--data", str(pairs_file),
                 "--config", config, "--threads", "1"]  # fmt: skip
    assert cli.main(arguments) == 0
    assert f"best.pt: {tmp_path / 'best.pt'}" in capsys.readouterr().out
    assert cli.main(arguments) == 2
    assert "not empty" in capsys.readouterr().err


def test_data_parallel_on_two_cpu_processes(pairs_file, tmp_path):
    out = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "labutils", "train", "--preset", "tiny", "--out", str(out), "--data", str(pairs_file),
         "--device", "cpu",
         "--config", '{"max_steps": 5, "val_every": 5, "batch_size": 4, "max_tokens": null}'],
        cwd=ROOT, capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    header, rows = read_log(out / "log.csv")
    assert tuple(header) == LOG_COLUMNS and [row["step"] for row in rows] == ["5"]
    assert int(rows[0]["sequences"]) > 5 * 4  # both processes' sequences are counted
    assert load_weights(out / "best.pt").config.d_model == PRESETS["tiny"]["d_model"]
    assert result.stdout.count("best.pt:") == 1  # only rank 0 speaks


# ---------------------------------------------------------------------------------------------- stages


def test_a_run_from_trained_weights_continues_their_curve(pairs_file, run_60, tmp_path):
    first, _ = run_60
    out = tmp_path / "second"
    train(tiny(pairs_file, init=str(first), max_steps=10, stage="2"), out, progress=False)
    _, before = read_log(first / "log.csv")
    _, rows = read_log(out / "log.csv")
    assert rows[: len(before)] == before  # the curve that made the weights, then this run's rows
    added = rows[len(before) :]
    assert [row["stage"] for row in added] == ["2", "2"]
    assert [int(row["step"]) for row in added] == [65, 70]
    for key in ("sequences", "elapsed_s", "epoch"):
        values = [float(row[key]) for row in rows]
        assert values == sorted(values) and values[-1] > values[len(before) - 1], key
    assert curve_of(out) == rows  # best.pt carries its curve


def test_a_stable_run_is_ended_by_a_decay_from_where_it_stands(pairs_file, tmp_path):
    import shutil

    stable = tmp_path / "stable"
    wsd = {"schedule": "wsd", "max_steps": 1000, "stage": "3"}
    assert cli.main(["train", "--preset", "tiny", "--data", str(pairs_file), "--out", str(stable),
                     "--config", json_of({"val_every": 5, "batch_size": 8, "warmup_steps": 2, **wsd}),
                     "--minutes", "0.0001", "--threads", "1"]) == 0  # fmt: skip
    _, rows = read_log(stable / "log.csv")
    stood = int(rows[-1]["step"])
    snapshot = tmp_path / "snapshot"
    shutil.copytree(stable, snapshot)
    assert cli.main(["train", "--resume", "--out", str(snapshot), "--decay", "10", "--threads", "1"]) == 0
    _, rows = read_log(snapshot / "log.csv")
    decayed = [row for row in rows if row["stage"] == "3 decay"]
    assert [int(row["step"]) for row in decayed] == [stood + 5, stood + 10] or stood % 5
    assert float(decayed[-1]["lr"]) == pytest.approx(1e-5 * 30, rel=1e-3)  # tiny's min_lr: 3e-4
    assert read_log(stable / "log.csv")[1][-1]["step"] == str(stood)  # the stable run is untouched


def test_decay_needs_a_wsd_run_to_resume(pairs_file, run_60, capsys):
    out, _ = run_60
    assert cli.main(["train", "--preset", "tiny", "--out", str(out), "--decay", "10"]) == 2
    assert cli.main(["train", "--resume", "--out", str(out), "--decay", "10"]) == 2
    err = capsys.readouterr().err
    assert "--decay ends a run that exists" in err and "warmup-stable-decay" in err


def test_export_writes_half_precision_weights_that_a_run_can_start_from(pairs_file, run_60, tmp_path):
    out, _ = run_60
    assert cli.main(["export", str(out / "last.pt"), str(tmp_path / "w.pt"), "--half"]) == 0
    half = torch.load(tmp_path / "w.pt", weights_only=True)
    assert {t.dtype for t in half["state_dict"].values() if t.is_floating_point()} == {torch.float16}
    full = torch.load(out / "last.pt", weights_only=True)["model"]
    for name, tensor in full.items():
        assert torch.allclose(half["state_dict"][name].float(), tensor, rtol=1e-3, atol=1e-4), name
    model = load_weights(tmp_path / "w.pt")
    assert next(model.parameters()).dtype == torch.float32  # a model again in full precision
    assert curve_of(tmp_path / "w.pt") == read_log(out / "log.csv")[1]
    assert export_weights(out / "best.pt", tmp_path / "b.pt").is_file()
    assert cli.main(["export", str(tmp_path / "nothing.pt"), str(tmp_path / "x.pt")]) == 2


def json_of(value) -> str:
    import json

    return json.dumps(value)
