"""Checks of notebook 02, coding and padding: ``encode`` (2.1), ``pad_codes`` (2.2), ``make_batch`` (2.3)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from labutils import tokens as _tokens
from labutils.checks.compare import expect, fail, short
from labutils.checks.core import Case, exercise, family_pair, fresh, hidden_test, integer, pick
from labutils.tokens import EOS_IDX, PAD_IDX, SOS_IDX, SOURCE_VOCAB, TARGET_VOCAB

#: The slide's example ``tan(hx)+sinh(gx)``, coded and delimited.
SLIDE_CODES = [1, 34, 3, 29, 36, 4, 7, 33, 3, 28, 36, 4, 2]

# ------------------------------------------------------------------------------------------------ 2.1 encode


def _encode_mistakes(expected: list[int]):
    return [
        (
            lambda: expected[1:-1],
            "delimit the sequence: <sos> (code 1) first, <eos> (code 2) last",
        ),
        (lambda: expected[:-1], "end the sequence with <eos> (code 2)"),
        (lambda: expected[1:], "start the sequence with <sos> (code 1)"),
        (
            lambda: [EOS_IDX, *expected[1:-1], SOS_IDX],
            "<sos> and <eos> are swapped: <sos> (code 1) opens the sequence, <eos> (code 2) closes it",
        ),
    ]


def _encode_cases() -> dict[str, Case]:
    cases = {
        "the slide's example tan(hx)+sinh(gx)": ("tan(hx)+sinh(gx)", SOURCE_VOCAB),
        "an expression of the data set": ("cosh(a*x)**3+tanh(b*x)", SOURCE_VOCAB),
        "a series, with the target vocabulary": ("1+b*x+3*a**2*x**2/2-b**3*x**3/3+O(x**6)", TARGET_VOCAB),
    }
    return {name: Case((text, dict(vocab.stoi))) for name, (text, vocab) in cases.items()}


def _explain_encode(args: tuple, error: str) -> str | None:
    """A KeyError is a lookup of something the dict ``stoi`` given to the answer does not hold, or holds."""
    if not error.startswith("KeyError: "):
        return None
    key = error.removeprefix("KeyError: ").split(" (line ")[0].strip()
    stoi = args[1]
    if key.strip("'\"") in stoi:
        return (
            f"{key} is in the dict stoi your function was given, so it was looked up in another dict: this "
            "case codes with the vocabulary it passes in, which need not be the source vocabulary"
        )
    return (
        f"{key} is no token of the vocabulary: tokenize the text first (labutils.tokenize), then look up "
        "each token; the special tokens are written '<sos>' and '<eos>'"
    )


_ENCODE_REPLACES = ("labutils.tokens.code", "labutils.tokens.Vocabulary.encode")


@exercise(
    "02_coding_and_padding.encode", "2.1", 1, _ENCODE_REPLACES, cases=_encode_cases, explain=_explain_encode
)
def encode(args: tuple, got) -> str:
    text, stoi = args
    vocab = SOURCE_VOCAB if stoi == SOURCE_VOCAB.stoi else TARGET_VOCAB
    expected = _tokens.code(text, vocab)
    if not isinstance(got, list):
        fail(
            f"encode({text!r}, …) returned {type(got).__name__} {short(got)}. Hint: the instructions ask "
            "for a Python list of codes (ints); tensors come later, when sequences are batched"
        )
    expect(got, expected, f"encode({text!r}, …)", mistakes=_encode_mistakes(expected))
    return ", ".join(map(str, expected)) if len(expected) < 16 else ""


# --------------------------------------------------------------------------------------------- 2.2 pad_codes


def _pad_mistakes(codes, length, layout):
    other = "lecture" if layout == "package" else "package"
    padding = [PAD_IDX] * (length - len(codes))
    return [
        (
            lambda: _tokens.pad(codes, length, other),
            f"this is the {other}'s layout; layout={layout!r} asks for "
            + ("<sos> tokens <eos> <pad> …" if layout == "package" else "<sos> tokens <pad> … <eos>"),
        ),
        (lambda: padding + list(codes), "pad at the end, not at the front"),
        (
            lambda: _tokens.pad(codes, length + 1, layout),
            f"one <pad> too many: the padded list holds exactly {length} codes, <sos> and <eos> included",
        ),
        (
            lambda: _tokens.pad(codes, length - 1, layout),
            f"one <pad> too few: the padded list holds exactly {length} codes, <sos> and <eos> included",
        ),
        (
            lambda: _tokens.pad(codes, len(codes) + length, layout),
            f"pad up to length {length} in all, not by {length} more",
        ),
        (
            lambda: list(codes) + padding[1:] + [EOS_IDX],
            "<eos> appears twice: in the 'lecture' layout the sequence's own <eos> moves to the end, "
            "after the padding; no second one is added",
        ),
    ]


def _the_default_layout(args: tuple, got) -> None:
    codes, length = args
    _a_list(got, f"pad_codes({codes}, {length})")
    expect(
        got,
        _tokens.pad(codes, length, "package"),
        f"pad_codes({codes}, {length})",
        mistakes=[
            (
                lambda: _tokens.pad(codes, length, "lecture"),
                "without a layout argument you used the lecture's layout; the default is the package's",
            ),
            *_pad_mistakes(codes, length, "package")[1:],
        ],
    )


def _what_a_long_sequence_gives(answer: Callable, args: tuple) -> dict:
    """What the answer does with codes that do not fit: ``{"raised": "ValueError"}`` or what it returned."""
    try:
        return {"returned": answer(*fresh(args))}
    except ValueError:
        return {"raised": "ValueError"}
    except NotImplementedError:
        raise
    except Exception as error:  # another exception: its name, which the judge reports
        return {"raised": type(error).__name__}


def _raises_value_error(args: tuple, got: dict) -> str:
    codes, length, layout = args
    raised = got.get("raised")
    if raised is not None and raised != "ValueError":
        fail(
            f"pad_codes(<{len(codes)} codes>, {length}, {layout!r}) raised {raised}. Hint: the instructions "
            "ask for a ValueError, the exception Python uses for a value that does not fit"
        )
    if got != {"raised": "ValueError"}:
        fail(
            f"pad_codes(<{len(codes)} codes>, {length}, {layout!r}) returned {short(got.get('returned'))}. "
            f"Hint: {len(codes)} codes do not fit in {length}: the instructions ask for a ValueError, since "
            "cutting the sequence would lose its tokens or its <eos>"
        )
    return "ValueError"


def _the_list_after_the_call(answer: Callable, args: tuple) -> list[int]:
    codes = fresh(args[0])
    answer(codes, *args[1:])
    return codes


def _the_input_unchanged(args: tuple, got) -> None:
    if got != SLIDE_CODES:
        fail(
            f"the list passed in holds {short(got)} after the call, {len(got)} codes where it held "
            f"{len(SLIDE_CODES)}. Hint: the caller's list was changed: the instructions ask for a new list, "
            "leaving the one you are given as it was"
        )


def _pad_codes_cases() -> dict[str, Case]:
    cases = {
        "the slide's layout: <eos> last": (SLIDE_CODES, 16, "lecture"),
        "the package's layout: <eos> right after the last token": (SLIDE_CODES, 16, "package"),
        "a sequence that already has the length": (SLIDE_CODES, 13, "package"),
        "a short sequence, long padding": ([1, 36, 2], 8, "lecture"),
    }
    return {
        **{name: Case((list(codes), length, layout)) for name, (codes, length, layout) in cases.items()},
        "layout='package' is the default": Case(([1, 36, 2], 5), judge=_the_default_layout),
        "codes longer than length raise ValueError": Case(
            (list(SLIDE_CODES), 10, "package"), call=_what_a_long_sequence_gives, judge=_raises_value_error
        ),
        "leaves its input unchanged": Case(
            (list(SLIDE_CODES), 16, "package"), call=_the_list_after_the_call, judge=_the_input_unchanged
        ),
    }


def _a_list(got, what: str) -> None:
    """The instructions ask for a list of codes: a tensor or a tuple of the right codes is not one."""
    if not isinstance(got, list):
        fail(
            f"{what} returned {type(got).__name__} {short(got)}. Hint: the instructions ask for a new Python "
            "list of codes; tensors come later, when sequences are batched"
        )


@exercise("02_coding_and_padding.pad_codes", "2.2", 2, ("labutils.tokens.pad",), cases=_pad_codes_cases)
def pad_codes(args: tuple, got) -> str:
    codes, length, layout = args
    expected = _tokens.pad(codes, length, layout)
    _a_list(got, f"pad_codes(…, {length}, {layout!r})")
    expect(
        got, expected, f"pad_codes(…, {length}, {layout!r})", mistakes=_pad_mistakes(codes, length, layout)
    )
    return ", ".join(map(str, expected)) if layout == "lecture" and length == 16 else ""


# -------------------------------------------------------------------------------------------- 2.3 make_batch


def _make_batch_cases() -> dict[str, Case]:
    batches = {
        "two sequences of different lengths": [SLIDE_CODES, [1, 36, 2]],
        "three sequences": [[1, 5, 6, 2], [1, 2], SLIDE_CODES],
        "one sequence: nothing to pad": [SLIDE_CODES],
    }
    return {name: Case(([list(s) for s in sequences],)) for name, sequences in batches.items()}


_MAKE_BATCH_REPLACES = ("labutils.tokens.pad_batch", "labutils.tokens.collate")


def _is_mask(x, mask: torch.Tensor) -> bool:
    return isinstance(x, torch.Tensor) and x.dtype == torch.bool and x.shape == mask.shape


@exercise("02_coding_and_padding.make_batch", "2.3", 2, _MAKE_BATCH_REPLACES, cases=_make_batch_cases)
def make_batch(args: tuple, got) -> str:
    (sequences,) = args
    codes, mask = _tokens.pad_batch(sequences)
    if not isinstance(got, tuple) or len(got) != 2:
        fail(
            f"make_batch returned {type(got).__name__} {short(got)}. Hint: the instructions ask for a pair "
            "(codes, mask): the padded codes and their padding mask"
        )
    got_codes, got_mask = got
    if _is_mask(got_codes, mask) and isinstance(got_mask, torch.Tensor) and got_mask.dtype != torch.bool:
        fail(
            "make_batch returned a boolean tensor first and the codes second. Hint: the pair is "
            "(codes, mask), codes first"
        )
    length = max(map(len, sequences))
    expect(
        got_codes,
        codes,
        "codes",
        mistakes=[
            (
                lambda: torch.tensor([_tokens.pad(s, length, "lecture") for s in sequences]),
                "use the package's layout here: <sos> tokens <eos> <pad> …",
            ),
            (
                lambda: codes.T,
                "these codes are (L, B), one column per sequence: the batch goes first, one row per "
                "sequence (pad_sequence puts it second by default)",
            ),
        ],
    )
    if isinstance(got_codes, torch.Tensor) and got_codes.dtype != torch.long:
        fail(
            f"codes: dtype {got_codes.dtype}. Hint: codes index the embedding table, so they must be "
            "integers of type torch.long, not floats or smaller integers"
        )
    expect(
        got_mask,
        mask,
        "padding mask",
        mistakes=[
            (
                lambda: ~mask,
                "the mask is inverted: in this package True marks <pad> (not allowed to attend)",
            ),
            *(
                (
                    lambda dtype=dtype: mask.to(dtype),
                    "the mask holds numbers 0 and 1; a mask is boolean, True at <pad>, which is what a "
                    "comparison gives",
                )
                for dtype in (torch.float32, torch.int64, torch.int32, torch.uint8)
            ),
        ],
    )
    return f"shape {tuple(codes.shape)}"


# ------------------------------------------------------------------------------------------------ hidden tests
# Inputs the grader draws from the secret of its grading run: they vary what the visible cases fix.


def _random_codes(generator, low: int, high: int) -> list[int]:
    """<sos>, some tokens' codes, <eos>."""
    n = integer(generator, low, high)
    return [SOS_IDX, *(integer(generator, 3, len(SOURCE_VOCAB) - 1) for _ in range(n)), EOS_IDX]


@hidden_test(
    "02_coding_and_padding.encode", "any expression or series is coded with the vocabulary it is given"
)
def unseen_text(generator) -> Case:
    import random

    source, series = family_pair(random.Random(integer(generator, 0, 2**31)))
    text, vocab = pick(generator, [(source, SOURCE_VOCAB), (series, TARGET_VOCAB)])
    return Case((text, dict(vocab.stoi)))


@hidden_test(
    "02_coding_and_padding.pad_codes", "any sequence is padded to the length asked, in the layout asked"
)
def any_length_and_layout(generator) -> Case:
    codes = _random_codes(generator, 1, 12)
    return Case((codes, len(codes) + integer(generator, 0, 6), pick(generator, ["lecture", "package"])))


@hidden_test(
    "02_coding_and_padding.make_batch",
    "a batch of any sizes is padded to its longest sequence, with its mask",
)
def any_sizes(generator) -> Case:
    return Case(([_random_codes(generator, 0, 10) for _ in range(integer(generator, 1, 4))],))
