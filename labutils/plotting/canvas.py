"""What every plot of :mod:`labutils.plotting` draws on: arrays in, a figure and its axes, saving.

Shared by the heatmaps and the curves; not meant for use outside ``labutils.plotting``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

# Okabe–Ito colours, told apart by colour-blind eyes; curves also differ in line style for grey-scale prints.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
CELLS = {"aspect": "auto", "interpolation": "nearest"}  # imshow: one sharp rectangle per array entry


def to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor; plotting needs no torch of its own
        x = x.detach().cpu()
        x = x.float() if x.is_floating_point() else x
    return np.asarray(x)


def check_index(index, n: int, name: str, owner: str) -> int:
    if not isinstance(index, (int, np.integer)) or not -n <= index < n:
        raise ValueError(f"{name} {index!r} is out of range: {owner} {n} {name}s (0..{n - 1})")
    return int(index) % n


def figure_for(ax, sizes):
    """(figure, axes, size of the map in inches): a new figure of ``sizes = (figure, map)``, or ``ax``'s."""
    if ax is not None:
        return root_figure(ax.figure), ax, axes_inches(ax)
    fig, ax = plt.subplots(figsize=sizes[0], layout="constrained")
    return fig, ax, sizes[1]


def axes_inches(ax) -> tuple[float, float]:
    box = ax.get_position()
    width, height = root_figure(ax.figure).get_size_inches()
    return box.width * width * 0.85, box.height * height * 0.85  # a colorbar and labels will take some


def root_figure(fig):
    return getattr(fig, "figure", fig) or fig  # a SubFigure's root Figure


def check_save(save) -> Path | None:
    """Check the file name before drawing, so a typo fails at once."""
    if save is None:
        return None
    path = Path(save)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"cannot save to {str(path)!r}: use a file name ending in .png, .svg or .pdf")
    return path


def finish(fig: Figure, path: Path | None) -> Figure:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = FORMATS[path.suffix.lower()]
        fig.savefig(
            path, format=fmt, dpi=200 if fmt == "png" else "figure", bbox_inches="tight", pad_inches=0.1
        )
    return fig
