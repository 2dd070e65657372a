"""``train`` and ``export``: a training run (resumable) and its weights as a file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from labutils.cli.common import UsageError, add_model_choice, positive_float, positive_int


def add_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="recipe: tiny, cpu or full (default with --resume: the run's own)")
    add_model_choice(parser, "the model to train (default: encoder-decoder; with --resume: the run's own)")
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
            config = training.make_config(args.preset, overrides, args.model or "encoder-decoder")
        elif args.resume:
            saved = Path(args.out) / "config.json"
            if not saved.is_file():
                raise UsageError(f"nothing to resume: {saved} does not exist")
            config = training.make_config(json.loads(saved.read_text()), overrides, args.model)
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
