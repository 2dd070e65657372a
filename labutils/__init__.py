"""Transformer Lab: an encoder-decoder transformer that learns to write Taylor series, and the decoder alone.

The package follows the lesson: ``data`` (the task) → ``tokens`` (tokenization, coding, padding) →
``attention`` → ``model`` (layers, the transformer; ``gpt``, the decoder alone) → ``train`` → ``decode`` →
``metrics`` → ``plotting``, then the explorer (``widgets``), the exercise checks (``checks``) and the instructor's tools
(``instructor``). What a student needs is importable from here: ``from labutils import tokenize``.
"""

__version__ = "0.1.0"

from labutils.data import load_pairs, normalize, parse_expression
from labutils.decode import beam_search, greedy_decode, translate
from labutils.gpt import DecoderOnlyConfig, DecoderOnlyTransformer
from labutils.model import ModelConfig, Seq2SeqTransformer, attention_for, load_pretrained
from labutils.models import load_shipped, load_weights
from labutils.runtime import device, seed_everything
from labutils.tokens import SOURCE_VOCAB, TARGET_VOCAB, TokenizationError, tokenize

__all__ = [
    "__version__",
    "DecoderOnlyConfig",
    "DecoderOnlyTransformer",
    "ModelConfig",
    "SOURCE_VOCAB",
    "Seq2SeqTransformer",
    "TARGET_VOCAB",
    "TokenizationError",
    "attention_for",
    "beam_search",
    "device",
    "greedy_decode",
    "load_pairs",
    "load_pretrained",
    "load_shipped",
    "load_weights",
    "normalize",
    "parse_expression",
    "require",
    "seed_everything",
    "tokenize",
    "translate",
]


def require(version: str) -> None:
    """What a notebook's first cell does: stop if this labutils is older than ``version``, say what runs.

    Raises ``ImportError`` with a one-line message when ``__version__`` is older than ``version`` (``"0.1"``,
    ``"0.1.0"``); otherwise prints the versions of Python, torch and labutils, and the device.
    """
    import platform
    import re

    import torch

    def numbers(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", text)[:3])

    if numbers(__version__) < numbers(version):
        raise ImportError(
            f"labutils {__version__} is older than this notebook ({version}): "
            "run `make lab` (or `pip install -e .`) again, then restart the kernel"
        )
    print(f"Python {platform.python_version()}, torch {torch.__version__}, labutils {__version__}")
    print(f"device: {device()}")


def __getattr__(name: str):
    # The explorer needs ipywidgets: import it on first use, so that ``import labutils`` never needs Jupyter.
    if name == "explore":
        from labutils.widgets import explore

        return explore
    raise AttributeError(f"module 'labutils' has no attribute {name!r}")
