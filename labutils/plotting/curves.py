"""Training curves and positional encodings: a run's losses and accuracy, and an encoding as a heatmap."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from labutils.plotting import canvas

_STYLES = ("-", "--", "-.", ":")


def plot_losses(
    log: str | Path, ax: Axes | None = None, save: str | Path | None = None, *, title: str | None = None
) -> Figure:
    """Train and validation loss against step (log scale), and validation exact match on a second axis.

    ``log`` is a run's ``log.csv`` or the run folder holding it (columns ``step,…,train_loss,val_loss,
    val_exact,…``, as ``labutils.train`` writes them; empty cells are skipped). When the log has a
    ``stage`` column (a run continued from trained weights), a dotted line marks where each stage began and
    each stretch is named at the top. ``title`` defaults to the run's folder name.
    """
    save_path = canvas.check_save(save)
    path, columns, stages = _read_log(log)
    fig, ax, _ = canvas.figure_for(ax, ((8.0, 4.8), None))
    step = columns["step"]
    lines = []
    for name, label, colour, marker in (
        ("train_loss", "train loss", canvas.COLOURS[0], None),
        ("val_loss", "validation loss", canvas.COLOURS[1], "o"),
    ):
        keep = np.isfinite(columns[name]) & (columns[name] > 0)  # log scale: only positive losses
        lines += ax.plot(
            step[keep], columns[name][keep], color=colour, marker=marker, ms=3.5, lw=1.4, label=label
        )
    if any(line.get_xydata().size for line in lines):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (cross-entropy, log scale)")
    ax.grid(True, which="major", alpha=0.3)

    exact_ax = ax.twinx()
    exact = columns["val_exact"]
    keep = np.isfinite(exact)
    style = {"color": canvas.COLOURS[2], "marker": "s", "ms": 3.5, "lw": 1.4, "ls": "--"}
    lines += exact_ax.plot(step[keep], exact[keep], label="validation exact match", **style)
    exact_ax.set_ylim(0, max(1.0, float(np.max(exact[keep], initial=0)) * 1.05))
    exact_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    exact_ax.set_ylabel("validation exact match", color=canvas.COLOURS[2])
    labels = _mark_stages(ax, step, stages)
    ax.legend(
        handles=lines, loc="lower left", bbox_to_anchor=(0, 1), ncols=3, frameon=False, fontsize=canvas.pt(8)
    )
    ax.set_title(title or f"training run: {path.parent.name or path.name}", pad=canvas.pt(8) * 3)
    _unclash(ax, labels)
    _make_room(ax, lines, labels)
    return canvas.finish(fig, save_path)


def _mark_stages(ax, step: np.ndarray, stages: list[str] | None) -> list:
    """A dotted line where each stage of the run began, and the stage's name at the top of its stretch (the
    names' texts are returned)."""
    if not stages or len(set(stages)) < 2:
        return []
    starts = [0] + [i for i in range(1, len(stages)) if stages[i] != stages[i - 1]]
    ends = starts[1:] + [len(stages)]
    top = ax.get_xaxis_transform()  # x in data, y in axes fraction
    labels = []
    for n, (start, end) in enumerate(zip(starts, ends)):
        # A stage continues from the last step of the one before: its line is drawn there.
        begin = step[start - 1] if start > 0 else step[0]
        if start > 0:
            ax.axvline(begin, color="#555555", ls=":", lw=1.2)
        if n % 2:
            ax.axvspan(begin, step[end - 1], color="#000000", alpha=0.04, lw=0)
        label = ax.text(
            begin, 0.98, f" stage {stages[start]}", transform=top, ha="left", va="top",
            fontsize=canvas.pt(9), color="#333333",
        )  # fmt: skip
        labels.append(label)
    return labels


