"""Answers alike: to the package's own code, and to each other across a class.

The measure is one: an answer's syntax tree with its names numbered in order of appearance (so renaming
variables, and comments or docstrings, change nothing), compared node by node with
:class:`difflib.SequenceMatcher`; ``alike`` is its ratio, 1.0 for the same tree. Both reports are for the
instructor to judge, never a grade.

* :func:`similar_to_package`: an answer of at least :data:`MIN_STATEMENTS` statements at least
  :data:`ALIKE` alike to the package function the exercise replaces is noted for review.
* :func:`similar_pairs`: two students' answers to one exercise at least :data:`ALIKE` alike. Short answers
  are not compared: an answer needs :data:`MIN_STATEMENTS` statements, because a one-line mask has only a few
  ways to be written and honest students write the same one. Nor is a pair listed when both answers are the
  class's *common answer*: one that at least :data:`COMMON_SHARE` of the answers compared (and at least
  :data:`COMMON_LEAST` others) are as alike to, which is what following the notebook's hints gives. The
  summary counts both.

Fast for a class of hundreds: answers with the same tree are compared once, a pair whose lengths alone rule
out ``alike`` (``2 min / (m + n) < ALIKE``) or whose node counts do is never matched in full.
"""

from __future__ import annotations

import ast
import difflib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from labutils.instructor.sources import _parse

MIN_STATEMENTS = 4  # statements in an answer before its likeness to anything means something
ALIKE = 0.9
COMMON_SHARE = 0.1
COMMON_LEAST = 3
MAX_CODE = 200_000  # characters of an answer cell parsed for this report

_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def shape(node: ast.AST) -> list[str]:
    """A definition's (or a cell's) statements as syntax trees, names numbered in order of appearance, no
    docstring: one string per node."""
    names: dict[str, str] = {}

    class Rename(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.Name:
            node.id = names.setdefault(node.id, f"_{len(names)}")
            return node

        def visit_arg(self, node: ast.arg) -> ast.arg:
            node.arg, node.annotation = names.setdefault(node.arg, f"_{len(names)}"), None
            return node

    body = list(getattr(node, "body", []))
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]  # the docstring
    head = [node.args] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else []
    tree = Rename().visit(ast.Module(body=[*head, *body], type_ignores=[]))
    return [ast.dump(item, annotate_fields=False) for item in ast.walk(tree) if isinstance(item, ast.AST)]


def statements(node: ast.AST) -> int:
    """Statements inside a definition (or a cell), nested ones included, its docstring and itself aside."""
    count = sum(isinstance(item, ast.stmt) for item in ast.walk(node))
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        count -= 1
    return count - isinstance(node, ast.stmt)


def definition(code: str, name: str) -> ast.AST | None:
    """The last top-level ``def``/``class`` of ``name`` in a cell; else the cell itself (an answer such as
    ``f = lambda …``); None when the cell does not parse."""
    if len(code) > MAX_CODE:
        return None
    try:
        tree = _parse(code)
    except (RecursionError, MemoryError, ValueError):
        return None
    if tree is None:
        return None
    found = [node for node in tree.body if isinstance(node, _DEFINITIONS) and node.name == name]
    return found[-1] if found else tree


def ratio(a: list, b: list) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def similar_to_package(code: str, function: str, forbidden: tuple[str, ...]) -> str | None:
    """The package object an answer of at least MIN_STATEMENTS statements matches, syntax tree against syntax
    tree with names normalised (for the instructor to review, never a grade), else None."""
    import inspect
    import textwrap

    from labutils.checks import guard

    answer = definition(code, function)
    if not isinstance(answer, _DEFINITIONS) or statements(answer) < MIN_STATEMENTS:
        return None
    mine = shape(answer)
    for path in forbidden:
        try:
            target = guard.resolve(path)[2]
            source = textwrap.dedent(inspect.getsource(inspect.unwrap(target)))
        except (ImportError, AttributeError, TypeError, OSError):
            continue
        package = [node for node in ast.parse(source).body if isinstance(node, _DEFINITIONS)]
        if not package:
            continue
        alike = ratio(mine, shape(package[0]))
        if alike >= ALIKE:
            return f"its syntax tree matches {path} with names normalised ({alike:.0%} alike)"
    return None


# ---------------------------------------------------------------------------------------------- the class


