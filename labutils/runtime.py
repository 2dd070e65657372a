"""Where code runs and how it repeats: the device, the CPU threads, and the one seeding helper.

On a shared machine, torch's threads and the sympy worker processes compete for the same cores; more of them
than there are cores makes every one of them wait (a loaded 2-core machine took 95 s instead of 33 s for 512
pairs). ``plan_threads`` gives defaults that never ask for more than the cores this process may use.
"""

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


def cores() -> int:
    """The CPU cores this process may use (its affinity where the system says, else every core)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def plan_threads(threads: int | None = None, workers: int | None = None, n_cores: int | None = None):
    """(torch threads, sympy worker processes): those given, the others chosen so that together they use at
    most the cores (and each at least 1).

    By default the sympy workers take half the cores (rounded down, at least one) and torch the rest; a number
    that is given is kept, and the other gets what it leaves. On 2 cores: 1 thread and 1 worker.
    """
    n = n_cores or cores()
    if threads is None and workers is None:
        workers = max(1, n // 2)
    if threads is None:
        threads = max(1, n - workers)
    if workers is None:
        workers = max(1, n - threads)
    return threads, workers


def set_threads(n: int | None = None) -> int:
    """Use ``n`` CPU threads for torch (default: every core this process may use); returns the number."""
    torch.set_num_threads(max(1, n if n is not None else cores()))
    return torch.get_num_threads()
