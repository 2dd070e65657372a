"""The run folder: its config, its log and learning curve, its checkpoints, and weights exported from it.

::

    config.json   the TrainConfig, model fields included
    log.csv       stage,step,epoch,sequences,lr,train_loss,val_loss,val_exact,elapsed_s (a row per validation)
    last.pt       model, optimizer, step, sampler position, RNG states, log: what ``resume`` needs
    best.pt       the weights with the best val_exact so far, in the format of the shipped weights

A run started from trained weights (``init``) continues their learning curve: its log begins with the rows
that made those weights (stored in every weights file the loop writes), and its steps, sequences and seconds
count on from there.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labutils import models
from labutils.files import atomic_write
from labutils.model import WeightsError, save_weights, weights_file
from labutils.train.config import TrainConfig

LOG_COLUMNS = (
    "stage",
    "step",
    "epoch",
    "sequences",
    "lr",
    "train_loss",
    "val_loss",
    "val_exact",
    "elapsed_s",
)


class RunError(Exception):
    """A run that cannot start: a non-empty folder, nothing to resume, unreadable data."""


@dataclass
class Progress:
    """Where a run stands: what ``last.pt`` saves and ``resume`` restores, besides the weights."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # batches of this epoch already used
    sequences: int = 0
    elapsed_s: float = 0.0  # training seconds before this process took the run over
    log: list[dict[str, Any]] = field(default_factory=list)  # the rows of log.csv
    best: tuple[float, float] = (-1.0, -math.inf)  # (val_exact, -val_loss) of best.pt: higher is better
    best_step: int = 0
    start_of_run: dict[str, float] = field(default_factory=dict)  # where the initial weights' curve ends


class RunFolder:
    """The files of one run, and the rules for starting or resuming it."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.config_path, self.log_path = self.out / "config.json", self.out / "log.csv"
        self.last, self.best = self.out / "last.pt", self.out / "best.pt"

    def check(self, config: TrainConfig | None, resume: bool) -> TrainConfig:
        """The config to run: ``config``, or with ``resume`` the saved one; RunError if the folder does not fit."""
        if resume:
            if not self.last.is_file():
                raise RunError(f"nothing to resume: {self.last} does not exist")
            saved = TrainConfig.from_dict(json.loads(self.config_path.read_text()))
            config = config or saved
            if config.model != saved.model:
                changed = differences(config.model, saved.model)
                raise RunError(f"cannot resume {self.out} with a different model ({changed} changed)")
        elif self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise RunError(f"{self.out} is not empty: resume its run (--resume) or choose another folder")
        if config is None:
            raise RunError("no config given")
        return config

    def begin(self, config: TrainConfig, progress: Progress) -> None:
        """Write config.json and the log so far."""
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.config_path, "w") as file:
            file.write(json.dumps(config.to_dict(), indent=2) + "\n")
        with atomic_write(self.log_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=LOG_COLUMNS)
            writer.writeheader()
            writer.writerows(progress.log)

    def append(self, row: dict[str, Any]) -> None:
        with open(self.log_path, "a", newline="") as file:
            csv.DictWriter(file, fieldnames=LOG_COLUMNS).writerow(row)

    def save_best(
        self, model: torch.nn.Module, progress: Progress, val_exact: float, val_loss: float
    ) -> None:
        save_weights(model, self.best, step=progress.step, val_exact=val_exact, val_loss=val_loss,
                     curve=[dict(row) for row in progress.log])  # fmt: skip

    def save_last(self, model, optimizer, progress: Progress, config: TrainConfig) -> None:
        """Everything ``resume`` needs, written atomically: an interrupted save never leaves half a file."""
        state = asdict(progress)
        state |= {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": _rng_states(),
                  "config": config.to_dict()}  # fmt: skip
        with atomic_write(self.last) as file:
            torch.save(state, file)

    def restore(self, model, optimizer, restore_rng: bool) -> Progress:
        """The weights, optimizer and progress of ``last.pt``; the RNG states too if ``restore_rng``.

        Loaded on the CPU, where the RNG states must be: the weights and the optimizer's state are copied to
        the model's device by ``load_state_dict``.
        """
        state = torch.load(self.last, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if restore_rng:
            _set_rng_states(state["rng"])
        kept = {name: state[name] for name in Progress.__dataclass_fields__ if name in state}
        return Progress(**{**kept, "best": tuple(kept["best"])})


def differences(wanted: dict[str, Any], saved: dict[str, Any]) -> str:
    """The keys of ``wanted`` whose value ``saved`` does not share, comma-separated ("" if none)."""
    return ", ".join(sorted(k for k in wanted if wanted[k] != saved.get(k)))


def load_initial_weights(model: torch.nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """Copy the weights ``config.init`` names into ``model`` and return the learning curve that made them.

    RunError if they are unreadable or of another shape.
    """
    try:
        start = models.load_weights(config.init)
    except WeightsError as error:
        raise RunError(f"init: {error}") from None
    if start.architecture != config.architecture:
        raise RunError(f"init: {config.init} holds the {start.architecture} model, not the {config.architecture}")
    wanted, saved = asdict(config.model_config()), asdict(start.config)
    if wanted != saved:
        changed = differences(wanted, saved)
        raise RunError(f"init: {config.init} holds a different model ({changed} differ from the config)")
    model.load_state_dict(start.state_dict())
    return curve_of(config.init)


def curve_of(weights: str | Path) -> list[dict[str, Any]]:
    """The rows of log.csv that led to a weights file: those stored in it, else the ``log.csv`` beside it."""
    path = weights_file(weights)
    curve = torch.load(path, map_location="cpu", weights_only=True).get("curve")
    if curve is not None:
        return [{k: str(v) for k, v in row.items()} for row in curve]  # as log.csv reads
    beside = path.parent / "log.csv"
    if not beside.is_file():
        return []
    with open(beside, newline="") as file:
        return [{k: v for k, v in row.items() if k in LOG_COLUMNS} for row in csv.DictReader(file)]


def curve_end(curve: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Where a curve ends: its step, epoch, sequences and seconds, from which a run continuing it counts on."""
    last = curve[-1] if curve else {}
    return {key: float(last.get(key) or 0) for key in ("step", "epoch", "sequences", "elapsed_s")}


def saved_step(out: str | Path) -> int:
    """The step a run folder's ``last.pt`` stands at; RunError if there is none."""
    last = Path(out) / "last.pt"
    if not last.is_file():
        raise RunError(f"nothing to resume: {last} does not exist")
    return int(torch.load(last, map_location="cpu", weights_only=True)["step"])


def export_weights(checkpoint: str | Path, out: str | Path, half: bool = False) -> Path:
    """Write a run's ``last.pt`` (or any weights file) as a weights file, optionally in half precision.

    Half precision halves the file; a run started from it (``init``) trains in full precision again. The
    file keeps the training curve, so a run continuing from it continues the curve.
    """
    checkpoint = Path(checkpoint)
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RunError(f"{checkpoint}: not a readable checkpoint ({str(error).strip()[:120]})") from None
    if "optimizer" in state:  # a run's last.pt
        config = TrainConfig.from_dict(state["config"])
        model = models.build(config.architecture, config.model_config())
        model.load_state_dict(state["model"])
        curve, step = state["log"], state["step"]
    else:
        try:
            model = models.load_weights(checkpoint)
        except WeightsError as error:
            raise RunError(str(error)) from None
        curve, step = curve_of(checkpoint), state.get("step")
    if half:
        model = model.half()
    return save_weights(model, out, step=step, curve=[dict(row) for row in curve])


# ---------------------------------------------------------------------------------------------- random states


def _rng_states() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_states(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
