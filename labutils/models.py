"""The two models of the course by name: ``encoder-decoder`` (the lecture's, 2017) and ``decoder-only`` (GPT).

Both give logits over the series vocabulary through the same calls (``encode``, ``decode``, ``new_cache``,
``forward`` for teacher forcing, ``attention_maps``), so decoding, training, the metrics, the plots and the
explorer take either. This module is where a name becomes a class, a config, a weights file or a model.
"""

from __future__ import annotations

import os
from dataclasses import fields

import torch
from torch import nn

from . import gpt, model
from .model import WeightsError, read_weights, shipped_weights_path

__all__ = [
    "KINDS",
    "DEFAULT_KIND",
    "check_kind",
    "config_class",
    "build",
    "kind_of",
    "load_weights",
    "load_shipped",
    "shipped_weights_path",
]

#: The models, by the name the commands take (``--model``), with their classes and configs.
_CLASSES: dict[str, tuple[type[nn.Module], type]] = {
    "encoder-decoder": (model.Seq2SeqTransformer, model.ModelConfig),
    "decoder-only": (gpt.DecoderOnlyTransformer, gpt.DecoderOnlyConfig),
}
KINDS = tuple(_CLASSES)
DEFAULT_KIND = "encoder-decoder"


def check_kind(kind: str) -> str:
    """``kind`` if it names a model, else a ValueError that lists the names."""
    if kind not in _CLASSES:
        raise ValueError(f"unknown model {kind!r}: use one of {', '.join(KINDS)}")
    return kind


def config_class(kind: str) -> type:
    """The config dataclass of a model (``ModelConfig`` or ``DecoderOnlyConfig``)."""
    return _CLASSES[check_kind(kind)][1]


def config_fields(kind: str) -> set[str]:
    """The names of a model's config fields."""
    return {f.name for f in fields(config_class(kind))}


def build(kind: str, config=None) -> nn.Module:
    """A new model of ``kind`` with random weights (``config``: its config object, or a dict of fields)."""
    Model, Config = _CLASSES[check_kind(kind)]
    if isinstance(config, dict):
        config = Config(**config)
    return Model(config)


def kind_of(module: nn.Module) -> str:
    """The name of a model's kind (``"encoder-decoder"`` or ``"decoder-only"``)."""
    return module.architecture


def load_weights(path: str | os.PathLike, device: torch.device | str | None = None) -> nn.Module:
    """Whichever model ``path`` holds (a weights file, or a run folder holding ``best.pt``), in eval mode."""
    path, payload = read_weights(path)
    kind = payload["architecture"]
    if kind not in _CLASSES:
        raise WeightsError(f"{path}: holds a {kind!r} model, which this labutils does not know")
    if kind == "decoder-only":
        return gpt.load_weights(path, device)
    return model.load_weights(path, device)


def load_shipped(kind: str = DEFAULT_KIND, device: torch.device | str | None = None) -> nn.Module:
    """The pretrained model of ``kind`` shipped inside the package, in eval mode."""
    if check_kind(kind) == "decoder-only":
        return gpt.load_pretrained(device)
    return model.load_pretrained(device)
