"""The instructor's commands: ``student``, ``release``, ``figures`` and ``grade`` (see :mod:`labutils.instructor`)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from labutils.cli.common import UsageError, add_model_choice, add_threads, positive_float, positive_int


def add_student(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 listing what differs")
    parser.add_argument("--source", default="solutions", help="folder of the solution notebooks")
    parser.add_argument("--out", default="notebooks", help="folder of the student notebooks")


def run_student(args: argparse.Namespace) -> int:
    from labutils.instructor import release

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
    from labutils.instructor import release

    project = Path(__file__).resolve().parents[2]
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
    parser.add_argument(
        "--out", help="folder for the figures and manifest.json (default: figures, or figures/decoder-only)"
    )
    parser.add_argument("--checkpoint", metavar="PATH", help="weights file or run folder (default: shipped)")
    add_model_choice(parser, "which shipped model (default: encoder-decoder; with --checkpoint: the file's)")
    parser.add_argument("--expr", nargs="+", metavar="EXPR", help="expressions (default: the lecture's two)")
    parser.add_argument("--timeout", type=positive_float, default=30.0, help="seconds for each sympy check")
    parser.add_argument(
        "--format",
        nargs="+",
        choices=["png", "svg", "pdf"],
        default=["png", "svg"],
        help="file formats (default: png svg, what the repository's figures/ holds)",
    )
    parser.add_argument(
        "--aspect", choices=["16:9", "4:3"], default="16:9", help="slide shape: 13.33x7.5 or 10x7.5 in"
    )
    parser.add_argument(
        "--view",
        nargs="+",
        choices=["matrix", "lines", "model"],
        default=["matrix"],
        help="views of attention: matrix (heatmaps and grids of heads, the default), lines (the line view), "
        "model (every layer x head)",
    )
    parser.add_argument(
        "--kind",
        nargs="+",
        choices=["encoder", "decoder", "cross"],
        help="kinds of attention to draw (default: every kind the model has)",
    )
    parser.add_argument(
        "--animate",
        nargs="*",
        choices=["gif", "mp4"],
        metavar="FORMAT",
        help="also the step-through of decoding, one frame per written token, and a still of it: gif, mp4 "
        "(ffmpeg), or none named for a GIF and, when ffmpeg is on the PATH, an MP4",
    )
    add_threads(parser)


def run_figures(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, whatever the display
    from labutils import models
    from labutils.instructor import figures
    from labutils.model import WeightsError
    from labutils.runtime import plan_threads, set_threads

    set_threads(plan_threads(args.threads, 1)[0])  # one sympy worker beside the model
    animate: list[str] = []
    if args.animate is not None:
        animate = list(dict.fromkeys(args.animate)) or ["gif"] + (["mp4"] if shutil.which("ffmpeg") else [])
        if "mp4" in animate and shutil.which("ffmpeg") is None:
            raise UsageError("--animate mp4 needs ffmpeg on the PATH; install it, or use --animate gif")

    kind = args.model or models.DEFAULT_KIND
    out = Path(args.out or ("figures" if kind == models.DEFAULT_KIND else "figures/decoder-only"))
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, expected a folder")
    try:
        weights = figures.find_weights(args.checkpoint, kind)
        model = models.load_weights(weights.path)
        if args.model and models.kind_of(model) != args.model:
            raise UsageError(f"--checkpoint {args.checkpoint} holds the {models.kind_of(model)} model, not the {args.model}")
        expressions = figures.read_expressions(args.expr or figures.LECTURE_EXPRESSIONS, model)
    except (WeightsError, ValueError) as error:
        raise UsageError(str(error)) from None
    print(f"figures of {weights.name} into {out}/", file=sys.stderr)
    echo = lambda line: print(line, file=sys.stderr)  # noqa: E731
    formats = list(dict.fromkeys(args.format))
    if args.animate == [] and "mp4" not in animate:
        echo("no ffmpeg on the PATH: the step-through as a GIF only")
    manifest = figures.make_figures(
        out,
        weights,
        expressions,
        model,
        args.timeout,
        echo=echo,
        formats=formats,
        aspect=args.aspect,
        views=list(dict.fromkeys(args.view)),
        animate=animate,
        kinds=list(dict.fromkeys(args.kind)) if args.kind else None,
    )
    print(f"wrote {len(manifest['files'])} files and {out / figures.MANIFEST}", file=sys.stderr)
    return 0


def add_grade(parser: argparse.ArgumentParser) -> None:
    from labutils.instructor.kernel import Limits  # the defaults, without loading the grader

    parser.add_argument("paths", nargs="+", metavar="PATH", help="submitted notebooks, or folders to search")
    parser.add_argument("--source", help="source notebooks, with their checks (default: solutions/)")
    parser.add_argument(
        "--out",
        default="grades.csv",
        help="one row per submission and exercise; beside it -totals.csv and -gradebook.csv (one row per student)",
    )
    parser.add_argument(
        "--student-pattern",
        metavar="REGEX",
        help="find the student in each file name, e.g. '^(?P<student>[^_]+)_' "
        "(default: the folder, as in nbgrader's submitted/<student>/<assignment>/)",
    )
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
    add_threads(
        parser, "torch threads of each submission's kernel (default: the cores shared among the jobs)"
    )
    parser.add_argument(
        "--sandbox",
        choices=["auto", "bwrap", "none"],
        default="auto",
        help="run each kernel in bubblewrap: no network, a read-only system, only its own submission "
        "(auto: when bwrap runs here, else none, said in one line)",
    )
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue --out: grade only what it lacks")
    again.add_argument("--force", action="store_true", help="replace an existing --out")


def run_grade(args: argparse.Namespace) -> int:
    import signal

    from labutils.instructor import grading
    from labutils.runtime import cores

    threads = args.threads or max(1, cores() // args.jobs)  # the kernels run side by side: never more
    limits = grading.Limits(args.timeout, args.long_timeout, args.memory, args.max_output, threads=threads)
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
            student_pattern=args.student_pattern,
            sandbox_mode=args.sandbox,
        )
    except grading.ChangedError as error:  # not a usage error: the files the grader judges with changed
        print(f"error: {error}", file=sys.stderr)
        return 1
    except grading.GradingError as error:
        raise UsageError(str(error)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(report.summary)
    print(
        f"graded {report.graded} submission(s), skipped {report.skipped} already graded; wrote {args.out}, "
        f"{grading.totals_path(args.out)}, {grading.gradebook_path(args.out)} and "
        f"{grading.similarity_path(args.out)}",
        file=sys.stderr,
    )
    for duplicate in report.duplicates:
        print(f"duplicate: {duplicate}", file=sys.stderr)
    for problem in report.problems:
        print(f"not fully graded: {problem}", file=sys.stderr)
    if report.stopped:
        print(report.stopped, file=sys.stderr)
    return report.status
