"""Training: one readable loop, its presets, its run folder, and data parallelism.

The lecture's step 5. Batches of similar lengths go through the model with teacher forcing (the model reads
``tgt[:, :-1]`` and predicts ``tgt[:, 1:]``); AdamW follows a linear warmup then a cosine decay, or, with
``schedule="wsd"``, warmup, a constant rate for as long as the run goes on, and a short decay only to make a
snapshot (warmup-stable-decay); every ``val_every`` steps the loop measures the validation loss and the
exact-match accuracy, writes a row of ``log.csv`` and saves the run folder (:mod:`labutils.train.runs`).

This module is the loop; :mod:`~labutils.train.config` holds the config, presets and schedule,
:mod:`~labutils.train.runs` the run folder, checkpoints and learning curves, :mod:`~labutils.train.parallel`
the device and data parallelism. Run it with ``python -m labutils train --preset cpu --out runs/cpu`` or, on
several GPUs, ``torchrun --nproc_per_node=N -m labutils train …``.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from labutils import models
from labutils.model import ModelConfig, evaluating
from labutils.tokens import (
    PAD_IDX,
    SOURCE_VOCAB,
    TARGET_VOCAB,
    LengthGroupedBatchSampler,
    TokenizationError,
    code,
    collate,
)
from labutils.train import parallel
from labutils.train.config import PRESETS, SCHEDULES, TrainConfig, decay_from, learning_rate, make_config
from labutils.train.runs import (
    LOG_COLUMNS,
    Progress,
    RunError,
    RunFolder,
    curve_end,
    curve_of,
    export_weights,
    load_initial_weights,
    saved_step,
)

__all__ = [
    "LOG_COLUMNS", "PRESETS", "SCHEDULES", "RunError", "TrainConfig", "code_pairs", "curve_of", "decay_from",
    "evaluate", "export_weights", "learning_rate", "load_data", "make_config", "saved_step", "train",
]  # fmt: skip


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
    pairs: Sequence[tuple[str, str]], model_config: ModelConfig | Any
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


class Batches:
    """Training batches of similar lengths, in a new order each epoch; :meth:`next` says where it stands."""

    def __init__(self, codes, config: TrainConfig, rank: int, world_size: int, epoch: int, position: int):
        self.codes = codes
        self.sampler = LengthGroupedBatchSampler(
            [len(s) + len(t) for s, t in codes], config.batch_size, config.max_tokens, shuffle=True,
            seed=config.seed, num_replicas=world_size, rank=rank,
        )  # fmt: skip
        self.epoch, self.position = epoch, position
        self.sampler.set_epoch(epoch)
        self.order = list(self.sampler)
        if not self.order:
            raise RunError(f"too few training pairs ({len(codes)}) for {world_size} processes")

    def next(self):
        """The next batch ``(src, tgt, src_pad_mask, tgt_pad_mask)``, starting a new epoch when one ends."""
        if self.position >= len(self.order):
            self.epoch, self.position = self.epoch + 1, 0
            self.sampler.set_epoch(self.epoch)
            self.order = list(self.sampler)
        batch = collate([self.codes[i] for i in self.order[self.position]])
        self.position += 1
        return batch

    @property
    def epochs(self) -> float:
        """Epochs done, fractions included."""
        return self.epoch + self.position / len(self.order)


def _validation_batches(codes, config: TrainConfig) -> list:
    sampler = LengthGroupedBatchSampler(
        [len(s) + len(t) for s, t in codes], config.batch_size, config.max_tokens, shuffle=False
    )
    return [collate([codes[i] for i in indices]) for indices in sampler]


# ---------------------------------------------------------------------------------------------- validation


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Sequence, device: torch.device) -> tuple[float, float]:
    """(mean token cross-entropy, share of sequences whose argmax is right at every position) on ``batches``.

    With teacher forcing, a sequence whose argmax equals the target everywhere (through ``<eos>``) is one that
    greedy decoding reproduces exactly: this is the greedy exact-match accuracy, without decoding.
    """
    loss_sum, n_tokens, n_exact, n_sequences = 0.0, 0, 0, 0
    with evaluating(model):
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
    return loss_sum / max(1, n_tokens), n_exact / max(1, n_sequences)


def _autocast(device: torch.device):
    """bf16 mixed precision on CUDA; full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only, not on biases and norms."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.98),
        fused=device.type == "cuda",
    )


