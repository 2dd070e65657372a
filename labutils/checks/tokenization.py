"""Checks of notebook 01, tokenization: ``split_tokens`` (1.1) and ``build_vocabulary`` (1.2)."""

from __future__ import annotations

from collections import Counter

from labutils import tokens as _tokens
from labutils.checks.compare import expect
from labutils.checks.core import Case, exercise, hidden_test, integer, pick
from labutils.tokens import SOURCE_VOCAB

# ------------------------------------------------------------------------------------------ 1.1 split_tokens


def _split_functions(tokens: list[str]) -> list[str]:
    out = []
    for tok in tokens:
        out += [tok[:-1], "h"] if tok in ("sinh", "cosh", "tanh") else [tok]
    return out


def _split_power(tokens: list[str]) -> list[str]:
    out = []
    for tok in tokens:
        out += ["*", "*"] if tok == "**" else [tok]
    return out


def _split_big_o(tokens: list[str]) -> list[str]:
    out = []
    for tok in tokens:
        out += ["O", "(", "x", "**", "6", ")"] if tok == _tokens.BIG_O else [tok]
    return out


def _join_numbers(tokens: list[str]) -> list[str]:
    out: list[str] = []
    for tok in tokens:
        if tok.isdigit() and out and out[-1].isdigit():
            out[-1] += tok
        else:
            out.append(tok)
    return out


def _join_letters(tokens: list[str]) -> list[str]:
    """What ``[a-z]+`` makes of the tokens: neighbouring one-letter variables become one word (hx)."""
    out: list[str] = []
    joinable = False  # the last token out is a run of one-letter variables
    for tok in tokens:
        single = len(tok) == 1 and tok.isalpha()
        if single and joinable:
            out[-1] += tok
        else:
            out.append(tok)
        joinable = single
    return out


def _lost_characters(got, text: str) -> str | None:
    """A hint when the tokens leave out characters of ``text`` (spaces apart), else None."""
    if not isinstance(got, (list, tuple)) or not all(isinstance(tok, str) for tok in got):
        return None
    lost = Counter(text.replace(" ", "")) - Counter("".join(got))
    if not lost:
        return None
    return (
        f"no token holds {' '.join(repr(c) for c in sorted(lost))}: every character but a space belongs to "
        "a token, so add what is missing to your pattern (inside [...] write \\- for a minus sign)"
    )


_TOKENIZE_CASES = {
    "the slide's expression tan(h*x)+sinh(g*x)": "tan(h*x)+sinh(g*x)",
    "cosh is one token, and ** is one token": "cosh(a*x)**3+tanh(b*x)",
    "the slide's spelling without *": "tan(hx)+sinh(gx)",
    "a series: each digit is a token, O(x**6) is one token": "a*x-a**3*x**3/6+a**5*x**5/120+O(x**6)",
    "spaces are ignored": "exp(-b*x) * sin(c*x)",
}


def _split_tokens_mistakes(expected: list[str]):
    return [
        (
            lambda: _split_functions(expected),
            "cosh was read as cos then h: put the longer names "
            "first in the alternation (sinh|cosh|tanh before sin|cos|tan)",
        ),
        (
            lambda: _split_power(expected),
            "** was read as two *: put \\*\\* before \\* in the pattern",
        ),
        (
            lambda: _split_big_o(expected),
            "O(x**6) is a single token of the target vocabulary: "
            "put O\\(x\\*\\*6\\) first in the alternation",
        ),
        (
            lambda: _join_numbers(expected),
            "each digit is its own token: the vocabulary has 0 … 9, not 120; use [0-9], not [0-9]+",
        ),
        (
            lambda: _join_letters(expected),
            "letters side by side are separate variables (hx is h times x): match one letter "
            "with [a-z], not [a-z]+, after the function names",
        ),
    ]


def _split_tokens_cases() -> dict[str, Case]:
    return {name: Case((text,)) for name, text in _TOKENIZE_CASES.items()}


_SPLIT_TOKENS_REPLACES = ("labutils.tokens.tokenize", "labutils.tokens.TOKEN_PATTERN")


@exercise("01_tokenization.split_tokens", "1.1", 2, _SPLIT_TOKENS_REPLACES, cases=_split_tokens_cases)
def split_tokens(args: tuple, got) -> str:
    (text,) = args
    expected = _tokens.tokenize(text)
    expect(
        got,
        expected,
        f"split_tokens({text!r})",
        hint=_lost_characters(got, text)
        or "compare your pattern with the list of tokens the vocabulary holds",
        mistakes=_split_tokens_mistakes(expected),
    )
    return f"{len(expected)} tokens"


