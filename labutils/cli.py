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


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


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
    parser.add_argument(
        "--from", dest="sources", metavar="FILE", help="compute targets for these sources (- = stdin)"
    )


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
    try:
        pairs = data.read_pairs(args.pairs)
    except FileNotFoundError:
        raise UsageError(f"{args.pairs}: no such file") from None
    except ValueError as error:
        raise UsageError(str(error)) from None
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


def add_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="recipe: tiny, cpu or full (default with --resume: the run's own)")
    parser.add_argument("--out", required=True, help="run folder (config.json, log.csv, last.pt, best.pt)")
    parser.add_argument("--data", help="source<TAB>target file (.gz allowed); default: the shipped splits")
    parser.add_argument("--config", help="JSON object, or a .json file, overriding preset fields")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    parser.add_argument("--init", metavar="PATH", help="start from these weights (a .pt file or run folder)")
    parser.add_argument("--minutes", type=positive_float, help="stop (and save) after this many minutes")
    parser.add_argument(
        "--decay",
        type=positive_int,
        metavar="STEPS",
        help="with --resume of a warmup-stable-decay run: end it with STEPS steps of decay from where it stands",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    parser.add_argument("--threads", type=positive_int, help="CPU threads")


def _json_object(text: str) -> dict:
    """A JSON object given inline or as the path of a .json file."""
    import json

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

    from labutils import runtime
    from labutils import train as training

    overrides = _json_object(args.config) if args.config else {}
    if args.data:
        if not Path(args.data).is_file():
            raise UsageError(f"--data: file {args.data!r} not found")
        overrides["data"] = str(Path(args.data).resolve())
    if args.threads:
        overrides["threads"] = args.threads
    if args.init:
        if args.resume:
            raise UsageError("--init starts a new run; --resume continues one: give only one of them")
        if not Path(args.init).exists():
            raise UsageError(f"--init: {args.init!r} not found")
        overrides["init"] = str(Path(args.init).resolve())
    try:
        runtime.device(args.device)
        if args.preset is not None:
            config = training.make_config(args.preset, overrides)
        elif args.resume:
            saved = Path(args.out) / "config.json"
            if not saved.is_file():
                raise UsageError(f"nothing to resume: {saved} does not exist")
            config = training.make_config(json.loads(saved.read_text()), overrides)
        else:
            raise UsageError("--preset is required (tiny, cpu or full) unless --resume")
        if args.decay:
            if not args.resume:
                raise UsageError("--decay ends a run that exists: give it with --resume")
            config = training.decay_from(config, training.saved_step(args.out), args.decay)
    except ValueError as error:  # a bad preset, config key or value, device
        raise UsageError(str(error)) from None
    except training.RunError as error:
        raise UsageError(str(error)) from None
    try:
        summary = training.train(
            config, args.out, resume=args.resume, minutes=args.minutes, device=args.device
        )
    except training.RunError as error:  # a non-empty folder, nothing to resume, unreadable data
        raise UsageError(str(error)) from None
    if int(os.environ.get("RANK", "0")) != 0:  # data parallel: only the first process speaks
        return 0
    if summary["best_val_exact"] is not None:
        exact, step = summary["best_val_exact"], summary["best_step"]
        print(f"best.pt: {summary['best']} (val_exact {exact:.4f} at step {step})")
    if not summary["finished"]:
        print(f"stopped at step {summary['steps']} ({summary['stopped']}); continue it with --resume")
    return 0


def add_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a run's last.pt (or best.pt, or any weights file)")
    parser.add_argument("out", help="the weights file to write")
    parser.add_argument("--half", action="store_true", help="in half precision (half the size)")


def run_export(args: argparse.Namespace) -> int:
    from labutils import train as training

    if not Path(args.checkpoint).is_file():
        raise UsageError(f"{args.checkpoint}: no such file")
    try:
        path = training.export_weights(args.checkpoint, args.out, half=args.half)
    except training.RunError as error:
        raise UsageError(str(error)) from None
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------- the model's commands


def _load_model(args: argparse.Namespace):
    from labutils.model import WeightsError, load_pretrained, load_weights
    from labutils.runtime import device, set_threads

    set_threads(getattr(args, "threads", None))
    try:
        where = device(args.device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        return load_weights(args.checkpoint, where) if args.checkpoint else load_pretrained(where)
    except WeightsError as error:
        raise UsageError(str(error)) from None


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", metavar="PATH", help="a .pt file or a run folder (default: the shipped model)"
    )
    parser.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--beam", type=positive_int, default=1, help="beam width (1: greedy decoding)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE, help="expressions per batch"
    )
    parser.add_argument("--no-cache", action="store_true", help="decode without the key/value cache")


