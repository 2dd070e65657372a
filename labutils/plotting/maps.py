"""An attention map as the plots read it: its kind, its layers and heads, the tokens on its axes, its masks.

Every view of attention (heatmaps, lines, the model view, a decoding step) reads its weights and labels
through here, so they agree on what a row is, what it predicts and which cells are masked:

* weights are ``(Lq, Lk)``, ``(H, Lq, Lk)`` or ``(1, H, Lq, Lk)``: queries are rows, keys are columns;
* the dict of ``labutils.attention_for`` holds, per kind, a list of per-layer maps and the tokens of each
  side (``source_tokens``, ``target_tokens``; a decoder-only model's ``sequence_tokens`` label its whole
  sequence, on both axes of its self-attention, and it has no encoder);
* the decoder's query at position i reads token i and predicts token i + 1 (:func:`next_tokens`);
* a mask is True where attention is not allowed, as in ``labutils.tokens``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from labutils.plotting import canvas
from labutils.tokens import EOS, PAD, SPECIALS

# kind → (title, query side, key side); ``attention_for``'s dict labels a side with ``{side}_tokens``.
KINDS: dict[str | None, tuple[str, str | None, str | None]] = {
    "encoder": ("encoder self-attention", "source", "source"),
    "decoder": ("decoder self-attention (causal)", "target", "target"),
    "cross": ("cross-attention (target → source)", "target", "source"),
    None: ("attention", None, None),
}
#: The kinds of an attention dict, in the order of the lesson.
ATTENTION_KINDS = ("encoder", "decoder", "cross")
# A decoder-only model's maps: one causal stack over the whole sequence, its series rows over its source.
_DECODER_ONLY_TITLES = {
    "decoder": "self-attention (causal), the whole sequence",
    "cross": "series → source, within self-attention",
}

# Kinds whose queries are the decoder's input: their rows are labelled ``reads → predicts``.
PREDICTING = ("decoder", "cross")
ARROW = " → "
#: What a row predicts when the series goes on past the last token shown (a series cut at the length limit).
NOT_SHOWN = "…"

# Why a cell is masked: 0 shown; padding, a future key (causal), or masked by the ``mask`` given.
PADDED, FUTURE, MASKED = 1, 2, 3


def title_of(kind, attn: Mapping | None = None, decoder_only: bool | None = None) -> str:
    """The name of a kind of map, as titles say it (a decoder-only model's maps are named as what they are).

    A decoder-only model is told by its dict (``sequence_tokens``) or by ``decoder_only``.
    """
    if decoder_only is None:
        decoder_only = attn is not None and "sequence_tokens" in attn
    if decoder_only and kind in _DECODER_ONLY_TITLES:
        return _DECODER_ONLY_TITLES[kind]
    return KINDS[kind][0]


def sides_of(kind, attn: Mapping | None = None) -> tuple[str | None, str | None]:
    """What the queries and the keys of a map are tokens of: ``source``, ``target``, or a decoder-only
    model's whole ``sequence`` (its self-attention, told by the dict's ``sequence_tokens``)."""
    if kind == "decoder" and attn is not None and "sequence_tokens" in attn:
        return "sequence", "sequence"
    return KINDS[kind][1], KINDS[kind][2]


def kinds_in(attn: Mapping) -> list[str]:
    """The kinds of map an attention dict holds, in the order of the lesson (a decoder-only model: no encoder)."""
    return [kind for kind in ATTENTION_KINDS if kind in attn]


def next_tokens(tokens: Sequence[str], written: str | None = None) -> list[str | None]:
    """What the decoder predicts at each position of its input ``tokens``: the token after it.

    The decoder reads ``<sos> y1 … yn`` and predicts ``y1 … yn <eos>``: position i predicts token i + 1,
    and the last one ``<eos>``. ``written``, the series the decoder wrote as text, tells a series cut at
    the length limit: when it goes on past the tokens shown, the last position predicts a token not shown
    (:data:`NOT_SHOWN`). A position that reads ``<eos>`` or ``<pad>`` predicts nothing (None); ``<pad>``
    after a token counts as the end of the list.
    """
    tokens = [str(t) for t in tokens]
    shown = "".join(t for t in tokens if t not in SPECIALS)
    end = NOT_SHOWN if written is not None and len(written) > len(shown) else EOS
    following = tokens[1:] + [PAD]
    return [
        None if token in (EOS, PAD) else end if after == PAD else after
        for token, after in zip(tokens, following, strict=True)
    ]


def check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: use 'encoder', 'decoder', 'cross' or None")
    return kind


def from_dict(attn: Mapping, kind, query_tokens, key_tokens, predicted=None):
    """The per-layer maps of ``kind`` in an ``attention_for`` dict, the token lists of its axes, and what
    each row predicts (``predicted`` if given; None: the token after each query token).

    A decoder-only model's self-attention runs over its whole sequence (``sequence_tokens`` on both axes):
    only its series rows, the last ``len(target_tokens)``, predict a token that counts; the rows of the
    source before them predict nothing the model is trained on, and say nothing.
    """
    if kind is None or kind not in attn:
        have = kinds_in(attn)
        raise ValueError(f"kind={kind!r} is not in this attention dict; it has: {', '.join(have) or 'none'}")
    _, query_side, key_side = KINDS[kind]
    whole = kind == "decoder" and "sequence_tokens" in attn
    if whole:
        query_side = key_side = "sequence"
    if whole and predicted is None and query_tokens is None and attn.get("target_tokens") is not None:
        series, sequence = list(attn["target_tokens"]), list(attn["sequence_tokens"])
        predicted = [None] * (len(sequence) - len(series)) + next_tokens(series)
    query_tokens = attn.get(f"{query_side}_tokens") if query_tokens is None else query_tokens
    key_tokens = attn.get(f"{key_side}_tokens") if key_tokens is None else key_tokens
    return list(attn[kind]), query_tokens, key_tokens, predicted


def layers_for_grid(weights, kind, layers, query_tokens, key_tokens, predicted=None):
    """[(layer label, (H, Lq, Lk))] for the grid's layers, the token lists, and the rows' predictions."""
    if isinstance(weights, Mapping):
        maps, query_tokens, key_tokens, predicted = from_dict(
            weights, kind, query_tokens, key_tokens, predicted
        )
    elif isinstance(weights, (list, tuple)) and weights and all(hasattr(w, "shape") for w in weights):
        maps = list(weights)
    else:
        label = layers if isinstance(layers, (int, np.integer)) else None
        return [(label, heads(weights)[0])], query_tokens, key_tokens, predicted
    chosen = (
        range(len(maps)) if layers is None else [layers] if isinstance(layers, (int, np.integer)) else layers
    )
    indices = [canvas.check_index(i, len(maps), "layer", "these weights have") for i in chosen]
    if not indices:
        raise ValueError("layers is empty: give at least one layer")
    rows = [(i, heads(maps[i])[0]) for i in indices]
    if len({m.shape for _, m in rows}) > 1:
        raise ValueError(f"the layers' weights differ in shape: {[tuple(m.shape) for _, m in rows]}")
    return rows, query_tokens, key_tokens, predicted


def heads(weights) -> tuple[np.ndarray, bool]:
    """Weights as ``(H, Lq, Lk)``, and whether they had a head axis."""
    w = canvas.to_numpy(weights)
    shape = tuple(w.shape)
    if w.ndim == 4:
        if shape[0] != 1:
            raise ValueError(
                f"the weights {shape} hold a batch of {shape[0]} examples; plot one at a time, "
                f"e.g. weights[0] of shape {shape[1:]}"
            )
        w = w[0]
    if w.ndim not in (2, 3):
        raise ValueError(f"attention weights are (Lq, Lk), (H, Lq, Lk) or (1, H, Lq, Lk); got shape {shape}")
    return (w[None] if w.ndim == 2 else w).astype(float), w.ndim == 3


def labels_for(shape, query_tokens, key_tokens, kind, what="attention weights", predicted=None):
    """Distinct labels ``position:token`` for both axes, after checking the tokens fit the weights.

    The rows of the decoder's kinds read ``position:token → predicted`` (see :func:`next_tokens`).
    """
    lq, lk = shape
    q = token_list(query_tokens, "query_tokens")
    k = token_list(key_tokens, "key_tokens")
    if (q is not None and len(q) != lq) or (k is not None and len(k) != lk):
        n_q, n_k = ("no" if t is None else len(t) for t in (q, k))
        message = (
            f"the {what} are {lq} queries × {lk} keys (shape {tuple(shape)}), "
            f"but {n_q} query tokens and {n_k} key tokens were given"
        )
        if q is not None and k is not None and (len(q), len(k)) == (lk, lq):
            message += "; did you swap query_tokens and key_tokens?"
        elif kind is not None:
            title, query_side, key_side = KINDS[kind]
            message += f" ({title}: queries are {query_side} tokens, keys {key_side} tokens)"
        raise ValueError(message)

    def labels(tokens, n):
        return [str(i) for i in range(n)] if tokens is None else [f"{i}:{t}" for i, t in enumerate(tokens)]

    q_labels = labels(q, lq)
    if predicted is not None and (kind not in PREDICTING or q is None):
        raise ValueError(
            "predicted_tokens label the rows of decoder self-attention and cross-attention: "
            "give kind='decoder' or 'cross' and the query tokens the decoder read"
        )
    if kind in PREDICTING and q is not None:
        if isinstance(predicted, str) or (predicted is not None and len(predicted) != lq):
            raise ValueError(f"predicted_tokens must give one token (or None) for each of the {lq} queries")
        predicted = (
            next_tokens(q) if predicted is None else [None if p is None else str(p) for p in predicted]
        )
        q_labels = [
            label if p is None else f"{label}{ARROW}{p}" for label, p in zip(q_labels, predicted, strict=True)
        ]
    return q_labels, labels(k, lk), q, k


def token_list(tokens, name):
    if tokens is None:
        return None
    if isinstance(tokens, str):
        raise ValueError(f"{name} is one string; give a list of tokens, e.g. ['<sos>', 'cosh', '(', …]")
    return [str(t) for t in tokens]


def as_bool(mask, name) -> np.ndarray:
    """A mask as booleans, True = masked: from booleans, 0/1, or an additive mask of 0 and -inf."""
    m = canvas.to_numpy(mask)
    if m.dtype == bool:
        return m
    if np.issubdtype(m.dtype, np.integer) and np.isin(m, (0, 1)).all():
        return m.astype(bool)
    if np.issubdtype(m.dtype, np.floating) and ((m == 0) | (m <= -1e4)).all():
        return m <= -1e4
    raise ValueError(
        f"{name} must be boolean (True = masked), 0/1, or additive floats (0 allowed, -inf masked)"
    )


def squeeze_leading(m: np.ndarray, ndim: int, name: str) -> np.ndarray:
    while m.ndim > ndim and m.shape[0] == 1:
        m = m[0]
    if m.ndim > ndim:
        raise ValueError(f"{name} of shape {tuple(m.shape)} has more than {ndim} dimensions (a batch?)")
    return m


def mask_codes(shape, q_tokens, k_tokens, query_pad_mask, key_pad_mask, mask, causal, kind):
    """Why each cell is masked (0: shown; ``PADDED``, ``FUTURE``, ``MASKED``), and where weights must be 0."""
    lq, lk = shape

    def pad(given, tokens, n, name):
        if given is None:
            return np.array([t == PAD for t in tokens], bool) if tokens is not None else np.zeros(n, bool)
        vector = squeeze_leading(as_bool(given, name), 1, name)
        if vector.shape != (n,):
            raise ValueError(
                f"{name} has shape {tuple(vector.shape)}, but the weights have {n} positions there"
            )
        return vector

    query_pad = pad(query_pad_mask, q_tokens, lq, "query_pad_mask")
    key_pad = pad(key_pad_mask, k_tokens, lk, "key_pad_mask")
    causal = kind == "decoder" if causal is None else causal
    # A query sees keys at or before it; with more keys than queries (a cache), the queries are the last ones.
    future = np.triu(np.ones(shape, bool), k=1 + lk - lq) if causal else np.zeros(shape, bool)
    given = np.zeros(shape, bool)
    if mask is not None:
        m = squeeze_leading(as_bool(mask, "mask"), 2, "mask")
        try:
            given = np.broadcast_to(m, shape)
        except ValueError:
            raise ValueError(
                f"mask of shape {tuple(m.shape)} does not fit the weights' {tuple(shape)}"
            ) from None
    codes = np.zeros(shape, np.int8)
    codes[given] = MASKED
    codes[future] = FUTURE
    codes[query_pad[:, None] | key_pad[None, :]] = PADDED
    # A padded query's row may hold anything; keys that are padded, future or masked must get no weight.
    return codes, future | key_pad[None, :] | given


def warn_if_masked_weight(w: np.ndarray, should_be_zero: np.ndarray) -> None:
    leaked = np.abs(np.nan_to_num(w[:, should_be_zero]))
    if leaked.size and leaked.max() > 1e-6:
        warnings.warn(
            f"{int((leaked > 1e-6).sum())} masked cell(s) carry attention weight (up to {leaked.max():.3g}): "
            "they are drawn as masked, but the model attended there. Is the mask applied?",
            stacklevel=3,
        )
