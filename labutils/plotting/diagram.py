"""The transformer of the lecture as a diagram: the boxes of the paper's figure, named as in ``labutils.model``.

The encoder on the left, the decoder on the right, each layer drawn once with its ``× N``; the three attention
blocks in colours of their own, each with a small picture of its mask (hatched cells are not allowed, as in
every plot of :mod:`labutils.plotting`). The layers are drawn pre-norm, as the package builds them: a
LayerNorm before each sublayer, and the sublayer's output added to the residual stream (⊕).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle

from labutils.plotting import canvas

#: The colours of the three attention blocks (Okabe–Ito, lightened behind black text).
ATTENTION_COLOURS = {"encoder": "#56B4E9", "decoder": "#E69F00", "cross": "#009E73"}
_PLAIN, _NORM = "#f2f2f2", "#fff6c8"
_WIDTH = 3.6  # a box's width, in the diagram's units (the axes run -0.9 to 10.9 across, 0-15 up)


def plot_transformer(
    config=None, ax: Axes | None = None, save: str | Path | None = None, *, title: str | None = None
) -> Figure:
    """Draw the encoder-decoder transformer: embeddings, the encoder and decoder layers, the output layer.

    ``config`` (a ``labutils.ModelConfig``, or anything with ``n_encoder_layers``, ``n_decoder_layers``,
    ``d_model`` and ``n_heads``) puts its sizes in the labels; without it the labels say N. Each box names
    the paper's block and, under it, the module of ``Seq2SeqTransformer`` that computes it and the mask it
    uses: ``src_pad_mask`` in the encoder's self-attention and the cross-attention, the causal mask and
    ``tgt_pad_mask`` in the decoder's self-attention.
    """
    save_path = canvas.check_save(save)
    fig, ax, _ = canvas.figure_for(ax, ((11.0, 12.5), None))
    ax.set_xlim(-0.9, 10.9)
    ax.set_ylim(-0.4, 15.2)
    ax.set_axis_off()
    n_enc = getattr(config, "n_encoder_layers", "N")
    n_dec = getattr(config, "n_decoder_layers", "N")
    sizes = f"d_model = {config.d_model}, {config.n_heads} heads" if config is not None else ""

    enc, dec = 2.55, 7.45  # the centres of the two columns
    # ---- the encoder: source tokens up to the memory
    _box(ax, enc, 0.35, "source tokens (B, Ls)", "<sos> tan ( h x ) … <eos> <pad>", _PLAIN, edge=False)
    _box(ax, enc, 1.45, "Input Embedding × √d_model", "src_embed", _PLAIN)
    _box(ax, enc, 2.55, "⊕ Positional Encoding", "src_pos (sinusoids)", _PLAIN)
    _layer_frame(ax, enc, 3.3, 7.75, f"encoder layer × {n_enc}", "encoder_layers[i]")
    _box(ax, enc, 3.95, "LayerNorm", "norm1", _NORM, small=True)
    _box(
        ax,
        enc,
        4.95,
        "Multi-Head Self-Attention",
        "self_attn · mask: src_pad_mask",
        ATTENTION_COLOURS["encoder"],
    )
    _mask_icon(ax, enc - _WIDTH / 2 - 0.75, 4.95, "padding")
    _box(ax, enc, 6.0, "LayerNorm", "norm2", _NORM, small=True)
    _box(ax, enc, 6.95, "Feed Forward", "feed_forward: Linear → ReLU → Linear", _PLAIN)
    _residual(ax, enc, 3.45, 5.55)
    _residual(ax, enc, 5.55, 7.55)
    _box(ax, enc, 8.45, "LayerNorm", "encoder_norm", _NORM, small=True)
    _arrows(ax, enc, [0.7, 1.8, 2.9, 3.6, 4.35, 5.4, 6.4, 7.35, 8.05])
    ax.text(enc, 9.2, "memory (B, Ls, d_model)", ha="center", va="center", fontsize=canvas.pt(10),
            style="italic")  # fmt: skip

    # ---- the decoder: target tokens up to the next-token probabilities
    _box(ax, dec, 0.35, "target tokens, shifted right (B, Lt)", "<sos> x * ( g + h ) …", _PLAIN, edge=False)
    _box(ax, dec, 1.45, "Output Embedding × √d_model", "tgt_embed", _PLAIN)
    _box(ax, dec, 2.55, "⊕ Positional Encoding", "tgt_pos (sinusoids)", _PLAIN)
    _layer_frame(ax, dec, 3.3, 9.95, f"decoder layer × {n_dec}", "decoder_layers[i]")
    _box(ax, dec, 3.95, "LayerNorm", "norm1", _NORM, small=True)
    _box(ax, dec, 4.95, "Masked Multi-Head Self-Attention", "self_attn · masks: causal | tgt_pad_mask",
         ATTENTION_COLOURS["decoder"])  # fmt: skip
    _mask_icon(ax, dec + _WIDTH / 2 + 0.75, 4.95, "causal")
    _box(ax, dec, 6.0, "LayerNorm", "norm2 (of the queries only)", _NORM, small=True)
    _box(ax, dec, 7.0, "Multi-Head Cross-Attention", "cross_attn · K, V: memory · src_pad_mask",
         ATTENTION_COLOURS["cross"])  # fmt: skip
    _mask_icon(ax, dec + _WIDTH / 2 + 0.75, 7.0, "padding")
    _box(ax, dec, 8.2, "LayerNorm", "norm3", _NORM, small=True)
    _box(ax, dec, 9.15, "Feed Forward", "feed_forward: Linear → ReLU → Linear", _PLAIN)
    _residual(ax, dec, 3.45, 5.55)
    _residual(ax, dec, 5.55, 7.6)
    _residual(ax, dec, 7.6, 9.75)
    _box(ax, dec, 10.65, "LayerNorm", "decoder_norm", _NORM, small=True)
    _box(ax, dec, 11.55, "Linear", "generator: d_model → 30 target tokens", _PLAIN)
    _box(ax, dec, 12.5, "Softmax", "in the loss and in decoding", _PLAIN)
    ax.text(dec, 13.25, "probabilities of the next token (B, Lt, 30)", ha="center", va="center",
            fontsize=canvas.pt(10), style="italic")  # fmt: skip
    _arrows(ax, dec, [0.7, 1.8, 2.9, 3.6, 4.35, 5.4, 6.4, 7.8, 8.55, 9.95, 10.3, 11.0, 11.9, 12.8])

    # ---- the memory feeds every decoder layer's cross-attention (its keys and values)
    memory = FancyArrowPatch(
        (enc + 1.0, 9.2), (dec - _WIDTH / 2, 7.0), connectionstyle="arc3,rad=-0.25", arrowstyle="-|>",
        mutation_scale=14, linewidth=1.6, color=ATTENTION_COLOURS["cross"],
    )  # fmt: skip
    ax.add_patch(memory)
    ax.text(5.0, 8.6, "K, V", ha="center", va="center", fontsize=canvas.pt(10), color="#00664d")

    heading = title if title is not None else "The transformer, pre-norm as in labutils.model"
    ax.set_title(heading + (f"\n{sizes}" if sizes else ""), fontsize=canvas.pt(13))
    _legend(ax)
    return canvas.finish(fig, save_path)


def _box(ax, x, y, name, module, colour, small=False, edge=True) -> None:
    """A block of the figure: its name (the paper's) and, smaller, its module of ``labutils.model``."""
    height = 0.5 if small else 0.8
    ax.add_patch(
        FancyBboxPatch(
            (x - _WIDTH / 2, y - height / 2), _WIDTH, height, boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=colour if not edge else _lighten(colour), edgecolor="#333333" if edge else "none",
            linewidth=1.0, zorder=2,
        )
    )  # fmt: skip
    if small:
        ax.text(x, y, f"{name} ({module})", ha="center", va="center", fontsize=canvas.pt(9.5), zorder=3)
        return
    ax.text(x, y + 0.15, name, ha="center", va="center", fontsize=canvas.pt(11), weight="bold", zorder=3)
    ax.text(x, y - 0.19, module, ha="center", va="center", fontsize=canvas.pt(8.5), family="monospace",
            zorder=3)  # fmt: skip


def _lighten(colour: str, amount: float = 0.55) -> tuple[float, float, float]:
    """``colour`` mixed with white, so that black text reads on it."""
    r, g, b = (int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def _layer_frame(ax, x, bottom, top, name, module) -> None:
    """The dashed frame of one layer, repeated N times, with its name at the top left."""
    width = _WIDTH + 0.7
    ax.add_patch(
        Rectangle((x - width / 2, bottom), width, top - bottom, facecolor="none", edgecolor="#777777",
                  linestyle="--", linewidth=1.0, zorder=1)
    )  # fmt: skip
    ax.text(x - width / 2 + 0.08, top + 0.18, f"{name}   ", ha="left", va="center", fontsize=canvas.pt(10),
            weight="bold")  # fmt: skip
    ax.text(x + width / 2 - 0.08, top + 0.18, module, ha="right", va="center", fontsize=canvas.pt(8.5),
            family="monospace")  # fmt: skip


def _arrows(ax, x, ys) -> None:
    """Short upward arrows between the boxes of a column, at the gaps ``ys`` (from the bottom of a gap)."""
    for y in ys:
        ax.annotate("", (x, y + 0.15), (x, y - 0.02), arrowprops=dict(arrowstyle="-|>", color="#333333", lw=1.0),
                    zorder=1)  # fmt: skip


def _residual(ax, x, start, end) -> None:
    """The residual connection around one sublayer: from the stream below its LayerNorm to ⊕ above it."""
    side = x - _WIDTH / 2 - 0.2
    ax.plot([x, side, side, x - 0.17], [start, start, end, end], color="#555555", linewidth=1.0, zorder=1)
    ax.add_patch(Circle((x, end), 0.16, facecolor="white", edgecolor="#333333", linewidth=1.0, zorder=3))
    ax.text(x, end, "+", ha="center", va="center", fontsize=canvas.pt(10), zorder=4)


def _mask_icon(ax, x, y, kind, n=5, size=0.95) -> None:
    """A small ``n × n`` mask (queries as rows, keys as columns), masked cells hatched, named under it."""
    cell = size / n
    left, top = x - size / 2, y + size / 2
    for i in range(n):  # query i, drawn from the top
        for j in range(n):  # key j
            masked = j > i if kind == "causal" else j >= n - 1  # the last key is <pad>
            if kind == "causal":
                masked = masked or j >= n - 1
            ax.add_patch(
                Rectangle((left + j * cell, top - (i + 1) * cell), cell, cell, linewidth=0.4, edgecolor="#666666",
                          facecolor="#d9d9d9" if masked else "white", hatch="////" if masked else None, zorder=2)
            )  # fmt: skip
    label = "causal | padding" if kind == "causal" else "padding"
    ax.text(x, y - size / 2 - 0.16, label, ha="center", va="center", fontsize=canvas.pt(8.5))


def _legend(ax) -> None:
    """What the colours, the hatching and ⊕ mean, at the top left where the encoder leaves room."""
    lines = [
        ("encoder self-attention", ATTENTION_COLOURS["encoder"]),
        ("decoder self-attention (masked)", ATTENTION_COLOURS["decoder"]),
        ("cross-attention", ATTENTION_COLOURS["cross"]),
    ]
    for k, (text, colour) in enumerate(lines):
        y = 14.6 - 0.45 * k
        ax.add_patch(Rectangle((0.2, y - 0.14), 0.45, 0.28, facecolor=_lighten(colour), edgecolor="#333333",
                               linewidth=0.8))  # fmt: skip
        ax.text(0.8, y, text, ha="left", va="center", fontsize=canvas.pt(9.5))
    ax.text(0.2, 13.0, "hatched: masked (query row may not see key column)\n⊕: residual connection",
            ha="left", va="center", fontsize=canvas.pt(9.5))  # fmt: skip
