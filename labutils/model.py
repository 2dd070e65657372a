"""The encoder–decoder transformer of the lecture, its key/value cache, and saving/loading its weights.

Attention itself lives in :mod:`labutils.attention`; this module builds the rest of the figure on top of it:
positional encodings, encoder and decoder layers, ``Seq2SeqTransformer``, and ``attention_for``, the one
call the plots use to look inside the model.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn

from .attention import (
    AttentionCache,
    MultiHeadAttention,
    causal_mask,
    scaled_dot_product_attention,
)
from .files import atomic_write
from .tokens import SOS_IDX, SOURCE_VOCAB, TARGET_VOCAB, code, tokenize

__all__ = [
    "scaled_dot_product_attention",
    "causal_mask",
    "MultiHeadAttention",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEncoding",
    "EncoderLayer",
    "DecoderLayer",
    "ModelConfig",
    "KVCache",
    "Seq2SeqTransformer",
    "WeightsError",
    "save_weights",
    "load_weights",
    "load_pretrained",
    "shipped_weights_path",
    "attention_for",
    "evaluating",
]

# --------------------------------------------------------------------------------------- positional encodings


class SinusoidalPositionalEncoding(nn.Module):
    """Vaswani et al.: ``pe[pos, 2i] = sin(pos / 10000^(2i/d_model))``, ``pe[pos, 2i+1] = cos(…)``."""

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        self.max_len = max_len
        position = torch.arange(max_len, dtype=torch.float32)[:, None]  # (max_len, 1)
        frequency = torch.exp(
            torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model)
        )
        pe = torch.zeros(max_len, d_model)  # (max_len, d_model)
        pe[:, 0::2] = torch.sin(position * frequency)
        pe[:, 1::2] = torch.cos(position * frequency)
        self.register_buffer(
            "pe", pe, persistent=False
        )  # a formula, not a weight: kept out of the state_dict

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """Add the encodings of positions ``offset … offset + L - 1`` to ``x`` ``(B, L, d_model)``."""
        _check_positions(offset, x.size(1), self.max_len)
        return x + self.pe[offset : offset + x.size(1)]

    def at(self, positions: Tensor) -> Tensor:
        """The encodings of the positions ``(B, L)`` (whole numbers), ``(B, L, d_model)``."""
        _check_position_ids(positions, self.max_len)
        return self.pe[positions]


class LearnedPositionalEncoding(nn.Module):
    """One learned vector per position (as in BERT/GPT), an alternative to the sinusoids."""

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """Add the vectors of positions ``offset … offset + L - 1`` to ``x`` ``(B, L, d_model)``."""
        _check_positions(offset, x.size(1), self.max_len)
        return x + self.embedding.weight[offset : offset + x.size(1)]

    def at(self, positions: Tensor) -> Tensor:
        """The vectors of the positions ``(B, L)`` (whole numbers), ``(B, L, d_model)``."""
        _check_position_ids(positions, self.max_len)
        return self.embedding(positions)


def _check_positions(offset: int, L: int, max_len: int) -> None:
    if offset < 0 or offset + L > max_len:
        raise ValueError(
            f"positions {offset}..{offset + L - 1} do not fit: this model encodes at most {max_len} positions"
        )


def _check_position_ids(positions: Tensor, max_len: int) -> None:
    if positions.numel() and int(positions.max()) >= max_len:
        raise ValueError(
            f"position {int(positions.max())} does not fit: this model encodes at most {max_len} positions"
        )


# -------------------------------------------------------------------------------------------------- layers


class FeedForward(nn.Sequential):
    """Position-wise feed-forward: Linear(d_model, d_ff) → ReLU → dropout → Linear(d_ff, d_model)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each with a residual connection and LayerNorm.

    ``norm_first=True`` (pre-norm) normalizes the input of each sublayer: it trains faster and more stably on
    small data. ``norm_first=False`` (post-norm) normalizes after the residual sum, as in the paper.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1, norm_first: bool = True):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        src_pad_mask: Tensor | None = None,
        need_weights: bool = False,
        causal: bool = False,
        cache: AttentionCache | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``x`` ``(B, Ls, d_model)`` → same shape, and the weights ``(B, H, Ls, Ls)`` if asked for.

        The encoder's layer sees every position. With ``causal`` (and a ``cache`` of the positions before,
        ``x`` holding only the new ones) the same layer is a GPT block: masked self-attention, no memory.
        """
        options = {"causal": causal, "need_weights": need_weights, "cache": cache}
        if self.norm_first:
            h = self.norm1(x)
            a, weights = self.self_attn(h, h, h, src_pad_mask, **options)
            x = x + self.dropout(a)
            x = x + self.dropout(self.feed_forward(self.norm2(x)))
        else:
            a, weights = self.self_attn(x, x, x, src_pad_mask, **options)
            x = self.norm1(x + self.dropout(a))
            x = self.norm2(x + self.dropout(self.feed_forward(x)))
        return x, weights


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention to the encoder memory, feed-forward; residuals and LayerNorm."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1, norm_first: bool = True):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2, self.norm3 = (
            nn.LayerNorm(d_model),
            nn.LayerNorm(d_model),
            nn.LayerNorm(d_model),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        src_pad_mask: Tensor | None = None,
        tgt_pad_mask: Tensor | None = None,
        need_weights: bool = False,
        self_cache: AttentionCache | None = None,
        cross_cache: AttentionCache | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``x`` ``(B, Lt, d_model)``, ``memory`` ``(B, Ls, d_model)`` → ``x``, self and cross weights.

        With caches, ``x`` holds only the new positions; the self-attention is causal, the cross-attention not.
        """
        self_options = {"causal": True, "need_weights": need_weights, "cache": self_cache}
        cross_options = {"causal": False, "need_weights": need_weights, "cache": cross_cache}
        if self.norm_first:
            h = self.norm1(x)
            a, self_w = self.self_attn(h, h, h, tgt_pad_mask, **self_options)
            x = x + self.dropout(a)
            h = self.norm2(x)
            a, cross_w = self.cross_attn(h, memory, memory, src_pad_mask, **cross_options)
            x = x + self.dropout(a)
            x = x + self.dropout(self.feed_forward(self.norm3(x)))
        else:
            a, self_w = self.self_attn(x, x, x, tgt_pad_mask, **self_options)
            x = self.norm1(x + self.dropout(a))
            a, cross_w = self.cross_attn(x, memory, memory, src_pad_mask, **cross_options)
            x = self.norm2(x + self.dropout(a))
            x = self.norm3(x + self.dropout(self.feed_forward(x)))
        return x, self_w, cross_w


