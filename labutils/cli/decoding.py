"""``translate`` and ``evaluate``: the model's series of expressions, and its accuracy on a split."""

from __future__ import annotations

import argparse
import sys

from labutils.cli.common import (
    UsageError,
    add_model_choice,
    add_threads,
    positive_float,
    positive_int,
    read_lines,
)


def _load_model(args: argparse.Namespace):
    """The model the options name: ``--checkpoint``'s, or the shipped one of ``--model``."""
    from labutils import models
    from labutils.model import WeightsError
    from labutils.runtime import device, set_threads

    set_threads(args.threads)
    try:
        where = device(args.device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        if not args.checkpoint:
            return models.load_shipped(args.model or models.DEFAULT_KIND, where)
        model = models.load_weights(args.checkpoint, where)
    except WeightsError as error:
        raise UsageError(str(error)) from None
    if args.model and models.kind_of(model) != args.model:
        raise UsageError(f"--checkpoint {args.checkpoint} holds the {models.kind_of(model)} model, not the {args.model}")
    return model


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    add_model_choice(parser, "which shipped model (default: encoder-decoder; with --checkpoint: the file's)")
    parser.add_argument(
        "--checkpoint", metavar="PATH", help="a .pt file or a run folder (default: the shipped model)"
    )
    parser.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--beam", type=positive_int, default=1, help="beam width (1: greedy decoding)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE, help="expressions per batch"
    )
    parser.add_argument("--no-cache", action="store_true", help="decode without the key/value cache")
    add_threads(parser)


#: The fastest batch size for cached greedy decoding on 2 CPU cores (benchmarks/bench_decode.py).
DEFAULT_BATCH_SIZE = 128


def add_translate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("expressions", nargs="*", metavar="EXPR", help="expressions, e.g. 'tan(hx)+sinh(gx)'")
    parser.add_argument("--file", metavar="F", help="one expression per line (- = standard input)")
    parser.add_argument("--check", action="store_true", help="append ok, wrong or timeout from sympy")
    parser.add_argument("--timeout", type=positive_float, default=10.0, help="seconds per sympy check")
    _add_model_options(parser)


def run_translate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from labutils import data, metrics
    from labutils.decode import read_source, translate
    from labutils.runtime import plan_threads
    from labutils.tokens import TokenizationError

    if bool(args.expressions) == bool(args.file):
        raise UsageError("give expressions, or --file F, not both")
    args.threads, _ = plan_threads(args.threads, 1 if args.check else 0)
    texts = read_lines(args.file) if args.file else args.expressions
    single = len(texts) == 1 and not args.file
    # (line number, text): a file's blank lines and lines starting with # are skipped, numbers kept.
    entries = [(n, t) for n, t in enumerate(texts, start=1) if not args.file or _is_expression_line(t)]
    model = _load_model(args)
    sources: list[str | None] = []
    problems: dict[int, str] = {}
    for line, text in entries:
        try:
            source, _ = read_source(text, model.config.max_src_len)
            outside = data.outside_family(data.parse_expression(source))
        except (TokenizationError, ValueError) as error:
            if single:
                raise UsageError(str(error)) from None
            problems[line] = str(error)
            print(f"error: line {line}: {error}", file=sys.stderr)
            sources.append(None)
            continue
        if source != text.replace(" ", ""):
            print(f"normalized: {text.strip()} -> {source}", file=sys.stderr)
        if outside:
            print(f"warning: {source} is outside the training family: {outside}", file=sys.stderr)
        sources.append(source)
    good = [s for s in sources if s is not None]
    predictions: list[str] = []
    chunk = max(args.batch_size, 256)
    with tqdm(
        total=len(good), desc="translating", unit="expr", file=sys.stderr, disable=len(good) < 50
    ) as bar:
        for start in range(0, len(good), chunk):
            batch = good[start : start + chunk]
            predictions += translate(model, batch, args.beam, args.batch_size, use_cache=not args.no_cache)
            bar.update(len(batch))
    verdicts = iter([])
    if args.check and good:
        truths = [data.series_text(data.parse_expression(s)) for s in good]
        verdicts = iter(metrics.check_equivalence(predictions, truths, timeout=args.timeout))
    answers = iter(predictions)
    for (line, _), source in zip(entries, sources):
        if source is None:
            print(f"error: {problems[line]}")
            continue
        answer = next(answers)
        print(f"{answer}\t{next(verdicts)}" if args.check else answer)
    return 1 if problems else 0


def _is_expression_line(text: str) -> bool:
    """Whether a line of ``--file`` holds an expression: not blank, not a ``# comment``."""
    stripped = text.strip()
    return bool(stripped) and not stripped.startswith("#")


