"""Tokenization, the lecture's vocabularies, coding, padding and batching."""

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from labutils import SOURCE_VOCAB, TARGET_VOCAB, TokenizationError, tokenize
from labutils.tokens import (
    EOS_IDX,
    PAD_IDX,
    SOS_IDX,
    LengthGroupedBatchSampler,
    code,
    collate,
    pad,
    pad_batch,
)

# The lecture's listings, entry for entry (with O(x**6) where the slide has the typo 0(x**6)).
LECTURE_SOURCE = {
    "<pad>": 0, "<sos>": 1, "<eos>": 2, "(": 3, ")": 4, "*": 5, "**": 6, "+": 7, "-": 8, "/": 9, "0": 10,
    "1": 11, "2": 12, "3": 13, "4": 14, "5": 15, "6": 16, "7": 17, "8": 18, "9": 19, "a": 20, "b": 21,
    "c": 22, "cos": 23, "cosh": 24, "d": 25, "exp": 26, "f": 27, "g": 28, "h": 29, "m": 30, "n": 31,
    "sin": 32, "sinh": 33, "tan": 34, "tanh": 35, "x": 36,
}  # fmt: skip
LECTURE_TARGET = {
    "<pad>": 0, "<sos>": 1, "<eos>": 2, "(": 3, ")": 4, "*": 5, "**": 6, "+": 7, "-": 8, "/": 9, "0": 10,
    "1": 11, "2": 12, "3": 13, "4": 14, "5": 15, "6": 16, "7": 17, "8": 18, "9": 19, "O(x**6)": 20,
    "a": 21, "b": 22, "c": 23, "d": 24, "f": 25, "g": 26, "h": 27, "m": 28, "x": 29,
}  # fmt: skip


def test_vocabularies_are_the_lectures():
    assert SOURCE_VOCAB.stoi == LECTURE_SOURCE
    assert TARGET_VOCAB.stoi == LECTURE_TARGET
    assert len(SOURCE_VOCAB) == 37
    assert len(TARGET_VOCAB) == 30


def test_the_slides_coded_example():
    codes = SOURCE_VOCAB.encode(tokenize("tan(hx)+sinh(gx)"))
    assert codes == [34, 3, 29, 36, 4, 7, 33, 3, 28, 36, 4]
    assert SOURCE_VOCAB.decode(codes) == "tan(hx)+sinh(gx)"


def test_the_slides_padded_example_in_the_lecture_layout():
    codes = code("tan(hx)+sinh(gx)", SOURCE_VOCAB)
    assert pad(codes, 16, layout="lecture") == [1, 34, 3, 29, 36, 4, 7, 33, 3, 28, 36, 4, 0, 0, 0, 2]
    assert pad(codes, 16) == [1, 34, 3, 29, 36, 4, 7, 33, 3, 28, 36, 4, 2, 0, 0, 0]


def test_function_names_tokenize_to_themselves():
    for name in ["sin", "cos", "tan", "sinh", "cosh", "tanh", "exp"]:
        assert tokenize(f"{name}(a*x)") == [name, "(", "a", "*", "x", ")"]
    assert tokenize("cosh(a*x)**3") == ["cosh", "(", "a", "*", "x", ")", "**", "3"]


def test_series_tokens():
    assert tokenize("x*(g+h)+O(x**6)")[-1] == "O(x**6)"
    assert tokenize("12*a**2 / 5") == ["1", "2", "*", "a", "**", "2", "/", "5"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("sin(x)+$", "unknown character '$' at position 7 in 'sin(x)+$'"),
        ("sin(a*x", "unbalanced '(' at position 3"),
        ("sin(a*x))", "unbalanced ')' at position 8"),
        ("   ", "empty expression"),
        ("", "empty expression"),
        ("sin(A*x)", "unknown character 'A' at position 4"),
    ],
)
def test_bad_input_is_named_with_its_position(text, message):
    with pytest.raises(TokenizationError, match=re.escape(message)):
        tokenize(text)


def test_unknown_token_for_a_vocabulary():
    with pytest.raises(TokenizationError, match="'n' .* not in the target vocabulary"):
        TARGET_VOCAB.encode(tokenize("n*x"))


source_tokens = st.lists(st.sampled_from(SOURCE_VOCAB.itos[3:]), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(source_tokens)
def test_encode_decode_round_trip(tokens):
    codes = SOURCE_VOCAB.encode(tokens)
    assert SOURCE_VOCAB.tokens_of(codes) == tokens
    assert SOURCE_VOCAB.decode([SOS_IDX, *codes, EOS_IDX, PAD_IDX]) == "".join(tokens)


@settings(max_examples=100, deadline=None)
@given(st.lists(source_tokens, min_size=1, max_size=8))
def test_collate_pads_to_the_longest_and_masks_padding(batch):
    sequences = [[SOS_IDX, *SOURCE_VOCAB.encode(t), EOS_IDX] for t in batch]
    codes, mask = pad_batch(sequences)
    assert codes.shape == (len(batch), max(len(s) for s in sequences))
    assert mask.dtype == torch.bool
    for row, sequence, row_mask in zip(codes.tolist(), sequences, mask.tolist()):
        assert row[: len(sequence)] == sequence
        assert row_mask == [False] * len(sequence) + [True] * (len(row) - len(sequence))


def test_collate_returns_both_sides():
    pairs = [(code("sin(a*x)", SOURCE_VOCAB), code("a*x+O(x**6)", TARGET_VOCAB))] * 2
    src, tgt, src_pad_mask, tgt_pad_mask = collate(pairs)
    assert src.shape == src_pad_mask.shape and tgt.shape == tgt_pad_mask.shape
    assert not src_pad_mask.any()


def test_length_grouped_batches_cover_every_index_once_and_group_lengths():
    lengths = [(i * 37) % 101 + 1 for i in range(1000)]
    sampler = LengthGroupedBatchSampler(lengths, batch_size=32, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 10  # random batches of 32 would spread over ~90
    sampler.set_epoch(1)
    assert list(sampler) != batches  # a new order each epoch
    assert list(LengthGroupedBatchSampler(lengths, batch_size=32, seed=1)) == batches  # reproducible


def test_length_grouped_batches_respect_the_token_budget_and_shard():
    lengths = [(i * 13) % 300 + 1 for i in range(500)]
    sampler = LengthGroupedBatchSampler(lengths, batch_size=64, max_tokens=2000, seed=0)
    for batch in sampler:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 2000
    shards = [
        list(LengthGroupedBatchSampler(lengths, 64, 2000, seed=0, num_replicas=2, rank=r)) for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1])
    assert not {i for b in shards[0] for i in b} & {i for b in shards[1] for i in b}
