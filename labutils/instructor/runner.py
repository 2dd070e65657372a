"""The grader's code in a student's kernel: the answer run on the grader's inputs, and data handed back.

The grader never imports this in a kernel: it runs this module's source text, and
:mod:`labutils.checks.guard`'s, in a fresh namespace of its own cell, so student code that patched the
package, the checks or this module's names changes nothing of what runs here. :func:`call` reads the job the
grader wrote (the cases' arguments, built in the grader's process), runs the answer on each case with the
functions the exercise replaces switched off, and writes back, with :func:`torch.save`, only data the grader
reads with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists, tuples, dicts, and for any
other object its type's name and a short ``repr``. It also reports the fingerprints of the objects the checks
rely on (:func:`fingerprint`), before and after the answer ran, for the grader to compare with its own.

Everything here can be changed by the student's code, which runs in the same process: what comes back is data
the grader judges, never a verdict it believes. Standard library only at import (torch on use).
"""

from __future__ import annotations

import hashlib
import os
import sys
import types

OPAQUE = "__labutils_opaque__"  # the key of a stand-in for an object that is not data
_MAX_ITEMS = 100_000  # list items, dict entries, characters of a string, elements of a tensor (x 100)


def fingerprint(obj: object, package: str = "") -> str:
    """What an object is, the same in the grader's process and a kernel when it is the package's own.

    Paths below ``package`` (the package's folder, ending with the separator) are written ``labutils/…``: the
    grader's package and a kernel's private copy of it are the same files in two places.
    """
    if isinstance(obj, property):
        return "property(" + ", ".join(fingerprint(f, package) for f in (obj.fget, obj.fset, obj.fdel)) + ")"
    if isinstance(obj, (staticmethod, classmethod)):
        return f"{type(obj).__name__}({fingerprint(obj.__func__, package)})"
    if isinstance(obj, types.FunctionType):
        return f"function {obj.__module__}.{obj.__qualname__} {_code_hash(obj.__code__, package)}"
    if isinstance(obj, types.ModuleType):
        return f"module {obj.__name__} {_where(getattr(obj, '__file__', None), package)}"
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__} {len(obj.__mro__)}"
    if obj is None:
        return "None"
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", ""))
    return f"{type(obj).__module__}.{type(obj).__qualname__} {getattr(obj, '__module__', '')}.{name}"


def _where(path: object, package: str) -> object:
    if isinstance(path, str) and package:
        real = os.path.realpath(path)
        if real.startswith(package):
            return "labutils/" + real[len(package) :].replace(os.sep, "/")
    return path


def _code_hash(code: types.CodeType, package: str = "") -> str:
    digest = hashlib.sha256()
    for part in _code_parts(code):
        digest.update(part)
    # The file, not the line: an edit above moves it.
    return f"{_where(code.co_filename, package)}:{digest.hexdigest()[:16]}"


def _code_parts(code: types.CodeType):
    yield code.co_code
    yield repr(code.co_names).encode()
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_parts(const)
        else:
            yield _stable_repr(const).encode()


def _stable_repr(const: object) -> str:
    """A constant's repr, the same in every process: a frozenset's order depends on string hashing."""
    if isinstance(const, frozenset):
        return "frozenset(" + repr(sorted(_stable_repr(item) for item in const)) + ")"
    if isinstance(const, tuple):
        return "(" + ", ".join(_stable_repr(item) for item in const) + ")"
    return repr(const)


def lookup(dotted: str) -> tuple[bool, object]:
    """(found, object) for ``"torch.allclose"`` or ``"labutils.checks.core.CheckResult.points"``, looking only
    at modules already loaded; a class's own attribute is read from its ``__dict__`` (a property stays one)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        obj = module
        for part in parts[cut:]:
            if isinstance(obj, type) and part in vars(obj):
                obj = vars(obj)[part]
            elif isinstance(obj, dict):
                if part not in obj:
                    return False, None
                obj = obj[part]
            else:
                try:
                    obj = getattr(obj, part)
                except Exception:
                    return False, None
        return True, obj
    return False, None


def fingerprints(probes: list[str], package: str = "") -> dict[str, str]:
    found = {}
    for dotted in probes:
        try:
            there, obj = lookup(dotted)
            if there:
                found[dotted] = fingerprint(obj, package)
        except Exception as error:  # an object that breaks on inspection is not the package's own
            found[dotted] = f"unreadable ({type(error).__name__})"
    return found


def to_data(value: object, depth: int = 0):
    """What the answer returned, as data ``torch.load(weights_only=True)`` reads; anything else a stand-in."""
    import torch

    if depth > 20:
        return {OPAQUE: "nested too deeply", "repr": ""}
    if type(value) in (bool, int, float, str, type(None)):
        return value[: _MAX_ITEMS * 10] if isinstance(value, str) else value
    if isinstance(value, torch.Tensor) and value.numel() <= _MAX_ITEMS * 100:
        data = value.detach().cpu().as_subclass(torch.Tensor).clone()
        return data.to_dense() if data.layout != torch.strided else data
    if type(value) in (torch.Size, torch.dtype, torch.device):
        return value if not isinstance(value, torch.device) else str(value)
    if type(value) in (list, tuple) and len(value) <= _MAX_ITEMS:
        return type(value)(to_data(v, depth + 1) for v in value)
    if type(value) is dict and len(value) <= _MAX_ITEMS:
        return {
            k if type(k) in (str, int, float, bool) else repr(k)[:100]: to_data(v, depth + 1)
            for k, v in value.items()
        }
    for kind in (bool, int, float, str):  # numpy scalars and other subclasses: the Python value
        if isinstance(value, kind) or (hasattr(value, "item") and type(value).__module__ == "numpy"):
            try:
                item = value.item() if hasattr(value, "item") else kind(value)
                if type(item) in (bool, int, float, str):
                    return item
            except Exception:
                break
    try:
        text = repr(value)[:200]
    except Exception:
        text = "?"
    return {OPAQUE: f"{type(value).__module__}.{type(value).__qualname__}", "repr": text}


def call(job_path: str, out_path: str, namespace: dict, guard: dict) -> None:
    """Run the answer ``namespace[job["function"]]`` on each case of the job; write the data back."""
    import torch

    with open(job_path, "rb") as file:
        job = torch.load(file, weights_only=False)  # written by the grader: the cases' own objects
    os.remove(job_path)
    out: dict = {"before": fingerprints(job["probes"], job["package"]), "results": []}
    answer = namespace.get(job["function"])
    out["callable"] = callable(answer)
    if callable(answer):
        try:
            places = guard["targets"](tuple(job["forbidden"]), answer)
        except Exception:
            places = []  # a forbidden path this kernel cannot resolve: nothing to switch off
        watch = guard["Watch"](answer, tuple(job["forbidden"]), job["package"], tuple(job["excluded"]))
        for case_call, args in job["cases"]:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(0)
                try:
                    with guard["switched_off"](places), watch:
                        got = case_call(answer, args) if case_call else answer(*args)
                    out["results"].append({"value": to_data(got)})
                except NotImplementedError:
                    out["results"].append({"not_done": True})
                except BaseException as error:  # SystemExit and KeyboardInterrupt too: one case fails
                    out["results"].append({"error": guard["describe"](error, answer)})
        out["verdict"] = watch.verdict()
    else:
        out["type"] = type(answer).__name__
        out["verdict"] = {"defined": answer is not None, "is": [], "calls": []}
    out["after"] = fingerprints(job["probes"], job["package"])
    torch.save(out, out_path)
