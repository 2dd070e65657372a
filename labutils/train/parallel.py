"""Where a run computes: the device, the threads, data parallelism across processes, and stopping cleanly."""

from __future__ import annotations

import os
import signal
import sys

import torch

from labutils.runtime import device as choose_device
from labutils.runtime import seed_everything, set_threads


def setup(device: str | None, threads: int | None, seed: int) -> tuple[torch.device, int, int]:
    """(device, rank, world size): under torchrun one process per GPU, or CPU processes sharing the cores.

    Seeds everything; on a CPU with deterministic kernels, so the same seed gives the same run.
    """
    where = choose_device(device)
    if where.type == "cuda" and where.index is None and "LOCAL_RANK" in os.environ:
        where = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    if where.type == "cuda":
        if where.index is None:
            where = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(where)
        torch.backends.cuda.matmul.allow_tf32 = True
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = 0
    if world_size > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if where.type == "cuda" else "gloo")
        rank, world_size = dist.get_rank(), dist.get_world_size()
    if threads is not None:
        set_threads(threads)
    elif world_size > 1 and where.type == "cpu":  # share the cores instead of fighting over them
        set_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world_size))))
    seed_everything(seed, deterministic=where.type == "cpu")  # on GPUs, speed comes first
    return where, rank, world_size


def wrap(model: torch.nn.Module, device: torch.device, world_size: int) -> torch.nn.Module:
    """The model as the training step calls it: wrapped for data parallelism when there are several processes."""
    if world_size == 1:
        return model
    device_ids = [device] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def teardown(world_size: int) -> None:
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def all_sum(values: list[float], device: torch.device, world_size: int) -> list[float]:
    """The sum over processes of each value (the values themselves in a single process)."""
    if world_size == 1:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


class StopRequest:
    """Ctrl-C asks the loop to stop after the current step and save; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self) -> StopRequest:
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
