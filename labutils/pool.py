"""A small process pool with a time limit per task that works on Linux, macOS and Windows.

``multiprocessing.Pool`` cannot stop one task that runs too long, and ``signal.alarm`` exists only on
Unix. Here each worker is a spawned process with its own pipe; the parent knows when each worker started
its current task, and a worker that overruns is terminated and replaced. Results come back in the order
the tasks were given, whatever the number of workers. The workers never run the main script again, so a
script without an ``if __name__ == "__main__":`` guard may use the pool (its tasks' functions must live in
importable modules, not in the script).
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import textwrap
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any


@dataclass
class Outcome:
    """The value of a task, or ``error``: a one-line reason (``"timed out"`` for a time-out)."""

    value: Any = None
    error: str | None = None


def _work(connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        message = connection.recv()
        if message is None:
            return
        index, function, arguments = message  # unpickling imports the function's module
        connection.send(("started", index))
        try:
            connection.send((index, function(*arguments), None))
        except Exception as error:  # a failed task is reported and counted, never fatal
            lines = str(error).strip().splitlines()
            reason = lines[0] if lines else type(error).__name__
            connection.send((index, None, textwrap.shorten(reason, 200, placeholder=" …")))


@contextmanager
def _main_hidden():
    """Hide the main script from a process being spawned, so that the child never runs it again.

    spawn starts a child by importing the parent's ``__main__`` (by its file or module name): a plain script
    without an ``if __name__ == "__main__":`` guard would then run again in every worker, and start workers
    of its own. The workers run only functions of importable modules, so they need no ``__main__``.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


class _Worker:
    def __init__(self, context):
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_work, args=(child,), daemon=True)
        with _main_hidden():  # spawn reads the main module while it starts the child, not later
            self.process.start()
        child.close()
        self.pending: deque[int] = deque()  # task indices sent, oldest first
        self.running: int | None = None  # the task the worker said it started
        self.busy_since = time.monotonic()

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.terminate()
        else:
            try:
                self.connection.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
        self.connection.close()


class TimedPool:
    """``workers`` spawned processes; each task may run for ``timeout`` seconds."""

    def __init__(self, workers: int = 1, timeout: float = 30.0, depth: int = 8):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.context = multiprocessing.get_context("spawn")
        self.timeout = timeout
        self.depth = depth
        self.workers = [_Worker(self.context) for _ in range(workers)]

    def __enter__(self) -> TimedPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close(kill=exc[0] is not None)

    def close(self, kill: bool = False) -> None:
        for worker in self.workers:
            worker.stop(kill=kill or bool(worker.pending))
        self.workers = []

    def map_ordered(
        self,
        function: Callable,
        arguments: Iterable[tuple],
        key: Callable[[tuple], int] | None = None,
    ) -> Iterator[Outcome]:
        """Outcomes of ``function(*args)`` for each ``args``, in order (``arguments`` may be endless).

        With ``key``, tasks with equal keys go to the same worker (so a worker's caches are reused).
        """
        tasks: dict[int, tuple] = {}
        results: dict[int, Outcome] = {}
        source = enumerate(arguments)
        exhausted = False
        next_out = 0
        n = len(self.workers)
        while True:
            # Keep every worker fed, up to `depth` tasks each.
            while not exhausted and len(tasks) < n * self.depth:
                try:
                    index, args = next(source)
                except StopIteration:
                    exhausted = True
                    break
                worker = self.workers[key(args) % n if key else index % n]
                tasks[index] = args
                self._send(worker, index, function, args)
            while next_out in results:
                yield results.pop(next_out)
                next_out += 1
            if exhausted and not tasks:
                return
            self._collect(function, tasks, results)

    def _send(self, worker: _Worker, index: int, function: Callable, args: tuple) -> None:
        worker.pending.append(index)
        worker.connection.send((index, function, args))

    def _collect(self, function: Callable, tasks: dict, results: dict) -> None:
        busy = [w for w in self.workers if w.pending]
        running = [w.busy_since for w in busy if w.running is not None]
        # The clock of a task starts when its worker says it started (after a slow start-up, say).
        wait_for = max(0.0, min(running) + self.timeout - time.monotonic()) if running else self.timeout
        ready = wait([w.connection for w in busy], timeout=wait_for)
        for worker in busy:
            if worker.connection in ready:
                try:
                    message = worker.connection.recv()
                except (EOFError, OSError):  # the worker died (out of memory, a crash)
                    self._replace(worker, function, tasks, results, "worker crashed")
                    continue
                if message[0] == "started":
                    worker.running, worker.busy_since = message[1], time.monotonic()
                    continue
                index, value, error = message
                worker.pending.popleft()
                worker.running = None
                tasks.pop(index)
                results[index] = Outcome(value, error)
            elif worker.running is not None and time.monotonic() - worker.busy_since > self.timeout:
                self._replace(worker, function, tasks, results, "timed out")

    def _replace(self, worker: _Worker, function: Callable, tasks: dict, results: dict, reason: str) -> None:
        """Stop a worker whose current task failed; its other tasks go to a fresh worker in its place."""
        failed = worker.pending.popleft()
        worker.running = None
        tasks.pop(failed)
        results[failed] = Outcome(None, reason)
        worker.stop(kill=True)
        fresh = _Worker(self.context)
        self.workers[self.workers.index(worker)] = fresh
        for index in worker.pending:
            self._send(fresh, index, function, tasks[index])
