"""What the explorer shows: the picture of each view, and the expression, series and verdict as HTML.

Each view is a matplotlib Figure made without pyplot (safe in the explorer's thread, never popping up on its
own), sized for a notebook. The views are the plotting functions of :mod:`labutils.plotting`; this module
only chooses their sizes and arguments from what the explorer's controls say.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable

from matplotlib.figure import Figure

from labutils import metrics, plotting
from labutils.decode import DecodingSteps, Prediction, describe_series
from labutils.metrics import Check
from labutils.plotting import (
    next_tokens,
    plot_attention,
    plot_attention_grid,
    plot_attention_lines,
    plot_decoding_step,
    plot_model_view,
)
from labutils.plotting.lines import PORTRAIT_TOKENS
from labutils.plotting.maps import title_of

VIEWS = ("matrix", "lines", "model", "steps")
ALL_HEADS, MEAN = "all", "mean"
NO_TOKEN = -1  # the token selector's "all tokens"

NewFigure = Callable[..., Figure]


def predicted(prediction: Prediction, kind: str) -> dict:
    """The rows' ``reads → predicts`` labels of the decoder's maps (none for the encoder's)."""
    if kind not in ("decoder", "cross"):
        return {}
    attention = prediction.attention
    rows = next_tokens(attention["target_tokens"], written=prediction.series)
    if kind == "decoder" and "sequence_tokens" in attention:  # the decoder-only model's whole sequence
        rows = [None] * (len(attention["sequence_tokens"]) - len(rows)) + rows
    return {"predicted_tokens": rows}


def query_tokens(prediction: Prediction, kind: str) -> list[str]:
    """The tokens of a map's rows (queries), as the token selector lists them."""
    attention = prediction.attention
    if kind == "encoder":
        return list(attention["source_tokens"])
    if kind == "decoder" and "sequence_tokens" in attention:
        return list(attention["sequence_tokens"])
    return list(attention["target_tokens"])


def draw_matrix(
    prediction: Prediction, kind: str, layer: int, head, new_figure: NewFigure = Figure
) -> Figure:
    """A heatmap of one head, or a grid of the layer's heads (``head="all"``)."""
    attention = prediction.attention
    lq, lk = attention[kind][layer].shape[-2:]
    # tokens across and down, as plotting draws them: cross-attention in landscape when lq > lk
    across, down = (lq, lk) if kind == "cross" and lq > lk else (lk, lq)
    rows = predicted(prediction, kind)
    if head == ALL_HEADS:
        n_heads = attention[kind][layer].shape[1]
        panel = (_clip(0.16 * across, 1.8, 4.5), _clip(0.16 * down, 1.8, 5.0))

        def size_of(ncols: int) -> tuple[float, float]:
            return ncols * panel[0] + 3.2, math.ceil(n_heads / ncols) * panel[1] + 2.4

        def badness(ncols: int) -> float:  # far from 3:2, whether the maps are tall or square; gaps
            width, height = size_of(ncols)
            return abs(math.log(width / height / 1.5)) + 0.5 * (-n_heads % ncols)

        ncols = min(range(1, n_heads + 1), key=badness)
        nrows = math.ceil(n_heads / ncols)
        size = size_of(ncols)
        shrink = min(1.0, 11 / size[0], 10 / size[1])  # fits a notebook and a projector
        figure = new_figure(figsize=(size[0] * shrink, size[1] * shrink), layout="constrained")
        axes = figure.subplots(nrows, ncols, squeeze=False)
        for extra in axes.flat[n_heads:]:
            extra.remove()
        title = f"{title_of(kind, attention)}, layer {layer + 1}, all heads"
        plot_attention_grid(attention, kind=kind, layers=layer, axes=axes.flat[:n_heads], title=title, **rows)
    else:
        size = (_clip(0.3 * across, 3.0, 8.0) + 2.8, _clip(0.3 * down, 2.5, 9.0) + 2.0)
        figure = new_figure(figsize=size, layout="constrained")
        plot_attention(attention, kind=kind, layer=layer, head=head, ax=figure.subplots(), **rows)
    return figure


def draw_lines(
    prediction: Prediction, kind: str, layer: int, head, token: int = NO_TOKEN, new_figure: NewFigure = Figure
) -> Figure:
    """The line view: one head, every head in its colour (``"all"``) or their mean; ``token`` selected."""
    attention = prediction.attention
    lq, lk = attention[kind][layer].shape[-2:]
    n = max(lq, lk)
    if n > PORTRAIT_TOKENS:  # two rows, the long series along the page
        size = (_clip(0.24 * n + 3.0, 8.0, 15.0), 6.5)
    else:
        size = (9.0, _clip(0.3 * n + 2.5, 4.5, 11.0))
    figure = new_figure(figsize=size, layout="constrained")
    highlight = token if 0 <= token < lq else None
    plot_attention_lines(
        attention,
        kind=kind,
        layer=layer,
        head=head,
        ax=figure.subplots(),
        highlight_query=highlight,
        **predicted(prediction, kind),
    )
    return figure


def draw_model(
    prediction: Prediction, kind: str, selected: tuple[int, int] | None, new_figure: NewFigure = Figure
) -> Figure:
    """The model view: every layer × head of ``kind``; ``selected`` (layer, head) framed."""
    maps = prediction.attention[kind]
    n_layers, n_heads = len(maps), maps[0].shape[1]
    lq, lk = maps[0].shape[-2:]
    across, down = (lq, lk) if kind == "cross" and lq > lk else (lk, lq)
    aspect = _clip(down / max(across, 1), 0.35, 1.4)
    size = (min(12.0, 2.3 * n_heads + 2.2), min(10.0, 2.3 * n_layers * aspect + 1.8))
    figure = new_figure(figsize=size, layout="constrained")
    plot_model_view(prediction.attention, kind=kind, figure=figure, selected=selected)
    return figure


def draw_steps(steps: DecodingSteps, step: int, layer: int, head, new_figure: NewFigure = Figure) -> Figure:
    """One step of decoding (``step`` from 0): the series so far, the top choices, where it looked."""
    figure = new_figure(figsize=plotting.steps.SIZE)
    return plot_decoding_step(steps, step, layer, head, figure=figure)


def _clip(value: float, low: float, high: float) -> float:
    return float(min(max(value, low), high))


# ------------------------------------------------------------------------------------------ the text


def verdict_text(check: Check | None, timeout: float) -> str:
    if check is None:
        return "checking…"
    return metrics.verdict_text(check.verdict, timeout, check.detail)


def code(text: str) -> str:
    return f"<code>{html.escape(text)}</code>"


def series_html(text: str, prediction: Prediction, check: Check | None, timeout: float) -> str:
    rows = [("expression", code(prediction.expression))]
    if prediction.expression != text.replace(" ", ""):
        rows[0] = ("expression", f"{code(prediction.expression)} <small>(you typed {code(text)})</small>")
    series = (
        code(prediction.series) if prediction.series else f"<i>{html.escape(describe_series(prediction))}</i>"
    )
    if prediction.outside:
        warning = f"outside the training family: {prediction.outside}; expect mistakes"
        rows.append(("⚠", f'<span style="color:#8a6d00">{html.escape(warning)}</span>'))
    rows.append((f"model ({prediction.decoding})", series))
    colour = {None: "#555", metrics.OK: "#1b7f3b"}.get(check and check.verdict, "#b00020")
    if check is not None and check.verdict in (metrics.TIMEOUT, metrics.UNWRITABLE, metrics.ERROR):
        colour = "#8a6d00"  # nobody's mistake: not the model's red
    verdict = html.escape(verdict_text(check, timeout))
    rows.append(("sympy", f'<span style="color:{colour}">{verdict}</span>'))
    if check is not None and check.verdict != metrics.OK and check.truth:
        rows.append(("sympy's series", code(check.truth)))
    cells = "".join(
        f'<tr><td style="padding-right:1em;text-align:right;vertical-align:top"><b>{name}</b></td>'
        f'<td style="text-align:left;word-break:break-all">{value}</td></tr>'
        for name, value in rows
    )
    return f"<table>{cells}</table>"


def error_html(text: str, message: str) -> str:
    return (
        f"<table><tr><td style='padding-right:1em'><b>expression</b></td><td>{code(text)}</td></tr>"
        f"<tr><td style='padding-right:1em'><b>error</b></td>"
        f"<td style='color:#b00020'>{html.escape(message)}</td></tr></table>"
    )
