"""Checks of notebook 01, tokenization: ``split_tokens`` (1.1) and ``build_vocabulary`` (1.2)."""

from __future__ import annotations

import re
from collections import Counter

from labutils import tokens as _tokens
from labutils.checks.compare import expect, fail, short
from labutils.checks.core import Case, exercise, family_pair, hidden_test, integer, pick
from labutils.tokens import SOURCE_VOCAB

# ------------------------------------------------------------------------------------------ 1.1 split_tokens


def _spans(tokens: list[str]) -> list[tuple[int, int]]:
    """Where each token starts and ends in the tokens written one after the other."""
    spans, at = [], 0
    for tok in tokens:
        spans.append((at, at + len(tok)))
        at += len(tok)
    return spans


def _a_split_token(got: list[str], expected: list[str]) -> tuple[str, list[str]] | None:
    """The first token of ``expected`` that ``got`` cut into pieces, with the pieces (both spell the same)."""
    got_spans = _spans(got)
    for start, end in _spans(expected):
        pieces = [got[i] for i, (s, e) in enumerate(got_spans) if start <= s and e <= end]
        if len(pieces) > 1 and sum(map(len, pieces)) == end - start:
            return "".join(pieces), pieces
    return None


def _a_joined_token(got: list[str], expected: list[str]) -> str | None:
    """The first token of ``got`` that holds several tokens of ``expected`` (both spell the same)."""
    expected_spans = _spans(expected)
    for (start, end), tok in zip(_spans(got), got, strict=True):
        if sum(start <= s and e <= end for s, e in expected_spans) > 1:
            return tok
    return None


def _split_hint(name: str, pieces: list[str]) -> str:
    shown = " then ".join(repr(piece) for piece in pieces)
    if name == _tokens.BIG_O:
        return (
            f"{name!r} came out as {len(pieces)} tokens: it is a single token of the target vocabulary, so it "
            "needs an alternative of its own, tried before those of its pieces"
        )
    if name == "**":
        return (
            "'**' came out as two '*': ** is one token, and at each position the first alternative that "
            "matches wins, so revisit the order of your alternatives"
        )
    if name in _tokens.FUNCTIONS and all(len(piece) == 1 for piece in pieces):
        return (
            f"{name!r} came out letter by letter: at each position the first alternative that matches wins, "
            "so a whole name must be among the alternatives, tried before the single letters"
        )
    return (  # a function name, cut after a shorter name it starts with
        f"{name!r} came out as {shown}: at each position the first alternative that matches wins, so a "
        f"longer name must be tried before the name it starts with ({pieces[0]!r})"
    )


def _joined_hint(tok: str) -> str:
    if tok.isdigit():
        return (
            f"{tok!r} came out as one token: the vocabulary holds the digits 0 … 9, not numbers such as "
            f"{tok}, so each digit is a token of its own"
        )
    if tok.isalpha():
        return (
            f"{tok!r} came out as one token: outside a function name each letter is a variable of its own "
            f"({tok} is {' times '.join(tok)})"
        )
    return (
        f"{tok!r} came out as one token: a token is one function name, letter, digit, operator or "
        "parenthesis (or ** or O(x**6)), and re.findall returns them one by one for a pattern of alternatives"
    )


def _foreign_tokens(got: list[str], text: str) -> str | None:
    """A hint when a token is empty, holds a space, or holds a character no token may hold."""
    empty = sum(tok == "" for tok in got)
    if empty:
        return (
            f"{empty} of your tokens are empty strings '': when a pattern has a group ( … ), findall returns "
            "what the group matched, not the whole match ('' where the group took no part); a parenthesis "
            "that must match itself is escaped"
        )
    if any(not tok.strip() or tok != tok.replace(" ", "") for tok in got):
        return (
            "a space became a token (or part of one): spaces are skipped, so no alternative may match a "
            "space (findall skips what no alternative matches)"
        )
    foreign = next((tok for tok in got if len(tok) == 1 and tok not in _ALPHABET), None)
    if foreign is None:
        return None
    hint = (
        f"{foreign!r} became a token: it is no character of the lab's alphabet, so no alternative may "
        "match it"
    )
    if foreign in ",.":
        hint += (
            "; inside [...], a minus sign between two characters stands for every character between them "
            "(+-/ holds + , - . /), so revisit how a character class holds a minus sign"
        )
    return hint


def _tokens_hint(got: list[str], expected: list[str], text: str) -> str | None:
    """What is wrong with the tokens ``got``, named from what they hold (None: nothing recognised)."""
    hint = _foreign_tokens(got, text) or _lost_characters(got, text)
    if hint:
        return hint
    # A longer token that holds a character no token may hold: compared without it.
    cleaned = {tok: "".join(c for c in tok if c in _ALPHABET) for tok in got}
    kept = [cleaned[tok] for tok in got if cleaned[tok]]
    if "".join(kept) != "".join(expected):
        return _counts_hint(got, expected)
    split, joined = _a_split_token(kept, expected), _a_joined_token(kept, expected)
    where_split = "".join(expected).find(split[0]) if split else -1
    if split and (joined is None or where_split <= "".join(kept).find(joined)):
        return _split_hint(*split)
    if joined is None:
        return None
    return _joined_hint(next(tok for tok in got if cleaned[tok] == joined))


