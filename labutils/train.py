"""Training: one readable loop, its presets, its checkpoints, and data parallelism.

The lecture's step 5. Batches of similar lengths go through the model with teacher forcing (the model reads
``tgt[:, :-1]`` and predicts ``tgt[:, 1:]``); AdamW follows a linear warmup then a cosine decay, or, with
``schedule="wsd"``, warmup, a constant rate for as long as the run goes on, and a short decay only to make a
snapshot (warmup-stable-decay); every ``val_every`` steps the loop measures the validation loss and the
exact-match accuracy and writes a row of ``log.csv``. A run folder holds everything needed to look at a run or
to continue it::

    config.json   the TrainConfig, model fields included
    log.csv       stage,step,epoch,sequences,lr,train_loss,val_loss,val_exact,elapsed_s (a row per validation)
    last.pt       model, optimizer, step, sampler position, RNG states, log: what ``resume`` needs
    best.pt       the weights with the best val_exact so far, in the format of the shipped weights

A run started from trained weights (``init``) continues their training curve: its log begins with the rows
that made those weights, and its steps, sequences and seconds count on from there.

Run it with ``python -m labutils train --preset cpu --out runs/cpu`` or, on several GPUs,
``torchrun --nproc_per_node=N -m labutils train …``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from labutils.model import (
    ModelConfig,
    Seq2SeqTransformer,
    WeightsError,
    load_weights,
    save_weights,
    weights_file,
)
from labutils.runtime import device as choose_device
from labutils.runtime import seed_everything, set_threads
from labutils.tokens import (
    PAD_IDX,
    SOURCE_VOCAB,
    TARGET_VOCAB,
    LengthGroupedBatchSampler,
    TokenizationError,
    code,
    collate,
)

LOG_COLUMNS = ("stage", "step", "epoch", "sequences", "lr", "train_loss", "val_loss", "val_exact", "elapsed_s")
SCHEDULES = ("cosine", "wsd")


class RunError(Exception):
    """A run that cannot start: a non-empty folder, nothing to resume, unreadable data."""


# ---------------------------------------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Everything a run depends on; ``model`` holds the ModelConfig fields (vocabulary sizes filled in)."""

    model: dict[str, Any] = field(default_factory=dict)
    lr: float = 1e-3  # peak learning rate, reached at the end of the warmup
    min_lr: float = 1e-5  # the floor of the decay
    warmup_steps: int = 500
    max_steps: int = 20_000
    schedule: str = "cosine"  # "cosine": decay over the whole run; "wsd": warmup, stable, decay
    decay_steps: int = 0  # wsd: the last decay_steps steps before max_steps decay linearly to min_lr
    stage: str = ""  # a name for this run's rows of log.csv, e.g. "3" or "3 decay"
    batch_size: int = 256  # at most this many sequences per batch …
    max_tokens: int | None = 8000  # … and at most this many (source + target) tokens, padding included
    weight_decay: float = 0.01  # on weight matrices only
    clip_norm: float = 1.0  # gradient clipping; 0 turns it off
    label_smoothing: float = 0.0
    val_every: int = 500  # steps between validations (a row of log.csv each)
    val_size: int = 1000  # validation pairs, a fixed subset
    seed: int = 0
    data: str | None = None  # None: the shipped train/validation splits; else a source<TAB>target file
    train_size: int | None = None  # use only this many training pairs (a fixed subset)
    threads: int | None = None  # CPU threads; None: torch's choice (one per core a process may use)
    init: str | None = None  # start from these weights (a weights file or run folder), not random ones

    def __post_init__(self):
        if isinstance(self.model, ModelConfig):
            self.model = asdict(self.model)
        self.model = {"src_vocab_size": len(SOURCE_VOCAB), "tgt_vocab_size": len(TARGET_VOCAB), **self.model}
        unknown = set(self.model) - {f.name for f in fields(ModelConfig)}
        if unknown:
            raise ValueError(f"unknown model field {sorted(unknown)[0]!r}")
        self.model_config()  # its own checks: d_model divisible by n_heads, …
        for name in ("max_steps", "batch_size", "val_every", "val_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive whole number, got {getattr(self, name)!r}")
        if not self.lr > 0 or self.min_lr < 0 or self.warmup_steps < 0:
            raise ValueError("lr must be positive, min_lr and warmup_steps not negative")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")
        if not isinstance(self.decay_steps, int) or not 0 <= self.decay_steps <= self.max_steps:
            raise ValueError(f"decay_steps must be a whole number from 0 to max_steps, got {self.decay_steps!r}")

    def model_config(self) -> ModelConfig:
        return ModelConfig(**self.model)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from flat keys (``{"d_model": 64, "lr": 3e-4}``) or a nested ``model`` dict, or both."""
        training, model = _split(values)
        return cls(model=model, **training)


def _split(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split flat config keys into (training fields, model fields); unknown keys are an error."""
    train_names = {f.name: f for f in fields(TrainConfig)}
    model_names = {f.name for f in fields(ModelConfig)}
    training, model = {}, dict(values.get("model") or {})
    for key, value in values.items():
        if key == "model":
            continue
        if key in train_names:
            default, optional = train_names[key].default, "None" in str(train_names[key].type)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if isinstance(default, (int, float)) and not number and not (optional and value is None):
                raise ValueError(f"config key {key!r} expects a number, got {value!r}")
            training[key] = float(value) if isinstance(default, float) else value
        elif key in model_names:
            model[key] = value
        else:
            known = ", ".join(sorted((set(train_names) | model_names) - {"model"}))
            raise ValueError(f"unknown config key {key!r} (known keys: {known})")
    return training, model


