"""The grader's side of its cell in a student's kernel: the job it writes, the data it reads back, and the
fingerprints of what the checks rely on, to compare with the package's own.

The kernel's side is :mod:`labutils.instructor.runner`. Nothing read back is believed: it is data
(``torch.load(weights_only=True)``), judged in the grader's process.
"""

from __future__ import annotations

import builtins
import os
import secrets
import sys
import threading
import types
from collections.abc import Iterable
from pathlib import Path

from labutils.checks import guard
from labutils.checks.core import Exercise
from labutils.instructor import runner
from labutils.instructor.kernel import Kernel
from labutils.instructor.sources import GradingError

PACKAGE = os.path.realpath(Path(__file__).parents[1]) + os.sep  # labutils/, the grader's own


def not_the_package(package: str) -> tuple[str, ...]:
    """The package's files that run answers rather than replace them: never "the package" to the guard."""
    return (package + "checks" + os.sep, package + "instructor" + os.sep)


NOT_THE_PACKAGE = not_the_package(PACKAGE)
MAX_RETURNED_BYTES = 64_000_000  # what one exercise's answers may hand back


# --------------------------------------------------------------------------------- what the checks rely on

_BUILTINS = (
    "abs", "all", "any", "bool", "callable", "compile", "dict", "eval", "exec", "float", "getattr", "globals",
    "hasattr", "int", "isinstance", "issubclass", "len", "list", "max", "min", "open", "print", "range",
    "repr", "round", "setattr", "sorted", "str", "sum", "super", "tuple", "type", "vars", "zip", "__import__",
)  # fmt: skip
_OTHERS = (
    "torch.allclose", "torch.equal", "torch.isclose", "torch.eq", "torch.isfinite", "torch.save",
    "torch.load", "torch.testing.assert_close", "torch.Tensor.allclose", "torch.Tensor.equal",
    "torch.Tensor.__eq__", "torch.Tensor.tolist", "torch.Tensor.item", "torch.softmax",
    "torch.nn.functional.softmax", "torch.nn.functional.scaled_dot_product_attention",
    "torch.random.fork_rng", "sys.settrace", "sys.setprofile", "sys.modules", "IPython.display.display",
    "IPython.core.display_functions.display", "IPython.core.displaypub.DisplayPublisher.publish",
)  # fmt: skip
_SKIPPED = ("labutils.instructor", "labutils.cli", "labutils.widgets", "labutils.plotting")
_expected: dict[str, str] | None = None
_expected_lock = threading.Lock()


def _members(name: str, module: types.ModuleType) -> Iterable[str]:
    yield name
    for attribute, value in sorted(vars(module).items()):
        if isinstance(value, types.ModuleType) or not isinstance(value, (types.FunctionType, type)):
            continue
        yield f"{name}.{attribute}"
        if isinstance(value, type) and value.__module__ == name:
            for member, inner in vars(value).items():
                if isinstance(inner, (types.FunctionType, property, staticmethod, classmethod)):
                    yield f"{name}.{attribute}.{member}"


def expected_fingerprints() -> dict[str, str]:
    """Dotted name -> fingerprint of what the checks rely on, as this process (the package's own) has it."""
    global _expected
    with _expected_lock:
        if _expected is None:
            import IPython.core.displaypub  # noqa: F401  (what a kernel has: display and its publisher)
            import IPython.display  # noqa: F401
            import torch  # noqa: F401

            probes = [f"builtins.{name}" for name in _BUILTINS if hasattr(builtins, name)] + list(_OTHERS)
            for name, module in sorted(sys.modules.items()):
                if name.split(".")[0] == "labutils" and module and not name.startswith(_SKIPPED):
                    probes += _members(name, module)
            _expected = runner.fingerprints(list(dict.fromkeys(probes)), PACKAGE)
        return _expected


def tampered(reported: object) -> list[str]:
    """The names whose fingerprint in the kernel differs from the package's own (absent ones aside)."""
    if not isinstance(reported, dict):
        return ["(the kernel reported nothing)"]
    expected = expected_fingerprints()
    return sorted(name for name, value in reported.items() if name in expected and value != expected[name])


# ------------------------------------------------------------------------------------------ the kernel's part

_GUARD = Path(guard.__file__).read_text(encoding="utf-8")
_RUNNER = Path(runner.__file__).read_text(encoding="utf-8")


def call_code(job: Path, out: Path) -> str:
    """The grader's cell: the guard's and the runner's source in namespaces of their own, no name left."""
    return (
        f"(lambda _g, _r: (exec({_GUARD!r}, _g), exec({_RUNNER!r}, _r), "
        f"_r['call']({str(job)!r}, {str(out)!r}, globals(), _g)))"
        "({'__name__': 'labutils_grader_guard'}, {'__name__': 'labutils_grader_runner'})\n"
    )


def write_job(kernel: Kernel, exercise: Exercise, cases: list) -> tuple[Path, Path]:
    """The job of the grader's cell: the cases, and where the kernel's copy of the package is (its files are
    "the package" to the guard there)."""
    import torch

    package = os.path.realpath(kernel.package / "labutils") + os.sep if kernel.package else PACKAGE

    token = secrets.token_hex(8)
    job, out = kernel.io / f"{token}.job", kernel.io / f"{token}.out"
    for _, case in cases:
        call = case.call
        if call is not None and (not hasattr(sys.modules.get(call.__module__), call.__qualname__)):
            raise GradingError(
                f"{exercise.grade_id}: a case's call must be a function at a module's top level"
            )
    torch.save(
        {
            "function": exercise.function,
            "forbidden": list(exercise.forbidden),
            "package": package,
            "excluded": list(not_the_package(package)),
            "cases": [(case.call, case.args) for _, case in cases],
            "probes": list(expected_fingerprints()),
        },
        job,
    )
    return job, out


class Returned:
    """Stands in, in the grader, for an object an answer returned that is not data (its type and repr)."""

    def __init__(self, text: str):
        self._text = text

    def __repr__(self) -> str:
        return self._text


def from_data(value):
    if isinstance(value, dict):
        if runner.OPAQUE in value:
            name = str(value[runner.OPAQUE]).rsplit(".", 1)[-1] or "object"
            return type(name if name.isidentifier() else "object", (Returned,), {})(str(value.get("repr")))
        return {k: from_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_data(v) for v in value]
    if isinstance(value, tuple) and type(value) is tuple:
        return tuple(from_data(v) for v in value)
    return value


def read_returned(out: Path) -> dict | None:
    """What the runner wrote, as data only; None when it is missing, too large or not data."""
    import torch

    try:
        if out.stat().st_size > MAX_RETURNED_BYTES:
            return None
        with open(out, "rb") as file:
            data = torch.load(file, weights_only=True)  # never a pickle of arbitrary objects
    except Exception:
        return None
    finally:
        out.unlink(missing_ok=True)
    if not isinstance(data, dict) or not isinstance(data.get("results", []), list):
        return None
    return data


def judge_data(outcome: dict):  # the value the runner handed back, as the judge gets it
    return {**outcome, "value": from_data(outcome["value"])} if "value" in outcome else outcome
