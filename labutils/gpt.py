"""The decoder alone (GPT): the same task as one sequence, ``<sos> source <sep> series <eos>``.

The encoder–decoder reads the expression with one stack and writes the series with another, joined by
cross-attention. A decoder-only transformer has one stack of the same layers as the encoder
(:class:`~labutils.model.EncoderLayer`), made causal: every position sees itself and the positions before it.
The expression comes first, then a separator, then the series; the model is trained to predict the next
token, and the loss counts only where the next token is part of the series (its tokens and ``<eos>``).
Cross-attention is not gone: the rows of the series looking at the columns of the source are it, learned
inside self-attention.

One vocabulary codes the whole sequence (:data:`SEQUENCE_VOCAB`: the source's and the series' tokens and
``<sep>``). The output layer writes series tokens only, as the encoder–decoder's does, so both models give
logits over :data:`~labutils.tokens.TARGET_VOCAB` and share :mod:`labutils.decode` and the training loop:
``encode`` makes the prompt, ``decode`` reads series tokens after it, with a key/value cache.

A batch keeps each source where it is (padded at its end) and puts the series after the longest source; the
positions count only real tokens, and ``<pad>`` is masked as a key, so a row gives exactly the logits of its
sequence written without gaps (:func:`sequence_for`), batched or alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .attention import AttentionCache
from .model import (
    EncoderLayer,
    LearnedPositionalEncoding,
    SinusoidalPositionalEncoding,
    WeightsError,
    _check_codes,
    model_from_payload,
    read_weights,
    shipped_weights_path,
)
from .tokens import (
    EOS_IDX,
    PAD_IDX,
    SOS_IDX,
    SOURCE_VOCAB,
    TARGET_VOCAB,
    Vocabulary,
    tokenize,
)

__all__ = [
    "SEP",
    "SEQUENCE_VOCAB",
    "DecoderOnlyConfig",
    "DecoderOnlyTransformer",
    "DecoderOnlyCache",
    "sequence_for",
    "load_weights",
    "load_pretrained",
    "shipped_weights_path",
]

SEP = "<sep>"
#: One vocabulary for the whole sequence: the special tokens, every token of the source's and the series'
#: vocabularies, and the separator between them.
SEQUENCE_VOCAB = Vocabulary(SOURCE_VOCAB.itos + TARGET_VOCAB.itos + [SEP], name="sequence vocabulary")
SEP_IDX = SEQUENCE_VOCAB.stoi[SEP]

# Source codes → sequence codes. A source is coded ``<sos> … <eos>``; in the sequence its ``<eos>`` gives way
# to ``<sep>`` (which the series brings), so it becomes ``<pad>``: the prompt is ``<sos> tokens``.
_FROM_SOURCE = torch.tensor([SEQUENCE_VOCAB.stoi[t] for t in SOURCE_VOCAB.itos])
_FROM_SOURCE[EOS_IDX] = PAD_IDX
# Series codes → sequence codes, as the model reads them: the series' ``<sos>`` is the separator.
_FROM_TARGET = torch.tensor([SEQUENCE_VOCAB.stoi[t] for t in TARGET_VOCAB.itos])
_FROM_TARGET[SOS_IDX] = SEP_IDX
# The sequence codes of the series vocabulary, in its order: the rows of the output layer.
_TARGET_ROWS = torch.tensor([SEQUENCE_VOCAB.stoi[t] for t in TARGET_VOCAB.itos])


def sequence_for(source: str, series: str) -> tuple[list[int], list[int], list[bool]]:
    """One training example as the decoder-only model sees it: input codes, target codes and the loss mask.

    The sequence is ``<sos> source <sep> series <eos>`` in :data:`SEQUENCE_VOCAB`; the input is all of it but
    the last token, the target all of it but the first (the next token at every position), and the loss
    mask is True where the target is a series token or ``<eos>``.
    """
    source_codes = SEQUENCE_VOCAB.encode(tokenize(source))
    series_codes = SEQUENCE_VOCAB.encode(tokenize(series))
    sequence = [SOS_IDX, *source_codes, SEP_IDX, *series_codes, EOS_IDX]
    counted = [False] * (len(source_codes) + 1) + [True] * (len(series_codes) + 1)
    return sequence[:-1], sequence[1:], counted


@dataclass
class DecoderOnlyConfig:
    """Every size of the decoder-only model; ``DecoderOnlyConfig()`` is the shipped one's configuration."""

    vocab_size: int = len(SEQUENCE_VOCAB)
    tgt_vocab_size: int = len(TARGET_VOCAB)  # the output layer writes series tokens
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 6
    d_ff: int = 512
    dropout: float = 0.0
    max_src_len: int = 64  # source codes, <sos> and <eos> included, as the encoder–decoder reads them
    max_tgt_len: int = 512  # series codes, <sos> (here <sep>) and <eos> included
    positional: str = "sinusoidal"  # or "learned", as in GPT
    norm_first: bool = True
    tie_embeddings: bool = True  # the output layer is the embedding of the series tokens, as in GPT-2

    def __post_init__(self) -> None:
        for name in ("vocab_size", "tgt_vocab_size", "d_model", "n_heads", "n_layers", "d_ff",
                     "max_src_len", "max_tgt_len"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DecoderOnlyConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads or self.d_model % 2:
            raise ValueError(
                f"DecoderOnlyConfig: d_model={self.d_model} must be even and divisible by n_heads={self.n_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"DecoderOnlyConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.positional not in ("sinusoidal", "learned"):
            raise ValueError(
                f"DecoderOnlyConfig.positional must be 'sinusoidal' or 'learned', got {self.positional!r}"
            )

    @property
    def max_len(self) -> int:
        """Positions of the longest sequence: the prompt (without the source's ``<eos>``) and the series."""
        return self.max_src_len - 1 + self.max_tgt_len


class DecoderOnlyCache:
    """Keys and values of every position so far, per layer, and what each row needs to go on.

    ``key_pad_mask`` ``(B, L)`` marks the ``<pad>`` keys among them, ``next_position`` ``(B,)`` is the
    position of each row's next token (its real tokens so far). ``reorder`` selects batch rows.
    """

    def __init__(self, n_layers: int):
        self.layers = [AttentionCache() for _ in range(n_layers)]
        self.key_pad_mask: Tensor | None = None  # (B, L)
        self.next_position: Tensor | None = None  # (B,)
        self.length = 0  # positions so far, padding included

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` ``(B',)`` in that order (repeats allowed): beam search, finished rows."""
        for cache in self.layers:
            cache.reorder(index)
        if self.key_pad_mask is not None:
            self.key_pad_mask = self.key_pad_mask.index_select(0, index)
            self.next_position = self.next_position.index_select(0, index)


class DecoderOnlyTransformer(nn.Module):
    """GPT on the lecture's task: one causal stack over ``<sos> source <sep> series``, series logits out."""

    architecture = "decoder-only"
    vocabularies = {"sequence_vocab": SEQUENCE_VOCAB.itos}  # saved with the weights, checked on loading

    def __init__(self, config: DecoderOnlyConfig | None = None):
        super().__init__()
        self.config = config = config or DecoderOnlyConfig()
        d = config.d_model
        Positional = (
            SinusoidalPositionalEncoding if config.positional == "sinusoidal" else LearnedPositionalEncoding
        )
        self.embed = nn.Embedding(config.vocab_size, d)
        nn.init.normal_(self.embed.weight, std=d**-0.5)  # unit size after the √d_model scaling
        self.pos = Positional(d, config.max_len)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(d, config.n_heads, config.d_ff, config.dropout, config.norm_first)
            for _ in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(d) if config.norm_first else nn.Identity()
        self.generator = None if config.tie_embeddings else nn.Linear(d, config.tgt_vocab_size)
        self.register_buffer("from_source", _FROM_SOURCE.clone(), persistent=False)
        self.register_buffer("from_target", _FROM_TARGET.clone(), persistent=False)
        self.register_buffer("target_rows", _TARGET_ROWS.clone(), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def new_cache(self) -> DecoderOnlyCache:
        """An empty cache for incremental decoding with ``decode(…, cache=cache)``."""
        return DecoderOnlyCache(len(self.layers))

    def logits(self, h: Tensor) -> Tensor:
        """Hidden states ``(B, L, d_model)`` → logits over the series vocabulary ``(B, L, V)``."""
        h = self.norm(h)
        if self.generator is None:
            return h @ self.embed.weight[self.target_rows].T  # tied: the series tokens' embeddings
        return self.generator(h)

    def run(
        self,
        codes: Tensor,
        pad_mask: Tensor | None = None,
        cache: DecoderOnlyCache | None = None,
        return_attention: bool = False,
    ) -> tuple[Tensor, list[Tensor | None]]:
        """The stack over sequence codes ``(B, L)`` → hidden states ``(B, L, d_model)`` and per-layer weights.

        ``pad_mask`` ``(B, L)`` is True at ``<pad>``. Positions count the real tokens of each row, so a
        ``<pad>`` in the middle of a row changes nothing for the others. With a ``cache``, ``codes`` are the
        positions after those cached; the weights are then ``(B, H, L, L_cached + L)``.
        """
        if pad_mask is None:
            pad_mask = torch.zeros_like(codes, dtype=torch.bool)
        real = (~pad_mask).long()
        start = 0 if cache is None or cache.next_position is None else cache.next_position[:, None]
        positions = (start + real.cumsum(1) - real).clamp(min=0)  # (B, L): a <pad> takes its neighbour's
        key_pad_mask = pad_mask
        if cache is not None:
            if cache.key_pad_mask is not None:
                key_pad_mask = torch.cat([cache.key_pad_mask, pad_mask], dim=1)  # (B, L_cached + L)
            cache.key_pad_mask, cache.next_position = key_pad_mask, positions[:, -1] + real[:, -1]
            cache.length += codes.size(1)
        x = self.embed(codes) * math.sqrt(self.config.d_model) + self.pos.at(positions)  # (B, L, d_model)
        x = self.dropout(x)
        # No mask at all where nothing is padded: the fused causal kernel then does the work.
        keys_masked = key_pad_mask if bool(key_pad_mask.any()) else None
        attention = []
        for i, layer in enumerate(self.layers):
            layer_cache = None if cache is None else cache.layers[i]
            x, weights = layer(x, keys_masked, return_attention, causal=True, cache=layer_cache)
            attention.append(weights)
        return x, attention

    def encode(self, src: Tensor, src_pad_mask: Tensor | None = None) -> Tensor:
        """The prompt: source codes ``(B, Ls)`` (``<sos> … <eos>``) → sequence codes ``(B, Ls)``, ``<sos> …``.

        Nothing is computed yet: a decoder-only model reads its prompt with the first series token. The
        source's ``<eos>`` becomes ``<pad>`` (``<sep>`` follows as the series' first token).
        """
        _check_codes(src, "src", self.config.max_src_len, "max_src_len")
        return self.from_source[src]  # (B, Ls); <pad> where the source had <eos> or <pad>

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        src_pad_mask: Tensor | None = None,
        tgt_pad_mask: Tensor | None = None,
        cache: DecoderOnlyCache | None = None,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, dict[str, list[Tensor]]]:
        """Series codes ``(B, Lt)`` after the prompt ``memory`` → logits ``(B, Lt, V)`` [and the weights].

        As :meth:`Seq2SeqTransformer.decode <labutils.model.Seq2SeqTransformer.decode>`: ``tgt`` starts with
        ``<sos>`` (read as ``<sep>``); with a ``cache``, the first call reads the prompt and ``tgt``, later
        calls only the new positions. ``src_pad_mask`` is not needed: the prompt's ``<pad>`` are its own.
        With ``return_attention``: ``{"decoder": [(B, H, Lt, L)], "cross": [(B, H, Lt, Lp)]}`` per layer,
        the rows of ``tgt`` over every key so far, and their block over the prompt's ``Lp`` positions.
        """
        read_prompt = cache is None or cache.length == 0
        done = 0 if read_prompt else cache.length - memory.size(1)  # series positions already cached
        limit = "max_tgt_len minus the cached positions (decode fewer tokens: max_len)"
        _check_codes(tgt, "tgt", self.config.max_tgt_len - done, limit)
        if cache is not None and tgt_pad_mask is not None:
            raise ValueError("decode with a cache takes no tgt_pad_mask: decode a padded target without one")
        codes = self.from_target[tgt]  # (B, Lt)
        # What the model wrote is read as written (a <pad> it wrote too); only a batch's own padding is masked.
        pad_mask = torch.zeros_like(tgt, dtype=torch.bool) if tgt_pad_mask is None else tgt_pad_mask
        if read_prompt:
            codes = torch.cat([memory, codes], dim=1)  # (B, Lp + Lt)
            pad_mask = torch.cat([memory == PAD_IDX, pad_mask], dim=1)
        x, weights = self.run(codes, pad_mask, cache, return_attention)
        logits = self.logits(x[:, -tgt.size(1) :])  # (B, Lt, V)
        if not return_attention:
            return logits
        rows = [w[:, :, -tgt.size(1) :] for w in weights]  # (B, H, Lt, L)
        return logits, {"decoder": rows, "cross": [w[..., : memory.size(1)] for w in rows]}

    def forward(
        self,
        src: Tensor,
        tgt: Tensor,
        src_pad_mask: Tensor | None = None,
        tgt_pad_mask: Tensor | None = None,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, dict[str, list[Tensor]]]:
        """Teacher forcing, as the encoder–decoder's: logits ``(B, Lt, V)`` for the series input ``tgt``.

        The loss on these logits counts exactly the series tokens and ``<eos>``: the positions of the
        source are read, never scored.
        """
        return self.decode(tgt, self.encode(src, src_pad_mask), None, tgt_pad_mask, None, return_attention)

    @torch.no_grad()
    def attention_maps(self, src_codes: list[int], prediction_codes: list[int]) -> dict:
        """Every map of one pass over ``<sos> source <sep> prediction`` (see ``labutils.attention_for``).

        ``decoder``: the whole sequence's self-attention ``(1, H, L, L)`` per layer, labelled by
        ``sequence_tokens``; ``cross``: its block ``(1, H, Lt, Ls)`` where the series rows (``<sep>`` and
        the prediction) look at the source columns (``<sos>`` and the source's tokens).
        """
        prompt = self.encode(torch.tensor([src_codes], device=self.device))[:, :-1]  # (1, Ls): no <eos>
        tgt_codes = ([SOS_IDX] + list(prediction_codes))[: self.config.max_tgt_len]
        codes = torch.cat([prompt, self.from_target[torch.tensor([tgt_codes], device=self.device)]], dim=1)
        _, weights = self.run(codes, return_attention=True)
        Ls = prompt.size(1)
        return {
            "decoder": [w.cpu() for w in weights],
            "cross": [w[:, :, Ls:, :Ls].cpu() for w in weights],
            "source_tokens": SOURCE_VOCAB.tokens_of(src_codes[:-1]),
            "target_tokens": [SEP] + TARGET_VOCAB.tokens_of(tgt_codes[1:]),
            "sequence_tokens": SEQUENCE_VOCAB.tokens_of(codes[0].tolist()),
        }


# ------------------------------------------------------------------------------------------ saving, loading


def load_weights(path, device: torch.device | str | None = None) -> DecoderOnlyTransformer:
    """The decoder-only model saved in ``path`` (a weights file or a run folder's ``best.pt``), in eval mode."""
    path, payload = read_weights(path)
    if payload["architecture"] == DecoderOnlyTransformer.architecture and payload.get(
        "sequence_vocab"
    ) not in (None, SEQUENCE_VOCAB.itos):
        raise WeightsError(f"{path}: saved sequence vocabulary differs from this labutils' {SEQUENCE_VOCAB.name}")
    model = model_from_payload(path, payload, DecoderOnlyTransformer, DecoderOnlyConfig)
    return model.to(device or "cpu").eval()


def load_pretrained(device: torch.device | str | None = None) -> DecoderOnlyTransformer:
    """The decoder-only model shipped with the package (``labutils/weights/decoder_only/model.pt``)."""
    shipped = shipped_weights_path("decoder-only")
    if not shipped.is_file():
        raise WeightsError(
            f"{shipped}: this labutils ships no decoder-only weights yet; train one "
            "(python -m labutils train --model decoder-only) and pass its file to load_weights"
        )
    return load_weights(shipped, device)