#: The fastest batch size for cached greedy decoding on 2 CPU cores (benchmarks/bench_decode.py).
DEFAULT_BATCH_SIZE = 128


def _read_source(text: str, model) -> tuple[str, bool]:
    """The normalized source, and whether it is in the training family; ValueError if it cannot be read."""
    from labutils import data
    from labutils.tokens import SOURCE_VOCAB, code

    expr = data.parse_expression(text)
    source = data.expression_text(expr)
    length = len(code(source, SOURCE_VOCAB))
    if length > model.config.max_src_len:
        raise ValueError(
            f"{text!r} is {length} tokens long; the model reads at most {model.config.max_src_len}"
        )
    return source, data.in_family(expr)


def add_translate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("expressions", nargs="*", metavar="EXPR", help="expressions, e.g. 'tan(hx)+sinh(gx)'")
    parser.add_argument("--file", metavar="F", help="one expression per line (- = standard input)")
    parser.add_argument("--check", action="store_true", help="append ok, wrong or timeout from sympy")
    parser.add_argument("--timeout", type=positive_float, default=10.0, help="seconds per sympy check")
    _add_model_options(parser)


def run_translate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from labutils import data, metrics
    from labutils.decode import translate
    from labutils.tokens import TokenizationError

    if bool(args.expressions) == bool(args.file):
        raise UsageError("give expressions, or --file F, not both")
    texts = _read_lines(args.file) if args.file else args.expressions
    single = len(texts) == 1 and not args.file
    model = _load_model(args)
    sources: list[str | None] = []
    problems: dict[int, str] = {}
    for line, text in enumerate(texts, start=1):
        try:
            source, family = _read_source(text, model)
        except (TokenizationError, ValueError) as error:
            if single:
                raise UsageError(str(error)) from None
            problems[line] = str(error)
            print(f"error: line {line}: {error}", file=sys.stderr)
            sources.append(None)
            continue
        if source != text.replace(" ", ""):
            print(f"normalized: {text.strip()} -> {source}", file=sys.stderr)
        if not family:
            print(f"warning: {source} is outside the training family; expect mistakes", file=sys.stderr)
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
    for line, source in enumerate(sources, start=1):
        if source is None:
            print(f"error: {problems[line]}")
            continue
        answer = next(answers)
        print(f"{answer}\t{next(verdicts)}" if args.check else answer)
    return 1 if problems else 0


def add_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--split", default="test", help="test, structures, validation, or a source<TAB>target file"
    )
    parser.add_argument("--limit", type=positive_int, help="only the first N pairs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--timeout", type=positive_float, default=10.0, help="seconds per sympy check")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, help="sympy processes")
    _add_model_options(parser)


