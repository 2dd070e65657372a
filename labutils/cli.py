"""The commands: ``python -m labutils <command> …``. Nothing imports this module.

Each command is a pair of functions, ``add_<name>(parser)`` and ``run_<name>(args) -> int``, listed in
``COMMANDS`` at the end of this file. User errors print one line ``error: …`` on stderr and exit 2
(usage) or 1 (some inputs failed); they never show a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path


class UsageError(Exception):
    """A mistake in how a command was called: printed as one line, exit status 2."""


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


def _open_output(path: str) -> Path:
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


def _read_lines(path: str) -> list[str]:
    if path == "-":
        return sys.stdin.read().splitlines()
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: cannot read ({error})") from None


def add_generate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=positive_int, help="number of unique pairs to make")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives a byte-identical file")
    parser.add_argument("--out", required=True, help="output file (source<TAB>target lines; .gz compresses)")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument("--timeout", type=positive_float, default=30.0, help="seconds per expression")
    parser.add_argument("--from", dest="sources", metavar="FILE", help="compute targets for these sources (- = stdin)")


def run_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from labutils import data
    from labutils.tokens import TokenizationError

    if (args.n is None) == (args.sources is None):
        raise UsageError("give either --n N (random pairs) or --from FILE (targets for given sources)")
    out = _open_output(args.out)
    if args.sources is None:
        with tqdm(total=args.n, desc="pairs", unit="pair", file=sys.stderr) as bar:
            pairs, report = data.generate_pairs(args.n, args.seed, args.workers, args.timeout, bar.update)
        data.write_pairs(out, pairs)
        print(f"wrote {out}: {report}", file=sys.stderr)
        return 0
    sources = _read_lines(args.sources)
    name = "<stdin>" if args.sources == "-" else args.sources
    # Check every line in this process first: bad input is reported by file and line, before any work.
    problems = []
    for line, text in enumerate(sources, start=1):
        try:
            data.parse_expression(text)
        except (TokenizationError, ValueError) as error:
            problems.append(f"{name}, line {line}: {error}")
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    with tqdm(total=len(sources), desc="series", unit="expr", file=sys.stderr) as bar:
        results = data.pairs_for_sources(sources, args.workers, args.timeout, bar.update)
    failed = [(line, error) for line, _, _, error in results if error]
    for line, error in failed:
        print(f"error: {name}, line {line}: {error}", file=sys.stderr)
    data.write_pairs(out, [(s, t) for _, s, t, error in results if not error])
    print(f"wrote {out}: {len(results) - len(failed)} pairs, {len(failed)} failed", file=sys.stderr)
    return 1 if failed else 0


def add_split(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pairs", help="a file written by generate")
    parser.add_argument("--out", required=True, help="folder for train/validation/test/structures .tsv.gz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test", type=positive_int, default=5000, help="pairs in the test split")
    parser.add_argument("--validation", type=positive_int, default=2000, help="pairs in the validation split")


def run_split(args: argparse.Namespace) -> int:
    from labutils import data

    out = Path(args.out)
    if not out.is_dir():
        raise UsageError(f"--out {out}: no such folder")
    try:
        pairs = data.read_pairs(args.pairs)
    except FileNotFoundError:
        raise UsageError(f"{args.pairs}: no such file") from None
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        splits = data.split_pairs(pairs, args.seed, args.test, args.validation)
    except ValueError as error:
        raise UsageError(str(error)) from None
    for name, split in splits.items():
        data.write_pairs(out / f"{name}.tsv.gz", split)
        print(f"{name}: {len(split)} pairs", file=sys.stderr)
    return 0


def add_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="recipe: tiny, cpu or full (default with --resume: the run's own)")
    parser.add_argument("--out", required=True, help="run folder (config.json, log.csv, last.pt, best.pt)")
    parser.add_argument("--data", help="source<TAB>target file (.gz allowed); default: the shipped splits")
    parser.add_argument("--config", help="JSON object, or a .json file, overriding preset fields")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    parser.add_argument("--minutes", type=positive_float, help="stop (and save) after this many minutes")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    parser.add_argument("--threads", type=positive_int, help="CPU threads")


def _json_object(text: str) -> dict:
    """A JSON object given inline or as the path of a .json file."""
    import json
    from pathlib import Path

    if not text.lstrip().startswith("{"):
        if not Path(text).is_file():
            raise UsageError(f"--config: {text!r} is neither a JSON object nor a .json file")
        text = Path(text).read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"--config: invalid JSON ({error})") from None
    if not isinstance(value, dict):
        raise UsageError("--config: expected a JSON object such as '{\"max_steps\": 2000}'")
    return value


def run_train(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from labutils import runtime
    from labutils import train as training

    overrides = _json_object(args.config) if args.config else {}
    if args.data:
        if not Path(args.data).is_file():
            raise UsageError(f"--data: file {args.data!r} not found")
        overrides["data"] = str(Path(args.data).resolve())
    if args.threads:
        overrides["threads"] = args.threads
    try:
        runtime.device(args.device)
        if args.preset is not None:
            config = training.make_config(args.preset, overrides)
        elif args.resume:
            saved = Path(args.out) / "config.json"
            if not saved.is_file():
                raise UsageError(f"nothing to resume: {saved} does not exist")
            config = training.TrainConfig.from_dict(training._merge(json.loads(saved.read_text()), overrides))
        else:
            raise UsageError("--preset is required (tiny, cpu or full) unless --resume")
        summary = training.train(
            config, args.out, resume=args.resume, minutes=args.minutes, device=args.device
        )
    except (ValueError, training.RunError) as error:
        raise UsageError(str(error)) from None
    if int(os.environ.get("RANK", "0")) != 0:  # data parallel: only the first process speaks
        return 0
    if summary["best_val_exact"] is not None:
        exact, step = summary["best_val_exact"], summary["best_step"]
        print(f"best.pt: {summary['best']} (val_exact {exact:.4f} at step {step})")
    if not summary["finished"]:
        print(f"stopped at step {summary['steps']} ({summary['stopped']}); continue it with --resume")
    return 0


# ---------------------------------------------------------------------------------------------- main

#: name -> (one-line help, function adding the options, function running the command and returning its status)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "train": ("train a transformer, write a run folder (resumable)", add_train, run_train),
    "generate": ("make (expression, series) pairs of the course family", add_generate, run_generate),
    "split": ("split generated pairs into the train/validation/test/structures files", add_split, run_split),
}


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
