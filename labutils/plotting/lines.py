"""The line view (bertviz's head view): the tokens in two columns and a line for each pair, as opaque as its weight.

A heatmap shows every weight at once; the line view shows where each token's attention goes. Queries stand
on one side, keys on the other, and the line from query i to key j has opacity equal to the weight of that
pair, so a query that attends to one key draws one dark line and a query that spreads its weight draws many
faint ones. Each head has its own colour (the Okabe–Ito colours of the other plots); all heads can be drawn
at once, or their mean. Selecting a token (``highlight_query`` or ``highlight_key``) keeps only its lines.

Drawn with matplotlib, like every other plot here: it works offline, in a notebook, a script or a slide.
The rows' labels follow the heatmaps' conventions (``position:token``, and for the decoder's kinds
``reads → predicts``), as do the masks: masked pairs get no line, and a warning says if they carry weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from labutils.plotting import canvas, maps
from labutils.plotting.maps import KINDS

#: Lines lighter than this are not drawn (they would be invisible; an SVG would still carry them).
MIN_WEIGHT = 0.01
ALL_HEADS, MEAN = "all", "mean"
MEAN_COLOUR = "#222222"
_HIGHLIGHT = "#F0E442"  # Okabe–Ito yellow, behind the label of the token selected
#: Portrait (two columns) while the longer side has at most this many tokens; beyond, two rows.
PORTRAIT_TOKENS = 30


def head_colour(head: int) -> str:
    """The colour of head ``head`` (from 0) in every line view."""
    return canvas.COLOURS[head % len(canvas.COLOURS)]


def plot_attention_lines(
    weights,
    query_tokens: Sequence[str] | None = None,
    key_tokens: Sequence[str] | None = None,
    kind: str | None = "cross",
    layer: int | None = 0,
    head: int | str | None = 0,
    ax: Axes | None = None,
    save: str | Path | None = None,
    mask=None,
    *,
    query_pad_mask=None,
    key_pad_mask=None,
    causal: bool | None = None,
    highlight_query: int | None = None,
    highlight_key: int | None = None,
    predicted_tokens: Sequence[str | None] | None = None,
    landscape: bool | None = None,
    title: str | None = None,
    min_weight: float = MIN_WEIGHT,
) -> Figure:
    """Lines from each query token to each key token, with opacity equal to the attention weight.

    ``weights``, ``query_tokens``, ``key_tokens``, ``kind``, ``layer``, the masks and ``predicted_tokens``
    are as in :func:`~labutils.plotting.plot_attention` (the dict of ``attention_for`` can be passed whole).
    ``head`` is a head (from 0), ``"all"`` (every head, each in its colour, :func:`head_colour`) or
    ``"mean"`` (the mean over the heads, in black). ``highlight_query`` / ``highlight_key`` (positions from 0)
    keep only the lines of that token and mark its label: what hovering a token does in bertviz.

    Queries stand on the left and keys on the right; when the longer side has more than
    :data:`PORTRAIT_TOKENS` tokens (``landscape=None``), queries run along the top and keys along the
    bottom, so that a long series lies along the long side of a slide. A line's alpha is its weight,
    clipped to 0–1; lines under ``min_weight`` are not drawn. Returns the Figure; ``save`` writes it.
    """
    save_path = canvas.check_save(save)
    kind = maps.check_kind(kind)
    name, sides = KINDS[kind][0], maps.sides_of(kind)
    if isinstance(weights, Mapping):
        name, sides = maps.title_of(kind, weights), maps.sides_of(kind, weights)
        layers, query_tokens, key_tokens, predicted_tokens = maps.from_dict(
            weights, kind, query_tokens, key_tokens, predicted_tokens
        )
        layer = canvas.check_index(layer, len(layers), "layer", f"the {kind} attention has")
        weights = layers[layer]
    heads, has_heads = maps.heads(weights)
    drawn, which = chosen_heads(heads, has_heads, head)
    shape = heads.shape[1:]
    q_labels, k_labels, q_tokens, k_tokens = maps.labels_for(
        shape, query_tokens, key_tokens, kind, predicted=predicted_tokens
    )
    codes, should_be_zero = maps.mask_codes(
        shape, q_tokens, k_tokens, query_pad_mask, key_pad_mask, mask, causal, kind
    )
    maps.warn_if_masked_weight(np.stack([w for _, _, w in drawn]), should_be_zero)
    lq, lk = shape
    if highlight_query is not None:
        highlight_query = canvas.check_index(highlight_query, lq, "query", "these weights have")
    if highlight_key is not None:
        highlight_key = canvas.check_index(highlight_key, lk, "key", "these weights have")

    if landscape is None:
        landscape = max(lq, lk) > PORTRAIT_TOKENS
    fig, ax, size = canvas.figure_for(ax, _sizes(lq, lk, q_labels, k_labels, landscape))
    draw_lines(
        ax,
        drawn,
        codes == 0,
        q_labels,
        k_labels,
        size,
        landscape=landscape,
        highlight=(highlight_query, highlight_key),
        min_weight=min_weight,
    )
    _name_sides(ax, sides, q_labels, landscape)
    if len(drawn) > 1:
        handles = [Line2D([], [], color=colour, lw=3, label=label) for label, colour, _ in drawn]
        ax.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, -_label_room(k_labels, size, landscape) - 60 / 72 / size[1]),
            ncols=min(len(handles), 8),
            frameon=False,
            fontsize=canvas.pt(10),
        )
    if title is None:
        where = [f"layer {layer + 1}"] if layer is not None else []
        title = ", ".join([name, *where, which]) if which else ", ".join([name, *where])
        title += f"\nline opacity = attention weight (under {min_weight:g} not drawn)"
    pad = 6 + (72 * _label_room(q_labels, size, landscape) * size[1] if landscape else 0)
    ax.set_title(title, pad=pad)
    return canvas.finish(canvas.root_figure(fig), save_path)


def chosen_heads(heads: np.ndarray, has_heads: bool, head) -> tuple[list[tuple[str, str, np.ndarray]], str]:
    """[(label, colour, weights (Lq, Lk))] of the heads to draw, and how the title names them."""
    n = heads.shape[0]
    if not has_heads:  # one map: ``head`` only names it
        if isinstance(head, (int, np.integer)) and not isinstance(head, bool):
            return [(f"head {head + 1}", head_colour(int(head)), heads[0])], f"head {head + 1}"
        return [("weights", MEAN_COLOUR, heads[0])], ""
    if head is None:
        raise ValueError(f"these weights have {n} heads: choose one, head=0..{n - 1}, 'all' or 'mean'")
    if head == ALL_HEADS:
        return [(f"head {h + 1}", head_colour(h), heads[h]) for h in range(n)], f"all {n} heads"
    if head == MEAN:
        return [("mean of the heads", MEAN_COLOUR, heads.mean(axis=0))], f"mean of {n} heads"
    if isinstance(head, str):
        raise ValueError(f"head {head!r}: give a head number (from 0), 'all' or 'mean'")
    h = canvas.check_index(head, n, "head", "these weights have")
    return [(f"head {h + 1}", head_colour(h), heads[h])], f"head {h + 1}"


def spread(n: int) -> np.ndarray:
    """Positions of ``n`` tokens along a side, evenly from 0 to 1 (one token: the middle)."""
    return np.array([0.5]) if n == 1 else np.linspace(0.0, 1.0, n)


def draw_lines(
    ax,
    drawn: list[tuple[str, str, np.ndarray]],
    shown: np.ndarray,
    q_labels: Sequence[str],
    k_labels: Sequence[str],
    size: tuple[float, float],
    *,
    landscape: bool = False,
    highlight: tuple[int | None, int | None] = (None, None),
    min_weight: float = MIN_WEIGHT,
) -> list[LineCollection]:
    """Draw the tokens and one LineCollection per head into ``ax`` (its axes hidden); returns the collections.

    ``shown`` ``(Lq, Lk)`` is False for masked pairs (no line). Query i sits at ``spread(Lq)[i]`` and key j at
    ``spread(Lk)[j]`` along their sides (from the top in portrait, from the left in landscape); segments run
    from the query's point to the key's, in data coordinates.
    """
    lq, lk = shown.shape
    q_at, k_at = spread(lq), spread(lk)

    def point(side: int, at: float) -> tuple[float, float]:  # side 0: queries, 1: keys
        return (at, 1.0 - side) if landscape else (float(side), 1.0 - at)

    collections = []
    for label, colour, w in drawn:
        keep = shown & (w >= min_weight)
        if highlight[0] is not None:
            keep &= np.arange(lq)[:, None] == highlight[0]
        if highlight[1] is not None:
            keep &= np.arange(lk)[None, :] == highlight[1]
        rows, cols = np.nonzero(keep)
        order = np.argsort(w[rows, cols], kind="stable")  # the strongest lines on top
        rows, cols = rows[order], cols[order]
        segments = [(point(0, q_at[i]), point(1, k_at[j])) for i, j in zip(rows, cols, strict=True)]
        rgb = to_rgb(colour)
        colours = [(*rgb, float(np.clip(w[i, j], 0.0, 1.0))) for i, j in zip(rows, cols, strict=True)]
        lines = LineCollection(segments, colors=colours, linewidths=2.2, capstyle="round", label=label)
        lines.set_gid("attention-lines")
        ax.add_collection(lines)
        collections.append(lines)

    length = size[0] if landscape else size[1]
    font = _font_size(max(lq, lk), length)
    for side, labels, at in ((0, q_labels, q_at), (1, k_labels, k_at)):
        for index, (text, position) in enumerate(zip(labels, at, strict=True)):
            x, y = point(side, position)
            if landscape:
                offset, align = (
                    ((0, 6), {"ha": "center", "va": "bottom"})
                    if side == 0
                    else (
                        (0, -6),
                        {"ha": "center", "va": "top"},
                    )
                )
                align["rotation"] = 90
            else:
                offset, align = ((-6, 0), {"ha": "right"}) if side == 0 else ((6, 0), {"ha": "left"})
                align["va"] = "center"
            marked = highlight[side] == index
            box = (
                {"boxstyle": "round,pad=0.2", "facecolor": _HIGHLIGHT, "edgecolor": "none"}
                if marked
                else None
            )
            ax.annotate(
                text,
                (x, y),
                xytext=offset,
                textcoords="offset points",
                fontsize=font,
                fontweight="bold" if marked else "normal",
                bbox=box,
                gid=f"{'query' if side == 0 else 'key'}-{index}",
                **align,
            )
    points = [point(0, a) for a in q_at] + [point(1, a) for a in k_at]
    xs, ys = zip(*points, strict=True)
    ax.scatter(xs, ys, s=12, color="#555555", zorder=3)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return collections


def _font_size(n: int, length_in: float) -> float:
    """Token text by the room along a side: 8–14 pt, never under the slides' smallest when one is in force."""
    room = 72 * length_in / max(n, 1)
    return float(np.clip(0.7 * room, canvas.pt(8), canvas.pt(14)))