def run_evaluate(args: argparse.Namespace) -> int:
    import json
    import time

    from tqdm import tqdm

    from labutils import data, metrics
    from labutils.decode import translate, translate_beams

    if args.split in data.SPLITS:
        pairs = data.load_pairs(args.split)
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
    if args.json:
        result = {
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
        print(json.dumps(result))
        return 0
    decoding = "greedy" if args.beam == 1 else f"beam {args.beam}"
    print(f"{args.split}: {accuracy.n} pairs, {decoding} decoding")
    print(accuracy)
    if any_ok is not None:
        print(f"{'any of the beam':<22}{100 * any_ok / max(accuracy.n, 1):6.2f}%  ({any_ok}/{accuracy.n})")
    print(f"{'time':<22}{seconds:.1f} s")
    return 0


def add_student(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 listing what differs")
    parser.add_argument("--source", default="solutions", help="folder of the solution notebooks")
    parser.add_argument("--out", default="notebooks", help="folder of the student notebooks")


def run_student(args: argparse.Namespace) -> int:
    from labutils import release

    if not Path(args.source).is_dir():
        raise UsageError(f"--source {args.source}: no such folder (run from the repository root)")
    if Path(args.out).resolve() == Path(args.source).resolve():
        raise UsageError("--out must differ from --source: the student versions would replace the solutions")
    try:
        if args.check:
            problems = release.differences(args.source, args.out)
            for problem in problems:
                print(problem, file=sys.stderr)
            if problems:
                fix = f"python -m labutils student --source {args.source} --out {args.out}"
                print(f"to update them: {fix}", file=sys.stderr)
            return 1 if problems else 0
        written, removed = release.write(args.source, args.out)
    except release.ReleaseError as error:
        raise UsageError(str(error)) from None
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    for path in removed:
        print(f"removed {path} (no source)", file=sys.stderr)
    if not written and not removed:
        print(f"{args.out} is up to date", file=sys.stderr)
    return 0


def add_release(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="new folder: student notebooks, a wheel, a README")
    parser.add_argument("--source", default="solutions", help="folder of the solution notebooks")


def run_release(args: argparse.Namespace) -> int:
    from labutils import release

    project = Path(__file__).resolve().parents[1]
    if not Path(args.source).is_dir():
        raise UsageError(f"--source {args.source}: no such folder (run from the repository root)")
    try:
        files = release.release(args.source, args.out, project)
    except release.ReleaseError as error:
        raise UsageError(str(error)) from None
    for path in files:
        print(path)
    print(
        f"{args.out}: hand this folder to students; it holds no solutions and no hidden tests",
        file=sys.stderr,
    )
    return 0


def add_figures(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="figures", help="folder for the PNG/SVG files and manifest.json")
    parser.add_argument("--checkpoint", metavar="PATH", help="weights file or run folder (default: shipped)")
    parser.add_argument("--expr", nargs="+", metavar="EXPR", help="expressions (default: the lecture's two)")
    parser.add_argument("--timeout", type=positive_float, default=30.0, help="seconds for each sympy check")


def run_figures(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, whatever the display
    from labutils import figures
    from labutils.model import WeightsError, load_weights

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, expected a folder")
    try:
        weights = figures.find_weights(args.checkpoint)
        model = load_weights(weights.path)
        expressions = figures.read_expressions(args.expr or figures.LECTURE_EXPRESSIONS, model)
    except (WeightsError, ValueError) as error:
        raise UsageError(str(error)) from None
    print(f"figures of {weights.name} into {out}/", file=sys.stderr)
    echo = lambda line: print(line, file=sys.stderr)  # noqa: E731
    manifest = figures.make_figures(out, weights, expressions, model, args.timeout, echo=echo)
    print(f"wrote {len(manifest['files'])} files and {out / figures.MANIFEST}", file=sys.stderr)
    return 0


def add_grade(parser: argparse.ArgumentParser) -> None:
    from labutils.grading import Limits

    parser.add_argument("paths", nargs="+", metavar="PATH", help="submitted notebooks, or folders to search")
    parser.add_argument("--source", help="source notebooks, with their checks (default: solutions/)")
    parser.add_argument("--out", default="grades.csv", help="one row per submission and exercise")
    parser.add_argument(
        "--feedback", help="folder for one feedback file per submission (default: feedback/ next to --out)"
    )
    parser.add_argument("--timeout", type=positive_float, default=Limits.timeout, help="seconds per cell")
    parser.add_argument(
        "--long-timeout",
        type=positive_float,
        default=Limits.long_timeout,
        help="seconds per cell tagged long",
    )
    parser.add_argument(
        "--memory", type=positive_float, default=Limits.memory_mb, help="MB of resident memory per submission"
    )
    parser.add_argument(
        "--max-output", type=positive_float, default=Limits.output_mb, help="MB of output per submission"
    )
    parser.add_argument("--jobs", type=positive_int, default=1, help="submissions graded at once")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue --out: grade only what it lacks")
    again.add_argument("--force", action="store_true", help="replace an existing --out")


def run_grade(args: argparse.Namespace) -> int:
    import signal

    from labutils import grading

    limits = grading.Limits(args.timeout, args.long_timeout, args.memory, args.max_output)
    # A plain kill stops the grader like Ctrl-C: the students' kernels are killed with it.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        report = grading.grade(
            args.paths,
            source=args.source or grading.DEFAULT_SOURCE,
            out=args.out,
            feedback=args.feedback,
            limits=limits,
            jobs=args.jobs,
            resume=args.resume,
            force=args.force,
        )
    except grading.GradingError as error:
        raise UsageError(str(error)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(report.summary)
    print(
        f"graded {report.graded} submission(s), skipped {report.skipped} already graded; "
        f"wrote {args.out} and {grading.totals_path(args.out)}",
        file=sys.stderr,
    )
    for problem in report.problems:
        print(f"not fully graded: {problem}", file=sys.stderr)
    return report.status


# ---------------------------------------------------------------------------------------------- main

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
