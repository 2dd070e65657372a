"""A fresh kernel for a submission, in an empty temporary folder, killed on any limit it passes."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    """What one submission may use. Times in seconds, sizes in megabytes."""

    timeout: float = 120.0  # per cell
    long_timeout: float = 600.0  # per cell tagged ``long`` (no more such cells than the source has)
    memory_mb: float = 4096.0  # resident memory of the kernel and its children
    output_mb: float = 10.0  # everything the submission prints or displays
    startup: float = 60.0  # for the kernel to start
    threads: int | None = None  # CPU threads of torch and NumPy in the kernel (None: their own default)


class Stopped(Exception):
    """The kernel was stopped (time, memory, output) or died; the message says why."""


@dataclass
class Run:
    """What one cell did: its error (``Name: message``) and the display outputs it published."""

    error: str | None = None
    ename: str | None = None
    displays: list[dict] = field(default_factory=list)


_LIVE: set[Kernel] = set()  # every running kernel, so that an interrupt can kill them all
_LIVE_LOCK = threading.Lock()


def _own_python_specs():
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class OwnPython(KernelSpecManager):
        """Always this Python (the project's environment), whatever kernels the machine has registered."""

        def get_kernel_spec(self, kernel_name):
            argv = [
                sys.executable,
                "-m",
                "ipykernel_launcher",
                "-f",
                "{connection_file}",
                "--HistoryManager.hist_file=:memory:",
            ]  # kernels running side by side share no history file
            return KernelSpec(argv=argv, display_name="labutils grader", language="python", resource_dir="")

    return OwnPython()


class Kernel:
    """A fresh python3 kernel in an empty temporary folder, killed on any limit; a context manager."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.folder = Path(tempfile.mkdtemp(prefix="labutils-grade-"))
        self.work = self.folder / "work"  # the kernel's working folder; its log stays out of reach
        self.work.mkdir()
        self.io = self.folder / "io"  # the grader's jobs and the data that comes back
        self.io.mkdir(mode=0o700)
        self.output_bytes = 0
        self.reason: str | None = None  # set by the watcher when it kills the kernel
        self._done = threading.Event()
        self.manager = self.client = self.process = None

    def __enter__(self) -> Kernel:
        from jupyter_client import KernelManager

        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self.manager = KernelManager(
                kernel_name="labutils-grader", kernel_spec_manager=_own_python_specs()
            )
            self._log = open(self.folder / "kernel.log", "wb")  # noqa: SIM115 (closed in __exit__)
            env = dict(os.environ)
            if self.limits.threads:  # read by torch, NumPy's BLAS and OpenMP when the kernel starts
                for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                    env[name] = str(self.limits.threads)
            self.manager.start_kernel(
                cwd=str(self.work), stdout=subprocess.DEVNULL, stderr=self._log, env=env
            )
            self.process = self.manager.provisioner.process
            self.client = self.manager.client()
            self.client.start_channels()
            self.client.wait_for_ready(timeout=self.limits.startup)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def _processes(self):
        import psutil

        try:
            kernel = psutil.Process(self.process.pid)
            return [kernel, *kernel.children(recursive=True)]
        except psutil.Error:
            return []

    def kill(self, reason: str | None = None) -> None:
        import psutil

        if reason and self.reason is None:
            self.reason = reason
        for process in self._processes():
            try:
                process.kill()
            except psutil.Error:
                pass

    def _watch(self) -> None:
        import psutil

        limit = self.limits.memory_mb * 1e6
        while not self._done.wait(0.05):
            rss = 0
            for process in self._processes():
                try:
                    rss += process.memory_info().rss
                except psutil.Error:
                    pass
            if rss > limit:
                return self.kill(f"used more than {self.limits.memory_mb:g} MB of memory")
            if self._log_size() > self.limits.output_mb * 1e6:
                return self.kill(f"printed more than {self.limits.output_mb:g} MB")

    def _log_size(self) -> int:
        try:
            return os.path.getsize(self.folder / "kernel.log")
        except OSError:
            return 0

    def _dead(self) -> str | None:
        status = self.process.poll()
        if status is None:
            return None
        if self.reason:
            return self.reason
        if status < 0:
            try:
                return f"crashed the kernel ({signal.Signals(-status).name})"
            except ValueError:
                pass
        return f"crashed the kernel (exit status {status})"

    def run(self, code: str, timeout: float) -> Run:
        """Execute one cell; raises Stopped when it runs too long, prints too much or the kernel dies."""
        msg_id = self.client.execute(code, store_history=False, allow_stdin=False, stop_on_error=False)
        deadline, result = time.monotonic() + timeout, Run()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill(f"ran longer than {timeout:g} s")
                raise Stopped(self.reason)
            try:
                message = self.client.get_iopub_msg(timeout=min(remaining, 0.1))
            except queue.Empty:
                reason = self._dead()
                if reason:
                    raise Stopped(reason) from None
                continue
            content, kind = message.get("content", {}), message.get("msg_type")
            self.output_bytes += _size(content) if kind != "status" else 0
            if self.output_bytes > self.limits.output_mb * 1e6:
                self.kill(f"printed more than {self.limits.output_mb:g} MB")
                raise Stopped(self.reason)
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue  # output of a thread started by an earlier cell: never a result
            if kind in ("display_data", "execute_result", "update_display_data"):
                result.displays.append(content.get("data") or {})
            elif kind == "error":
                result.ename = str(content.get("ename", ""))
                result.error = f"{result.ename}: {content.get('evalue', '')}"
            elif kind == "status" and content.get("execution_state") == "idle":
                return result

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self.process is not None:
            self.kill()
        for close in (
            lambda: self.client.stop_channels(),
            lambda: self.manager.shutdown_kernel(now=True),
            lambda: self._log.close(),
        ):
            try:
                close()
            except Exception:
                pass
        shutil.rmtree(self.folder, ignore_errors=True)
        with _LIVE_LOCK:
            _LIVE.discard(self)


def _size(content: dict) -> int:
    if "text" in content:
        return len(content["text"])
    data = content.get("data") or {}
    return sum(
        len(value) if isinstance(value, str) else len(json.dumps(value)) for value in data.values()
    ) + len("".join(content.get("traceback") or ()))


def kill_all_kernels() -> None:
    """Kill every kernel this process started (on an interrupt: no student's code outlives the grader)."""
    with _LIVE_LOCK:
        kernels = list(_LIVE)
    for kernel in kernels:
        kernel.kill("the grader was interrupted")
