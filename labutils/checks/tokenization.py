"""Checks of notebook 01, tokenization: ``split_tokens`` (1.1) and ``build_vocabulary`` (1.2)."""

from __future__ import annotations

import re
from collections import Counter

from labutils import tokens as _tokens
from labutils.checks.compare import expect, fail, short
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
    lost -= Counter(c for c in text if c not in _ALPHABET)  # what no token may hold is skipped, rightly
    if not lost:
        return None
    hint = (
        f"no token holds {' '.join(repr(c) for c in sorted(lost))}: every character of the lab's alphabet "
        "belongs to a token, so one of your alternatives must match it"
    )
    if "-" in lost:
        hint += " (inside [...] a minus sign between two characters makes a range, not a character)"
    if "O" in lost:
        hint += " (O(x**6), with its parentheses, is one token of the target vocabulary)"
    return hint


def _findall(pattern: str, text: str) -> list[str]:
    return re.findall(pattern, text)


#: The package's pattern with one typical slip: the minus sign unescaped between + and / (a range + , - . /).
_RANGE_PATTERN = _tokens.TOKEN_PATTERN.pattern.replace(r"+\-/", "+-/")
#: Every character a token may hold.
_ALPHABET = set("".join(_tokens.SOURCE_VOCAB.itos[3:] + _tokens.TARGET_VOCAB.itos[3:]))


_TOKENIZE_CASES = {
    "the slide's expression tan(h*x)+sinh(g*x)": "tan(h*x)+sinh(g*x)",
    "cosh is one token, and ** is one token": "cosh(a*x)**3+tanh(b*x)",
    "the slide's spelling without *": "tan(hx)+sinh(gx)",
    "a series: each digit is a token, O(x**6) is one token": "a*x-a**3*x**3/6+a**5*x**5/120+O(x**6)",
    "spaces are skipped": "exp(-b*x) * sin(c*x)",
    "a character outside the alphabet is no token: exp(2.5*x)": "exp(2.5*x)",
}


def _spell_functions(tokens: list[str]) -> list[str]:
    """What a pattern with its one-letter alternative before the names makes: every name letter by letter."""
    out = []
    for tok in tokens:
        out += list(tok) if tok in _tokens.FUNCTIONS else [tok]
    return out


def _split_tokens_mistakes(text: str, expected: list[str]):
    return [
        (
            lambda: _split_functions(expected),
            "cosh came out as cos then h: at each position the first alternative that matches wins, "
            "so a longer name must be tried before the name it starts with",
        ),
        (
            lambda: _split_power(expected),
            "** came out as two *: ** is one token, and at each position the first alternative that "
            "matches wins, so revisit the order of your alternatives",
        ),
        (
            lambda: _split_big_o(expected),
            "O(x**6) came out as several tokens: it is a single token of the target vocabulary, so it "
            "needs an alternative of its own, tried before those of its pieces",
        ),
        (
            lambda: _join_numbers(expected),
            "a number came out as one token: the vocabulary holds the digits 0 … 9, not numbers such as "
            "120, so each digit is a token of its own",
        ),
        (
            lambda: _join_letters(expected),
            "letters side by side came out as one token: outside a function name each letter is a "
            "variable of its own (hx is h times x)",
        ),
        (
            lambda: _spell_functions(expected),
            "a function name came out letter by letter: at each position the first alternative that "
            "matches wins, and a single letter matches before a whole name is tried",
        ),
        (
            lambda: _findall(_RANGE_PATTERN, text),
            "'.' became a token: inside [...], a minus sign between two characters stands for every "
            "character between them (+-/ holds + , - . /); revisit how a character class holds a minus sign",
        ),
    ]


def _split_tokens_cases() -> dict[str, Case]:
    return {name: Case((text,)) for name, text in _TOKENIZE_CASES.items()}


_SPLIT_TOKENS_REPLACES = ("labutils.tokens.tokenize", "labutils.tokens.TOKEN_PATTERN")


@exercise("01_tokenization.split_tokens", "1.1", 2, _SPLIT_TOKENS_REPLACES, cases=_split_tokens_cases)
def split_tokens(args: tuple, got) -> str:
    (text,) = args
    expected = _tokens.TOKEN_PATTERN.findall(text)  # the package's tokens; what matches nothing is skipped
    if not isinstance(got, list):
        fail(
            f"split_tokens({text!r}) returned {type(got).__name__} {short(got)}. Hint: the instructions ask "
            "for the list of tokens, as re.findall returns it"
        )
    if got and not all(isinstance(tok, str) for tok in got):
        fail(
            f"split_tokens({text!r}) returned {short(got)}. Hint: a token is a string, as re.findall "
            "returns them; a pattern with groups (...) makes findall return the groups instead"
        )
    expect(
        got,
        expected,
        f"split_tokens({text!r})",
        hint=_lost_characters(got, text)
        or "compare your pattern with the list of tokens the vocabulary holds",
        mistakes=_split_tokens_mistakes(text, expected),
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
    others = sorted(set(tokens) - set(specials))
    return [
        (
            lambda: {tok: i for i, tok in enumerate(sorted(set(tokens)))},
            "the special tokens are missing from the front: the vocabulary starts with the three "
            "special tokens, codes 0, 1, 2, and the other tokens follow in sorted order",
        ),
        (
            lambda: _in_order_of_appearance(tokens),
            "the codes follow the order in which the tokens first appear; a vocabulary's codes follow "
            "the sorted order of its tokens",
        ),
        (
            lambda: {tok: i for i, tok in enumerate(specials + sorted(set(tokens)))},
            "a special token met in the input got a second, later code: the special tokens keep their "
            "codes 0, 1, 2 wherever they appear, so they are not among the tokens to sort",
        ),
        (
            lambda: {tok: i + 3 for i, tok in enumerate(others)},
            "the three special tokens are missing: the vocabulary holds them too, with codes 0, 1, 2",
        ),
        (
            lambda: {tok: i for i, tok in enumerate(sorted(set(tokens) | set(specials)))},
            "the special tokens were sorted among the others; they come first, in the lecture's order "
            "(padding, start, end), with codes 0, 1, 2",
        ),
        (
            lambda: {tok: i + 1 for i, tok in enumerate(specials + others)},
            "the codes start at 1; a code is a position in the list of tokens, and the first is 0",
        ),
    ]


def _a_list_of_tokens(got, token_lists) -> None:
    """A list where a dict belongs: its own hint when it holds the vocabulary's tokens in order."""
    tokens = {tok for lst in token_lists for tok in lst}
    if isinstance(got, (list, tuple)) and set(got) == tokens | {"<pad>", "<sos>", "<eos>"}:
        fail(
            f"build_vocabulary returned a {type(got).__name__} of {len(got)} tokens. Hint: the tokens "
            "in order are only half of it; return the dict from each token to its code"
        )


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
    _a_list_of_tokens(got, scrambled)
    expect(got, dict(SOURCE_VOCAB.stoi), "build_vocabulary", mistakes=_vocabulary_mistakes(scrambled))
    return f"{len(SOURCE_VOCAB)} entries, as on the slide"


_VOCABULARY_REPLACES = ("labutils.tokens.Vocabulary",)


@exercise("01_tokenization.build_vocabulary", "1.2", 2, _VOCABULARY_REPLACES, cases=_build_vocabulary_cases)
def build_vocabulary(args: tuple, got) -> None:
    (token_lists,) = args
    _a_list_of_tokens(got, token_lists)
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
