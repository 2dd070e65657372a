"""``python -m labutils figures``: every figure made, reproducibly, from the weights the manifest names."""

import matplotlib

matplotlib.use("Agg")

import csv  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from labutils import cli  # noqa: E402
from labutils.instructor import figures  # noqa: E402
from labutils.model import ModelConfig, Seq2SeqTransformer, save_weights  # noqa: E402
from labutils.tokens import TARGET_VOCAB  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MPL_AGG = {**os.environ, "MPLBACKEND": "Agg"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small random model that writes "1" over and over, with a training log beside it."""
    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    config = ModelConfig(
        d_model=32, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=64, max_tgt_len=16
    )
    model = Seq2SeqTransformer(config)
    with torch.no_grad():
        model.generator.bias[TARGET_VOCAB.stoi["1"]] += 10.0
    save_weights(model, folder / "model.pt")
    with open(folder / "log.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["stage", "step", "train_loss", "val_loss", "val_exact"])
        writer.writerows([[1, 0, 3.2, 3.1, 0.0], [1, 50, 1.5, "", ""], [2, 100, 0.9, 1.0, 0.25]])
    return folder / "model.pt"


def run(*argv: str) -> int:
    return cli.main(["figures", *argv])


def test_figures_command_writes_every_figure_and_the_manifest(checkpoint, tmp_path, capsys):
    out = tmp_path / "figures"
    out.mkdir()
    # Left by an earlier run: a figure the manifest listed goes, a file it did not list stays.
    (out / "old_expression_cross.png").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    (out / "manifest.json").write_text(json.dumps({"files": ["old_expression_cross.png"]}))

    assert run("--out", str(out), "--checkpoint", str(checkpoint), "--expr", "tan(hx)+sinh(gx)") == 0

    manifest = json.loads((out / "manifest.json").read_text())
    stems = ["attention_two_tokens", "positional_encoding", "loss"] + [
        f"tan_h_x_plus_sinh_g_x_{kind}{grid}"
        for kind in ("encoder", "decoder", "cross")
        for grid in ("", "_heads_layer1")  # one grid per layer, numbered from 1
    ]
    expected = sorted(f"{stem}.{ext}" for stem in stems for ext in ("png", "svg"))
    assert manifest["files"] == expected
    assert manifest["weights_sha256"] == sha256(checkpoint)
    assert manifest["weights"] == str(checkpoint)
    (record,) = manifest["expressions"]
    assert record["expression"] == "tan(h*x)+sinh(g*x)"
    assert record["model_series"] == "1" * 16  # the model's own answer, not the truth
    assert record["verdict"] == "wrong"
    assert record["sympy_series"] == "x*(g+h)+x**3*(g**3/6+h**3/3)+x**5*(g**5/120+2*h**5/15)+O(x**6)"

    for name in expected:
        data = (out / name).read_bytes()
        if name.endswith(".png"):
            assert data.startswith(b"\x89PNG\r\n\x1a\n")
            with Image.open(out / name) as image:
                assert image.info["dpi"] == pytest.approx((200, 200), abs=0.1)
                assert image.size == (2666, 1500)  # a 16:9 slide, 13.33 x 7.5 in
                assert "Software" not in image.info  # no version stamp: the same figure, the same bytes
        else:
            assert data.startswith(b"<?xml") and b"</svg>" in data
            assert b"<dc:date>" not in data
    assert not (out / "old_expression_cross.png").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert "tan(h*x)+sinh(g*x) → " + "1" * 16 + " [wrong]" in capsys.readouterr().err


def test_figures_are_reproducible(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        figures.save_figure(figures.two_token_figure(), tmp_path / folder / "two")
    for ext in ("png", "svg"):
        assert (tmp_path / "a" / f"two.{ext}").read_bytes() == (tmp_path / "b" / f"two.{ext}").read_bytes()


def test_file_names_tell_expressions_apart():
    stems = figures._stems(["cosh(a*x)**3+tanh(b*x)", "cosh(a*x)**3-tanh(b*x)", "sin((a+b)*x)", "sin(a+b*x)"])
    assert stems[:2] == ["cosh_a_x_pow_3_plus_tanh_b_x", "cosh_a_x_pow_3_minus_tanh_b_x"]
    assert len(set(stems)) == 4


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--checkpoint", "no/such/model.pt"], "error: no/such/model.pt: no such weights file"),
        (["--checkpoint", "{garbage}"], "not a readable weights file"),
        (["--checkpoint", "{folder}"], "run folder without best.pt"),
        (["--expr", "sin(x)+$"], "error: --expr 'sin(x)+$': unknown character '$' at position 7"),
        (["--out", "{garbage}"], "is a file, expected a folder"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(checkpoint, tmp_path, capsys, argv, message):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model")
    argv = [a.format(garbage=garbage, folder=tmp_path) for a in argv]
    if "--checkpoint" not in argv:
        argv += ["--checkpoint", str(checkpoint)]
    assert run("--out", str(tmp_path / "out"), *argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message.format(garbage=garbage) in err
    assert not (tmp_path / "out").exists()  # nothing made


def test_the_staleness_check_notices_changed_weights(tmp_path):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights, version 1")
    (tmp_path / "a.png").write_bytes(b"png")
    manifest = {"weights": figures.SHIPPED_NAME, "weights_sha256": sha256(weights), "files": ["a.png"]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert figures.stale(tmp_path, weights) == []
    weights.write_bytes(b"weights, version 2")
    (problem,) = figures.stale(tmp_path, weights)
    assert "changed since the figures were made" in problem
    (tmp_path / "a.png").unlink()
    assert "lacks a.png" in figures.stale(tmp_path, weights)[-1]
    assert "never made" in figures.stale(tmp_path / "nowhere", weights)[0]


def test_the_repositorys_figures_come_from_the_shipped_weights():
    """figures/ is never stale: when the shipped weights change, `make figures` must be run again."""
    if not figures.shipped_weights_path().is_file():
        pytest.skip("the package ships no weights yet")
    assert figures.stale(REPO / "figures") == []


def test_the_slides_are_made_without_widgets_or_jupyter(checkpoint, tmp_path):
    """Making slides needs the core only: with ipywidgets and IPython unimportable, every figure is made."""
    code = (
        "import sys\n"
        "for name in ('ipywidgets', 'IPython', 'ipykernel'):\n"
        "    sys.modules[name] = None  # import raises ImportError\n"
        "from labutils import cli\n"
        f"status = cli.main(['figures', '--out', {str(tmp_path / 'out')!r}, '--checkpoint', {str(checkpoint)!r},\n"
        "                   '--expr', 'sin(a*x)'])\n"
        "assert not any(sys.modules.get(name) for name in ('ipywidgets', 'IPython', 'ipykernel'))\n"
        "sys.exit(status)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=MPL_AGG)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "sin_a_x_cross.png" in manifest["files"] and manifest["expressions"][0]["verdict"] == "wrong"


def test_figures_warn_why_an_expression_is_outside_the_family(checkpoint, capsys):
    from labutils.model import load_weights

    model = load_weights(checkpoint)
    assert figures.read_expressions(["sin(12*a*x)", "tan(hx)"], model) == ["sin(12*a*x)", "tan(h*x)"]
    (warning,) = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith("warning: sin(12*a*x) is outside the training family: the argument 12*a*x")


def _texts_under(figure, points: float) -> list[str]:
    """Every visible, non-empty text of ``figure`` smaller than ``points``: titles, ticks, labels, legends."""
    from matplotlib.text import Text

    figure.canvas.draw()  # tick labels exist once drawn
    return [
        f"{t.get_text()!r} at {t.get_fontsize():g} pt"
        for t in figure.findobj(Text)
        if t.get_visible() and t.get_text().strip() and t.get_fontsize() < points
    ]


def test_every_slide_has_no_text_under_12_points(checkpoint):
    from labutils.decode import decoding_steps, predict
    from labutils.metrics import Check
    from labutils.model import load_weights
    from labutils.plotting import canvas

    model = load_weights(checkpoint)
    prediction = predict(model, "tan(h*x)+sinh(g*x)", "greedy")
    steps = decoding_steps(model, "tan(h*x)+sinh(g*x)")
    check = Check("wrong", "x*(g+h)+O(x**3)")
    for aspect, size in figures.ASPECTS.items():
        with canvas.slide_text():
            made = {
                "two tokens": figures.two_token_figure(size),
                "positional encoding": figures.positional_encoding_figure(model, size),
                "loss": figures.loss_figure(checkpoint.parent / "log.csv", "a run", size),
            }
            for kind in ("encoder", "decoder", "cross"):
                made[kind] = figures.heatmap_figure(prediction, check, kind, 30.0, size)
                made[f"{kind} heads"] = figures.grid_figure(prediction, check, kind, 30.0, size, 0)
                made[f"{kind} lines"] = figures.lines_figure(prediction, check, kind, 30.0, size)
                made[f"{kind} model"] = figures.model_figure(prediction, check, kind, 30.0, size)
            made["a step"] = figures.step_figure(steps, size)
            made["the last step"] = figures.step_figure(steps, size, step=-1)
        for name, figure in made.items():
            assert tuple(figure.get_size_inches()) == pytest.approx(size), (aspect, name)
            assert _texts_under(figure, 12) == [], (aspect, name)
            matplotlib.pyplot.close(figure)


def test_cross_attention_is_landscape_and_layers_and_heads_count_from_1(checkpoint):
    from labutils.decode import predict
    from labutils.metrics import Check
    from labutils.model import load_weights

    prediction = predict(load_weights(checkpoint), "tan(h*x)+sinh(g*x)", "greedy")
    figure = figures.heatmap_figure(prediction, Check("wrong"), "cross", 30.0)
    ax = figure.axes[0]
    height, width = ax.images[0].get_array().shape
    assert width > height  # the series' 16 tokens along x, the expression's along y
    assert ax.get_xlabel().startswith("query (target token read → token predicted")
    assert ax.get_ylabel().startswith("key")
    assert "layer 1 of 1, head " in ax.get_title() and "head 0" not in ax.get_title()
    grid = figures.grid_figure(prediction, Check("wrong"), "cross", 30.0, layer=0)
    assert sorted(a.get_title() for a in grid.axes if a.get_title()) == ["layer 1, head 1", "layer 1, head 2"]


def test_the_two_token_figure_shows_notebook_04s_numbers():
    figure = figures.two_token_figure()
    texts = " ".join(t.get_text() for ax in figure.axes for t in ax.texts)
    assert "= 0.80" in texts and "= 0.20" in texts and "= 0.50" in texts


def test_the_loss_figure_marks_each_training_stage(checkpoint):
    figure = figures.loss_figure(checkpoint.parent / "log.csv", figures.SHIPPED_NAME)
    ax = figure.axes[0]
    assert ax.get_title() == "Training of the shipped model: loss and validation exact match"
    assert [t.get_text().strip() for t in ax.texts] == ["stage 1", "stage 2"]


def test_format_and_aspect(checkpoint, tmp_path):
    out = tmp_path / "slides"
    argv = ["--out", str(out), "--checkpoint", str(checkpoint), "--expr", "sin(ax)", "--format", "pdf"]
    assert run(*argv, "--aspect", "4:3", "--threads", "1", "--kind", "cross") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["aspect"] == "4:3" and all(name.endswith(".pdf") for name in manifest["files"])
    assert manifest["kinds"] == ["cross"]  # as asked: no encoder or decoder maps
    assert [n for n in manifest["files"] if n.startswith("sin_a_x")] == [
        "sin_a_x_cross.pdf",
        "sin_a_x_cross_heads_layer1.pdf",
    ]
    assert (out / "loss.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("kind", ["decoder", "cross"])
def test_decoder_rows_are_labelled_with_what_they_read_and_predict(checkpoint, kind):
    """The model writes "1" sixteen times, to its length limit: each row predicts the next "1", and the
    last row's next token (past the limit of the maps) is not shown, never claimed to be <eos>."""
    from labutils.decode import predict
    from labutils.metrics import Check
    from labutils.model import load_weights

    prediction = predict(load_weights(checkpoint), "tan(h*x)+sinh(g*x)", "greedy")
    for figure in (
        figures.heatmap_figure(prediction, Check("wrong"), kind, 30.0),
        figures.grid_figure(prediction, Check("wrong"), kind, 30.0, layer=0),
    ):
        ax = figure.axes[0]
        figure.canvas.draw()
        rows = ax.get_xticklabels() if kind == "cross" else ax.get_yticklabels()
        labels = [t.get_text() for t in rows if t.get_text()]
        assert labels[0] == "0:<sos> → 1" and all(" → " in label for label in labels)
        assert "<eos>" not in " ".join(labels)
        matplotlib.pyplot.close(figure)
    assert figures._rows(prediction, kind)["predicted_tokens"][-1] == "…"


def test_views_and_the_step_through_for_slides(checkpoint, tmp_path, capsys):
    """--view lines model and --animate gif: the stills at slide size, each file named by its view, and a GIF
    with one frame per token the model wrote."""
    from labutils.decode import decoding_steps
    from labutils.model import load_weights

    out = tmp_path / "slides"
    argv = ["--out", str(out), "--checkpoint", str(checkpoint), "--expr", "sin(a*x)"]
    assert run(*argv, "--view", "lines", "model", "--animate", "gif") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    stems = ["attention_two_tokens", "positional_encoding", "loss", "sin_a_x_steps"] + [
        f"sin_a_x_{kind}_{view}" for kind in ("encoder", "decoder", "cross") for view in ("lines", "model")
    ]
    expected = sorted([f"{stem}.{ext}" for stem in stems for ext in ("png", "svg")] + ["sin_a_x_steps.gif"])
    assert manifest["files"] == expected  # no heatmaps: the matrix view was not asked for
    assert manifest["views"] == ["lines", "model"] and manifest["animations"] == ["gif"]
    for name in expected:
        if name.endswith(".png"):
            with Image.open(out / name) as image:
                assert image.size == (2666, 1500), name  # a 16:9 slide at 200 dpi
    written = len(decoding_steps(load_weights(checkpoint), "sin(a*x)"))
    with Image.open(out / "sin_a_x_steps.gif") as gif:
        assert gif.n_frames == written == 16  # "1" sixteen times, to the model's length limit
        assert gif.size == (1066, 600)  # 13.33 x 7.5 in at 80 dpi
    assert "sin_a_x_steps.gif: 16 frames, one per written token" in capsys.readouterr().err


def test_an_mp4_needs_ffmpeg(checkpoint, tmp_path, monkeypatch, capsys):
    argv = ["--out", str(tmp_path / "out"), "--checkpoint", str(checkpoint), "--expr", "sin(a*x)"]
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no ffmpeg on the PATH
    assert run(*argv, "--animate", "mp4") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--animate mp4 needs ffmpeg on the PATH" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("aspect", "pixels"), [("16:9", (1920, 1080)), ("4:3", (1440, 1080))])
def test_a_slide_at_the_mp4s_dpi_has_its_exact_pixel_size(tmp_path, aspect, pixels):
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=figures.ASPECTS[aspect])
    figure.savefig(tmp_path / "frame.png", dpi=figures.ANIMATION_DPI["mp4"])
    plt.close(figure)
    with Image.open(tmp_path / "frame.png") as frame:
        assert frame.size == pixels  # H.264 wants even sides: an odd width would lose a column


@pytest.mark.parametrize("ffmpeg", [True, False])
def test_animate_without_a_format_makes_a_gif_and_an_mp4_when_ffmpeg_is_there(
    checkpoint, tmp_path, monkeypatch, capsys, ffmpeg
):
    asked = {}
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}" if ffmpeg else None)
    monkeypatch.setattr(
        figures, "make_figures", lambda *args, **options: asked.update(options) or {"files": []}
    )
    argv = ["--out", str(tmp_path / "out"), "--checkpoint", str(checkpoint), "--expr", "sin(a*x)"]
    assert run(*argv, "--animate") == 0
    assert asked["animate"] == (["gif", "mp4"] if ffmpeg else ["gif"]) and asked["views"] == ["matrix"]
    said = "no ffmpeg on the PATH: the step-through as a GIF only"
    assert (said in capsys.readouterr().err) is not ffmpeg