# -------------------------------------------------------------------------------------------------- model


@dataclass
class ModelConfig:
    """Every size of the model in one place; ``ModelConfig()`` is the shipped model's configuration.

    ``labutils/weights/config.json`` records the shipped model's training run; a test holds the two equal.
    """

    src_vocab_size: int = len(SOURCE_VOCAB)
    tgt_vocab_size: int = len(TARGET_VOCAB)
    d_model: int = 128
    n_heads: int = 4
    n_encoder_layers: int = 3
    n_decoder_layers: int = 3
    d_ff: int = 512
    dropout: float = 0.0  # the shipped model was trained without: a few epochs of 114k pairs do not overfit
    max_src_len: int = 64
    max_tgt_len: int = 512
    positional: str = "sinusoidal"  # or "learned"
    norm_first: bool = True  # pre-norm; False gives the paper's post-norm
    tie_embeddings: bool = False  # True: the decoder's input embedding is also its output projection

    def __post_init__(self) -> None:
        for name in ("src_vocab_size", "tgt_vocab_size", "d_model", "n_heads", "n_encoder_layers",
                     "n_decoder_layers", "d_ff", "max_src_len", "max_tgt_len"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"ModelConfig: d_model={self.d_model} must be divisible by n_heads={self.n_heads}"
            )
        if self.d_model % 2:
            raise ValueError(f"ModelConfig: d_model={self.d_model} must be even (sin/cos pairs)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.positional not in ("sinusoidal", "learned"):
            raise ValueError(
                f"ModelConfig.positional must be 'sinusoidal' or 'learned', got {self.positional!r}"
            )


class KVCache:
    """What the decoder has already computed, so each new token costs one position instead of all of them.

    Per decoder layer: the self-attention ``K``/``V`` of the positions so far (grows by one each step) and the
    cross-attention ``K``/``V`` of the encoder memory (computed once). ``reorder`` selects batch rows.
    """

    def __init__(self, n_layers: int):
        self.self_attn = [AttentionCache() for _ in range(n_layers)]
        self.cross_attn = [AttentionCache(static=True) for _ in range(n_layers)]
        self.length = 0  # positions decoded so far: the offset of the next position

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` ``(B',)`` in that order (repeats allowed): beam search, finished rows."""
        for cache in self.self_attn + self.cross_attn:
            cache.reorder(index)


class Seq2SeqTransformer(nn.Module):
    """The lecture's encoder–decoder transformer: expression tokens in, Taylor-series token logits out."""

    architecture = "encoder-decoder"  # what its weights file says it is (the decoder-only model: labutils.gpt)

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config = config or ModelConfig()
        d, positional = config.d_model, config.positional
        Positional = SinusoidalPositionalEncoding if positional == "sinusoidal" else LearnedPositionalEncoding
        self.src_embed = nn.Embedding(config.src_vocab_size, d)
        self.tgt_embed = nn.Embedding(config.tgt_vocab_size, d)
        # std 1/√d, so that after the √d_model scaling the embeddings have unit size, like the encodings.
        nn.init.normal_(self.src_embed.weight, std=d**-0.5)
        nn.init.normal_(self.tgt_embed.weight, std=d**-0.5)
        self.src_pos = Positional(d, config.max_src_len)
        self.tgt_pos = Positional(d, config.max_tgt_len)
        self.dropout = nn.Dropout(config.dropout)
        layer = (config.d_model, config.n_heads, config.d_ff, config.dropout, config.norm_first)
        self.encoder_layers = nn.ModuleList(EncoderLayer(*layer) for _ in range(config.n_encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(*layer) for _ in range(config.n_decoder_layers))
        # Pre-norm leaves the residual stream unnormalized: one last LayerNorm closes each stack.
        self.encoder_norm = nn.LayerNorm(d) if config.norm_first else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d) if config.norm_first else nn.Identity()
        self.generator = nn.Linear(d, config.tgt_vocab_size)
        if config.tie_embeddings:
            self.generator.weight = self.tgt_embed.weight

    @property
    def device(self) -> torch.device:
        return self.generator.weight.device

    def new_cache(self) -> KVCache:
        """An empty key/value cache for incremental decoding with ``decode(…, cache=cache)``."""
        return KVCache(len(self.decoder_layers))

    def encode(
        self, src: Tensor, src_pad_mask: Tensor | None = None, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Source codes ``(B, Ls)`` → memory ``(B, Ls, d_model)`` [and per-layer weights (B, H, Ls, Ls)]."""
        _check_codes(src, "src", self.config.max_src_len, "max_src_len")
        _check_mask(src_pad_mask, src, "src_pad_mask")
        x = self.dropout(self.src_pos(self.src_embed(src) * math.sqrt(self.config.d_model)))  # (B, Ls, d)
        attention = []
        for layer in self.encoder_layers:
            x, weights = layer(x, src_pad_mask, need_weights=return_attention)
            attention.append(weights)
        memory = self.encoder_norm(x)  # (B, Ls, d_model)
        return (memory, attention) if return_attention else memory

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        src_pad_mask: Tensor | None = None,
        tgt_pad_mask: Tensor | None = None,
        cache: KVCache | None = None,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, dict[str, list[Tensor]]]:
        """Decoder input codes ``(B, Lt)`` and memory → logits ``(B, Lt, V)`` [and decoder/cross weights].

        With a ``cache``, ``tgt`` holds only the new positions (usually one, ``(B, 1)``), placed after
        the ``cache.length`` positions decoded before, whose keys and values come from the cache; decoding
        one token at a time never pads the target, so a cache takes no ``tgt_pad_mask``.
        """
        offset = 0 if cache is None else cache.length
        cached = f" minus the {offset} positions in its cache" if offset else ""
        _check_codes(tgt, "tgt", self.config.max_tgt_len - offset, f"max_tgt_len{cached}")
        _check_mask(tgt_pad_mask, tgt, "tgt_pad_mask")
        if cache is not None:
            if tgt_pad_mask is not None:
                raise ValueError(
                    "decode with a cache takes no tgt_pad_mask: decode a padded target without one"
                )
            cache.length += tgt.size(1)
        x = self.tgt_pos(self.tgt_embed(tgt) * math.sqrt(self.config.d_model), offset)  # (B, Lt, d_model)
        x = self.dropout(x)
        attention: dict[str, list[Tensor]] = {"decoder": [], "cross": []}
        for i, layer in enumerate(self.decoder_layers):
            self_cache = None if cache is None else cache.self_attn[i]
            cross_cache = None if cache is None else cache.cross_attn[i]
            x, self_w, cross_w = layer(
                x, memory, src_pad_mask, tgt_pad_mask, return_attention, self_cache, cross_cache
            )
            attention["decoder"].append(self_w)
            attention["cross"].append(cross_w)
        logits = self.generator(self.decoder_norm(x))  # (B, Lt, V)
        return (logits, attention) if return_attention else logits

    def forward(
        self,
        src: Tensor,
        tgt: Tensor,
        src_pad_mask: Tensor | None = None,
        tgt_pad_mask: Tensor | None = None,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, dict[str, list[Tensor]]]:
        """Teacher forcing: logits ``(B, Lt, V)`` for the decoder input ``tgt`` (the caller shifts it).

        With ``return_attention``: ``(logits, {"encoder": [(B, H, Ls, Ls)], "decoder": [(B, H, Lt, Lt)],
        "cross": [(B, H, Lt, Ls)]})``, one tensor per layer. Masks are True at ``<pad>``.
        """
        if not return_attention:
            return self.decode(tgt, self.encode(src, src_pad_mask), src_pad_mask, tgt_pad_mask)
        memory, encoder_attention = self.encode(src, src_pad_mask, return_attention=True)
        logits, attention = self.decode(tgt, memory, src_pad_mask, tgt_pad_mask, return_attention=True)
        return logits, {"encoder": encoder_attention, **attention}


    @torch.no_grad()
    def attention_maps(self, src_codes: list[int], prediction_codes: list[int]) -> dict:
        """Every map of one teacher-forced pass (see :func:`attention_for_codes`), on the CPU, with labels."""
        tgt_codes = ([SOS_IDX] + list(prediction_codes))[: self.config.max_tgt_len]
        src = torch.tensor([src_codes], device=self.device)  # (1, Ls)
        tgt = torch.tensor([tgt_codes], device=self.device)  # (1, Lt)
        _, attention = self(src, tgt, return_attention=True)
        result = {key: [w.cpu() for w in maps] for key, maps in attention.items()}
        result["source_tokens"] = SOURCE_VOCAB.tokens_of(src_codes)
        result["target_tokens"] = TARGET_VOCAB.tokens_of(tgt_codes)
        return result


def _check_codes(codes: Tensor, name: str, max_len: int, limit: str) -> None:
    if not isinstance(codes, Tensor) or codes.dim() != 2 or codes.dtype != torch.long:
        got = f"{tuple(codes.shape)} {codes.dtype}" if isinstance(codes, Tensor) else type(codes).__name__
        raise ValueError(f"{name} must be a (B, L) tensor of long codes, got {got}")
    if codes.size(1) > max_len:
        stop = "; a decoding loop stops at <eos> or after max_len new tokens, before that"
        raise ValueError(
            f"{name} has {codes.size(1)} positions, more than this model's {limit} ({max_len})"
            + (stop if name == "tgt" else "")
        )


def _check_mask(mask: Tensor | None, codes: Tensor, name: str) -> None:
    if mask is None:
        return
    if mask.dtype != torch.bool or mask.shape != codes.shape:
        raise ValueError(
            f"{name} must be a boolean tensor of shape {tuple(codes.shape)} (True at <pad>), "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )


# ---------------------------------------------------------------------------------------- looking inside


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (no dropout) inside the block, then the mode the model had: ``with evaluating(model): …``."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def attention_for(model: nn.Module, source: str, prediction: str) -> dict:
    """Every attention map of one teacher-forced pass, with the tokens that label their axes.

    The source is coded ``<sos> … <eos>``; the decoder input is ``<sos>`` + the prediction's tokens (the
    prediction may be empty). Tensors are ``(1, H, ·, ·)`` on the CPU: ``encoder`` (Ls, Ls), ``decoder``
    (Lt, Lt), ``cross`` (Lt, Ls); ``source_tokens`` label Ls, ``target_tokens`` label Lt.
    The decoder-only model (:mod:`labutils.gpt`) answers with the same keys but ``encoder``, its ``cross``
    being the block of its self-attention where series tokens look at source tokens.
    """
    tgt_codes = TARGET_VOCAB.encode(tokenize(prediction)) if prediction.strip() else []
    return attention_for_codes(model, code(source, SOURCE_VOCAB), tgt_codes)


@torch.no_grad()
def attention_for_codes(model: nn.Module, src_codes: list[int], prediction_codes: list[int]) -> dict:
    """:func:`attention_for` from codes: source ``<sos> … <eos>``, and the prediction's codes without ``<sos>``.

    A prediction that ran to the length limit without ``<eos>`` is read up to the positions the model has.
    Each model says how it is looked inside (its ``attention_maps``); this is the one call for both.
    """
    with evaluating(model):
        return model.attention_maps(list(src_codes), list(prediction_codes))


# ------------------------------------------------------------------------------------------ saving, loading

FORMAT = "labutils.weights"
FORMAT_VERSION = 1


class WeightsError(ValueError):
    """A weights file that is missing, damaged, of another kind, or made for other vocabularies."""


def save_weights(model: nn.Module, path: str | os.PathLike, **extra) -> Path:
    """Write the model's config, vocabularies and weights to ``path`` atomically; ``extra`` is stored too.

    The file is written next to its destination and then renamed, so a crash never leaves half a file.
    ``extra`` values must be plain data or tensors (the file is read back with ``weights_only=True``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "labutils_version": sys.modules[__package__].__version__,  # the package, loaded before this module
        "architecture": model.architecture,
        "config": asdict(model.config),
        "source_vocab": list(SOURCE_VOCAB.itos),
        "target_vocab": list(TARGET_VOCAB.itos),
        **{key: list(tokens) for key, tokens in getattr(model, "vocabularies", {}).items()},
        "state_dict": {name: t.detach().cpu() for name, t in model.state_dict().items()},
        **extra,
    }
    with atomic_write(path) as file:
        torch.save(payload, file)
    return path


def weights_file(path: str | os.PathLike) -> Path:
    """The weights file ``path`` names: the file itself, or a run folder's ``best.pt``; WeightsError if none."""
    path = Path(path)
    if path.is_dir():
        if not (path / "best.pt").is_file():
            raise WeightsError(f"{path}: run folder without best.pt")
        path = path / "best.pt"
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    return path


def read_weights(path: str | os.PathLike) -> tuple[Path, dict]:
    """The file ``path`` names and its checked contents (format, version, vocabularies); WeightsError if bad.

    ``payload["architecture"]`` says which model it holds (files written before there were two hold the
    encoder–decoder): :func:`labutils.models.load_weights` builds either.
    """
    path = weights_file(path)
    with open(path, "rb") as file:
        if file.read(2) != b"PK":  # torch.save writes a zip archive
            raise WeightsError(
                f"{path}: not a readable weights file (not the zip archive that torch.save writes)"
            )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, pickled objects weights_only refuses…
        raise WeightsError(f"{path}: not a readable weights file ({_reason(error, 120)})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a labutils weights file (no 'format': '{FORMAT}')")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise WeightsError(
            f"{path}: weights format version {version!r} is newer than this labutils reads "
            f"({FORMAT_VERSION}); upgrade labutils"
        )
    for key, vocab in (("source_vocab", SOURCE_VOCAB), ("target_vocab", TARGET_VOCAB)):
        if payload.get(key) != vocab.itos:
            raise WeightsError(
                f"{path}: saved {key.replace('_', ' ')} differs from this labutils' {vocab.name}"
            )
    payload.setdefault("architecture", Seq2SeqTransformer.architecture)
    return path, payload


def model_from_payload(path: Path, payload: dict, Model: type, Config: type) -> nn.Module:
    """The ``Model(Config(…))`` a checked weights file holds, its weights loaded; WeightsError if they misfit."""
    if payload["architecture"] != Model.architecture:
        raise WeightsError(
            f"{path}: holds the {payload['architecture']} model, not the {Model.architecture}; "
            "load it with labutils.load_weights"
        )
    try:
        known = {f.name for f in fields(Config)}
        model = Model(Config(**{k: v for k, v in payload["config"].items() if k in known}))
        model.load_state_dict(payload["state_dict"])
    except Exception as error:
        raise WeightsError(
            f"{path}: config or weights do not fit the model ({_reason(error, 160)})"
        ) from error
    return model


def load_weights(path: str | os.PathLike, device: torch.device | str | None = None) -> Seq2SeqTransformer:
    """The encoder–decoder saved in ``path`` (a weights file, or a run folder holding ``best.pt``), in eval mode.

    :func:`labutils.models.load_weights` loads either model.
    """
    model = model_from_payload(*read_weights(path), Seq2SeqTransformer, ModelConfig)
    return model.to(device or "cpu").eval()


def _reason(error: BaseException, width: int) -> str:
    """The first line of an error's message, shortened at a word boundary (never cut mid-word)."""
    import textwrap

    lines = str(error).strip().splitlines()
    return textwrap.shorten(lines[0], width, placeholder=" …") if lines else type(error).__name__


def shipped_weights_path(architecture: str = "encoder-decoder") -> Path:
    """Where the package's pretrained weights are (the file may not exist).

    The encoder–decoder's are ``labutils/weights/model.pt``; the decoder-only model's are in a folder of
    their own, ``labutils/weights/decoder_only/model.pt``, beside its training log and table by category.
    """
    weights = resources.files("labutils") / "weights"
    if architecture != Seq2SeqTransformer.architecture:
        weights = weights / architecture.replace("-", "_")
    return Path(str(weights / "model.pt"))


def load_pretrained(device: torch.device | str | None = None) -> Seq2SeqTransformer:
    """The model shipped with the package (``labutils/weights/model.pt``), in eval mode."""
    shipped = shipped_weights_path()
    if not shipped.is_file():
        raise WeightsError(
            f"{shipped}: the labutils package ships no pretrained weights yet; train a model and pass its "
            "file or run folder to load_weights"
        )
    return load_weights(shipped, device)
