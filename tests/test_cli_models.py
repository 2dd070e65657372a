"""The commands with ``--model``: the decoder-only model as a user reaches it, and one-line errors."""

import json

import pytest
import torch
from test_cli import assert_one_line_error, run

from labutils import data, models
from labutils.metrics import OK, check_equivalence
from labutils.model import save_weights

LECTURE = "cosh(a*x)**3+tanh(b*x)"


def test_translate_with_the_decoder_only_model_prints_the_lectures_series():
    result = run("translate", "--model", "decoder-only", LECTURE)
    assert result.returncode == 0, result.stderr
    written = result.stdout.strip()
    assert check_equivalence([written], [data.series_text(data.parse_expression(LECTURE))]) == [OK]


@pytest.mark.parametrize("command", [["translate", "sin(x)"], ["evaluate", "--limit", "2"], ["figures"]])
def test_an_unknown_model_is_a_one_line_usage_error(command, tmp_path):
    result = run(*command, "--model", "gpt3", *(["--out", str(tmp_path)] if command == ["figures"] else []))
    assert_one_line_error(result, 2, "--model")
    assert "encoder-decoder" in result.stderr and "decoder-only" in result.stderr


def test_a_checkpoint_of_the_other_model_is_a_one_line_error(tmp_path):
    torch.manual_seed(0)
    small = models.build("decoder-only", {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32})
    path = save_weights(small, tmp_path / "gpt.pt")
    result = run("translate", "--model", "encoder-decoder", "--checkpoint", str(path), "sin(x)")
    assert_one_line_error(result, 2, "holds the decoder-only model, not the encoder-decoder")
    # without --model, the file says which model it is
    assert run("translate", "--checkpoint", str(path), "--batch-size", "1", "sin(x)").returncode == 0


def test_evaluate_by_category_names_the_model_and_the_weights_it_measured():
    result = run("evaluate", "--model", "decoder-only", "--limit", "20", "--by", "category", "--json")
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    assert table["model"] == "decoder-only" and table["n"] == 20
    shipped = json.loads((models.shipped_weights_path("decoder-only").parent / "categories.json").read_text())
    assert table["weights"] == shipped["weights"]  # the same shipped file the package's table measured
    assert {row["category"] for row in table["categories"]} >= {"coefficients", "operator"}


def test_train_takes_the_decoder_only_model_with_its_own_presets(tmp_path):
    out = tmp_path / "run"
    config = '{"max_steps": 4, "val_every": 2, "val_size": 8, "train_size": 64}'
    result = run("train", "--model", "decoder-only", "--preset", "tiny", "--out", str(out), "--config", config)
    assert result.returncode == 0, result.stderr
    saved = json.loads((out / "config.json").read_text())
    assert saved["architecture"] == "decoder-only" and saved["model"]["n_layers"] == 2
    assert isinstance(models.load_weights(out), models.gpt.DecoderOnlyTransformer)
    # an encoder–decoder field is refused for this model, in one line
    bad = run("train", "--model", "decoder-only", "--preset", "tiny", "--out", str(tmp_path / "bad"),
              "--config", '{"n_encoder_layers": 2}')  # fmt: skip
    assert_one_line_error(bad, 2, "n_encoder_layers")
    # resuming takes the run's own model; naming the other one is an error
    other = run("train", "--resume", "--model", "encoder-decoder", "--out", str(out))
    assert_one_line_error(other, 2, "decoder-only")


def test_figures_of_the_decoder_only_model_draw_its_maps_and_its_curve(tmp_path):
    out = tmp_path / "figures"
    result = run("figures", "--model", "decoder-only", "--out", str(out), "--expr", "sin(a*x)", "--kind", "cross",
                 "--format", "png")  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == "decoder-only"
    assert manifest["weights"] == "labutils/weights/decoder_only/model.pt" and manifest["kinds"] == ["cross"]
    assert {"loss.png", "positional_encoding.png", "sin_a_x_cross.png"} <= set(manifest["files"])
    assert all((out / name).is_file() for name in manifest["files"])