def _unclash(ax, labels: list) -> None:
    """Move each label that would overlap the one before it one line down (a short stage's name), measured
    in the figure as it will be drawn (its layout done)."""
    if len(labels) < 2:
        return
    ax.figure.draw_without_rendering()
    renderer = ax.figure.canvas.get_renderer()
    for previous, label in zip(labels, labels[1:]):
        before = previous.get_window_extent(renderer)
        if label.get_window_extent(renderer).x0 < before.x1:
            x, _ = label.get_position()
            line = 1.2 * before.height / ax.bbox.height  # in axes fraction, as the labels' y
            label.set_position((x, previous.get_position()[1] - line))


def _make_room(ax, curves: list, labels: list) -> None:
    """Keep the stage names clear: widen the step axis so that the last names end inside it, then raise the
    top of each y axis until no point of its ``curves`` lies under a name. A linear axis (exact match) keeps
    its ticks from 0 to 100%."""
    if not labels:
        return
    pad = 4.0  # pixels between a name and the axes' edge
    fig = ax.figure
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    left, right = ax.get_xlim()
    width = ax.bbox.width
    new_right = right
    for label in labels:
        box = label.get_window_extent(renderer)
        if box.x1 > ax.bbox.x1 - pad:
            share = (box.width + pad) / width  # of the axes' width, taken by the name from its line on
            begin = label.get_position()[0]
            new_right = max(new_right, (begin - share * left) / (1 - share))
    if new_right > right:
        ax.set_xlim(left, new_right)
        fig.draw_without_rendering()

    boxes = [label.get_window_extent(renderer) for label in labels]
    lowest = min((box.y0 - ax.bbox.y0) / ax.bbox.height for box in boxes) - 0.02  # in axes fraction
    for axis in {line.axes for line in curves}:
        points = [line.get_xydata() for line in curves if line.axes is axis and line.get_xydata().size]
        if not points:
            continue
        xy = np.concatenate(points)
        xy = xy[np.all(np.isfinite(xy), axis=1)]
        on_screen = axis.transData.transform(xy)
        under = np.zeros(len(xy), dtype=bool)
        for box in boxes:
            under |= (on_screen[:, 0] >= box.x0 - pad) & (on_screen[:, 0] <= box.x1 + pad)
        if not under.any():
            continue
        log = axis.get_yscale() == "log"
        bottom, top = np.log10(axis.get_ylim()) if log else axis.get_ylim()
        highest = float(np.max(np.log10(xy[under, 1]) if log else xy[under, 1]))
        if (highest - bottom) / (top - bottom) > lowest:
            new_top = bottom + (highest - bottom) / lowest
            percent_ticks = [t for t in axis.get_yticks() if 0 <= t <= 1]
            axis.set_ylim(axis.get_ylim()[0], 10**new_top if log else new_top)
            if not log:
                axis.set_yticks(percent_ticks)