def _counts_hint(got: list[str], expected: list[str]) -> str | None:
    """A hint when ``got`` holds tokens as often as the text does, in another order, or a token fewer times."""
    have, want = Counter(got), Counter(expected)
    if have == want:
        return (
            "these are the right tokens, in another order: the tokens of a text come in the order they "
            "appear in it, as re.findall returns them, from left to right"
        )
    special = next((tok for tok in have if tok in ("<pad>", "<sos>", "<eos>")), None)
    if special is not None:
        return (
            f"{special!r} is no piece of the text: the special tokens are added when a sequence is coded "
            "(notebook 2), the tokenizer returns the text's own tokens"
        )
    fewer = next((tok for tok in want if have[tok] < want[tok]), None)
    if fewer is None or set(have) - set(want):
        return None
    return (
        f"{fewer!r} appears {want[fewer]} times in the text and {have[fewer]} times in your tokens: each "
        "occurrence is a token of its own (the vocabulary lists each token once, a text does not)"
    )


def _lost_characters(got, text: str) -> str | None:
    """A hint when the tokens leave out characters of ``text`` (spaces apart), else None."""
    if not isinstance(got, (list, tuple)) or not all(isinstance(tok, str) for tok in got):
        return None
    lost = set(text.replace(" ", "")) - set("".join(got)) - (set(text) - _ALPHABET)  # (those are skipped)
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


def _split_tokens_cases() -> dict[str, Case]:
    return {name: Case((text,)) for name, text in _TOKENIZE_CASES.items()}


def _explain_pattern(args: tuple, error: str) -> str | None:
    """A pattern that does not compile (``re.error``, described as ``error: …``): what its message means."""
    if not error.startswith("error: "):
        return None
    message = error.removeprefix("error: ").split(" (line ")[0]
    where = re.search(r"at position (\d+)", message)
    at = f" (at position {where.group(1)} of the pattern)" if where else ""
    ranged = re.match(r"bad character range (\S+)", message)
    if ranged:
        return (
            f"inside [...], a minus sign between two characters makes a range, and {ranged.group(1)} runs "
            f"backwards{at}: a minus sign meant as itself is escaped, or comes first or last in the brackets"
        )
    if "repeat" in message:
        return (
            f"* and + repeat what comes before them, and this one{at} has nothing it may repeat (not another "
            "* or +, nor the start of an alternative): a * or + meant as itself is escaped outside [...]"
        )
    if "parenthesis" in message or "subpattern" in message:
        return f"( and ) open and close a group{at}: a parenthesis meant as itself is escaped outside [...]"
    return f"the pattern does not compile ({message}): Python's re module reads it as a regular expression"


_SPLIT_TOKENS_REPLACES = ("labutils.tokens.tokenize", "labutils.tokens.TOKEN_PATTERN")


@exercise(
    "01_tokenization.split_tokens",
    "1.1",
    2,
    _SPLIT_TOKENS_REPLACES,
    cases=_split_tokens_cases,
    explain=_explain_pattern,
)
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
        hint=_tokens_hint(got, expected, text)
        or "compare your pattern with the list of tokens the vocabulary holds",
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
        (
            lambda: {i: tok for tok, i in _vocabulary(token_lists).items()},
            "this dict goes from each code to its token (itos); the vocabulary asked for goes the other way, "
            "from each token to its code",
        ),
    ]


def _special_hint(got, token_lists) -> str | None:
    """A hint when a special token of the input got a code other than its own."""
    seen = {tok for tokens in token_lists for tok in tokens}
    if not isinstance(got, dict):
        return None
    for code, special in enumerate(("<pad>", "<sos>", "<eos>")):
        if special in seen and special in got and got[special] != code:
            return (
                f"{special!r} appears in the input and got the code {got[special]!r}: a special token keeps "
                f"its code ({code}) wherever it appears, so it is not among the tokens to number"
            )
    return None


def _order_hint(got, token_lists) -> str | None:
    """A hint when ``got`` holds the right tokens and codes 0, 1, 2, … but pairs them in another order."""
    expected = _vocabulary(token_lists)
    if not isinstance(got, dict) or set(got) != set(expected):
        return None
    if sorted(map(str, got.values())) != sorted(map(str, expected.values())):
        return None
    if any(got[tok] != expected[tok] for tok in ("<pad>", "<sos>", "<eos>")):
        return "the special tokens keep codes 0, 1, 2 (padding, start, end), and the other tokens follow"
    by_code = sorted(got, key=lambda tok: got[tok])
    pair = next(((a, b) for a, b in zip(by_code, by_code[1:]) if expected[a] > expected[b]), None)
    if pair is None:
        return None
    first, second = pair
    return (
        f"{first!r} has a smaller code than {second!r}, though it sorts after it: after the special "
        "tokens, the codes follow the sorted order of the tokens (sorted on strings)"
    )


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
    expect(
        got,
        dict(SOURCE_VOCAB.stoi),
        "build_vocabulary",
        hint=_special_hint(got, scrambled) or _order_hint(got, scrambled) or "",
        mistakes=_vocabulary_mistakes(scrambled),
    )
    return f"{len(SOURCE_VOCAB)} entries, as on the slide"


_VOCABULARY_REPLACES = ("labutils.tokens.Vocabulary",)


@exercise("01_tokenization.build_vocabulary", "1.2", 2, _VOCABULARY_REPLACES, cases=_build_vocabulary_cases)
def build_vocabulary(args: tuple, got) -> None:
    (token_lists,) = args
    _a_list_of_tokens(got, token_lists)
    expect(
        got,
        _vocabulary(token_lists),
        "build_vocabulary",
        hint=_special_hint(got, token_lists) or _order_hint(got, token_lists) or "",
        mistakes=_vocabulary_mistakes(token_lists),
    )


# ------------------------------------------------------------------------------------------------ hidden tests
# Inputs the grader draws from the secret of its grading run: they vary what the visible cases fix.


def _random_pair(generator) -> tuple[str, str]:
    """A (source, series) pair of the data set's family that no notebook shows."""
    import random

    return family_pair(random.Random(integer(generator, 0, 2**31)))


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