# -------------------------------------------------------------------------------------- 1.2 build_vocabulary

_SLIDE_TOKENS = ["tan", "(", "h", "*", "x", ")", "+", "sinh", "(", "g", "*", "x", ")"]


def _vocabulary(token_lists) -> dict[str, int]:
    return _tokens.Vocabulary([tok for tokens in token_lists for tok in tokens]).stoi


def _in_order_of_appearance(tokens: list[str]) -> dict[str, int]:
    stoi = {"<pad>": 0, "<sos>": 1, "<eos>": 2}
    for tok in tokens:
        stoi.setdefault(tok, len(stoi))
    return stoi


def _vocabulary_mistakes(token_lists):
    tokens = [tok for lst in token_lists for tok in lst]
    specials = ["<pad>", "<sos>", "<eos>"]
    return [
        (
            lambda: {tok: i for i, tok in enumerate(sorted(set(tokens)))},
            "the special tokens come first: '<pad>': 0, '<sos>': 1, '<eos>': 2, then the sorted tokens",
        ),
        (
            lambda: _in_order_of_appearance(tokens),
            "sort the tokens (sorted(set(...))): codes follow the sorted order, not the order of appearance",
        ),
        (
            lambda: {tok: i for i, tok in enumerate(specials + sorted(set(tokens)))},
            "a special token met in the input got a second, later code: take '<pad>', '<sos>', '<eos>' "
            "out of the set before sorting the other tokens",
        ),
        (
            lambda: {tok: i + 3 for i, tok in enumerate(sorted(set(tokens) - set(specials)))},
            "the special tokens '<pad>', '<sos>', '<eos>' must be in the vocabulary too, with codes 0, 1, 2",
        ),
    ]


def _build_vocabulary_cases() -> dict[str, Case]:
    cases = {
        "the slide's expression": [list(_SLIDE_TOKENS)],
        "a token seen several times gets one code": [["x", "+", "x"], ["x", "*", "x"]],
        "special tokens in the input keep their codes": [["<sos>", "sin", "(", "x", ")", "<eos>"]],
        "no tokens: only the special ones": [],
    }
    tokens = SOURCE_VOCAB.itos[3:]
    scrambled = [tokens[i::4][::-1] + tokens[: 4 + i] for i in range(4)]  # every token, some twice
    return {
        **{name: Case((token_lists,)) for name, token_lists in cases.items()},
        "reproduces the lecture's source vocabulary": Case((scrambled,), judge=_the_lecture_vocabulary),
    }


def _the_lecture_vocabulary(args: tuple, got) -> str:
    (scrambled,) = args
    expect(got, dict(SOURCE_VOCAB.stoi), "build_vocabulary", mistakes=_vocabulary_mistakes(scrambled))
    return f"{len(SOURCE_VOCAB)} entries, as on the slide"


_VOCABULARY_REPLACES = ("labutils.tokens.Vocabulary",)


@exercise("01_tokenization.build_vocabulary", "1.2", 2, _VOCABULARY_REPLACES, cases=_build_vocabulary_cases)
def build_vocabulary(args: tuple, got) -> None:
    (token_lists,) = args
    expect(got, _vocabulary(token_lists), "build_vocabulary", mistakes=_vocabulary_mistakes(token_lists))


# ------------------------------------------------------------------------------------------------ hidden tests
# Inputs the grader draws from the secret of its grading run: they vary what the visible cases fix.


def _random_pair(generator) -> tuple[str, str]:
    """A (source, series) pair of the data set's family that no notebook shows."""
    import random

    from labutils import data as _data

    return _data.pair_of(_data.draw(random.Random(integer(generator, 0, 2**31))))


@hidden_test(
    "01_tokenization.split_tokens", "an expression or series you have not seen splits into the same tokens"
)
def unseen_text(generator) -> Case:
    return Case((pick(generator, list(_random_pair(generator))),))


@hidden_test(
    "01_tokenization.build_vocabulary", "the vocabulary does not depend on the order or repeats of the tokens"
)
def shuffled_and_repeated(generator) -> Case:
    import random

    tokens = list(SOURCE_VOCAB.itos[3:])
    random.Random(integer(generator, 0, 2**31)).shuffle(tokens)
    chosen = tokens[: integer(generator, 3, len(tokens))]
    lists = [chosen[i::3] + chosen[: integer(generator, 0, 3)] for i in range(3)]
    return Case((lists,))
