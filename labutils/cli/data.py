"""``generate`` and ``split``: the course family's pairs, and the data set's four splits."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from labutils.cli.common import UsageError, open_output, positive_float, positive_int, read_lines


def add_generate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=positive_int, help="number of unique pairs to make")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives a byte-identical file")
    parser.add_argument("--out", required=True, help="output file (source<TAB>target lines; .gz compresses)")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument("--timeout", type=positive_float, default=30.0, help="seconds per expression")
    parser.add_argument(
        "--from", dest="sources", metavar="FILE", help="compute targets for these sources (- = stdin)"
    )
    parser.add_argument(
        "--typed", action="store_true", help="sources as a student types them, not simplified by sympy"
    )
    parser.add_argument(
        "--shared", action="store_true", help="only pairs of terms on one symbol, the hardest to combine"
    )


def run_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from labutils import data
    from labutils.tokens import TokenizationError

    if (args.n is None) == (args.sources is None):
        raise UsageError("give either --n N (random pairs) or --from FILE (targets for given sources)")
    out = open_output(args.out)
    if args.sources is None:
        with tqdm(total=args.n, desc="pairs", unit="pair", file=sys.stderr) as bar:
            pairs, report = data.generate_pairs(
                args.n, args.seed, args.workers, args.timeout, bar.update, typed=args.typed, shared=args.shared
            )
        data.write_pairs(out, pairs)
        print(f"wrote {out}: {report}", file=sys.stderr)
        return 0
    sources = read_lines(args.sources)
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
    parser.add_argument("pairs", nargs="+", help="files written by generate (a source twice: the first pair)")
    parser.add_argument("--out", required=True, help="folder for train/validation/test/structures .tsv.gz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test", type=positive_int, default=5000, help="pairs in the test split")
    parser.add_argument("--validation", type=positive_int, default=2000, help="pairs in the validation split")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument(
        "--previous",
        metavar="DIR",
        help="a data set to grow (its four .tsv.gz files): its pairs stay in their splits, the new ones are split",
    )


def run_split(args: argparse.Namespace) -> int:
    from labutils import data

    out = Path(args.out)
    if not out.is_dir():
        raise UsageError(f"--out {out}: no such folder")
    pairs, seen = [], set()
    for path in args.pairs:
        try:
            read = data.read_pairs(path)
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file") from None
        except ValueError as error:
            raise UsageError(str(error)) from None
        pairs += [pair for pair in read if not (pair[0] in seen or seen.add(pair[0]))]
    previous = None
    if args.previous:
        previous = {}
        for name in data.SPLITS:
            path = Path(args.previous) / f"{name}.tsv.gz"
            try:
                previous[name] = data.read_pairs(path)
            except FileNotFoundError:
                raise UsageError(f"--previous: {path}: no such file") from None
            except ValueError as error:
                raise UsageError(f"--previous: {error}") from None
    try:
        splits = data.split_pairs(
            pairs, args.seed, args.test, args.validation, workers=args.workers, previous=previous
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    for name, split in splits.items():
        data.write_pairs(out / f"{name}.tsv.gz", split)
        print(f"{name}: {len(split)} pairs", file=sys.stderr)
    return 0
