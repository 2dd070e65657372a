"""The figures of the slides and the README, made from the shipped model: ``python -m labutils figures``.

Made from the core alone (decode, metrics, plotting): making slides needs no Jupyter and no ipywidgets.

Every figure is a slide: 13.33 × 7.5 in (16:9) or 10 × 7.5 in (4:3), with no text under 12 pt, so that it
reads from the back of a lecture hall. Cross-attention is drawn in landscape (the series' tokens along the
long side); the grids of heads are one figure per layer; layers and heads are numbered from 1. Figures are
written as PNG (200 dpi) and SVG by default (PDF on request), byte for byte the same when made again from the
same weights: PNG without a "Software" stamp, SVG and PDF without a date and SVG with fixed element ids. ``manifest.json``
records the sha256 of the weights the figures were made from and the files made, so a test can tell when
the shipped weights have changed and the figures are stale.

``views`` choose the still views of attention (``--view matrix lines model``): heatmaps, the line view and
the model view, each named in its file (``…_cross.png``, ``…_cross_lines.png``, ``…_cross_model.png``).
``animate`` adds the step-through of decoding (``--animate``): ``…_steps.gif`` (and ``.mp4``), one frame
per written token, and one still step of it, ``…_steps.png``.

The figures are honest: they show the attention of the series the model writes (greedy decoding), not of
the true series, and their titles say when sympy finds the model's series wrong.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import shutil
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from labutils import __version__, metrics, models
from labutils.data import outside_family, parse_expression
from labutils.decode import DecodingSteps, Prediction, decoding_steps, describe_series, predict, read_source
from labutils.files import sha256_of
from labutils.metrics import Check, SympyChecker
from labutils.model import (
    Seq2SeqTransformer,
    WeightsError,
    scaled_dot_product_attention,
    shipped_weights_path,
    weights_file,
)
from labutils.plotting import (
    animate_decoding,
    canvas,
    next_tokens,
    plot_attention,
    plot_attention_grid,
    plot_attention_lines,
    plot_decoding_step,
    plot_losses,
    plot_model_view,
    plot_positional_encoding,
)
from labutils.plotting.maps import kinds_in, title_of

__all__ = ["LECTURE_EXPRESSIONS", "Weights", "find_weights", "read_expressions", "make_figures", "stale"]

#: The lecture's two examples.
LECTURE_EXPRESSIONS = ("tan(h*x)+sinh(g*x)", "cosh(a*x)**3+tanh(b*x)")
MANIFEST = "manifest.json"
SHIPPED_NAME = "labutils/weights/model.pt"
SHIPPED_DECODER_ONLY = "labutils/weights/decoder_only/model.pt"
DPI = 200
SVG_SALT = "labutils-figures"  # fixed ids in the SVG files
ASPECTS = canvas.SLIDES  # "16:9" and "4:3": slide sizes in inches
FORMATS = ("png", "svg", "pdf")
COMMITTED_FORMATS = ("png", "svg")  # what the repository's figures/ holds
#: The still views of attention: heatmaps (and grids of heads), the line view, the model view.
VIEWS = ("matrix", "lines", "model")
#: The step-through's animations: a GIF always can be made, an MP4 needs ffmpeg on the PATH.
ANIMATIONS = ("gif", "mp4")
#: Pixels per inch of the step-through: a GIF at 80 (1066 × 600 for 16:9, under 1 MB for the lecture's
#: examples), an MP4 at 144 (1920 × 1080, full HD, for 16:9).
ANIMATION_DPI = {"gif": 80, "mp4": 144}


# ------------------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class Weights:
    """A weights file: where it is, how the manifest names it, and the training log beside it (if any)."""

    path: Path
    name: str
    log: Path | None

    def sha256(self) -> str:
        return sha256_of(self.path)


def find_weights(checkpoint: str | Path | None = None, model: str = models.DEFAULT_KIND) -> Weights:
    """The shipped weights of ``model``, or those of ``checkpoint`` (a weights file, or a run folder's best.pt).

    Raises ``WeightsError`` (one line) when there are none.
    """
    if checkpoint is None:
        path = shipped_weights_path(models.check_kind(model))
        if not path.is_file():
            raise WeightsError(f"{path}: the package ships no pretrained weights yet; give --checkpoint PATH")
        name = SHIPPED_NAME if model == models.DEFAULT_KIND else SHIPPED_DECODER_ONLY
    else:
        path = weights_file(checkpoint)
        name = str(checkpoint)
    log = path.parent / "log.csv"
    return Weights(path, name, log if log.is_file() else None)


def read_expressions(texts: Sequence[str], model: Seq2SeqTransformer) -> list[str]:
    """The expressions normalized, or ``ValueError`` naming the first one the model cannot read."""
    expressions = []
    for text in texts:
        try:
            normalized, _ = read_source(text, model.config.max_src_len)
        except ValueError as error:  # TokenizationError included
            raise ValueError(f"--expr {text!r}: {error}") from None
        outside = outside_family(parse_expression(normalized))
        if outside:
            print(f"warning: {normalized} is outside the training family: {outside}", file=sys.stderr)
        if normalized not in expressions:
            expressions.append(normalized)
    return expressions


# ------------------------------------------------------------------------------------------ making them


def make_figures(
    out: str | Path,
    weights: Weights,
    expressions: Sequence[str] = LECTURE_EXPRESSIONS,
    model: Seq2SeqTransformer | None = None,
    timeout: float = 30.0,
    echo: Callable[[str], None] = print,
    formats: Sequence[str] = COMMITTED_FORMATS,
    aspect: str = "16:9",
    views: Sequence[str] = ("matrix",),
    animate: Sequence[str] = (),
    kinds: Sequence[str] | None = None,
) -> dict:
    """Write every figure into ``out`` and its ``manifest.json``; returns the manifest.

    ``formats``: any of png, svg, pdf; ``aspect``: the slide, 16:9 or 4:3. ``views``: any of matrix (the
    heatmaps and the grids of heads), lines, model (see :data:`VIEWS`); ``animate``: any of gif, mp4, for
    the step-through of each expression (an MP4 needs ffmpeg on the PATH); ``kinds``: the kinds of attention
    drawn (encoder, decoder, cross; default every kind the model has). ``model`` defaults to the one
    in ``weights``. Files that an earlier manifest listed and that are not
    made again (another ``--expr``) are removed, so the folder holds only current figures.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats {', '.join(unknown) or '(none)'}: use png, svg or pdf")
    if aspect not in ASPECTS:
        raise ValueError(f"aspect {aspect!r}: use {' or '.join(ASPECTS)}")
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise ValueError(f"views {', '.join(unknown) or '(none)'}: use {', '.join(VIEWS)}")
    unknown = [a for a in animate if a not in ANIMATIONS]
    if unknown:
        raise ValueError(f"animations {', '.join(unknown)}: use {' or '.join(ANIMATIONS)}")
    unknown = [k for k in kinds or () if k not in ("encoder", "decoder", "cross")]
    if unknown or (kinds is not None and not kinds):
        raise ValueError(f"kinds {', '.join(unknown) or '(none)'}: use encoder, decoder or cross")
    if "mp4" in animate and shutil.which("ffmpeg") is None:
        raise ValueError("an MP4 needs ffmpeg on the PATH; install it, or animate as a GIF only")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else models.load_weights(weights.path)
    size = ASPECTS[aspect]
    files: list[str] = []

    def save(figure, stem: str, palette: bool = False) -> None:
        files.extend(save_figure(figure, out / stem, formats, palette))
        echo(f"  {', '.join(f'{stem}.{f}' for f in formats)}")

    checker = SympyChecker(timeout)
    records = []
    drawn_kinds: list[str] = []
    with canvas.slide_text():
        save(two_token_figure(size), "attention_two_tokens")
        save(positional_encoding_figure(model, size), "positional_encoding")
        if weights.log is not None:
            save(loss_figure(weights.log, weights.name, size), "loss")
        else:
            echo(f"  no log.csv beside {weights.name}: no loss curve")
        try:
            for expression, stem in zip(expressions, _stems(expressions), strict=True):
                prediction = predict(model, expression, "greedy")
                check = checker.check(prediction.expression, prediction.series)
                records.append(_record(prediction, check))
                echo(f"{expression} → {describe_series(prediction)} [{check.verdict}]")
                for kind in [k for k in kinds_in(prediction.attention) if kinds is None or k in kinds]:
                    if kind not in drawn_kinds:
                        drawn_kinds.append(kind)
                    if "matrix" in views:
                        save(heatmap_figure(prediction, check, kind, timeout, size), f"{stem}_{kind}")
                        for layer in range(len(prediction.attention[kind])):
                            figure = grid_figure(prediction, check, kind, timeout, size, layer)
                            save(figure, f"{stem}_{kind}_heads_layer{layer + 1}")
                    if "lines" in views:
                        figure = lines_figure(prediction, check, kind, timeout, size)
                        save(figure, f"{stem}_{kind}_lines", palette=True)
                    if "model" in views:
                        save(model_figure(prediction, check, kind, timeout, size), f"{stem}_{kind}_model")
                if animate:
                    steps = decoding_steps(model, expression, "greedy")
                    save(step_figure(steps, size), f"{stem}_steps")
                    for fmt in animate:
                        path = animate_decoding(
                            steps, out / f"{stem}_steps.{fmt}", size=size, dpi=ANIMATION_DPI[fmt]
                        )
                        files.append(path.name)
                        echo(f"  {path.name}: {len(steps)} frames, one per written token")
        finally:
            checker.close()

    manifest = {
        "model": models.kind_of(model),
        "weights": weights.name,
        "weights_sha256": weights.sha256(),
        "labutils_version": __version__,
        "matplotlib_version": matplotlib.__version__,
        "made_by": "python -m labutils figures",
        "aspect": aspect,
        "views": list(views),
        "kinds": drawn_kinds,
        "animations": list(animate),
        "expressions": records,
        "files": sorted(files),
    }
    _remove_stale(out, set(files))
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def save_figure(
    figure, path: Path, formats: Sequence[str] = COMMITTED_FORMATS, palette: bool = False
) -> list[str]:
    """Save ``figure`` as ``path``.png (200 dpi), .svg and/or .pdf at its own size (a slide's), reproducibly;
    close it; the file names.

    ``palette`` writes the PNG with 256 colours (Pillow's octree, no dithering): a line view's thousand
    translucent lines blend into so many colours that its full-colour PNG runs to megabytes.
    """
    metadata = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
    names = []
    with matplotlib.rc_context({"svg.hashsalt": SVG_SALT, "svg.fonttype": "path"}):
        for fmt in formats:
            target = path.with_name(f"{path.name}.{fmt}")
            if fmt == "png" and palette:
                buffer = io.BytesIO()
                figure.savefig(buffer, format="png", dpi=DPI, metadata=metadata["png"])
                with Image.open(buffer) as image:
                    indexed = image.convert("RGB").quantize(
                        colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
                    )
                indexed.save(target, format="png", dpi=(DPI, DPI), optimize=True)
            else:
                figure.savefig(target, format=fmt, dpi=DPI, metadata=metadata[fmt])
            names.append(target.name)
    plt.close(figure)
    return names


def _remove_stale(out: Path, made: set[str]) -> None:
    """Remove the files the previous manifest listed and this run did not make (and only those)."""
    try:
        previous = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return
    for name in previous:
        stale = out / str(name)
        if str(name) not in made and stale.parent == out and stale.is_file():
            stale.unlink()


def _stems(expressions: Sequence[str]) -> list[str]:
    """File names from expressions: ``cosh(a*x)**3+tanh(b*x)`` → ``cosh_a_x_pow_3_plus_tanh_b_x``."""
    words = {"**": "pow", "+": "plus", "-": "minus", "/": "over", "*": "", "(": "", ")": ""}
    stems = []
    for expression in expressions:
        tokens = re.findall(r"\*\*|[a-z]+|[0-9]+|[()*+\-/]", expression)
        stem = "_".join(filter(None, (words.get(t, t) for t in tokens)))[:80] or "expression"
        if stem in stems:  # two expressions that differ only in parentheses
            stem += "_" + hashlib.sha256(expression.encode()).hexdigest()[:6]
        stems.append(stem)
    return stems


def _record(prediction: Prediction, check: Check) -> dict:
    return {
        "expression": prediction.expression,
        "model_series": prediction.series,
        "verdict": check.verdict,
        "sympy_series": check.truth,
    }


def stale(folder: str | Path, weights: str | Path | None = None, name: str = SHIPPED_NAME) -> list[str]:
    """Why the figures in ``folder`` do not match ``weights`` (default: the shipped ones); [] if they do."""
    folder = Path(folder)
    weights = Path(weights) if weights is not None else shipped_weights_path()
    remake = "run `python -m labutils figures` (make figures) and commit the folder"
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [f"{folder} has no {MANIFEST}: the figures were never made; {remake}"]
    except ValueError as error:
        return [f"{folder / MANIFEST} is not JSON ({error}); {remake}"]
    problems = []
    if manifest.get("weights") != name:
        problems.append(f"the figures were made from {manifest.get('weights')!r}, not {name}; {remake}")
    if manifest.get("weights_sha256") != sha256_of(weights):
        problems.append(f"{name} changed since the figures were made; {remake}")
    missing = [file for file in manifest.get("files", []) if not (folder / file).is_file()]
    if missing:
        problems.append(f"{folder} lacks {', '.join(missing)}; {remake}")
    return problems


# ------------------------------------------------------------------------------------------ the figures


def two_token_figure(size: tuple[float, float] = ASPECTS["16:9"]):
    """Notebook 04's worked example: two tokens, QKᵀ/√d, and Softmax(QKᵀ/√d) row by row (÷ a₁, a₂).

    The same numbers as the notebook: q₁ = (1, 0), q₂ = (0, 2), k₁ = (1, 1), k₂ = (−1, 1), d = 2, so that
    query 1 puts 0.80 of its weight on token 1 and query 2 splits its weight 0.50 / 0.50. The weights come
    from the package's own ``scaled_dot_product_attention``, and each row sums to one.
    """
    Q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # rows q₁, q₂
    K = torch.tensor([[1.0, 1.0], [-1.0, 1.0]])  # rows k₁, k₂
    _, A = scaled_dot_product_attention(Q, K, K)  # A (2, 2): Softmax(QKᵀ/√d)
    d = Q.shape[1]
    scores = (Q @ K.T / math.sqrt(d)).numpy()  # (2, 2)
    a = np.exp(scores).sum(axis=1)  # a₁, a₂: each row's normalizer
    A = A.numpy()

    figure, (vectors, middle, right) = plt.subplots(
        1, 3, figsize=size, layout="constrained", gridspec_kw={"width_ratios": (0.9, 1.1, 1.1)}
    )
    colours = {"q": "#0072B2", "k": "#D55E00"}
    offsets = {"q": (0.08, 0.08), "k": (-0.25, 0.08)}
    for name, rows in (("q", Q), ("k", K)):
        for i, (u, v) in enumerate(rows.tolist(), start=1):
            style = "-" if name == "q" else "--"
            vectors.annotate(
                "",
                (u, v),
                (0, 0),
                arrowprops={"arrowstyle": "-|>", "color": colours[name], "lw": 2.5, "ls": style},
            )
            dx, dy = offsets[name]
            label = f"${name}_{i} = ({u:g}, {v:g})$"
            vectors.text(u + dx, v + dy, label, color=colours[name], fontsize=canvas.pt(14))
    vectors.set(xlim=(-1.6, 2.1), ylim=(-0.5, 2.5), aspect="equal")
    vectors.set_title("two tokens as vectors (d = 2)")
    vectors.axhline(0, color="#999", lw=0.6)
    vectors.axvline(0, color="#999", lw=0.6)
    vectors.set_xlabel("component 1")
    vectors.set_ylabel("component 2")

    limit = float(np.abs(scores).max())
    image = middle.imshow(scores, cmap="RdBu_r", vmin=-limit, vmax=limit)
    for i in range(2):
        for j in range(2):
            text = f"$q_{i + 1}\\cdot k_{j + 1}/\\sqrt{{d}}$\n= {scores[i, j]:.2f}"
            middle.text(
                j, i, text, ha="center", va="center", fontsize=canvas.pt(14), color=_ink(scores[i, j] / limit)
            )
    middle.set_xticks([0, 1], ["$k_1$", "$k_2$"])
    middle.set_yticks([0, 1], ["$q_1$", "$q_2$"])
    middle.set_xlabel("key")
    middle.set_ylabel("query")
    middle.set_title("$QK^T/\\sqrt{d}$: query · key")
    figure.colorbar(image, ax=middle, label="scaled dot product", shrink=0.6)

    title = "$\\mathrm{Softmax}(QK^T/\\sqrt{d})$: rows ÷ $a_i$"
    plot_attention(A, ["q1", "q2"], ["k1", "k2"], kind=None, head=None, ax=right, title=title)
    right.set_xticks([0, 1], ["$k_1$", "$k_2$"], rotation=0)
    right.set_yticks([0, 1], [f"$q_{i}$\n$a_{i}$ = {a[i - 1]:.2f}" for i in (1, 2)])
    right.set_xlabel("key")
    right.set_ylabel("query")
    right.set_aspect("equal")
    bar = right.images[0].colorbar  # as long as the other panels' bars, not the slide's height
    bar.remove()
    figure.colorbar(right.images[0], ax=right, label="attention weight", shrink=0.6)
    for i in range(2):
        for j in range(2):
            text = f"$e^{{q_{i + 1}\\cdot k_{j + 1}/\\sqrt{{d}}}}/a_{i + 1}$\n= {A[i, j]:.2f}"
            right.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=canvas.pt(14),
                color=_ink(2 * A[i, j] - 1, "viridis"),
            )
    figure.suptitle(
        "Attention for two tokens: query 1 gives 0.80 of its weight to token 1, query 2 splits 0.50 / 0.50"
    )
    return figure