def plot_positional_encoding(
    pe,
    ax: Axes | Sequence[Axes] | None = None,
    save: str | Path | None = None,
    *,
    dims: Sequence[int] | None = None,
    cmap: str = "RdBu_r",
    title: str = "positional encoding",
    columns: Sequence[int] | None = None,
    xlabel: str = "dimension (0 … d_model − 1)",
) -> Figure:
    """A ``(max_len, d_model)`` encoding as a heatmap (positions down, dimensions across) centred at 0.

    ``dims`` adds a panel below with those dimensions as curves against position; ``ax`` is then a pair of
    Axes (heatmap, curves). Leading or middle axes of size 1 (``(1, max_len, d_model)`` buffers) are dropped.
    ``columns`` draws the dimensions in that order (e.g. the sines, then the cosines, so that neighbouring
    columns vary alike); ``dims`` still names dimensions of ``pe``, and their arrows find their columns.
    """
    save_path = canvas.check_save(save)
    pe = canvas.to_numpy(pe).astype(float)
    if pe.ndim == 3 and 1 in pe.shape[:2]:
        pe = pe.reshape(-1, pe.shape[-1])
    if pe.ndim != 2:
        raise ValueError(f"a positional encoding is (max_len, d_model); got shape {tuple(pe.shape)}")
    dims = (
        [] if dims is None else [canvas.check_index(d, pe.shape[1], "dimension", "d_model is") for d in dims]
    )
    if ax is None:
        if dims:
            fig, (heat_ax, curve_ax) = plt.subplots(
                2, 1, figsize=(8, 8.5), layout="constrained", gridspec_kw={"height_ratios": (2, 1)}
            )
        else:
            fig, heat_ax = plt.subplots(figsize=(8, 5.5), layout="constrained")
    else:
        given = [ax] if isinstance(ax, Axes) else list(ax)
        if len(given) != (2 if dims else 1):
            raise ValueError(
                "ax is one Axes for the heatmap, or a pair (heatmap, curves) when dims are given"
            )
        heat_ax, curve_ax = given[0], given[-1]
        fig = canvas.root_figure(heat_ax.figure)
    order = list(range(pe.shape[1])) if columns is None else [int(c) for c in columns]
    if sorted(order) != list(range(pe.shape[1])):
        raise ValueError(f"columns must order all {pe.shape[1]} dimensions, each once")
    limit = float(np.nanmax(np.abs(pe), initial=0.0)) or 1.0
    # Many narrow columns: averaged down to the pixels ("antialiased"), not sampled into moiré stripes.
    image = heat_ax.imshow(
        pe[:, order], cmap=cmap, vmin=-limit, vmax=limit, aspect="auto", interpolation="antialiased"
    )
    fig.colorbar(image, ax=heat_ax, label="value")
    heat_ax.set_xlabel(xlabel)
    heat_ax.set_ylabel("position")
    heat_ax.set_title(title, pad=canvas.pt(7) * 3 if dims else 6)
    for i, d in enumerate(dims):
        colour = canvas.COLOURS[i % len(canvas.COLOURS)]
        # An arrow above the heatmap points at the column that each curve below draws.
        where = {"xycoords": ("data", "axes fraction"), "xytext": (0, 12), "textcoords": "offset points"}
        arrow = {"arrowprops": {"arrowstyle": "-|>", "color": colour}, "ha": "center", "va": "bottom"}
        heat_ax.annotate(str(d), (order.index(d), 1), fontsize=canvas.pt(7), color=colour, **where, **arrow)
        # Positions are whole numbers: a marker at each, joined by a line to guide the eye.
        style = {"color": colour, "ls": _STYLES[i % len(_STYLES)], "lw": 1.4, "marker": "o", "ms": 2.5}
        curve_ax.plot(np.arange(pe.shape[0]), pe[:, d], label=f"dimension {d}", **style)
    if dims:
        curve_ax.set_xlabel("position")
        curve_ax.set_ylabel("value")
        curve_ax.set_xlim(0, pe.shape[0] - 1)
        curve_ax.grid(True, alpha=0.3)
        curve_ax.legend(
            loc="lower left",
            bbox_to_anchor=(0, 1),
            ncols=min(len(dims), 2),
            fontsize=canvas.pt(8),
            frameon=False,
        )
    return canvas.finish(fig, save_path)


def _read_log(log) -> tuple[Path, dict[str, np.ndarray], list[str] | None]:
    path = Path(log)
    if path.is_dir():
        path = path / "log.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"no training log at {path}: give a run's log.csv or the run folder holding it"
        )
    needed = ("step", "train_loss", "val_loss", "val_exact")
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        fields = reader.fieldnames or []
        missing = [name for name in needed if name not in fields]
        if missing:
            raise ValueError(
                f"{path} lacks column(s) {', '.join(missing)}; it has: {', '.join(fields) or 'no header'}"
            )
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path} has a header but no rows yet: no validation has run")

    def number(row_number, name, text):
        if text is None or not text.strip():
            return math.nan  # a step without this value
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{path}, row {row_number}, column {name}: {text!r} is not a number") from None

    columns = {
        name: np.array([number(i + 2, name, row[name]) for i, row in enumerate(rows)]) for name in needed
    }
    stages = [(row["stage"] or "").strip() for row in rows] if "stage" in fields else None
    return path, columns, stages