def _sizes(lq, lk, q_labels, k_labels, landscape):
    """(figure size, drawing size) in inches: about 0.3 in per token along the sides."""
    n = max(lq, lk)
    along = float(np.clip(0.3 * n, 3.0, 13.0))
    label_q = max((len(s) for s in q_labels), default=1) * 9 * 0.6 / 72
    label_k = max((len(s) for s in k_labels), default=1) * 9 * 0.6 / 72
    if landscape:
        return (along + 2.5, 3.2 + label_q + label_k + 1.2), (along, 3.2)
    return (3.5 + label_q + label_k + 2.2, along + 1.4), (3.5, along)


def _label_room(labels, size, landscape) -> float:
    """The height of the longest token label drawn upright along a row, as a fraction of the drawing's."""
    if not landscape:
        return 0.0  # written across: a line of text high
    font = _font_size(len(labels), size[0])
    return (max((len(s) for s in labels), default=1) * font * 0.62 + 8) / 72 / size[1]


def _name_sides(ax, sides, q_labels, landscape) -> None:
    """Say which side is which: beside each row (landscape), or under each column."""
    query_side, key_side = sides
    query = f"query\n({query_side} token)" if query_side else "query"
    if any(maps.ARROW in label for label in q_labels):
        query = f"query\n({query_side} token read\n{maps.ARROW.strip()} token predicted)"
    key = f"key\n({key_side} token)" if key_side else "key"
    style = {"textcoords": "offset points", "fontsize": canvas.pt(10), "color": "#444444"}
    if landscape:
        ax.annotate(query, (0.0, 1.0), xytext=(-14, 0), ha="right", va="center", **style)
        ax.annotate(key, (0.0, 0.0), xytext=(-14, 0), ha="right", va="center", **style)
    else:
        ax.annotate(query, (0.0, 0.0), xytext=(0, -14), ha="center", va="top", **style)
        ax.annotate(key, (1.0, 0.0), xytext=(0, -14), ha="center", va="top", **style)