@dataclass(frozen=True)
class Answer:
    """One student's answer to one exercise."""

    exercise: str  # grade_id
    student: str
    submission: str
    code: str
    function: str


@dataclass(frozen=True)
class Pair:
    exercise: str
    alike: float
    first: Answer
    second: Answer


@dataclass
class Similarity:
    pairs: list[Pair]  # listed, most alike first within each exercise
    short: int  # answers not compared: fewer than MIN_STATEMENTS statements
    common: int  # pairs not listed: both answers the class's common answer
    compared: int  # answers compared

    def summary(self, path: str) -> str:
        exercises = len({pair.exercise for pair in self.pairs})
        line = (
            f"similar answers: {len(self.pairs)} pair(s) in {exercises} exercise(s), listed in {path} "
            f"for you to judge ({self.compared} answers of at least {MIN_STATEMENTS} statements compared, "
            f"{self.short} shorter ones not"
        )
        if self.common:
            line += f"; {self.common} pair(s) of the class's common answer not listed"
        return line + ")"


def similar_pairs(answers: Iterable[Answer]) -> Similarity:
    """Pairs of different students' answers to the same exercise at least ALIKE alike (see the module)."""
    by_exercise: dict[str, list[tuple[Answer, tuple[int, ...]]]] = {}
    short = 0
    ids: dict[str, int] = {}  # each distinct node text as a number: the comparisons run on small ints
    for answer in answers:
        node = definition(answer.code, answer.function)
        if node is None or statements(node) < MIN_STATEMENTS:
            short += 1
            continue
        coded = tuple(ids.setdefault(text, len(ids)) for text in shape(node))
        by_exercise.setdefault(answer.exercise, []).append((answer, coded))
    pairs, common, compared = [], 0, 0
    for exercise in sorted(by_exercise):
        found, skipped = _exercise(exercise, by_exercise[exercise])
        pairs += found
        common += skipped
        compared += len(by_exercise[exercise])
    return Similarity(pairs, short, common, compared)


def _exercise(exercise: str, answers: list[tuple[Answer, tuple[int, ...]]]) -> tuple[list[Pair], int]:
    # Distinct trees first: an answer written by many students is compared once.
    groups: dict[tuple[int, ...], list[Answer]] = {}
    for answer, coded in answers:
        groups.setdefault(coded, []).append(answer)
    shapes = sorted(groups, key=len)
    counts = [Counter(item) for item in shapes]
    alike: dict[tuple[int, int], float] = {}
    for j, b in enumerate(shapes):
        matcher = difflib.SequenceMatcher(None, autojunk=False)
        matcher.set_seq2(b)  # what SequenceMatcher learns of b, once for every a
        for i in range(j - 1, -1, -1):
            a = shapes[i]
            if 2 * len(a) / (len(a) + len(b)) < ALIKE:
                break  # sorted by length: every shorter one is ruled out too
            if 2 * sum((counts[i] & counts[j]).values()) / (len(a) + len(b)) < ALIKE:
                continue  # the node counts alone bound the ratio below ALIKE
            matcher.set_seq1(a)
            value = matcher.ratio()
            if value >= ALIKE:
                alike[(i, j)] = value
    # How many other answers each distinct tree is alike to: the class's common answer is alike to many.
    neighbours = [len(groups[item]) - 1 for item in shapes]
    for i, j in alike:
        neighbours[i] += len(groups[shapes[j]])
        neighbours[j] += len(groups[shapes[i]])
    least = max(COMMON_LEAST, COMMON_SHARE * len(answers))
    is_common = [count >= least for count in neighbours]
    pairs, skipped = [], 0
    links = [((i, i), 1.0) for i in range(len(shapes))] + list(alike.items())
    for (i, j), value in links:
        if i == j:
            members = groups[shapes[i]]
            candidates = [(a, b) for n, a in enumerate(members) for b in members[n + 1 :]]
        else:
            candidates = [(a, b) for a in groups[shapes[i]] for b in groups[shapes[j]]]
        for a, b in candidates:
            if a.student == b.student:
                continue
            if is_common[i] and is_common[j]:
                skipped += 1
                continue
            first, second = sorted((a, b), key=lambda answer: (answer.student, answer.submission))
            pairs.append(Pair(exercise, round(value, 4), first, second))
    pairs.sort(key=lambda pair: (-pair.alike, pair.first.student, pair.second.student))
    return pairs, skipped
