"""What every command shares: one-line usage errors, argument types, reading input, checking an output."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


class UsageError(Exception):
    """A mistake in how a command was called: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


#: The models the commands know (labutils.models.KINDS, written out so that --help loads no torch).
MODEL_KINDS = ("encoder-decoder", "decoder-only")


def add_model_choice(parser: argparse.ArgumentParser, what: str) -> None:
    """``--model encoder-decoder|decoder-only``; an unknown name is a one-line usage error."""
    parser.add_argument("--model", choices=MODEL_KINDS, metavar="|".join(MODEL_KINDS), help=what)


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


def add_threads(
    parser: argparse.ArgumentParser,
    what: str = "torch threads (default: the cores the sympy workers leave, so that none wait for a core)",
) -> None:
    """``--threads N``; its default (None) is settled by the command (``labutils.runtime.plan_threads``)."""
    parser.add_argument("--threads", type=positive_int, metavar="N", help=what)


def open_output(path: str) -> Path:
    """Check early that ``path`` can be written (the file itself is written atomically at the end)."""
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"--out {path}: is a folder, expected a file name")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"--out {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(f"--out {path}: not writable")
    return out


def read_lines(path: str) -> list[str]:
    if path == "-":
        return sys.stdin.read().splitlines()
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: cannot read ({error})") from None
