"""Decoding step by step: at each step, the series so far, the model's top choices, and where it looked.

The decoder writes the series one token at a time. At step t it reads the series so far and writes one more
token: the model's most likely tokens and their probabilities show how sure it was, and the step's row of
cross-attention shows which tokens of the expression it looked at, as a heatmap row (with the weights
written in) and as lines from the step to the source tokens (opacity = weight), for one layer and one head
or the mean over the heads. :func:`animate_decoding` makes a GIF (or an MP4, with ffmpeg) of every step,
one frame per written token, for slides.

The steps are what :func:`labutils.decode.decoding_steps` returns: any object with the attributes
``expression``, ``source_tokens`` (Ls), ``read`` and ``written`` (T tokens: what step t read and wrote),
``top`` (per step, ``[(token, probability), …]`` best first) and ``cross`` (per layer, ``(H, T, Ls)``);
``architecture`` ``"decoder-only"`` names the maps as that model has them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import animation
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from PIL import Image

from labutils.plotting import canvas, heatmaps, maps
from labutils.plotting.lines import MEAN, MEAN_COLOUR, head_colour
from labutils.tokens import EOS

WRITTEN_COLOUR = canvas.COLOURS[5]  # Okabe–Ito vermillion: the token written, in the series and the bars
OTHER_COLOUR = "#9a9a9a"
#: A notebook's frame, in inches; slides pass a figure of their size.
SIZE = (12.0, 6.75)
ANIMATIONS = {".gif": "pillow", ".mp4": "ffmpeg"}


def plot_decoding_step(
    steps,
    step: int,
    layer: int = -1,
    head: int | str = MEAN,
    figure=None,
    save: str | Path | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """One step of decoding: the series so far, the top choices, and the step's cross-attention row.

    ``step``, ``layer`` and ``head`` count from 0 (negative from the end); ``head="mean"`` averages the
    heads. ``figure`` (a Figure or SubFigure, laid out by hand so that the frames of an animation stand
    still) defaults to a new one of :data:`SIZE`. Returns the figure; ``save`` writes it (.png, .svg, .pdf).
    """
    save_path = canvas.check_save(save)
    n_steps = len(steps.written)
    step = canvas.check_index(step, n_steps, "step", "this series has")
    layer = canvas.check_index(layer, len(steps.cross), "layer", "the cross-attention has")
    heads = canvas.to_numpy(steps.cross[layer]).astype(float)  # (H, T, Ls)
    if heads.ndim != 3 or heads.shape[1] != n_steps or heads.shape[2] != len(steps.source_tokens):
        raise ValueError(
            f"steps.cross[{layer}] has shape {tuple(heads.shape)}; expected (H, {n_steps} steps, "
            f"{len(steps.source_tokens)} source tokens)"
        )
    if head == MEAN:
        row, colour, which = heads[:, step].mean(axis=0), MEAN_COLOUR, f"mean of {heads.shape[0]} heads"
    elif isinstance(head, str):
        raise ValueError(f"head {head!r}: give a head number (from 0) or 'mean'")
    else:
        h = canvas.check_index(head, heads.shape[0], "head", "the cross-attention has")
        row, colour, which = heads[h, step], head_colour(h), f"head {h + 1}"

    if figure is None:
        figure = plt.figure(figsize=SIZE)
    width, height = canvas.root_figure(figure).get_size_inches()
    grid = figure.add_gridspec(
        3,
        2,
        height_ratios=(0.55, 3.0, 1.0),
        width_ratios=(1.0, 2.6),
        left=0.07,
        right=0.98,
        top=0.9,
        bottom=0.12,
        hspace=0.45,
        wspace=0.12,
    )
    text_ax = figure.add_subplot(grid[0, :])
    bars_ax = figure.add_subplot(grid[1:, 0])
    lines_ax = figure.add_subplot(grid[1, 1])
    row_ax = figure.add_subplot(grid[2, 1], sharex=lines_ax)

    written, read = steps.written[step], steps.read[step]
    _series_so_far(text_ax, steps.written[:step], written, width)
    _top_choices(bars_ax, steps.top[step], written, step)
    decoder_only = getattr(steps, "architecture", "") == "decoder-only"
    name = maps.title_of("cross", decoder_only=decoder_only)
    _looks(lines_ax, row_ax, row, steps.source_tokens, colour, (width, height))
    lines_ax.set_title(
        f"{name}, layer {layer + 1}, {which}:\nwhere this step looks in the expression (line opacity = weight)",
        fontsize=canvas.pt(12),
    )
    lines_ax.annotate(
        f"step {step + 1} reads {read}, writes {written}",
        (centre_of(steps.source_tokens), 1.0),
        xytext=(12, 0),
        textcoords="offset points",
        ha="left",
        va="center",
        fontsize=canvas.pt(13),
        color=WRITTEN_COLOUR,
        fontweight="bold",
    )
    if title is None:
        title = f"{steps.expression}:  step {step + 1} of {n_steps}"
    figure.suptitle(title, y=0.97, fontsize=canvas.pt(16))
    return canvas.finish(canvas.root_figure(figure), save_path)


def animate_decoding(
    steps,
    save: str | Path,
    layer: int = -1,
    head: int | str = MEAN,
    *,
    size: tuple[float, float] = SIZE,
    dpi: int = 100,
    seconds_per_step: float = 1.0,
) -> Path:
    """Write every step of decoding, one frame per written token, as an animated GIF or an MP4.

    ``save`` ends in ``.gif`` (Pillow, which matplotlib needs anyway) or ``.mp4`` (needs ``ffmpeg`` on the
    PATH). Frames are ``size`` inches at ``dpi``, each shown ``seconds_per_step``; the last one holds as long.
    Returns the path written.
    """
    path = Path(save)
    kind = ANIMATIONS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"cannot animate to {str(path)!r}: use a file name ending in .gif or .mp4")
    if kind == "ffmpeg" and shutil.which("ffmpeg") is None:
        raise ValueError(f"cannot write {str(path)!r}: an MP4 needs ffmpeg on the PATH (a GIF does not)")
    n_steps = len(steps.written)
    if n_steps == 0:
        raise ValueError("no steps to animate: the model wrote nothing")
    canvas.check_index(layer, len(steps.cross), "layer", "the cross-attention has")
    figure = plt.figure(figsize=size)

    def draw(t: int):
        figure.clear()
        plot_decoding_step(steps, t, layer, head, figure=figure)
        return []

    fps = 1.0 / seconds_per_step
    writer = (
        OnePaletteGifWriter(fps=fps)
        if kind == "pillow"
        else animation.FFMpegWriter(fps=fps, codec="h264", extra_args=["-pix_fmt", "yuv420p"])
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        movie = animation.FuncAnimation(figure, draw, frames=n_steps, init_func=lambda: [], repeat=False)
        movie.save(path, writer=writer, dpi=dpi, savefig_kwargs={"facecolor": "white"})
    finally:
        plt.close(figure)
    return path


class OnePaletteGifWriter(animation.PillowWriter):
    """matplotlib's PillowWriter, with every frame on one palette: a GIF then stores only the part of each
    frame that changed (the layout stands still from step to step), a fraction of the size.

    The palette is 256 colours that cover a sample of the frames (Pillow's octree); frames are mapped to it
    without dithering, so flat areas stay flat (and unchanged between frames).
    """

    def finish(self):
        frames = [frame.convert("RGB") for frame in self._frames]
        sample = frames[:: max(1, len(frames) // 12)]
        width, height = frames[0].size
        montage = Image.new("RGB", (width, height * len(sample)))
        for i, frame in enumerate(sample):
            montage.paste(frame, (0, i * height))
        palette = montage.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
        indexed = [frame.quantize(palette=palette, dither=Image.Dither.NONE) for frame in frames]
        indexed[0].save(
            self.outfile, save_all=True, append_images=indexed[1:], duration=int(1000 / self.fps), loop=0
        )


# ------------------------------------------------------------------------------------------ the panels


def centre_of(source_tokens) -> float:
    """Where the step stands, above the middle of the source tokens (at 0 … Ls − 1)."""
    return (len(source_tokens) - 1) / 2


def _series_so_far(ax, before, written: str, width_in: float) -> None:
    """The series written before this step, then the token written now, boxed."""
    ax.set_axis_off()
    size = canvas.pt(16)
    columns = int(width_in * 0.9 * 72 / (0.62 * size)) - 16  # monospace characters that fit
    text = "".join(before)
    if len(text) > columns:
        text = "…" + text[len(text) - columns + 1 :]
    shown = ax.text(
        0.0, 0.5, "series so far:  " + text, family="monospace", fontsize=size, va="center", ha="left"
    )
    ax.annotate(
        written if written != EOS else "<eos> (the end)",
        (1.0, 0.5),
        xycoords=shown,
        xytext=(4, 0),
        textcoords="offset points",
        family="monospace",
        fontsize=size,
        fontweight="bold",
        va="center",
        ha="left",
        color="white",
        bbox={"boxstyle": "round,pad=0.25", "facecolor": WRITTEN_COLOUR, "edgecolor": "none"},
    )


def _top_choices(ax, top, written: str, step: int) -> None:
    """Horizontal bars of the most likely tokens at this step, best on top, the written one coloured."""
    tokens = [token for token, _ in top]
    probabilities = np.array([p for _, p in top], dtype=float)
    y = np.arange(len(top))[::-1]
    colours = [WRITTEN_COLOUR if token == written else OTHER_COLOUR for token in tokens]
    ax.barh(y, probabilities, color=colours, height=0.7)
    ax.set_yticks(y, tokens, family="monospace", fontsize=canvas.pt(14))
    for yi, p in zip(y, probabilities, strict=True):
        ax.annotate(
            _percent(p),
            (p, yi),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            ha="left",
            fontsize=canvas.pt(12),
        )
    ax.set_xlim(0, 1.35)
    ax.set_xticks([0, 0.5, 1.0], ["0", "0.5", "1"], fontsize=canvas.pt(11))
    ax.set_xlabel("probability", fontsize=canvas.pt(12))
    ax.spines[["top", "right"]].set_visible(False)
    title = f"the model's top {len(top)} at step {step + 1}"
    if written not in tokens:
        title += f"\n(wrote {written}, not among them)"
    ax.set_title(title, fontsize=canvas.pt(12))


def _percent(p: float) -> str:
    """A probability as a percentage that never claims certainty it does not have (0.99995 is not 100%)."""
    if p >= 0.9995:  # a softmax gives every token some probability: never all of it
        return ">99.9%"
    if p < 0.0005:
        return "<0.1%"
    return f"{100 * p:.1f}%"


def _looks(lines_ax, row_ax, row: np.ndarray, source_tokens, colour: str, size_in) -> None:
    """Lines from the step (top) to each source token (bottom), and the same weights as a heatmap row."""
    n = len(source_tokens)
    x = np.arange(n)
    centre = centre_of(source_tokens)
    order = np.argsort(row, kind="stable")  # the strongest on top
    rgb = to_rgb(colour)
    for j in order:
        if row[j] >= 0.005:
            lines_ax.plot(
                [centre, x[j]],
                [1.0, 0.0],
                color=(*rgb, float(np.clip(row[j], 0, 1))),
                lw=3,
                solid_capstyle="round",
                gid="attention-line",
            )
    lines_ax.scatter([centre], [1.0], s=60, color=WRITTEN_COLOUR, zorder=3)
    lines_ax.scatter(x, np.zeros(n), s=25, color="#555555", zorder=3)
    lines_ax.set_ylim(-0.05, 1.05)
    lines_ax.set_axis_off()

    codes = np.zeros((1, n), np.int8)
    heatmaps.draw_cells(row_ax, row[None, :], codes, "viridis", 1.0)
    row_ax.set_xlim(-0.5, n - 0.5)
    cell_pt = 72 * size_in[0] * 0.6 / max(n, 1)
    value_size = float(np.clip(0.4 * cell_pt, canvas.pt(7), canvas.pt(13)))
    if 4 * 0.62 * value_size <= cell_pt:  # "0.62" fits in a cell
        for j, weight in enumerate(row):
            row_ax.text(
                j,
                0,
                f"{weight:.2f}",
                ha="center",
                va="center",
                fontsize=value_size,
                color="white" if weight < 0.5 else "black",
            )
    token_size = float(np.clip(0.6 * cell_pt, canvas.pt(8), canvas.pt(15)))
    row_ax.set_xticks(x, list(source_tokens), fontsize=token_size, family="monospace")
    for label, token in zip(row_ax.get_xticklabels(), source_tokens, strict=True):
        if len(token) * 0.62 * token_size > 0.95 * cell_pt:  # a long token stands upright, the rest across
            label.set_rotation(90)
    row_ax.set_yticks([])
    row_ax.tick_params(axis="x", length=0)
    row_ax.set_xlabel("the expression's tokens (keys) and the step's weights", fontsize=canvas.pt(12))
