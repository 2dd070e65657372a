"""Attention, the lecture's step 3: Softmax(QKᵀ/√d)V, one head and many, with a key/value cache.

Masks in this module are boolean and **True where attention is NOT allowed** (a ``<pad>`` key, a future
position), the same convention as the padding masks of :mod:`labutils.tokens`. PyTorch's own
``F.scaled_dot_product_attention`` uses the opposite convention (True = may attend); the fast path below
inverts the mask once, in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def causal_mask(L: int, device: torch.device | str | None = None) -> Tensor:
    """The decoder's look-ahead mask ``(L, L)``: True above the diagonal (position i may not see j > i)."""
    return torch.ones(L, L, dtype=torch.bool, device=device).triu(1)


def _causal_mask(Lq: int, Lk: int, device: torch.device | str | None = None) -> Tensor:
    """Look-ahead mask ``(Lq, Lk)`` for the last ``Lq`` of ``Lk`` positions (queries come after a cache)."""
    return torch.ones(Lq, Lk, dtype=torch.bool, device=device).triu(Lk - Lq + 1)


def scaled_dot_product_attention(
    Q: Tensor, K: Tensor, V: Tensor, mask: Tensor | None = None, dropout_p: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Softmax(QKᵀ/√d)V, written out so the attention weights can be looked at.

    ``Q`` ``(..., Lq, d)``, ``K`` ``(..., Lk, d)``, ``V`` ``(..., Lk, dv)``; ``mask`` boolean,
    broadcastable to ``(..., Lq, Lk)``, True where attention is NOT allowed. Returns ``out``
    ``(..., Lq, dv)`` and the weights ``(..., Lq, Lk)`` (before dropout; every row sums to one). A query
    that may attend to nothing (a fully masked row) gets zero weights and a zero output instead of NaN.
    """
    d = Q.size(-1)
    scores = Q @ K.transpose(-2, -1) / math.sqrt(d)  # (..., Lq, Lk)
    if mask is not None:
        mask = mask.to(torch.bool)
        nowhere = mask.all(dim=-1, keepdim=True)  # (..., Lq, 1) rows that may attend to nothing
        # Unmask those rows before the softmax (no -inf - -inf = NaN), then zero them after.
        scores = scores.masked_fill(mask & ~nowhere, float("-inf"))
        weights = torch.softmax(scores, dim=-1).masked_fill(nowhere, 0.0)  # (..., Lq, Lk)
    else:
        weights = torch.softmax(scores, dim=-1)  # (..., Lq, Lk)
    dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return dropped @ V, weights


@dataclass
class AttentionCache:
    """Keys and values one attention block has already computed, for incremental decoding.

    Self-attention appends the new positions' ``K``/``V`` at every step; cross-attention (``static=True``)
    computes ``K``/``V`` of the encoder memory once and reuses them. Appended keys and values are written
    into a buffer with room to spare (doubled when full), so a step copies only its own position, not every
    position before it; ``K`` and ``V`` are views of the positions so far.
    """

    K: Tensor | None = None  # (B, H, L, d_head)
    V: Tensor | None = None  # (B, H, L, d_head)
    static: bool = False
    _buffers: tuple[Tensor, Tensor] | None = None  # (B, H, capacity, d_head) each

    def append(self, K: Tensor, V: Tensor) -> tuple[Tensor, Tensor]:
        """Add the new positions' keys and values ``(B, H, L_new, d_head)``; return all of them so far."""
        length = 0 if self.K is None else self.K.size(2)
        end = length + K.size(2)
        if self._buffers is None or end > self._buffers[0].size(2):
            capacity = max(64, 2 * end)
            buffers = tuple(x.new_empty(x.size(0), x.size(1), capacity, x.size(3)) for x in (K, V))
            if length:
                buffers[0][:, :, :length] = self.K
                buffers[1][:, :, :length] = self.V
            self._buffers = buffers
        self._buffers[0][:, :, length:end] = K
        self._buffers[1][:, :, length:end] = V
        self.K, self.V = self._buffers[0][:, :, :end], self._buffers[1][:, :, :end]
        return self.K, self.V

    def reorder(self, index: Tensor) -> None:
        """Keep (and reorder, repeat) the batch rows ``index`` (beam search, dropping finished sequences)."""
        if self.K is None:
            return
        length = self.K.size(2)
        if self._buffers is not None:
            self._buffers = tuple(b.index_select(0, index) for b in self._buffers)
            self.K, self.V = self._buffers[0][:, :, :length], self._buffers[1][:, :, :length]
        else:
            self.K, self.V = self.K.index_select(0, index), self.V.index_select(0, index)


class MultiHeadAttention(nn.Module):
    """``n_heads`` heads of size ``d_model / n_heads`` side by side, concatenated, then ``out_proj``."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def split_heads(self, x: Tensor) -> Tensor:
        """``(B, L, d_model)`` → ``(B, H, L, d_head)``: head h takes features ``h*d_head … (h+1)*d_head - 1``."""
        B, L, _ = x.shape
        return x.view(B, L, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, L, d_head)

    def _project_qkv(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if query is key and key is value:  # self-attention: one matrix product instead of three
            W = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])  # (3d, d)
            b = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])  # (3d,)
            return F.linear(query, W, b).chunk(3, dim=-1)
        return self.q_proj(query), self.k_proj(key), self.v_proj(value)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_pad_mask: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
        cache: AttentionCache | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` ``(B, Lq, d_model)`` to ``key``/``value`` ``(B, Lk, d_model)``.

        ``key_pad_mask`` ``(B, Lk)`` is True at ``<pad>`` keys; with a ``cache`` it covers every key, cached
        ones included. ``causal`` forbids looking ahead (queries are the last ``Lq`` positions). Returns the
        output ``(B, Lq, d_model)`` and, with ``need_weights``, the per-head weights ``(B, H, Lq, Lk)``;
        without them the fused ``F.scaled_dot_product_attention`` does the work.
        """
        if cache is not None and cache.static and cache.K is not None:
            Q, K, V = self.split_heads(self.q_proj(query)), cache.K, cache.V  # memory K/V computed once
        else:
            q, k, v = self._project_qkv(query, key, value)
            Q, K, V = self.split_heads(q), self.split_heads(k), self.split_heads(v)  # (B, H, L, d_head)
            if cache is not None:
                if cache.static:
                    cache.K, cache.V = K, V
                else:
                    K, V = cache.append(K, V)  # (B, H, L_past + Lk, d_head)
        B, H, Lq, Lk = Q.size(0), self.n_heads, Q.size(2), K.size(2)

        mask = None  # (B or 1, 1, Lq, Lk), True = not allowed
        if key_pad_mask is not None:
            if key_pad_mask.shape != (B, Lk):
                raise ValueError(f"key_pad_mask has shape {tuple(key_pad_mask.shape)}, expected {(B, Lk)}")
            mask = key_pad_mask[:, None, None, :]
        if causal and Lq > 1:  # a single new query after a cache may see every key
            look_ahead = _causal_mask(Lq, Lk, Q.device)[None, None]
            mask = look_ahead if mask is None else mask | look_ahead

        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            out, weights = scaled_dot_product_attention(Q, K, V, mask, dropout_p)  # (B, H, Lq, d_head)
        elif causal and key_pad_mask is None and Lq == Lk:  # the fused kernel builds the mask itself
            out = F.scaled_dot_product_attention(Q, K, V, dropout_p=dropout_p, is_causal=True)
            weights = None
        else:
            attn_mask = None if mask is None else ~mask  # PyTorch: True = may attend
            out = F.scaled_dot_product_attention(Q, K, V, attn_mask=attn_mask, dropout_p=dropout_p)
            weights = None
        out = out.transpose(1, 2).reshape(B, Lq, H * self.d_head)  # (B, Lq, d_model)
        return self.out_proj(out), weights
