"""The guard: an answer must be the student's own code, not the package function the exercise replaces.

An exercise names what it asks the student to write, its *forbidden* objects: dotted paths such as
``labutils.attention.causal_mask`` (with ``MultiHeadAttention.split_heads``-style attributes), or, for
exercises the package does not know, bare names that match any package function or class of that name. One
rule tells package code from student code: by the file a function was written in, a file of the package but
not of ``labutils/checks`` or ``labutils/instructor`` (they run answers, they never replace them).

The rule is enforced in two places, both from this module:

* :func:`switched_off`, while a check runs an answer: every place a forbidden object is reachable from (its
  module, the package's re-exports, the answer's globals) holds a stand-in that raises
  :class:`ForbiddenCall`, so an answer that calls the package fails its tests and is told why;
* :class:`Watch`, in the kernel of a graded submission, while the grader runs the answer on its inputs: what
  the answer *is* (a package function, or a wrapper of one) and which package functions it calls, however it
  reached them (a default argument, an alias); the grader reads the verdict as data and :func:`copied` says
  why it earns nothing.

This module imports nothing but the standard library, so the grader can run it in a student's kernel from its
source text without importing labutils there.
"""

from __future__ import annotations

import contextlib
import functools
import linecache
import os
import sys
import types
from collections.abc import Callable, Iterator
from importlib import import_module


class ForbiddenCall(RuntimeError):
    """Raised by a labutils function switched off while a check runs the answer meant to replace it."""


def describe(error: BaseException, answer: object) -> str:
    """``TypeError: … (line 4 of your masked_attention: `w = …`)``: the message and where in the answer.

    What a check and the grader's runner both say when an answer raised; a switched-off call says only why.
    """
    try:
        lines = str(error).strip().splitlines()
    except Exception:  # an exception whose __str__ raises
        lines = []
    text = type(error).__name__ + (f": {lines[0][:200]}" if lines else "")
    if type(error).__name__ == "ForbiddenCall":  # by name: in a kernel, this module runs from its source
        return lines[0] if lines else text
    code = getattr(answer, "__code__", None)
    where, tb = None, error.__traceback__
    while tb is not None and code is not None:
        if tb.tb_frame.f_code.co_filename == code.co_filename:
            where = tb.tb_lineno
        tb = tb.tb_next
    if where is not None:
        source = linecache.getline(code.co_filename, where).strip()
        text += f" (line {where - code.co_firstlineno + 1} of your {getattr(answer, '__name__', 'answer')}"
        text += (f": `{source[:120]}`" if source else "") + ")"
    return text


def resolve(path: str, load: bool = True) -> tuple[object, str, object] | None:
    """``"labutils.tokens.Vocabulary.encode"`` → (the class Vocabulary, "encode", the function).

    With ``load``, modules are imported (ImportError if the path names nothing); without, only modules
    already loaded are looked at, and None says the object is not there.
    """
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:cut])
        if load:
            try:
                owner = import_module(name)
            except ImportError:
                continue
        else:
            owner = sys.modules.get(name)
            if owner is None:
                continue
        try:
            for attribute in parts[cut:-1]:
                owner = getattr(owner, attribute)
            return owner, parts[-1], getattr(owner, parts[-1])
        except AttributeError:
            if load:
                raise
            return None
    if load:
        raise ImportError(f"cannot resolve {path}")
    return None


def is_forbidden(dotted: str, forbidden: tuple[str, ...]) -> bool:
    """Whether ``labutils.module.Qual.name`` is (or is inside) one of the forbidden paths or bare names."""
    qualname = dotted.split(".", 2)[-1]
    for path in forbidden:
        if (
            dotted == path
            or dotted.startswith(path + ".")
            or ("." not in path and qualname.split(".")[0] == path)
        ):
            return True
    return False


def package_module(filename: str, package: str, excluded: tuple[str, ...]) -> str | None:
    """``"labutils.attention"`` for a file of the package (``package`` ends with the separator), else None.

    Files under the ``excluded`` folders (the checks, the instructor's tools) count as not the package's.
    """
    real = os.path.realpath(filename)
    if not real.startswith(package) or real.startswith(excluded):
        return None
    dotted = os.path.splitext(real[len(package) :])[0].replace(os.sep, ".")
    return ("labutils." + dotted).removesuffix(".__init__")


# --------------------------------------------------------------------------------------------- switching off


class _Blocked:
    """Stands in for a switched-off function: calling it, or reading an attribute of it, raises."""

    def __init__(self, path: str):
        self._path = path

    def _refuse(self):
        raise ForbiddenCall(
            f"your answer calls {self._path}, which this exercise asks you to write yourself "
            "(it is switched off while the check runs)"
        )

    def __call__(self, *args, **kwargs):
        self._refuse()

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        self._refuse()


def targets(forbidden: tuple[str, ...], answer: Callable) -> list[tuple[object, str, object]]:
    """Every place a forbidden object is reachable from: its owner, re-exports, the answer's globals."""
    spaces: list[object] = [m for name, m in sys.modules.items() if name.split(".")[0] == "labutils" and m]
    answer_globals = getattr(answer, "__globals__", None)
    found_all = []
    for path in forbidden:
        owner, name, original = resolve(path)
        blocked = _Blocked(path)
        found = {(id(owner), name): (owner, name, blocked)}
        for space in spaces:
            for attr, value in list(vars(space).items()):
                if value is original:
                    found[(id(space), attr)] = (space, attr, blocked)
        if answer_globals is not None:
            for attr, value in list(answer_globals.items()):
                if value is original:
                    found[(id(answer_globals), attr)] = (answer_globals, attr, blocked)
        found_all.extend(found.values())
    return found_all


