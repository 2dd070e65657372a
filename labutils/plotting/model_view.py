"""The model view (bertviz's): every layer × head of one kind of attention at once, as small maps.

Where a grid of one layer's heads (``plot_attention_grid``) is for reading labels, the model view is for
seeing the whole model: which layers and heads are sharp or diffuse, diagonal or aligned, at a glance. The
maps share one colour scale (0–1) and one colorbar; masked cells are grey and hatched, as in every map
here. Token labels would not fit; the axis names say what the rows and columns are, and the explorer (or
``plot_attention`` / ``plot_attention_lines`` with the same ``layer`` and ``head``) opens one map large.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from labutils.plotting import canvas, heatmaps, maps

SELECTED_COLOUR = "#D55E00"  # Okabe–Ito vermillion: the frame of the map that is open


def plot_model_view(
    weights,
    query_tokens: Sequence[str] | None = None,
    key_tokens: Sequence[str] | None = None,
    kind: str | None = "cross",
    layers: int | Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    figure=None,
    save: str | Path | None = None,
    mask=None,
    *,
    query_pad_mask=None,
    key_pad_mask=None,
    causal: bool | None = None,
    vmax: float = 1.0,
    cmap: str = "viridis",
    landscape: bool | None = None,
    selected: tuple[int, int] | None = None,
    title: str | None = None,
) -> Figure:
    """Every layer (rows) × head (columns) of one kind of attention, as thumbnails on one colour scale.

    ``weights`` is the dict of ``attention_for`` (``kind`` picks the maps), a list of per-layer arrays
    ``(1, H, Lq, Lk)`` or ``(H, Lq, Lk)``, or one layer's array; ``layers`` and ``heads`` pick some (from 0;
    default all). Masks and ``landscape`` are as in :func:`~labutils.plotting.plot_attention`; the tokens only
    check the shapes and find ``<pad>``. ``selected = (layer, head)`` frames that map (the one open in the
    explorer). ``figure`` is a Figure or SubFigure to draw into (default: a new one, sized to the grid).
    Layers and heads are numbered from 1 in the labels; each thumbnail's axes is labelled
    ``"layer l, head h"`` (``ax.get_label()``), so that a program can tell which one was clicked.
    """
    save_path = canvas.check_save(save)
    kind = maps.check_kind(kind)
    name = maps.title_of(kind, weights if isinstance(weights, Mapping) else None)
    rows, query_tokens, key_tokens, predicted = maps.layers_for_grid(
        weights, kind, layers, query_tokens, key_tokens
    )
    n_heads = rows[0][1].shape[0]
    chosen = (
        list(range(n_heads))
        if heads is None
        else [canvas.check_index(h, n_heads, "head", "these weights have") for h in heads]
    )
    if not chosen:
        raise ValueError("heads is empty: give at least one head")
    shape = rows[0][1].shape[1:]
    _, _, q_tokens, k_tokens = maps.labels_for(shape, query_tokens, key_tokens, kind, predicted=predicted)
    codes, should_be_zero = maps.mask_codes(
        shape, q_tokens, k_tokens, query_pad_mask, key_pad_mask, mask, causal, kind
    )
    maps.warn_if_masked_weight(np.stack([m[h] for _, m in rows for h in chosen]), should_be_zero)
    landscape = heatmaps.is_landscape(landscape, kind, shape)
    across, down = (shape[0], shape[1]) if landscape else (shape[1], shape[0])

    nrows, ncols = len(rows), len(chosen)
    if figure is None:
        panel = 1.9
        aspect = float(np.clip(down / max(across, 1), 0.35, 1.6))
        width, height = ncols * panel + 2.2, nrows * panel * aspect + 2.0
        shrink = min(1.0, 16 / width, 12 / height)
        figure = plt.figure(figsize=(width * shrink, height * shrink), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False)
    image = None
    for r, (layer, layer_maps) in enumerate(rows):
        for c, head in enumerate(chosen):
            ax = axes[r, c]
            w = layer_maps[head]
            cell_codes = np.where((codes == 0) & np.isnan(w), maps.MASKED, codes)
            image = heatmaps.draw_cells(ax, w, cell_codes, cmap, vmax, landscape)
            ax.set_xticks([])
            ax.set_yticks([])
            label = ("" if layer is None else f"layer {layer + 1}, ") + f"head {head + 1}"
            ax.set_label(label)
            if r == 0:
                ax.set_title(f"head {head + 1}", fontsize=canvas.pt(10))
            if c == 0 and layer is not None:
                ax.set_ylabel(f"layer {layer + 1}", fontsize=canvas.pt(10))
            if selected is not None and (layer, head) == tuple(selected):
                for spine in ax.spines.values():
                    spine.set(color=SELECTED_COLOUR, linewidth=3.5)
    figure.colorbar(image, ax=axes.ravel().tolist(), label="attention weight", shrink=0.8)
    query_side, key_side = maps.sides_of(kind, weights if isinstance(weights, Mapping) else None)
    query = f"query ({query_side} token)" if query_side else "query"
    key = f"key ({key_side} token)" if key_side else "key"
    x_name, y_name = (query, key) if landscape else (key, query)
    figure.supxlabel(f"{x_name}: {across} across", fontsize=canvas.pt(10))
    figure.supylabel(f"{y_name}: {down} down", fontsize=canvas.pt(10))
    if title is None:
        title = f"{name}: {_count(nrows, 'layer')} × {_count(ncols, 'head')}"
    figure.suptitle(title)
    present = sorted(set(np.unique(codes)) - {0})
    if present:
        figure.legend(
            handles=heatmaps.mask_handles(present),
            loc="lower right",
            bbox_to_anchor=(1, 0),
            ncols=len(present),
            frameon=False,
            fontsize=canvas.pt(9),
        )
    return canvas.finish(canvas.root_figure(figure), save_path)


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")