def _ink(value: float, cmap: str = "RdBu_r") -> str:
    """Black or white text, whichever reads on a cell of colour ``value`` (−1 … 1 across the colour map)."""
    if cmap == "viridis":
        return "white" if value < 0.2 else "black"
    return "white" if abs(value) > 0.6 else "black"


def positional_encoding_figure(model: torch.nn.Module, size: tuple[float, float] = ASPECTS["16:9"]):
    """The source side's positional encoding (positions × d_model) beside four of its dimensions as curves.

    The decoder-only model has one encoding, over its whole sequence.

    The heatmap's columns are the even dimensions, then the odd ones (sines, then cosines), so that it shows
    smooth bands rather than alternating stripes. The dimensions drawn as curves are slow enough (a
    sinusoidal wavelength of about 20 positions or more) that their values at whole positions trace a
    readable curve, and far enough apart that their arrows do not overlap.
    """
    encoding = model.src_pos if hasattr(model, "src_pos") else model.pos
    pe = encoding.pe if hasattr(encoding, "pe") else encoding.embedding.weight.detach()  # (max_len, d_model)
    pe = pe.reshape(-1, pe.shape[-1])
    positions, d_model = pe.shape
    dims = sorted({d_model // 8, d_model // 8 + 1, d_model // 4, d_model // 2})  # a sine and its cosine
    # The sines (even dimensions), then the cosines (odd): neighbouring columns then vary alike.
    columns = [*range(0, d_model, 2), *range(1, d_model, 2)]
    kind = model.config.positional
    side = "the source" if hasattr(model, "src_pos") else "the sequence"
    title = f"{kind} positional encoding of {side}: {positions} positions × d_model = {d_model}"
    figure, axes = plt.subplots(
        1, 2, figsize=size, layout="constrained", gridspec_kw={"width_ratios": (1.15, 1)}
    )
    xlabel = "dimension: the even ones (sines), then the odd ones (cosines)"
    plot_positional_encoding(pe, ax=axes, dims=dims, title=title, columns=columns, xlabel=xlabel)
    axes[0].set_title("")
    figure.suptitle(title)
    return figure


def loss_figure(log: Path, name: str, size: tuple[float, float] = ASPECTS["16:9"]):
    """The training curves of the run that made the weights, its stages marked."""
    shipped = {SHIPPED_NAME: "the shipped model", SHIPPED_DECODER_ONLY: "the shipped decoder-only model"}
    who = shipped.get(name, name)
    figure, ax = plt.subplots(figsize=size, layout="constrained")
    plot_losses(log, ax=ax, title=f"Training of {who}: loss and validation exact match")
    return figure


def heatmap_figure(
    prediction: Prediction,
    check: Check,
    kind: str,
    timeout: float,
    size: tuple[float, float] = ASPECTS["16:9"],
):
    """One head of the last layer: the sharpest one (lowest mean entropy of its rows)."""
    layer, head, what = _sharpest_of_last_layer(prediction, kind)
    title = _title(what, prediction, check, timeout, _columns(size))
    figure, ax = plt.subplots(figsize=size, layout="constrained")
    rows = _rows(prediction, kind)
    plot_attention(prediction.attention, kind=kind, layer=layer, head=head, title=title, ax=ax, **rows)
    return figure


def grid_figure(
    prediction: Prediction,
    check: Check,
    kind: str,
    timeout: float,
    size: tuple[float, float] = ASPECTS["16:9"],
    layer: int = -1,
):
    """Every head of one layer of one kind of attention (``layer`` from 0), on one slide."""
    maps = prediction.attention[kind]
    layer = layer % len(maps)
    n_heads, lq, lk = maps[layer].shape[1:]
    wide, tall = (lq, lk) if kind == "cross" and lq > lk else (lk, lq)  # landscape, as plot_attention draws
    what = f"{title_of(kind, prediction.attention)}, layer {layer + 1} of {len(maps)}: its {n_heads} heads"
    title = _title(what, prediction, check, timeout, _columns(size))

    def badness(ncols: int) -> float:  # how far the panels' shape is from the maps' (square cells), gaps
        nrows = math.ceil(n_heads / ncols)
        return abs(math.log((size[0] / ncols) / (size[1] / nrows) / (wide / tall))) + 0.5 * (-n_heads % ncols)

    ncols = min(range(1, n_heads + 1), key=badness)
    figure, axes = plt.subplots(
        math.ceil(n_heads / ncols), ncols, figsize=size, layout="constrained", squeeze=False
    )
    for extra in axes.flat[n_heads:]:
        extra.remove()
    plot_attention_grid(
        prediction.attention,
        kind=kind,
        layers=layer,
        axes=axes.flat[:n_heads],
        title=title,
        **_rows(prediction, kind),
    )
    return figure


def lines_figure(
    prediction: Prediction,
    check: Check,
    kind: str,
    timeout: float,
    size: tuple[float, float] = ASPECTS["16:9"],
):
    """The line view of one head of the last layer, the sharpest (as :func:`heatmap_figure` chooses it)."""
    layer, head, what = _sharpest_of_last_layer(prediction, kind)
    title = _title(f"{what}: line opacity = attention weight", prediction, check, timeout, _columns(size))
    figure, ax = plt.subplots(figsize=size, layout="constrained")
    rows = _rows(prediction, kind)
    plot_attention_lines(prediction.attention, kind=kind, layer=layer, head=head, ax=ax, title=title, **rows)
    return figure


def model_figure(
    prediction: Prediction,
    check: Check,
    kind: str,
    timeout: float,
    size: tuple[float, float] = ASPECTS["16:9"],
):
    """The model view: every layer × head of one kind of attention, on one slide."""
    maps = prediction.attention[kind]
    n_heads = maps[0].shape[1]
    what = f"{title_of(kind, prediction.attention)}: all {len(maps)} layers × {n_heads} heads"
    title = _title(what, prediction, check, timeout, _columns(size))
    figure = plt.figure(figsize=size, layout="constrained")
    plot_model_view(prediction.attention, kind=kind, figure=figure, title=title)
    return figure


def step_figure(steps: DecodingSteps, size: tuple[float, float] = ASPECTS["16:9"], step: int | None = None):
    """One step of the step-through, the still beside its animation: by default the step whose attention
    (the mean over the last layer's heads) is the most concentrated on one source token."""
    if step is None:
        mean = steps.cross[-1].mean(dim=0)  # (T, Ls)
        step = int(mean.max(dim=-1).values.argmax())
    figure = plt.figure(figsize=size)
    plot_decoding_step(steps, step, figure=figure)
    return figure


def _columns(size: tuple[float, float]) -> int:
    """Characters per title line that fit the slide's width at the title's size."""
    return int(size[0] * 72 / (0.6 * (canvas.SLIDE_TEXT + 2))) - 8


def _sharpest_of_last_layer(prediction: Prediction, kind: str) -> tuple[int, int, str]:
    """The last layer of ``kind``, its sharpest head, and the words that name them on a slide."""
    maps = prediction.attention[kind]
    layer = len(maps) - 1
    head = _sharpest_head(maps[layer][0].numpy())
    what = (
        f"{title_of(kind, prediction.attention)}, layer {layer + 1} of {len(maps)}, head {head + 1} "
        f"(the sharpest of {maps[layer].shape[1]})"
    )
    return layer, head, what


def _sharpest_head(weights: np.ndarray) -> int:
    """The head whose rows are the most concentrated: weights ``(H, Lq, Lk)``."""
    p = np.clip(weights, 1e-12, 1.0)
    entropy = -(weights * np.log(p)).sum(-1).mean(-1)  # (H,)
    return int(np.argmin(entropy))


def _title(what: str, prediction: Prediction, check: Check, timeout: float, columns: int = 72) -> str:
    """What the map is, the expression, whether the model's series is right, the series (and sympy's)."""
    verdict = metrics.verdict_text(check.verdict, timeout, check.detail)
    lines = [*textwrap.wrap(what, columns), f"{prediction.expression}   →   model (greedy): {verdict}"]
    lines += _wrap(f"model: {describe_series(prediction)}", columns)
    if check.verdict != metrics.OK and check.truth:
        lines += _wrap(f"sympy: {check.truth}", columns)
    return "\n".join(lines)


def _wrap(text: str, columns: int) -> list[str]:
    """Break a series at its + and − signs, so that no line is much longer than ``columns``."""
    pieces = re.split(r"(?<=[^*(])(?=[+-])", text)
    lines, line = [], ""
    for piece in pieces:
        if line and len(line) + len(piece) > columns:
            lines.append(line)
            line = "    "
        line += piece
    while len(line) > columns:  # a single term longer than a line
        lines.append(line[:columns])
        line = "    " + line[columns:]
    return lines + [line]


def _rows(prediction: Prediction, kind: str) -> dict:
    """The rows' ``reads → predicts`` labels of the decoder's maps (none for the encoder's)."""
    if kind not in ("decoder", "cross"):
        return {}
    attention = prediction.attention
    predicted = next_tokens(attention["target_tokens"], written=prediction.series)
    if kind == "decoder" and "sequence_tokens" in attention:  # a decoder-only model: its whole sequence
        predicted = [None] * (len(attention["sequence_tokens"]) - len(predicted)) + predicted
    return {"predicted_tokens": predicted}
