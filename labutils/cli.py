"""The commands: ``python -m labutils <command> …``. Nothing imports this module.

Each command is a pair of functions registered in ``COMMANDS``: one adds its options to a parser, the
other runs it and returns the exit status. User errors print one line ``error: …`` on stderr and exit 2
(usage) or 1 (some inputs failed); they never show a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


class UsageError(Exception):
    """A mistake in how a command was called: printed as one line, exit status 2."""


COMMANDS: dict[str, tuple[str, Callable, Callable]] = {}


def command(name: str, help: str):
    """Register ``run(args) -> int`` as command ``name``; the decorated function's ``add`` adds its options."""

    def register(add: Callable[[argparse.ArgumentParser], None]):
        def with_run(run: Callable[[argparse.Namespace], int]):
            COMMANDS[name] = (help, add, run)
            return run

        return with_run

    return register


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


# ---------------------------------------------------------------------------------------------- commands


# ---------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    from labutils import __version__

    parser = argparse.ArgumentParser(prog="python -m labutils", description="Transformer Lab commands.")
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