#: Recipes, as plain overrides of TrainConfig (model fields and training fields side by side).
PRESETS: dict[str, dict[str, Any]] = {
    # What notebook 05 trains within half a minute on a laptop CPU (3 s on 2 free cores), to watch the loss fall.
    "tiny": {
        "d_model": 32, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "d_ff": 64,
        "dropout": 0.0, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 20, "max_steps": 150,
        "batch_size": 64, "max_tokens": 4000, "val_every": 50, "val_size": 100, "train_size": 3000,
    },
    # The best recipe for a 2-core CPU: no dropout (a few epochs do not overfit), a short warmup and a
    # high peak rate that pre-norm layers tolerate, and batches capped by tokens so long series stay cheap.
    "cpu": {
        "d_model": 128, "n_heads": 4, "n_encoder_layers": 3, "n_decoder_layers": 3, "d_ff": 512,
        "dropout": 0.0, "tie_embeddings": False, "lr": 1.5e-3, "min_lr": 5e-5, "warmup_steps": 300,
        "max_steps": 9_000, "batch_size": 256, "max_tokens": 6000, "val_every": 250, "val_size": 500,
    },
    # The recipe of the shipped model: the cpu recipe, trained longer (labutils/weights/TRAINING.md).
    "full": {
        "d_model": 128, "n_heads": 4, "n_encoder_layers": 3, "n_decoder_layers": 3, "d_ff": 512,
        "dropout": 0.0, "tie_embeddings": False, "lr": 1.5e-3, "min_lr": 5e-5, "warmup_steps": 300,
        "max_steps": 15_000, "batch_size": 256, "max_tokens": 6000, "val_every": 250, "val_size": 500,
    },
}  # fmt: skip


