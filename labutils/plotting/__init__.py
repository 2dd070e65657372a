"""Plots for the lesson: attention as heatmaps, lines and the model view, decoding step by step, masks, loss
curves, positional encodings, the model.

Plotting draws the arrays and token lists it is given (NumPy arrays or torch tensors), so it works for any
attention map, not only this package's model. The conventions are the lecture's:

* attention weights are ``(Lq, Lk)``: queries are rows (y axis), keys are columns (x axis);
* a mask is True where attention is not allowed (``<pad>``, future keys), as in ``labutils.tokens``;
* masked cells are drawn hatched on grey, never as zeros that would read as weak attention;
* the colour map (``viridis``) grows steadily lighter, so maps read in grey scale and for colour-blind eyes;
* each function returns its Figure, draws into ``ax`` if given, and writes ``save="name.png"`` (.svg, .pdf).

Decoder self-attention and cross-attention label each row ``reads → predicts``: the decoder's query at
position i reads target token i and predicts token i + 1 (``next_tokens``).

``attn``, the dict of ``labutils.attention_for``, can be passed whole: ``plot_attention(attn, kind="cross",
layer=1, head=2)`` takes the layer's weights and the token lists of that kind from it. The same dict gives
the line view (``plot_attention_lines``, bertviz's head view) and the model view (``plot_model_view``,
every layer × head); ``labutils.decode.decoding_steps`` gives ``plot_decoding_step`` and
``animate_decoding`` (a GIF or MP4 of every step, for slides). One module per kind of picture: ``maps``
(how every view reads a map), ``heatmaps``, ``lines``, ``model_view``, ``steps``, ``curves``, ``diagram``.
"""

from labutils.plotting.curves import plot_losses, plot_positional_encoding
from labutils.plotting.diagram import plot_transformer
from labutils.plotting.heatmaps import plot_attention, plot_attention_grid, plot_mask
from labutils.plotting.lines import plot_attention_lines
from labutils.plotting.maps import KINDS as KINDS
from labutils.plotting.maps import next_tokens
from labutils.plotting.model_view import plot_model_view
from labutils.plotting.steps import animate_decoding, plot_decoding_step

__all__ = [
    "plot_attention",
    "plot_attention_grid",
    "plot_mask",
    "plot_attention_lines",
    "plot_model_view",
    "plot_decoding_step",
    "animate_decoding",
    "next_tokens",
    "plot_losses",
    "plot_positional_encoding",
    "plot_transformer",
]
