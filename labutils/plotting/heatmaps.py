"""Attention heatmaps, grids of heads and layers, and masks: what attention looks at, drawn from arrays.

The conventions are the lecture's: weights are ``(Lq, Lk)`` with queries as rows (y axis) and keys as
columns (x axis); a mask is True where attention is not allowed; masked cells are drawn hatched on grey,
never as zeros that would read as weak attention.

The decoder's queries are shifted by one: the query at position i reads target token i, and the decoder's
output there is its prediction of token i + 1. So a row of decoder self-attention or cross-attention is
what the decoder looked at to write the *next* token, and its label says both: ``3:x → *`` reads ``x``
and predicts ``*`` (:func:`next_tokens`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PatchCollection
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from labutils.plotting import canvas, maps
from labutils.plotting.maps import ARROW, KINDS, MASKED

# Masked cells: light grey under a hatching, one pattern per reason, so they never pass for weights near 0.
MASKED_FILL, _HATCH_COLOUR = "#e6e6e6", "#555555"
_ALLOWED = (
    "#2c6e8f"  # plot_mask's allowed cells: dark, so that they differ from masked ones in grey scale too
)
_MASK_STYLE = {
    maps.PADDED: ("<pad>", "xxx"),
    maps.FUTURE: ("future key (causal)", "////"),
    maps.MASKED: ("masked", "\\\\\\\\"),
}


def plot_attention(
    weights,
    query_tokens: Sequence[str] | None = None,
    key_tokens: Sequence[str] | None = None,
    kind: str | None = "cross",
    layer: int | None = 0,
    head: int | None = 0,
    ax: Axes | None = None,
    save: str | Path | None = None,
    mask=None,
    *,
    query_pad_mask=None,
    key_pad_mask=None,
    causal: bool | None = None,
    vmax: float | None = 1.0,
    cmap: str = "viridis",
    title: str | None = None,
    landscape: bool | None = None,
    predicted_tokens: Sequence[str | None] | None = None,
) -> Figure:
    """Heatmap of one head's attention: query tokens down the y axis, key tokens along the x axis.

    ``weights`` is ``(Lq, Lk)``, ``(H, Lq, Lk)`` or ``(1, H, Lq, Lk)`` (``head`` picks the head), or the dict
    of ``attention_for`` (``layer`` and ``head`` pick the map; the tokens come from the dict unless given).
    ``kind`` is ``"encoder"``, ``"decoder"``, ``"cross"`` or None (any other map); it names the plot and, for
    ``"decoder"``, hides future keys (``causal`` overrides). With plain arrays, ``layer`` and ``head`` only
    label the title (None leaves them out). ``layer`` and ``head`` count from 0, as Python indexes; titles
    number them from 1, as a person reads them. Tokens are labelled ``position:token``.

    Decoder self-attention and cross-attention label each row ``position:reads → predicts``: the query at
    position i reads target token i and predicts token i + 1, so its row shows what the decoder looked at
    to write that next token. ``predicted_tokens`` (one per row, None for a row that predicts nothing)
    defaults to :func:`next_tokens` of the query tokens: the row reading the last token predicts
    ``<eos>``. For a series cut at the length limit, give ``next_tokens(tokens, written=series)``.

    ``landscape`` puts the queries along the x axis and the keys down the y axis, so that a long series
    lies along the long side of a page or slide; None (the default) does so for cross-attention when
    there are more queries (the series' tokens) than keys (the expression's).

    Masked cells are drawn hatched grey: ``query_pad_mask`` ``(Lq,)`` and ``key_pad_mask`` ``(Lk,)``
    (True at ``<pad>``; inferred from ``<pad>`` tokens when not given), the causal mask, and ``mask``
    (True = masked, broadcast to ``(Lq, Lk)``). A warning says if masked cells carry weight: a mask bug.
    The colour scale is 0–1 so that maps compare; ``vmax=None`` stretches it to the largest weight shown.
    """
    save_path = canvas.check_save(save)
    kind = maps.check_kind(kind)
    if isinstance(weights, Mapping):
        name, sides = maps.title_of(kind, weights), maps.sides_of(kind, weights)
        layers, query_tokens, key_tokens, predicted_tokens = maps.from_dict(
            weights, kind, query_tokens, key_tokens, predicted_tokens
        )
        layer = canvas.check_index(layer, len(layers), "layer", f"the {kind} attention has")
        weights = layers[layer]
    else:
        name, sides = KINDS[kind][0], None
    heads, has_heads = maps.heads(weights)
    if has_heads:
        if head is None:
            raise ValueError(f"these weights have {len(heads)} heads: choose one, head=0..{len(heads) - 1}")
        head = canvas.check_index(head, len(heads), "head", "these weights have")
        w = heads[head]
    else:
        w = heads[0]
    q_labels, k_labels, q_tokens, k_tokens = maps.labels_for(
        w.shape, query_tokens, key_tokens, kind, predicted=predicted_tokens
    )
    codes, should_be_zero = maps.mask_codes(
        w.shape, q_tokens, k_tokens, query_pad_mask, key_pad_mask, mask, causal, kind
    )
    maps.warn_if_masked_weight(w[None], should_be_zero)

    landscape = is_landscape(landscape, kind, w.shape)
    drawn = (w.shape[::-1], k_labels, q_labels) if landscape else (w.shape, q_labels, k_labels)
    fig, ax, (width, height) = canvas.figure_for(ax, _single_size(*drawn))
    codes = np.where((codes == 0) & np.isnan(w), MASKED, codes)
    top = (np.nanmax(np.where(codes == 0, w, np.nan), initial=0.0) or 1.0) if vmax is None else vmax
    image = _heatmap(
        ax, w, codes, cmap, top, q_labels, k_labels, (width, height), kind, landscape=landscape, sides=sides
    )
    bar_aspect = float(np.clip(height / 0.2, 10, 60))  # a bar about 0.2 in wide, whatever the map's height
    fig.colorbar(
        image,
        ax=ax,
        label="attention weight",
        extend=colorbar_extend(w[codes == 0], 0.0, top),
        aspect=bar_aspect,
    )
    legend = _mask_legend(ax, codes)
    if title is None:
        title = ", ".join(
            [name] + [f"{n} {i + 1}" for n, i in (("layer", layer), ("head", head)) if i is not None]
        )
    ax.set_title(title, pad=26 if legend else 6)
    return canvas.finish(fig, save_path)


def plot_attention_grid(
    weights,
    query_tokens: Sequence[str] | None = None,
    key_tokens: Sequence[str] | None = None,
    kind: str | None = "cross",
    layers: int | Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    axes=None,
    save: str | Path | None = None,
    mask=None,
    *,
    query_pad_mask=None,
    key_pad_mask=None,
    causal: bool | None = None,
    vmax: float | None = 1.0,
    cmap: str = "viridis",
    ncols: int | None = None,
    title: str | None = None,
    landscape: bool | None = None,
    predicted_tokens: Sequence[str | None] | None = None,
) -> Figure:
    """All heads of one layer, or layers × heads, on one shared colour scale with a single colorbar.

    ``weights`` is the dict of ``attention_for`` or a list of per-layer arrays (``layers``: an index, a list
    of them, or None for all), or one layer's ``(H, Lq, Lk)`` / ``(1, H, Lq, Lk)`` array (an int ``layers``
    then only labels it). ``heads`` picks heads (default all). Several layers give a row per layer; one
    layer wraps its heads in rows of ``ncols`` (default: up to 4, the layout nearest a 3:2 page). Tick
    labels appear on the outer axes only.
    ``axes`` is an array of at least as many Axes as panels. Masks, ``vmax``, ``landscape`` and the rows'
    ``reads → predicts`` labels (``predicted_tokens``) are as in ``plot_attention``; layers and heads are
    numbered from 1 in the titles.
    """
    save_path = canvas.check_save(save)
    kind = maps.check_kind(kind)
    rows, query_tokens, key_tokens, predicted_tokens = maps.layers_for_grid(
        weights, kind, layers, query_tokens, key_tokens, predicted_tokens
    )
    attn = weights if isinstance(weights, Mapping) else None
    name, sides = maps.title_of(kind, attn), maps.sides_of(kind, attn)
    n_heads = rows[0][1].shape[0]
    heads = (
        list(range(n_heads))
        if heads is None
        else [canvas.check_index(h, n_heads, "head", "these weights have") for h in heads]
    )
    if not heads:
        raise ValueError("heads is empty: give at least one head")
    panels = [(layer, head, layer_maps[head]) for layer, layer_maps in rows for head in heads]
    q_labels, k_labels, q_tokens, k_tokens = maps.labels_for(
        panels[0][2].shape, query_tokens, key_tokens, kind, predicted=predicted_tokens
    )
    codes, should_be_zero = maps.mask_codes(
        panels[0][2].shape, q_tokens, k_tokens, query_pad_mask, key_pad_mask, mask, causal, kind
    )
    maps.warn_if_masked_weight(np.stack([p[2] for p in panels]), should_be_zero)
    landscape = is_landscape(landscape, kind, panels[0][2].shape)
    lq, lk = panels[0][2].shape[::-1] if landscape else panels[0][2].shape
    panel_w, panel_h = _span(lk, 0.16, 1.6, 4.5), _span(lq, 0.16, 1.6, 5.0)
    if not ncols and len(rows) > 1:
        ncols = len(heads)
    elif not ncols:  # one layer: the heads in rows of up to 4, as near a 3:2 page as they go, few gaps

        def badness(columns: int) -> float:
            ratio = columns * panel_w / (math.ceil(len(heads) / columns) * panel_h)
            return abs(math.log(ratio / 1.5)) + 0.5 * (-len(heads) % columns)

        ncols = min(range(1, min(len(heads), 4) + 1), key=badness)
    nrows = math.ceil(len(panels) / ncols)
    if axes is None:
        y_labels, x_labels = (k_labels, q_labels) if landscape else (q_labels, k_labels)
        width = ncols * panel_w + _label_inches(y_labels, 8) + 2.0
        height = nrows * panel_h + _label_inches(x_labels, 8) + 1.4
        shrink = min(1.0, 17 / width, 15 / height)  # within a screen: panels shrink, the labels thin out
        fig, grid = plt.subplots(
            nrows, ncols, figsize=(width * shrink, height * shrink), layout="constrained", squeeze=False
        )
        for extra in grid.flat[len(panels) :]:
            extra.remove()
        used = list(grid.flat[: len(panels)])
        outer = [(i % ncols == 0, i + ncols >= len(panels)) for i in range(len(panels))]  # (left, bottom)
        sizes = [(panel_w * shrink, panel_h * shrink)] * len(panels)
    else:
        given = list(np.asarray(axes, dtype=object).flat)
        if len(given) < len(panels):
            raise ValueError(f"{len(panels)} panels to draw but only {len(given)} axes were given")
        used = given[: len(panels)]
        fig = used[0].figure
        outer = [_outer(a) for a in used]
        sizes = [canvas.axes_inches(a) for a in used]

    all_codes = [np.where((codes == 0) & np.isnan(p[2]), MASKED, codes) for p in panels]
    shown = np.concatenate([p[2][c == 0] for p, c in zip(panels, all_codes, strict=True)])
    top = (np.nanmax(shown, initial=0.0) or 1.0) if vmax is None else vmax
    for (layer, head, w), c, a, (left, bottom), size in zip(
        panels, all_codes, used, outer, sizes, strict=True
    ):
        image = _heatmap(a, w, c, cmap, top, q_labels, k_labels, size, kind, left, bottom, landscape, sides)
        a.set_title(
            ("" if layer is None else f"layer {layer + 1}, ") + f"head {head + 1}", fontsize=canvas.pt(9)
        )
    if len(used) > 1:  # each axis named once, for the whole grid, not running into the next panel
        ylabel = used[0].get_ylabel()
        xlabel = next(a.get_xlabel() for a, (_, bottom) in zip(used, outer, strict=True) if bottom)
        for a in used:
            a.set_xlabel("")
            a.set_ylabel("")
        fig.supylabel(ylabel, fontsize=canvas.pt(9))
        fig.supxlabel(xlabel, fontsize=canvas.pt(9))
    fig.colorbar(
        image, ax=used, label="attention weight", extend=colorbar_extend(shown, 0.0, top), shrink=0.9
    )
    if title is None:
        layer_names = {layer for layer, _ in rows}
        title = name + (f", layer {rows[0][0] + 1}" if len(rows) == 1 and None not in layer_names else "")
    fig.suptitle(title)
    present = sorted(set(np.unique(np.stack(all_codes))) - {0})
    if present:  # in the row of the axis name, at its right end ("outside" legends overlap that name)
        fig.legend(
            handles=mask_handles(present),
            loc="lower right",
            bbox_to_anchor=(1, 0),
            ncols=len(present),
            frameon=False,
            fontsize=canvas.pt(9),
            borderaxespad=0.1,
        )
    return canvas.finish(canvas.root_figure(fig), save_path)


def plot_mask(
    mask,
    query_tokens: Sequence[str] | None = None,
    key_tokens: Sequence[str] | None = None,
    title: str = "mask",
    *,
    ax: Axes | None = None,
    save: str | Path | None = None,
    true_means: str = "masked",
    xlabel: str = "key",
    ylabel: str = "query",
) -> Figure:
    """Draw a mask on its own: allowed cells dark, masked cells hatched grey, with a legend that counts them.

    ``mask`` is boolean ``(Lq, Lk)`` (or ``(L,)``, drawn as one row), True = masked as in this package and
    ``nn.MultiheadAttention`` (``true_means="allowed"`` for the opposite, as ``scaled_dot_product_attention``
    reads it), or an additive float mask of 0 (allowed) and ``-inf`` (masked). A batch's padding mask
    ``(B, L)`` draws fine too: set ``xlabel``/``ylabel``.
    """
    if true_means not in ("masked", "allowed"):
        raise ValueError(f"true_means must be 'masked' or 'allowed', not {true_means!r}")
    save_path = canvas.check_save(save)
    masked = maps.as_bool(mask, "mask")
    masked = masked.reshape(1, -1) if masked.ndim == 1 else maps.squeeze_leading(masked, 2, "mask")
    if true_means == "allowed":
        masked = ~masked
    q_labels, k_labels, _, _ = maps.labels_for(masked.shape, query_tokens, key_tokens, None, what="mask")
    fig, ax, size = canvas.figure_for(ax, _single_size(masked.shape, q_labels, k_labels, colorbar=False))
    codes = masked.astype(np.int8) * MASKED
    ax.imshow(
        masked.astype(np.int8), cmap=ListedColormap([_ALLOWED, MASKED_FILL]), vmin=0, vmax=1, **canvas.CELLS
    )
    _hatch(ax, codes)
    _axis_labels(ax, q_labels, k_labels, size, ylabel, xlabel)
    n_masked = int(masked.sum())
    handles = [
        Patch(facecolor=_ALLOWED, label=f"allowed ({masked.size - n_masked})"),
        *mask_handles([MASKED]),
    ]
    handles[1].set_label(f"masked ({n_masked})")
    ax.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0, 1),
        ncols=2,
        frameon=False,
        fontsize=canvas.pt(8),
    )
    ax.set_title(title, pad=26)
    return canvas.finish(fig, save_path)


def _span(n: int, per_token: float, low: float, high: float) -> float:
    return float(np.clip(per_token * n, low, high))


def _label_inches(labels, fontsize) -> float:
    return max((len(s) for s in labels), default=1) * fontsize * 0.62 / 72


def _single_size(shape, q_labels, k_labels, colorbar=True):
    """(figure size, map size) in inches for one map: cells near 0.3 in, the map within 2.5–10 × 2.5–12 in."""
    lq, lk = shape
    width, height = _span(lk, 0.3, 2.5, 10), _span(lq, 0.3, 2.5, 12)
    margins = (_label_inches(q_labels, 9) + (1.6 if colorbar else 0.6), _label_inches(k_labels, 9) + 1.4)
    return (width + margins[0], height + margins[1]), (width, height)


def _outer(ax) -> tuple[bool, bool]:
    """Whether ``ax`` is in the first column and in the last row of its grid (True, True if not in one)."""
    spec = ax.get_subplotspec() if hasattr(ax, "get_subplotspec") else None
    return (True, True) if spec is None else (spec.is_first_col(), spec.is_last_row())


def _tick_style(n: int, length_in: float) -> tuple[float, int]:
    """Font size by the room per label (6–9 pt), and the step that keeps labels from overlapping."""
    cell_pt = 72 * length_in / max(n, 1)
    size = float(np.clip(0.75 * cell_pt, canvas.pt(6), canvas.pt(9)))
    return size, max(1, math.ceil(1.3 * size / cell_pt))


def _axis_names(kind, q_labels, k_labels, size_in, landscape=False, sides=None) -> list[str]:
    """The y and x axis names of a map, e.g. ``query (target token)``, saying when labels are thinned."""
    names = []
    query_side, key_side = sides or maps.sides_of(kind)
    sides = [("query", query_side, q_labels), ("key", key_side, k_labels)]
    for (role, side, labels), length in zip(sides[::-1] if landscape else sides, size_in[::-1], strict=True):
        notes = [f"{side} token"] if side else []
        if role == "query" and any(ARROW in label for label in labels):
            notes = [f"{side} token read{ARROW}token predicted"]
        every = _tick_style(len(labels), length)[1]
        if every > 1:
            suffix = (
                "th" if every % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(every % 10, "th")
            )
            notes.append(f"every {every}{suffix} labelled")
        names.append(f"{role} ({', '.join(notes)})" if notes else role)
    return names


def is_landscape(landscape: bool | None, kind, shape) -> bool:
    """Whether to draw queries along x: as asked, else for cross-attention with more queries than keys."""
    return bool(landscape) if landscape is not None else kind == "cross" and shape[0] > shape[1]


def _axis_labels(ax, q_labels, k_labels, size_in, ylabel=None, xlabel=None, show_y=True, show_x=True):
    """Token labels on both axes: every k-th when there are too many (a minor tick still marks each)."""
    for axis, labels, length, show, name in (
        (ax.yaxis, q_labels, size_in[1], show_y, ylabel),
        (ax.xaxis, k_labels, size_in[0], show_x, xlabel),
    ):
        fontsize, every = _tick_style(len(labels), length)
        ticks = np.arange(0, len(labels), every)
        axis.set_ticks(ticks, [labels[i] for i in ticks], fontsize=fontsize)
        axis.set_ticks(np.arange(len(labels)) if every > 1 else [], minor=True)
        if show and name:
            axis.set_label_text(name, fontsize=canvas.pt(9))
    ax.tick_params(axis="x", labelrotation=90, labelbottom=show_x)
    ax.tick_params(axis="y", labelleft=show_y)
    ax.tick_params(which="both", length=2)


def _heatmap(
    ax,
    w,
    codes,
    cmap,
    vmax,
    q_labels,
    k_labels,
    size_in,
    kind,
    show_y=True,
    show_x=True,
    landscape=False,
    sides=None,
):
    image = draw_cells(ax, w, codes, cmap, vmax, landscape)
    ylabel, xlabel = _axis_names(kind, q_labels, k_labels, size_in, landscape, sides)
    y_labels, x_labels = (k_labels, q_labels) if landscape else (q_labels, k_labels)
    _axis_labels(ax, y_labels, x_labels, size_in, ylabel, xlabel, show_y, show_x)
    return image


def draw_cells(ax, w, codes, cmap, vmax, landscape=False):
    """The map's cells alone: weights on the colour map, masked cells grey and hatched; returns the image."""
    colours = plt.get_cmap(cmap).with_extremes(bad=MASKED_FILL)
    if landscape:  # queries along x, keys down y
        w, codes = w.T, codes.T
    data = np.ma.masked_array(w, mask=codes > 0)  # masked cells take the 'bad' colour, then a hatching
    image = ax.imshow(data, cmap=colours, vmin=0.0, vmax=vmax, **canvas.CELLS)
    _hatch(ax, codes)
    return image