def make_config(preset: str | dict[str, Any] = "cpu", overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A preset (by name, or a dict such as a run's config.json) with ``overrides`` applied.

    Keys are flat (``{"d_model": 64, "lr": 3e-4}``) or model fields nested in ``model``; unknown keys are
    a ValueError.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    return TrainConfig.from_dict(_merge(preset, overrides or {}))


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Flat keys of ``base`` updated by those of ``overrides`` (nested ``model`` dicts flattened first)."""
    flat = {**base.get("model", {}), **{k: v for k, v in base.items() if k != "model"}}
    flat.update(overrides.get("model", {}))
    flat.update({k: v for k, v in overrides.items() if k != "model"})
    return flat


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warmup to ``lr`` over ``warmup_steps``, then a decay to ``min_lr`` at ``max_steps``.

    ``cosine`` decays over the whole run. ``wsd`` holds ``lr`` until the last ``decay_steps`` steps and then
    decays linearly: the stable phase can go on for as long as there is time (resume with a larger
    ``max_steps``), and a snapshot is made by a short decay from any point of it (:func:`decay_from`).
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "wsd":
        decay_start = config.max_steps - config.decay_steps
        if step < decay_start:
            return config.lr
        progress = min(1.0, (step - decay_start + 1) / max(1, config.decay_steps))
        return config.lr + progress * (config.min_lr - config.lr)
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    return config.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)


def decay_from(config: TrainConfig, step: int, decay_steps: int) -> TrainConfig:
    """The config that ends a warmup-stable-decay run: ``decay_steps`` of decay starting at ``step``."""
    if config.schedule != "wsd":
        raise ValueError(f"only a warmup-stable-decay run (schedule 'wsd') can be decayed; this one is {config.schedule!r}")
    stage = f"{config.stage} decay".strip()
    return TrainConfig.from_dict(
        {**config.to_dict(), "max_steps": step + decay_steps, "decay_steps": decay_steps, "stage": stage}
    )


# ---------------------------------------------------------------------------------------------- data


def load_data(config: TrainConfig) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Training pairs and the fixed validation subset (``val_size`` pairs), as (source, target) strings.

    From a file, the validation pairs are a fixed random subset held out of it (at most a tenth of the file),
    the same whatever the seed, so that runs with different seeds are compared on the same pairs.
    """
    from labutils import data

    if config.data is None:
        try:
            train_pairs, val_pairs = data.load_pairs("train"), data.load_pairs("validation")
        except FileNotFoundError:
            raise RunError(
                "this labutils has no shipped data set yet: pass a pairs file (--data FILE)"
            ) from None
    else:
        path = Path(config.data)
        if not path.is_file():
            raise RunError(f"data file {str(path)!r} not found")
        try:
            pairs = data.read_pairs(path)
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise RunError(f"cannot read {str(path)!r}: {error}") from None
        if len(pairs) < 2:
            raise RunError(f"{str(path)!r} holds {len(pairs)} pairs: too few to train and validate")
        held_out = set(
            random.Random(0).sample(range(len(pairs)), min(config.val_size, max(1, len(pairs) // 10)))
        )
        train_pairs = [pair for i, pair in enumerate(pairs) if i not in held_out]
        val_pairs = [pair for i, pair in enumerate(pairs) if i in held_out]
    if config.train_size is not None and config.train_size < len(train_pairs):
        keep = sorted(random.Random(1).sample(range(len(train_pairs)), config.train_size))
        train_pairs = [train_pairs[i] for i in keep]
    if len(val_pairs) > config.val_size:
        keep = sorted(random.Random(2).sample(range(len(val_pairs)), config.val_size))
        val_pairs = [val_pairs[i] for i in keep]
    return train_pairs, val_pairs


def code_pairs(
    pairs: Sequence[tuple[str, str]], model_config: ModelConfig
) -> list[tuple[list[int], list[int]]]:
    """Delimited codes of each pair; pairs longer than ``max_src_len``/``max_tgt_len`` are left out."""
    coded = []
    for source, target in pairs:
        try:
            src, tgt = code(source, SOURCE_VOCAB), code(target, TARGET_VOCAB)
        except TokenizationError as error:
            raise RunError(f"pair {source!r}: {error}") from None
        if len(src) <= model_config.max_src_len and len(tgt) <= model_config.max_tgt_len:
            coded.append((src, tgt))
    return coded


# ---------------------------------------------------------------------------------------------- validation


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Sequence, device: torch.device) -> tuple[float, float]:
    """(mean token cross-entropy, share of sequences whose argmax is right at every position) on ``batches``.

    With teacher forcing, a sequence whose argmax equals the target everywhere (through ``<eos>``) is one that
    greedy decoding reproduces exactly: this is the greedy exact-match accuracy, without decoding.
    """
    was_training = model.training
    model.eval()
    loss_sum, n_tokens, n_exact, n_sequences = 0.0, 0, 0, 0
    for batch in batches:
        src, tgt, src_pad_mask, tgt_pad_mask = (t.to(device) for t in batch)
        tgt_out = tgt[:, 1:]  # (B, Lt)
        with _autocast(device):
            logits = model(src, tgt[:, :-1], src_pad_mask, tgt_pad_mask[:, :-1])  # (B, Lt, V)
        logits = logits.float()
        loss_sum += F.cross_entropy(
            logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD_IDX, reduction="sum"
        ).item()
        n_tokens += int((tgt_out != PAD_IDX).sum())
        right = (logits.argmax(-1) == tgt_out) | (tgt_out == PAD_IDX)  # (B, Lt)
        n_exact += int(right.all(dim=1).sum())
        n_sequences += len(tgt)
    model.train(was_training)
    return loss_sum / max(1, n_tokens), n_exact / max(1, n_sequences)


def _autocast(device: torch.device):
    """bf16 mixed precision on CUDA; full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------- checkpoints


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


def _atomic_save(obj: Any, path: Path) -> None:
    """Write to a temporary file, then rename: an interrupted save never leaves half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _append_log(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", newline="") as file:
        csv.DictWriter(file, fieldnames=LOG_COLUMNS).writerow(row)


# ---------------------------------------------------------------------------------------------- data parallel


def _init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); starts torch.distributed when launched by torchrun with several processes."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world_size


def _all_sum(values: list[float], device: torch.device, world_size: int) -> list[float]:
    """The sum over processes of each value (the values themselves in a single process)."""
    if world_size == 1:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


class _StopRequest:
    """Ctrl-C asks the loop to stop after the current step and save; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self) -> _StopRequest:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: Ctrl-C keeps its usual meaning
            pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step and saving last.pt (Ctrl-C again to quit at once)", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# ---------------------------------------------------------------------------------------------- the loop


def _differences(wanted: dict[str, Any], saved: dict[str, Any]) -> str:
    """The keys of ``wanted`` whose value ``saved`` does not share, comma-separated ("" if none)."""
    return ", ".join(sorted(k for k in wanted if wanted[k] != saved.get(k)))


def _load_initial_weights(model: Seq2SeqTransformer, config: TrainConfig) -> list[dict[str, Any]]:
    """Copy the weights ``config.init`` names into ``model`` and return the training curve that made them.

    RunError if they are unreadable or of another shape.
    """
    try:
        start = load_weights(config.init)
    except WeightsError as error:
        raise RunError(f"init: {error}") from None
    wanted, saved = asdict(config.model_config()), asdict(start.config)
    if wanted != saved:
        changed = _differences(wanted, saved)
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


def _curve_end(curve: Sequence[dict[str, Any]]) -> dict[str, float]:
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
        model = Seq2SeqTransformer(config.model_config())
        model.load_state_dict(state["model"])
        curve, step = state["log"], state["step"]
    else:
        try:
            model = load_weights(checkpoint)
        except WeightsError as error:
            raise RunError(str(error)) from None
        curve, step = curve_of(checkpoint), state.get("step")
    if half:
        model = model.half()
    return save_weights(model, out, step=step, curve=[dict(row) for row in curve])


def train(
    config: TrainConfig | None,
    out: str | Path,
    resume: bool = False,
    minutes: float | None = None,
    device: str | None = None,
    progress: bool | Callable[..., Any] = True,
) -> dict[str, Any]:
    """Train a Seq2SeqTransformer as ``config`` says, writing the run folder ``out``; returns a summary.

    ``resume`` continues the run saved in ``out/last.pt`` (``config=None`` takes ``out/config.json``);
    ``minutes`` stops after that much training time; ``progress`` shows a tqdm bar on stderr (or pass your
    own bar class, e.g. ``tqdm.notebook.tqdm``). Ctrl-C stops after the current step, saving ``last.pt``.
    """
    out = Path(out)
    last_path, best_path, log_path, config_path = (out / "last.pt", out / "best.pt", out / "log.csv",
                                                   out / "config.json")  # fmt: skip
    if resume:
        if not last_path.is_file():
            raise RunError(f"nothing to resume: {last_path} does not exist")
        saved = TrainConfig.from_dict(json.loads(config_path.read_text()))
        config = config or saved
        if config.model != saved.model:
            changed = _differences(config.model, saved.model)
            raise RunError(f"cannot resume {out} with a different model ({changed} changed)")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"{out} is not empty: resume its run (--resume) or choose another folder")
    if config is None:
        raise RunError("no config given")

    # Where to compute: under torchrun, one process per GPU (or several CPU processes sharing the cores).
    device = choose_device(device)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    rank, world_size = _init_distributed(device)
    is_main = rank == 0
    if config.threads is not None:
        set_threads(config.threads)
    elif world_size > 1 and device.type == "cpu":  # share the cores instead of fighting over them
        set_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world_size))))
    seed_everything(config.seed, deterministic=device.type == "cpu")  # on GPUs, speed comes first

    # Data: coded once; training batches of similar lengths, in a new order each epoch; validation fixed.
    model_config = config.model_config()
    train_pairs, val_pairs = load_data(config)
    train_codes, val_codes = code_pairs(train_pairs, model_config), code_pairs(val_pairs, model_config)
    if not train_codes or not val_codes:
        raise RunError("no training or validation pairs fit in the model's max_src_len/max_tgt_len")
    sampler = LengthGroupedBatchSampler(
        [len(s) + len(t) for s, t in train_codes],
        config.batch_size,
        config.max_tokens,
        shuffle=True,
        seed=config.seed,
        num_replicas=world_size,
        rank=rank,
    )
    val_sampler = LengthGroupedBatchSampler(
        [len(s) + len(t) for s, t in val_codes], config.batch_size, config.max_tokens, shuffle=False
    )
    val_batches = [collate([val_codes[i] for i in indices]) for indices in val_sampler]

    # Model and optimizer: weight decay on matrices only, not on biases and norms.
    model = Seq2SeqTransformer(model_config).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.98),
        fused=device.type == "cuda",
    )
    step, epoch, position, sequences, elapsed, rows = 0, 0, 0, 0, 0.0, []
    if config.init is not None and not resume:
        rows = _load_initial_weights(model, config)
    start_of_run = _curve_end(rows)  # this run's rows count on from the curve of its initial weights
    torch.manual_seed(config.seed + rank)  # each process its own dropout masks
    best, best_step = (-1.0, -math.inf), 0  # (val_exact, -val_loss) of best.pt: higher is better
    if resume:
        state = torch.load(last_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, position = state["step"], state["epoch"], state["position"]
        sequences, elapsed, rows = state["sequences"], state["elapsed_s"], state["log"]
        best, best_step = tuple(state["best"]), state["best_step"]
        start_of_run = state.get("start_of_run", start_of_run)
        if is_main:
            _set_rng_states(state["rng"])
        else:  # only the first process's RNG states are saved
            torch.manual_seed(config.seed + rank + 1_000_003 * step)
    raw_model = model  # for validation and saving: the model itself, not its DDP wrapper
    if world_size > 1:
        device_ids = [device] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        config_path.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        _write_log(log_path, rows)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    if not batches:
        raise RunError(f"too few training pairs ({len(train_codes)}) for {world_size} processes")
    if is_main and progress:
        n_parameters = sum(p.numel() for p in raw_model.parameters())
        left_out = len(train_pairs) + len(val_pairs) - len(train_codes) - len(val_codes)
        print(
            f"training {n_parameters:,} parameters on {len(train_codes):,} pairs, validating on "
            f"{len(val_codes):,} ({device}, {world_size} process(es), {torch.get_num_threads()} thread(s))"
            + (f"; {left_out} pairs too long for the model left out" if left_out else ""),
            file=sys.stderr,
        )
    bar_class = tqdm if progress is True or not progress else progress
    bar = bar_class(total=config.max_steps, initial=step, file=sys.stderr, disable=not (progress and is_main))

    loss_sum, loss_count, tokens, window_tokens = 0.0, 0, 0, 0
    start_step, started, window_start, stopped = step, time.monotonic(), time.monotonic(), None
    model.train()
    with _StopRequest() as stop_request:
        while step < config.max_steps:
            if position >= len(batches):  # a new epoch: a new order of batches
                epoch, position = epoch + 1, 0
                sampler.set_epoch(epoch)
                batches = list(sampler)
            src, tgt, src_pad_mask, tgt_pad_mask = collate([train_codes[i] for i in batches[position]])
            n_tokens = int((~src_pad_mask).sum() + (~tgt_pad_mask).sum())  # real tokens, padding excluded
            src, tgt = src.to(device, non_blocking=True), tgt.to(device, non_blocking=True)
            src_pad_mask, tgt_pad_mask = src_pad_mask.to(device), tgt_pad_mask.to(device)

            # One step: teacher forcing, the loss on the real target tokens, clipped gradients.
            lr = learning_rate(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with _autocast(device):
                logits = model(src, tgt[:, :-1], src_pad_mask, tgt_pad_mask[:, :-1])  # (B, Lt, V)
                loss = F.cross_entropy(
                    logits.flatten(0, 1).float(),
                    tgt[:, 1:].flatten(),
                    ignore_index=PAD_IDX,
                    label_smoothing=config.label_smoothing,
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimizer.step()
            step, position = step + 1, position + 1
            loss_sum, loss_count = loss_sum + loss.detach(), loss_count + 1  # no .item(): no sync per step
            bar.update(1)

            # Agreed between processes: the sequences and tokens seen, and whether to stop now.
            out_of_time = minutes is not None and time.monotonic() - started >= minutes * 60
            votes = [len(src), n_tokens, float(stop_request.requested or out_of_time)]
            n_sequences, n_tokens, stop_votes = _all_sum(votes, device, world_size)
            sequences += int(n_sequences)
            tokens, window_tokens = tokens + int(n_tokens), window_tokens + int(n_tokens)
            if stop_votes > 0:
                stopped = "interrupted" if stop_request.requested else "out of time"
            if step % 10 == 0:
                now = time.monotonic()
                tokens_per_s = window_tokens / max(1e-9, now - window_start)
                mean_loss = float(loss_sum) / loss_count
                bar.set_postfix(
                    loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:.0f}", refresh=False
                )
                window_tokens, window_start = 0, now
            if step % config.val_every and step < config.max_steps and not stopped:
                continue

            # Validation: a row of log.csv, best.pt if val_exact improved, last.pt always.
            train_loss = _all_sum([float(loss_sum) / loss_count], device, world_size)[0] / world_size
            loss_sum, loss_count = 0.0, 0
            if is_main:
                val_loss, val_exact = evaluate(raw_model, val_batches, device)
                row = {
                    "stage": config.stage,
                    "step": int(start_of_run["step"]) + step,
                    "epoch": round(start_of_run["epoch"] + epoch + position / len(batches), 4),
                    "sequences": int(start_of_run["sequences"]) + sequences,
                    "lr": f"{lr:.6g}",
                    "train_loss": f"{train_loss:.6f}",
                    "val_loss": f"{val_loss:.6f}",
                    "val_exact": f"{val_exact:.6f}",
                    "elapsed_s": round(start_of_run["elapsed_s"] + elapsed + time.monotonic() - started, 1),
                }
                rows.append(row)
                _append_log(log_path, row)
                if (val_exact, -val_loss) > best:
                    best, best_step = (val_exact, -val_loss), step
                    save_weights(
                        raw_model, best_path, step=step, val_exact=val_exact, val_loss=val_loss,
                        curve=[dict(r) for r in rows],
                    )  # fmt: skip
                checkpoint = {
                    "model": raw_model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "epoch": epoch,
                    "position": position,  # batches of this epoch already used
                    "sequences": sequences,
                    "elapsed_s": elapsed + time.monotonic() - started,
                    "log": rows,
                    "best": best,
                    "best_step": best_step,
                    "start_of_run": start_of_run,
                    "rng": _rng_states(),
                    "config": config.to_dict(),
                }
                _atomic_save(checkpoint, last_path)
                if progress:
                    report = (
                        f"train_loss {train_loss:.4f}, val_loss {val_loss:.4f}, val_exact {val_exact:.3f}"
                    )
                    bar.write(f"step {step}: {report}", file=sys.stderr)
            if stopped:
                break
    bar.close()
    run_time = time.monotonic() - started
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return {
        "steps": step,
        "finished": step >= config.max_steps,
        "stopped": stopped,  # None, "interrupted" or "out of time"
        "best_val_exact": best[0] if best[0] >= 0 else None,
        "best_val_loss": -best[1] if best[0] >= 0 else None,
        "best_step": best_step,
        "best": best_path,
        "last": last_path,
        "log": log_path,
        "out": out,
        "run_time_s": run_time,
        "steps_per_s": (step - start_step) / max(1e-9, run_time),
        "tokens_per_s": tokens / max(1e-9, run_time),  # source + target tokens, padding excluded
    }
