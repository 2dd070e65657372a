"""What every plot of :mod:`labutils.plotting` draws on: arrays in, a figure and its axes, saving.

Shared by the heatmaps and the curves; not meant for use outside ``labutils.plotting``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

# Okabe–Ito colours, told apart by colour-blind eyes; curves also differ in line style for grey-scale prints.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
CELLS = {"aspect": "auto", "interpolation": "nearest"}  # imshow: one sharp rectangle per array entry
#: Slide sizes in inches (PowerPoint's and Keynote's 16:9 and 4:3 pages): 13.33 is 40/3, so that 16:9 is
#: exact (1920 × 1080 pixels at 144 dpi).
SLIDES = {"16:9": (40 / 3, 7.5), "4:3": (10.0, 7.5)}
#: The smallest text on a slide, in points: what still reads from the back of a lecture hall.
SLIDE_TEXT = 12.0
_smallest = [0.0]  # the smallest text size now asked for (0: the plots' own sizes)


def pt(size: float) -> float:
    """A text size in points, raised to the smallest one asked for by ``slide_text`` (if any)."""
    return max(float(size), _smallest[0])


@contextmanager
def slide_text(smallest: float = SLIDE_TEXT) -> Iterator[None]:
    """Within the block, every plot draws no text under ``smallest`` points: ticks, labels, legends, titles.

    Token labels that no longer fit are thinned (every k-th labelled, as the axis name says).
    """
    sizes = {
        "font.size": smallest + 2,
        "axes.titlesize": smallest + 4,
        "axes.labelsize": smallest + 2,
        "xtick.labelsize": smallest,
        "ytick.labelsize": smallest,
        "legend.fontsize": smallest,
        "figure.titlesize": smallest + 6,
    }
    previous = _smallest[0]
    _smallest[0] = smallest
    try:
        with plt.rc_context(sizes):
            yield
    finally:
        _smallest[0] = previous


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