# ---------------------------------------------------------------------------------------------- the loop


def train(
    config: TrainConfig | None,
    out: str | Path,
    resume: bool = False,
    minutes: float | None = None,
    device: str | None = None,
    progress: bool | Callable[..., Any] = True,
) -> dict[str, Any]:
    """Train the model ``config`` names (``architecture``) as it says, writing the run folder ``out``; returns a summary.

    ``resume`` continues the run saved in ``out/last.pt`` (``config=None`` takes ``out/config.json``);
    ``minutes`` stops after that much training time; ``progress`` shows a tqdm bar on stderr (or pass your
    own bar class, e.g. ``tqdm.notebook.tqdm``). Ctrl-C stops after the current step, saving ``last.pt``.
    """
    folder = RunFolder(out)
    config = folder.check(config, resume)
    device, rank, world_size = parallel.setup(device, config.threads, config.seed)
    is_main = rank == 0

    # Data, coded once; the validation batches are fixed.
    model_config = config.model_config()
    train_pairs, val_pairs = load_data(config)
    train_codes, val_codes = code_pairs(train_pairs, model_config), code_pairs(val_pairs, model_config)
    if not train_codes or not val_codes:
        raise RunError("no training or validation pairs fit in the model's max_src_len/max_tgt_len")
    val_batches = _validation_batches(val_codes, config)

    # The model and its optimizer: new, from trained weights (init), or where the run stopped (resume).
    model = models.build(config.architecture, model_config).to(device)
    optimizer = _optimizer(model, config, device)
    state = Progress()
    if config.init is not None and not resume:
        state.log = load_initial_weights(model, config)
    torch.manual_seed(config.seed + rank)  # each process its own dropout masks
    if resume:
        state = folder.restore(model, optimizer, restore_rng=is_main)
        if not is_main:  # only the first process's RNG states are saved
            torch.manual_seed(config.seed + rank + 1_000_003 * state.step)
    state.start_of_run = state.start_of_run or curve_end(state.log)
    batches = Batches(train_codes, config, rank, world_size, state.epoch, state.position)
    step_model = parallel.wrap(model, device, world_size)  # validation and saving use ``model`` itself
    if is_main:
        folder.begin(config, state)
        if progress:
            _announce(model, train_pairs, val_pairs, train_codes, val_codes, device, world_size)
    bar_class = tqdm if progress is True or not progress else progress
    bar = bar_class(
        total=config.max_steps, initial=state.step, file=sys.stderr, disable=not (progress and is_main)
    )

    meter = _Meter()
    first_step, started, stopped = state.step, time.monotonic(), None
    model.train()
    with parallel.StopRequest() as stop_request:
        while state.step < config.max_steps:
            batch = batches.next()
            n_tokens = int((~batch[2]).sum() + (~batch[3]).sum())  # real tokens, padding excluded
            src, tgt, src_pad_mask, tgt_pad_mask = (t.to(device, non_blocking=True) for t in batch)

            # One step: the learning rate, teacher forcing, the loss on the real target tokens, clipped
            # gradients, the optimizer.
            lr = learning_rate(state.step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with _autocast(device):
                logits = step_model(src, tgt[:, :-1], src_pad_mask, tgt_pad_mask[:, :-1])  # (B, Lt, V)
                loss = F.cross_entropy(
                    logits.flatten(0, 1).float(),
                    tgt[:, 1:].flatten(),
                    ignore_index=PAD_IDX,
                    label_smoothing=config.label_smoothing,
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(step_model.parameters(), config.clip_norm)
            optimizer.step()
            state.step, state.epoch, state.position = state.step + 1, batches.epoch, batches.position
            bar.update(1)

            # Agreed between processes: the sequences and tokens seen, and whether to stop now.
            out_of_time = minutes is not None and time.monotonic() - started >= minutes * 60
            votes = [len(src), n_tokens, float(stop_request.requested or out_of_time)]
            n_sequences, n_tokens, stop_votes = parallel.all_sum(votes, device, world_size)
            state.sequences += int(n_sequences)
            meter.add(loss, int(n_tokens), bar, lr, state.step)
            if stop_votes > 0:
                stopped = "interrupted" if stop_request.requested else "out of time"
            if state.step % config.val_every and state.step < config.max_steps and not stopped:
                continue

            # Validation: a row of log.csv, best.pt if val_exact improved, last.pt always.
            train_loss = parallel.all_sum([meter.mean_loss()], device, world_size)[0] / world_size
            if is_main:
                val_loss, val_exact = evaluate(model, val_batches, device)
                elapsed = state.elapsed_s + time.monotonic() - started
                row = _log_row(config, state, batches.epochs, lr, train_loss, val_loss, val_exact, elapsed)
                state.log.append(row)
                folder.append(row)
                if (val_exact, -val_loss) > state.best:
                    state.best, state.best_step = (val_exact, -val_loss), state.step
                    folder.save_best(model, state, val_exact, val_loss)
                folder.save_last(model, optimizer, _saved(state, elapsed), config)
                if progress:
                    report = (
                        f"train_loss {train_loss:.4f}, val_loss {val_loss:.4f}, val_exact {val_exact:.3f}"
                    )
                    bar.write(f"step {state.step}: {report}", file=sys.stderr)
            if stopped:
                break
    bar.close()
    run_time = time.monotonic() - started
    parallel.teardown(world_size)
    best_exact, best_loss = state.best
    return {
        "steps": state.step,
        "finished": state.step >= config.max_steps,
        "stopped": stopped,  # None, "interrupted" or "out of time"
        "best_val_exact": best_exact if best_exact >= 0 else None,
        "best_val_loss": -best_loss if best_exact >= 0 else None,
        "best_step": state.best_step,
        "best": folder.best,
        "last": folder.last,
        "log": folder.log_path,
        "out": folder.out,
        "run_time_s": run_time,
        "steps_per_s": (state.step - first_step) / max(1e-9, run_time),
        "tokens_per_s": meter.tokens / max(1e-9, run_time),  # source + target tokens, padding excluded
    }


def _saved(state: Progress, elapsed: float) -> Progress:
    """The progress as ``last.pt`` keeps it: the training seconds counted up to now."""
    return replace(state, elapsed_s=elapsed)


def _log_row(config, state: Progress, epochs: float, lr, train_loss, val_loss, val_exact, elapsed) -> dict:
    """A row of log.csv, counted on from the curve of the initial weights."""
    start = state.start_of_run
    return {
        "stage": config.stage,
        "step": int(start["step"]) + state.step,
        "epoch": round(start["epoch"] + epochs, 4),
        "sequences": int(start["sequences"]) + state.sequences,
        "lr": f"{lr:.6g}",
        "train_loss": f"{train_loss:.6f}",
        "val_loss": f"{val_loss:.6f}",
        "val_exact": f"{val_exact:.6f}",
        "elapsed_s": round(start["elapsed_s"] + elapsed, 1),
    }


class _Meter:
    """The mean training loss between validations, and tokens per second on the progress bar."""

    def __init__(self):
        self.loss_sum, self.count, self.tokens, self.window_tokens = 0.0, 0, 0, 0
        self.window_start = time.monotonic()

    def add(self, loss: torch.Tensor, n_tokens: int, bar, lr: float, step: int) -> None:
        self.loss_sum, self.count = self.loss_sum + loss.detach(), self.count + 1  # no .item(): no sync
        self.tokens, self.window_tokens = self.tokens + n_tokens, self.window_tokens + n_tokens
        if step % 10 == 0:
            now = time.monotonic()
            tokens_per_s = self.window_tokens / max(1e-9, now - self.window_start)
            bar.set_postfix(loss=f"{float(self.loss_sum) / self.count:.4f}", lr=f"{lr:.2e}",
                            tok_s=f"{tokens_per_s:.0f}", refresh=False)  # fmt: skip
            self.window_tokens, self.window_start = 0, now

    def mean_loss(self) -> float:
        """The mean since the last call (which starts a new mean)."""
        mean = float(self.loss_sum) / max(1, self.count)
        self.loss_sum, self.count = 0.0, 0
        return mean


def _announce(model, train_pairs, val_pairs, train_codes, val_codes, device, world_size) -> None:
    n_parameters = sum(p.numel() for p in model.parameters())
    left_out = len(train_pairs) + len(val_pairs) - len(train_codes) - len(val_codes)
    print(
        f"training {n_parameters:,} parameters on {len(train_codes):,} pairs, validating on "
        f"{len(val_codes):,} ({device}, {world_size} process(es), {torch.get_num_threads()} thread(s))"
        + (f"; {left_out} pairs too long for the model left out" if left_out else ""),
        file=sys.stderr,
    )
