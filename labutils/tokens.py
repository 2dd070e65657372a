"""Tokenization, coding and padding: turning expressions into batches of integers.

The lecture's steps 1 and 2. An expression such as ``tan(h*x)+sinh(g*x)`` is split into tokens
(``tan ( h * x ) + sinh ( g * x )``), each token is coded as an integer from a fixed vocabulary, and
sequences are delimited with ``<sos>``/``<eos>`` and padded with ``<pad>`` so a batch is a rectangle.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator, Sequence

import torch

PAD, SOS, EOS = "<pad>", "<sos>", "<eos>"
SPECIALS = (PAD, SOS, EOS)
PAD_IDX, SOS_IDX, EOS_IDX = 0, 1, 2

FUNCTIONS = ("sin", "cos", "tan", "sinh", "cosh", "tanh", "exp")
BIG_O = "O(x**6)"

# The alphabet: the one place that says which letters an expression and a series may use.
VARIABLE = "x"
#: The symbols of the family's coefficients (``a*x``, ``g*x``): in sources and in series.
SYMBOLS = "abcdfghm"
#: Every symbol a source may hold besides x: the family's, and ``n``, which no series ever needs.
SOURCE_SYMBOLS = SYMBOLS + "n"

#: One token at a time, longest alternatives first, so that ``cosh`` is never read as ``cos``, ``h`` and
#: ``**`` never as two ``*``.
TOKEN_PATTERN = re.compile(
    r"O\(x\*\*6\)"
    r"|" + "|".join(sorted(FUNCTIONS, key=len, reverse=True)) + r"|\*\*|[a-z]|[0-9]|[()*+\-/]"
)


class TokenizationError(ValueError):
    """Raised for text that cannot be split into the lab's tokens or coded with a vocabulary."""


def tokenize(text: str) -> list[str]:
    """Split an expression or a series into tokens; spaces are ignored.

    >>> tokenize("tan(h*x)+sinh(g*x)")
    ['tan', '(', 'h', '*', 'x', ')', '+', 'sinh', '(', 'g', '*', 'x', ')']
    """
    if not isinstance(text, str):
        raise TokenizationError(f"expected a string, got {type(text).__name__}")
    if not text.strip():
        raise TokenizationError("empty expression")
    tokens: list[str] = []
    open_at: list[int] = []  # positions of the '(' not yet closed
    position = 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        match = TOKEN_PATTERN.match(text, position)
        if match is None:
            raise TokenizationError(
                f"unknown character {text[position]!r} at position {position} in {text!r}"
            )
        token = match.group()
        if token == "(":
            open_at.append(position)
        elif token == ")":
            if not open_at:
                raise TokenizationError(f"unbalanced ')' at position {position} in {text!r}")
            open_at.pop()
        tokens.append(token)
        position = match.end()
    if open_at:
        raise TokenizationError(f"unbalanced '(' at position {open_at[-1]} in {text!r}: it is never closed")
    return tokens


