"""Where code runs and how it repeats: the device and the one seeding helper."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def device(override: str | None = None) -> torch.device:
    """The device to compute on: ``override`` (or ``$LABUTILS_DEVICE``) if given, else CUDA, Apple MPS, CPU."""
    choice = override or os.environ.get("LABUTILS_DEVICE")
    if choice:
        try:
            chosen = torch.device(choice)
        except RuntimeError as error:
            raise ValueError(f"unknown device {choice!r}: use cpu, cuda, cuda:N or mps") from error
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {choice!r} asked for, but CUDA is not available here")
        if chosen.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {choice!r} asked for, but Apple MPS is not available here")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; with ``deterministic``, ask torch for deterministic kernels.

    The same seed then gives the same data and the same training run on a CPU.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def set_threads(n: int | None = None) -> int:
    """Use ``n`` CPU threads for torch (default: every core this process may use); returns the number."""
    if n is None:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS, Windows
            n = os.cpu_count() or 1
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()