_INHERITED = object()  # an attribute a class inherits: restored by deleting the stand-in


@contextlib.contextmanager
def switched_off(places: list[tuple[object, str, object]]) -> Iterator[None]:
    """Put the stand-ins of :func:`targets` in place for the block, then the originals back."""
    saved = []
    try:
        for where, name, blocked in places:
            if isinstance(where, dict):
                saved.append((where, name, where[name]))
                where[name] = blocked
            else:
                saved.append((where, name, vars(where).get(name, _INHERITED)))
                setattr(where, name, blocked)
        yield
    finally:
        for where, name, value in reversed(saved):
            if isinstance(where, dict):
                where[name] = value
            elif value is _INHERITED:
                delattr(where, name)
            else:
                setattr(where, name, value)


# -------------------------------------------------------------------------------------------------- watching


def _unwrapped(answer: object) -> list[object]:
    """The answer and what it wraps (partials, decorators, bound methods), then the class of an instance."""
    chain = [answer]
    for _ in range(10):
        x = chain[-1]
        if isinstance(x, functools.partial):
            chain.append(x.func)
        elif isinstance(x, types.MethodType):
            chain.append(x.__func__)
        elif isinstance(x, types.FunctionType) and hasattr(x, "__wrapped__"):
            chain.append(x.__wrapped__)
        else:
            break
    if chain[-1] is not None and not isinstance(chain[-1], (type, types.FunctionType)):
        chain.append(type(chain[-1]))  # an instance: look at its class
    return chain


class Watch:
    """What an answer *is* (a package object, or a wrapper of one) and which package functions its own code
    calls while the watch is on (``with watch:``), however it reached them (a default argument, an alias).

    :meth:`verdict` is ``{"defined", "is", "calls"}``, plain data for the grader; :func:`copied` reads it.
    """

    def __init__(self, answer: object, forbidden: tuple[str, ...], package: str, excluded: tuple[str, ...]):
        self._modules: dict[str, str | None] = {}
        self._package, self._excluded = package, excluded
        chain = _unwrapped(answer)
        self.defined = answer is not None
        found_objects = [(path, found[2]) for path in forbidden if (found := resolve(path, load=False))]
        self.found, self.files, self.calls = [], set(), set()
        for x in chain:
            self.found += [path for path, target in found_objects if x is target]
            if isinstance(x, types.FunctionType):
                codes = [x.__code__]
            elif isinstance(x, type):
                codes = [getattr(v, "__func__", getattr(v, "fget", v)) for v in vars(x).values()]
                codes = [f.__code__ for f in codes if isinstance(f, types.FunctionType)]
                for klass in x.__mro__:
                    self.found += [path for path, target in found_objects if klass is target]
                    path = getattr(sys.modules.get(klass.__module__), "__file__", None)
                    if path and self._module_of(path):
                        self.found.append(self._module_of(path) + "." + klass.__qualname__)
            else:
                codes = []
            for code in codes:
                if self._module_of(code.co_filename):
                    self.found.append(self._module_of(code.co_filename) + "." + code.co_qualname)
                else:
                    self.files.add(code.co_filename)

    def _module_of(self, filename: str) -> str | None:
        if filename not in self._modules:
            self._modules[filename] = package_module(filename, self._package, self._excluded)
        return self._modules[filename]

    def _trace(self, frame, event, arg):
        if event == "call" and self._module_of(frame.f_code.co_filename):
            caller = frame.f_back
            while caller is not None:
                if caller.f_code.co_filename in self.files:
                    self.calls.add(self._module_of(frame.f_code.co_filename) + "." + frame.f_code.co_qualname)
                    break
                caller = caller.f_back
        return None

    def __enter__(self) -> Watch:
        import threading

        threading.settrace(self._trace)  # a thread the answer starts is watched too
        sys.settrace(self._trace)
        return self

    def __exit__(self, *exc) -> None:
        import threading

        sys.settrace(None)
        threading.settrace(None)

    def verdict(self) -> dict:
        return {"defined": self.defined, "is": list(self.found), "calls": sorted(self.calls)}


def copied(function: str, forbidden: tuple[str, ...], verdict: dict | None) -> str | None:
    """Why an answer earns nothing because :func:`watch` saw it is, or calls, a forbidden object; else None."""
    if not isinstance(verdict, dict):
        return "the grader could not inspect your answer, so it earns no points (tell your instructor)"
    if not verdict.get("defined"):
        return None  # the check has already said so
    for dotted in verdict.get("is") or []:
        if isinstance(dotted, str) and is_forbidden(dotted, forbidden):
            return f"`{function}` is `{dotted}` from the package, not your own code: 0 points"
    for dotted in verdict.get("calls") or []:
        if isinstance(dotted, str) and is_forbidden(dotted, forbidden):
            return f"your answer calls `{dotted}`, which this exercise asks you to write yourself: 0 points"
    return None
