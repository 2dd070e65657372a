"""Every message of the exercise checks is one a test makes a mistake to see, and a hint names only what the
case holds.

The typical mistakes are :data:`test_checks.MISTAKES`: a wrong answer and a piece of the hint it must get.
Here the checks' own text is read (each literal of a notebook's module) and every piece of it must show up in
the feedback of the reference answers or of those mistakes: a hint no test triggers is a hint no one has seen
to be true.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest
from test_checks import MISTAKES, REFERENCE, define, run_check

from labutils import checks
from labutils.checks.core import all_cases

CHECKS_DIR = Path(checks.__file__).parent
#: The modules of the notebooks' checks (the core's messages are tested in test_checks).
MODULES = [
    "tokenization",
    "coding_and_padding",
    "embedding",
    "attention",
    "multi_head",
    "transformer",
    "training",
    "translation",
    "gpt",
]


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def message_pieces(module: str) -> list[str]:
    """The prose of a checks module: its string literals and the literal parts of its f-strings, without
    docstrings and the declarations of exercises and hidden tests (their requirement is no feedback)."""
    tree = ast.parse((CHECKS_DIR / f"{module}.py").read_text())
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):  # text an exception's description is searched for, no message
            skip.update(id(inner) for inner in ast.walk(node))
        if isinstance(node, ast.Call) and getattr(getattr(node.func, "value", None), "id", "") == "re":
            skip.update(id(inner) for inner in ast.walk(node.args[0]) if node.args)  # a regular expression
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("hidden_test", "exercise"):
            skip.update(id(inner) for inner in ast.walk(node))
    pieces = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and id(node) not in skip:
            for value in node.values:
                skip.add(id(value))
                if isinstance(value, ast.Constant):
                    pieces.append(value.value)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            pieces.append(node.value)
    return [piece for piece in pieces if len(piece.strip()) >= 20 and " " in piece.strip()]


@functools.cache
def feedback(grade_id: str, source: str) -> str:
    return run_check(grade_id, define(source, checks.EXERCISES[grade_id].function)).feedback()


def grade_ids_of(module: str) -> list[str]:
    return [g for g, e in checks.EXERCISES.items() if _module_of(e) == module]


def _module_of(exercise) -> str:
    check = getattr(checks, exercise.function)
    return check.judge.__module__.rsplit(".", 1)[-1]


@pytest.mark.parametrize("module", MODULES)
def test_every_message_of_a_check_is_seen_by_a_test(module):
    seen = "\n".join(
        feedback(grade_id, source)
        for grade_id in grade_ids_of(module)
        for source in [REFERENCE[grade_id], *(source for source, _ in MISTAKES[grade_id])]
    )
    unseen = [piece for piece in message_pieces(module) if piece.strip() not in seen]
    assert not unseen, (
        f"no test makes the mistake that shows these messages of checks/{module}.py:\n"
        + "\n".join(map(repr, unseen))
    )


def _quoted(text: str) -> list[str]:
    """The tokens a text quotes, 'like' 'this' (an apostrophe inside a word is no quote, a phrase no token)."""
    return re.findall(r"(?<![\w])'([^'\s]+)'(?![\w])", text)


@pytest.mark.parametrize("grade_id", sorted(MISTAKES))
def test_a_hint_names_only_what_the_case_and_the_answer_hold(grade_id):
    """What a hint quotes (a token, a character, a key) is in the case's input or in what the answer returned
    (the message before the hint), never a canned example that this case does not hold."""
    cases = dict(all_cases(grade_id, secret=None))
    for source, _ in MISTAKES[grade_id]:
        result = run_check(grade_id, define(source, checks.EXERCISES[grade_id].function))
        for outcome in result.outcomes:
            if "Hint: " not in outcome.message or outcome.name not in cases:
                continue
            said, hint = outcome.message.split("Hint: ", 1)
            held = said + repr(cases[outcome.name].args)
            for item in _quoted(hint):
                assert item in held, (
                    f"{grade_id}: the hint quotes {item!r}, which the case does not hold:\n{said}"
                )


def test_a_tokenizer_that_tries_sin_before_sinh_is_told_of_sinh_and_never_of_cosh():
    pattern = r"O\(x\*\*6\)|sin|cos|tan|exp|sinh|cosh|tanh|\*\*|[a-z]|[0-9]|[()*+\-/]"
    result = run_check(
        "01_tokenization.split_tokens",
        define(f"def split_tokens(text):\n    return re.findall(r'{pattern}', text)", "split_tokens"),
    )
    slide = next(o for o in result.outcomes if o.name.startswith("the slide's expression"))
    assert "Hint: 'sinh' came out as 'sin' then 'h'" in slide.message
    for outcome in result.outcomes:
        if "cosh" not in outcome.name:
            assert "cosh" not in outcome.message, outcome.message


def test_the_grader_gets_the_hint_of_an_exception_from_its_description():
    """The grader judges outside the kernel, from the exception's one-line description: the same hint."""
    from labutils.checks.core import CheckResult, judge_returned

    grade_id = "04_attention.multi_head_attention"
    name, case = next((n, c) for n, c in all_cases(grade_id, secret=None) if c.args[4] is not None)
    error = (
        "RuntimeError: The size of tensor a (2) must match the size of tensor b (4) at non-singleton dimension 1 "
        "(line 7 of your multi_head_attention: `heads, w = attention(Q, K, V, mask)`)"
    )
    result = CheckResult(checks.EXERCISES[grade_id])
    judge_returned(result, name, case, {"error": error})
    (outcome,) = result.outcomes
    assert not outcome.passed
    assert outcome.message.startswith("your function raised RuntimeError")
    assert (
        "Hint: the padding mask (2, 6), (B, Lk), must broadcast against the scores of every head"
        in outcome.message
    )


def test_an_explainer_that_fails_gives_no_hint_and_no_second_failure(monkeypatch):
    from labutils.checks import core

    def broken(args, error):
        raise KeyError("a bug of the explainer")

    monkeypatch.setitem(core.EXPLAINERS, "02_coding_and_padding.encode", broken)
    result = run_check(
        "02_coding_and_padding.encode",
        define("def encode(text, stoi):\n    return [stoi[c] for c in text]", "encode"),
    )
    assert all(o.message.startswith("your function raised KeyError") for o in result.outcomes), (
        result.feedback()
    )
    assert "Hint" not in result.feedback()