def add_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--split",
        default="test",
        help="test, structures, validation, simplest (the first things a student types), or a source<TAB>target file",
    )
    parser.add_argument("--limit", type=positive_int, help="only the first N pairs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--by", choices=["category"], help="category: the accuracy of each kind of pair (terms, operator, …)"
    )
    parser.add_argument("--timeout", type=positive_float, default=10.0, help="seconds per sympy check")
    parser.add_argument(
        "--workers", type=positive_int, help="sympy processes (default: half the cores, at least 1)"
    )
    _add_model_options(parser)


def run_evaluate(args: argparse.Namespace) -> int:
    import json
    import time

    from tqdm import tqdm

    from labutils import data, metrics, models
    from labutils.decode import translate, translate_beams
    from labutils.files import sha256_of
    from labutils.model import shipped_weights_path, weights_file
    from labutils.runtime import plan_threads

    args.threads, args.workers = plan_threads(args.threads, args.workers)
    if args.split in data.SPLITS:
        pairs = data.load_pairs(args.split)
    elif args.split == "simplest":
        results = data.pairs_for_sources(data.simplest_sources(), workers=args.workers)
        pairs = [(source, target) for _, source, target, error in results if error is None]
        for _, source, _, error in (r for r in results if r[3] is not None):
            print(f"warning: no series for {source}: {error}; left out", file=sys.stderr)
    else:
        try:
            pairs = data.read_pairs(args.split)
        except FileNotFoundError:
            raise UsageError(
                f"--split {args.split}: not a split ({', '.join(data.SPLITS)}) nor a file"
            ) from None
        except ValueError as error:
            raise UsageError(str(error)) from None
    pairs = pairs[: args.limit] if args.limit else pairs
    model = _load_model(args)
    start = time.perf_counter()
    sources = [s for s, _ in pairs]
    truths = [t for _, t in pairs]
    beams: list[list[tuple[str, float]]] = []
    predictions: list[str] = []
    chunk = max(args.batch_size, 256)
    with tqdm(total=len(pairs), desc="decoding", unit="expr", file=sys.stderr) as bar:
        for i in range(0, len(sources), chunk):
            batch = sources[i : i + chunk]
            if args.beam == 1:  # batched greedy decoding
                predictions += translate(model, batch, 1, args.batch_size, use_cache=not args.no_cache)
            else:
                found = translate_beams(model, batch, args.beam, args.batch_size, use_cache=not args.no_cache)
                beams += found
                predictions += [b[0][0] if b else "" for b in found]
            bar.update(len(batch))
    with tqdm(total=len(pairs), desc="sympy", unit="expr", file=sys.stderr) as bar:
        verdicts = metrics.check_equivalence(predictions, truths, args.timeout, args.workers, bar.update)
    accuracy = metrics.Accuracy.of(predictions, truths, verdicts)
    any_ok = None
    if args.beam > 1:
        others = [(i, h) for i, b in enumerate(beams) if verdicts[i] != metrics.OK for h, _ in b[1:]]
        rescued = metrics.check_equivalence(
            [h for _, h in others], [truths[i] for i, _ in others], args.timeout, args.workers
        )
        any_ok = accuracy.equivalent + len({i for (i, _), v in zip(others, rescued) if v == metrics.OK})
    seconds = time.perf_counter() - start
    low, high = accuracy.equivalent_interval
    rows = metrics.by_category(sources, truths, verdicts) if args.by == "category" else None
    decoding = "greedy" if args.beam == 1 else f"beam {args.beam}"
    if args.json:
        kind = args.model or "encoder-decoder"
        weights = weights_file(args.checkpoint) if args.checkpoint else shipped_weights_path(kind)
        result = {
            "model": models.kind_of(model),
            "split": args.split,
            "decoding": decoding,
            "weights": sha256_of(weights),  # which weights were measured: a saved table can be told stale
            "n": accuracy.n,
            "exact": accuracy.exact / max(accuracy.n, 1),
            "equivalent": accuracy.equivalent / max(accuracy.n, 1),
            "equivalent_low": low,
            "equivalent_high": high,
            "timeouts": accuracy.verdicts[metrics.TIMEOUT],
            "seconds": round(seconds, 1),
        }
        if any_ok is not None:
            result["any_of_beam"] = any_ok / max(accuracy.n, 1)
        if rows is not None:
            result["categories"] = [
                {"category": r.category, "value": r.value, "n": r.n, "equivalent": r.ok / max(r.n, 1),
                 "equivalent_low": r.interval[0], "equivalent_high": r.interval[1]}
                for r in rows
            ]  # fmt: skip
        print(json.dumps(result))
        return 0
    print(f"{args.split}: {accuracy.n} pairs, {decoding} decoding, the {models.kind_of(model)} model")
    print(accuracy)
    if any_ok is not None:
        print(f"{'any of the beam':<22}{100 * any_ok / max(accuracy.n, 1):6.2f}%  ({any_ok}/{accuracy.n})")
    print(f"{'time':<22}{seconds:.1f} s")
    if rows is not None:
        print()
        print(metrics.category_table(rows))
    return 0
