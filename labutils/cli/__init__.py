"""The commands: ``python -m labutils <command> …``. Nothing imports this package.

Each command is a pair of functions, ``add_<name>(parser)`` and ``run_<name>(args) -> int``, in the module of
its part of the course (:mod:`~labutils.cli.data`, :mod:`~labutils.cli.training`,
:mod:`~labutils.cli.decoding`, :mod:`~labutils.cli.instructor`), listed in ``COMMANDS`` below. Each module
imports the package only inside its functions, so ``--help`` is quick and ``train`` never loads Jupyter.
User errors print one line ``error: …`` on stderr and exit 2 (usage) or 1 (some inputs failed); they never
show a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from labutils.cli.common import Parser, UsageError
from labutils.cli.data import add_generate, add_split, run_generate, run_split
from labutils.cli.decoding import add_evaluate, add_translate, run_evaluate, run_translate
from labutils.cli.instructor import (
    add_figures,
    add_grade,
    add_release,
    add_student,
    run_figures,
    run_grade,
    run_release,
    run_student,
)
from labutils.cli.training import add_export, add_train, run_export, run_train

#: name -> (one-line help, function adding the options, function running the command and returning its status)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "train": ("train a transformer, write a run folder (resumable)", add_train, run_train),
    "export": ("write a run's weights as a weights file (--half: half precision)", add_export, run_export),
    "generate": ("make (expression, series) pairs of the course family", add_generate, run_generate),
    "split": ("split generated pairs into the train/validation/test/structures files", add_split, run_split),
    "translate": ("print the model's series of expressions", add_translate, run_translate),
    "evaluate": (
        "accuracy of the model on a split: exact match and sympy equivalence",
        add_evaluate,
        run_evaluate,
    ),
    "student": ("write the student notebooks from solutions/ (--check: compare)", add_student, run_student),
    "release": ("build the student release: notebooks and a wheel, no solutions", add_release, run_release),
    "grade": ("grade submitted notebooks: grades.csv, totals and feedback files", add_grade, run_grade),
    "figures": ("make the slide and README figures of the model (PNG, SVG)", add_figures, run_figures),
}


def build_parser() -> argparse.ArgumentParser:
    from labutils import __version__

    parser = Parser(prog="python -m labutils", description="Transformer Lab commands.")
    parser.add_argument("--version", action="version", version=f"labutils {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_text, add, _) in COMMANDS.items():
        add(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with a one-line message on bad options
    _, _, run = COMMANDS[args.command]
    try:
        return run(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
