"""Transformer Lab: an encoder-decoder transformer that learns to write Taylor series.

The package follows the lesson: ``data`` (the task) → ``tokens`` (tokenization, coding, padding) →
``model`` (attention, layers, the transformer) → ``train`` → ``decode`` → ``metrics`` → ``plotting`` →
``widgets``. What a student needs is importable from here: ``from labutils import tokenize``.
"""

__version__ = "0.1.0"

from labutils.data import load_pairs, normalize, parse_expression
from labutils.decode import beam_search, greedy_decode, translate
from labutils.model import ModelConfig, Seq2SeqTransformer, attention_for, load_pretrained, load_weights
from labutils.runtime import device, seed_everything
from labutils.tokens import SOURCE_VOCAB, TARGET_VOCAB, TokenizationError, tokenize

__all__ = [
    "__version__",
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
    "load_weights",
    "normalize",
    "parse_expression",
    "seed_everything",
    "tokenize",
    "translate",
]


def __getattr__(name: str):
    # The explorer needs ipywidgets: import it on first use, so that ``import labutils`` never needs Jupyter.
    if name == "explore":
        from labutils.widgets import explore

        return explore
    raise AttributeError(f"module 'labutils' has no attribute {name!r}")