class Vocabulary:
    """A fixed map between tokens and integer codes: ``<pad>``=0, ``<sos>``=1, ``<eos>``=2, then sorted tokens."""

    def __init__(self, tokens: Iterable[str], name: str = "vocabulary"):
        self.name = name
        self.itos: list[str] = list(SPECIALS) + sorted(set(tokens) - set(SPECIALS))
        self.stoi: dict[str, int] = {token: code for code, token in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __repr__(self) -> str:
        return f"Vocabulary({self.name}, {len(self)} tokens)"

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Codes of the tokens (no ``<sos>``/``<eos>`` added)."""
        codes = []
        for position, token in enumerate(tokens):
            if token not in self.stoi:
                raise TokenizationError(
                    f"token {token!r} (token {position} of {''.join(tokens)!r}) is not in the {self.name}"
                )
            codes.append(self.stoi[token])
        return codes

    def decode(self, codes: Iterable[int]) -> str:
        """The text of the codes, special tokens left out; stops at the first ``<eos>`` after a token."""
        out = []
        for code in codes:
            code = int(code)
            if code == EOS_IDX and out:
                break
            if code >= len(self.itos) or code < 0:
                raise TokenizationError(f"code {code} is outside the {self.name} (0..{len(self) - 1})")
            token = self.itos[code]
            if token not in SPECIALS:
                out.append(token)
        return "".join(out)

    def tokens_of(self, codes: Iterable[int]) -> list[str]:
        """The token of every code, special tokens included (labels for attention maps)."""
        return [self.itos[int(code)] for code in codes]


_DIGITS = [str(d) for d in range(10)]
_OPERATORS = ["(", ")", "*", "**", "+", "-", "/"]

#: The lecture's source vocabulary, entry for entry (37 entries).
SOURCE_VOCAB = Vocabulary(
    _OPERATORS + _DIGITS + list(SOURCE_SYMBOLS + VARIABLE) + list(FUNCTIONS), name="source vocabulary"
)
#: The lecture's target vocabulary, entry for entry (30 entries), with ``O(x**6)`` for the slide's ``0(x**6)``.
TARGET_VOCAB = Vocabulary(_OPERATORS + _DIGITS + list(SYMBOLS + VARIABLE) + [BIG_O], name="target vocabulary")


def code(text: str, vocab: Vocabulary) -> list[int]:
    """Tokenize and code one sequence, delimited: ``<sos> tokens <eos>``."""
    return [SOS_IDX] + vocab.encode(tokenize(text)) + [EOS_IDX]


def pad(codes: Sequence[int], length: int, layout: str = "package") -> list[int]:
    """Pad one delimited sequence (``<sos> … <eos>``) to ``length``.

    ``layout="package"`` gives ``<sos> tokens <eos> <pad> …``: ``<eos>`` right after the last token, so the
    model learns where a sequence ends. ``layout="lecture"`` gives the slide's ``<sos> tokens <pad> … <eos>``.
    """
    codes = list(codes)
    if len(codes) < 2 or codes[0] != SOS_IDX or codes[-1] != EOS_IDX:
        raise ValueError("pad expects a delimited sequence: <sos> tokens <eos>")
    if len(codes) > length:
        raise ValueError(f"sequence of {len(codes)} codes does not fit in length {length}")
    padding = [PAD_IDX] * (length - len(codes))
    if layout == "package":
        return codes + padding
    if layout == "lecture":
        return codes[:-1] + padding + [EOS_IDX]
    raise ValueError(f"unknown layout {layout!r}: use 'package' or 'lecture'")


def pad_batch(sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad delimited sequences to the longest one: codes ``(B, L)`` and the padding mask ``(B, L)``.

    The mask is True at ``<pad>``, the one convention of this package.
    """
    if not sequences:
        raise ValueError("cannot pad an empty batch")
    length = max(len(s) for s in sequences)
    codes = torch.tensor([pad(s, length) for s in sequences], dtype=torch.long)  # (B, L)
    return codes, codes == PAD_IDX


def collate(pairs: Sequence[tuple[Sequence[int], Sequence[int]]]):
    """Batch (source codes, target codes) pairs: ``src, tgt, src_pad_mask, tgt_pad_mask``."""
    src, src_pad_mask = pad_batch([p[0] for p in pairs])
    tgt, tgt_pad_mask = pad_batch([p[1] for p in pairs])
    return src, tgt, src_pad_mask, tgt_pad_mask


class LengthGroupedBatchSampler:
    """Batches of indices whose sequences have similar lengths, in random order.

    Padding a batch to the longest sequence of the whole data set wastes most of the compute; grouping by
    length keeps every batch nearly rectangular. ``max_tokens`` caps ``batch size × longest length`` so that
    batches of long series stay as costly as batches of short ones. With ``num_replicas > 1`` each process of
    a data-parallel run takes every ``num_replicas``-th batch (all get the same number of batches).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        max_tokens: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)  # ties in length end up in random order
        order.sort(key=self.lengths.__getitem__)
        batches, batch, longest = [], [], 0
        for index in order:
            longest_if_added = max(longest, self.lengths[index])
            too_many = len(batch) >= self.batch_size
            too_long = (
                self.max_tokens is not None
                and batch
                and longest_if_added * (len(batch) + 1) > self.max_tokens
            )
            if too_many or too_long:
                batches.append(batch)
                batch, longest_if_added = [], self.lengths[index]
            batch.append(index)
            longest = longest_if_added
        if batch:
            batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        if self.num_replicas > 1:
            usable = len(batches) - len(batches) % self.num_replicas
            batches = batches[self.rank : usable : self.num_replicas]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())