def _hatch(ax, codes: np.ndarray) -> None:
    """Hatch the masked cells, one pattern per reason, as one rectangle per run of cells in a row."""
    for code, (_, pattern) in _MASK_STYLE.items():
        rectangles = []
        for row in np.flatnonzero((codes == code).any(axis=1)):
            cols = np.flatnonzero(codes[row] == code)
            breaks = np.flatnonzero(np.diff(cols) > 1)
            for start, end in zip(
                cols[np.r_[0, breaks + 1]], cols[np.r_[breaks, len(cols) - 1]], strict=True
            ):
                rectangles.append(Rectangle((start - 0.5, row - 0.5), end - start + 1, 1))
        if rectangles:
            ax.add_collection(
                PatchCollection(
                    rectangles, facecolor="none", edgecolor=_HATCH_COLOUR, linewidth=0, hatch=pattern
                ),
                autolim=False,
            )


def mask_handles(codes_present):
    look = {"facecolor": MASKED_FILL, "edgecolor": _HATCH_COLOUR}
    return [Patch(hatch=_MASK_STYLE[c][1], label=_MASK_STYLE[c][0], **look) for c in codes_present]


def _mask_legend(ax, codes) -> bool:
    present = sorted(set(np.unique(codes)) - {0})
    if present:
        ax.legend(
            handles=mask_handles(present),
            loc="lower left",
            bbox_to_anchor=(0, 1),
            ncols=len(present),
            frameon=False,
            fontsize=canvas.pt(8),
            borderaxespad=0.3,
            handleheight=1.2,
        )
    return bool(present)


def colorbar_extend(values: np.ndarray, low: float, high: float) -> str:
    """Colorbar arrows when weights fall outside the scale (they are drawn at its ends)."""
    values = values[np.isfinite(values)]
    below = values.size and values.min() < low - 1e-9
    above = values.size and values.max() > high + 1e-9
    return {(False, False): "neither", (True, False): "min", (False, True): "max"}.get(
        (bool(below), bool(above)), "both"
    )
