"""A fresh kernel for a submission, in an empty temporary folder, killed on any limit it passes.

The kernel's parent is a supervisor of its own (:mod:`~labutils.instructor.supervisor`, a child subreaper on
Linux): every process the kernel starts, a double-forked one in a new session included, stays below it and
is ended with the kernel. The grader checks that from outside too: every process it saw in the kernel's
tree must be gone when the kernel is, and one that could not be ended is reported (:attr:`Kernel.left`).
While a batch runs, the grader is itself a subreaper (:class:`Adoptions`), so a process whose supervisor was
killed from inside is adopted by the grader and ended there. What the kernel can see and import is
:mod:`~labutils.instructor.sandbox`'s.
"""

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
from typing import TYPE_CHECKING

from labutils.instructor import supervisor

if TYPE_CHECKING:  # the command's options read Limits: nothing of the grader loads with it
    from labutils.instructor.sandbox import View


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
_SUPERVISOR = Path(supervisor.__file__).read_text(encoding="utf-8")  # read once, as the grader started
_SUPERVISORS: set[int] = set()  # the pids of every supervisor this process started: its own children
_LAUNCH = threading.Lock()  # held from a supervisor's start until its pid is known: no sweep in between
END_WAIT = supervisor.END_WITHIN + 5.0  # seconds the grader waits for a supervisor to end its kernel


def _own_python_specs(argv: list[str]):
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class OwnPython(KernelSpecManager):
        """Always this Python (the project's environment), whatever kernels the machine has registered, or
        the submission's notebook names."""

        def get_kernel_spec(self, kernel_name):
            return KernelSpec(argv=argv, display_name="labutils grader", language="python", resource_dir="")

    return OwnPython()


class Kernel:
    """A fresh python3 kernel in an empty temporary folder, below a supervisor of its own, killed on any
    limit; a context manager. ``view``: the sandbox and the private copy of the package it imports;
    ``submission``: the notebook, the one submission the sandbox shows it (read-only)."""

    def __init__(self, limits: Limits, view: View | None = None, package: Path | None = None,
                 submission: Path | None = None):  # fmt: skip
        self.limits, self.view, self.package, self.submission = limits, view, package, submission
        self.folder = Path(tempfile.mkdtemp(prefix="labutils-grade-"))
        self.work = self.folder / "work"  # the kernel's working folder; its log stays out of reach
        self.work.mkdir()
        self.io = self.folder / "io"  # the grader's jobs and the data that comes back
        self.io.mkdir(mode=0o700)
        self.conn = self.folder / "conn"  # the connection file, the kernel's sockets and its start
        self.conn.mkdir(mode=0o700)
        self.output_bytes = 0
        self.reason: str | None = None  # set by the watcher when it kills the kernel
        self.left: list[str] = []  # processes of the kernel that could not be ended
        self._seen: dict[int, object] = {}  # pid -> psutil.Process: every process seen below the supervisor
        self._done = threading.Event()
        self._lifeline: int | None = None  # the pipe whose end tells the supervisor to end everything
        self.manager = self.client = self.process = None

    def _argv(self) -> list[str]:
        from labutils.instructor.sandbox import boot_code

        (self.folder / "supervisor.py").write_text(_SUPERVISOR, encoding="utf-8")
        (self.conn / "boot.py").write_text(boot_code(), encoding="utf-8")
        kernel = [sys.executable, str(self.conn / "boot.py"), "-f", "{connection_file}"]
        kernel += [
            "--HistoryManager.hist_file=:memory:"
        ]  # kernels running side by side share no history file
        if self.view is not None and self.package is not None:
            readable = [self.submission] if self.submission is not None else []
            kernel = self.view.command(kernel, self.package, [self.work, self.io, self.conn], readable)
        return [sys.executable, "-I", "-S", str(self.folder / "supervisor.py"), "--", *kernel]

    def __enter__(self) -> Kernel:
        from jupyter_client import KernelManager

        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            sandboxed = self.view is not None and self.view.mode == "bwrap"
            self.manager = KernelManager(
                kernel_name="labutils-grader",
                kernel_spec_manager=_own_python_specs(self._argv()),
                transport="ipc" if sandboxed else "tcp",  # the sandbox has a network of its own
            )
            self.manager.connection_file = str(self.conn / "kernel.json")
            self._log = open(self.folder / "kernel.log", "wb")  # noqa: SIM115 (closed in __exit__)
            env = dict(os.environ)
            if self.limits.threads:  # read by torch, NumPy's BLAS and OpenMP when the kernel starts
                for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                    env[name] = str(self.limits.threads)
            if self.view is not None and self.package is not None:
                env = self.view.environment(env, self.package)
            read, self._lifeline = os.pipe()
            try:
                with _LAUNCH:
                    self.manager.start_kernel(
                        cwd=str(self.work), stdin=read, stdout=subprocess.DEVNULL, stderr=self._log, env=env
                    )
                    self.process = self.manager.provisioner.process
                    _SUPERVISORS.add(self.process.pid)
            finally:
                os.close(read)
            self.client = self.manager.client()
            self.client.start_channels()
            self.client.wait_for_ready(timeout=self.limits.startup)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def _processes(self):
        """The processes below the supervisor (the kernel's), each remembered for the check at the end."""
        import psutil

        try:
            found = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            found = []
        for process in found:
            self._seen.setdefault(process.pid, process)
        return found

    def kill(self, reason: str | None = None) -> None:
        """Kill every process below the supervisor; the supervisor then ends what is left, and exits."""
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
                self.kill(f"used more than {self.limits.memory_mb:g} MB of memory")
                break
            if self._log_size() > self.limits.output_mb * 1e6:
                self.kill(f"printed more than {self.limits.output_mb:g} MB")
                break
        while not self._done.wait(0.05):
            self._processes()  # until the end: whatever appears below the supervisor is remembered

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
        if status > 128 and self.view is not None and self.view.mode == "bwrap":
            status = 128 - status  # bwrap exits with 128 + the signal that ended the kernel
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

    def end(self) -> list[str]:
        """End the kernel and everything below its supervisor; what could not be ended, as ``pid (name)``."""

        if self._lifeline is not None:
            os.close(self._lifeline)  # the supervisor reads the end of the pipe: it ends every descendant
            self._lifeline = None
        if self.process is not None:
            self._processes()
            try:
                self.process.wait(END_WAIT)
            except subprocess.TimeoutExpired:  # stopped, or too busy: end it from here
                self.kill()
                try:
                    self.process.kill()
                    self.process.wait(5)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        self._done.set()
        return _end(list(self._seen.values()))

    def __exit__(self, *exc) -> None:
        try:
            self.left = self.end()
        finally:
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


def _end(processes: list) -> list[str]:
    """Kill every process of the list that is still the one seen (not a later process with its pid); the
    ones still there after a few seconds, as ``pid (name)``."""
    import psutil

    deadline = time.monotonic() + supervisor.END_WITHIN
    while True:
        _reap([process.pid for process in processes])
        alive = []
        for process in processes:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except psutil.Error:
                pass
        if not alive:
            return []
        if time.monotonic() > deadline:
            names = []
            for process in alive:
                try:
                    names.append(f"{process.pid} ({process.name()})")
                except psutil.Error:
                    names.append(str(process.pid))
            return names
        for process in alive:
            try:
                process.kill()
            except psutil.Error:
                pass
        time.sleep(0.02)


class Adoptions:
    """While a batch runs, the grader is a child subreaper (Linux): a process whose supervisor was killed
    from inside is adopted by the grader, not by init, and :meth:`sweep` ends it. A context manager."""

    def __init__(self):
        self.before: set[int] = set()
        self.active = False

    def __enter__(self) -> Adoptions:
        import psutil

        self.before = {child.pid for child in psutil.Process().children()}
        self.active = supervisor.set_subreaper()
        return self

    def adopted(self) -> list:
        import psutil

        found = []
        with _LAUNCH:
            children = psutil.Process().children()
        for child in children:
            if child.pid not in self.before and child.pid not in _SUPERVISORS:
                found.append(child)
                try:
                    found += child.children(recursive=True)
                except psutil.Error:
                    pass
        return found

    def sweep(self) -> list[str]:
        """End every process the grader adopted; the ones that could not be ended, as ``pid (name)``."""
        if not self.active:
            return []
        adopted = self.adopted()
        left = _end(adopted)
        _reap([process.pid for process in adopted])
        return left

    def __exit__(self, *exc) -> None:
        if self.active:
            supervisor.set_subreaper(False)


def _reap(pids: list[int]) -> None:
    """Collect the exit status of those of ``pids`` the grader adopted (never of its own supervisors, whose
    status their Popen reads)."""
    if os.name != "posix":
        return
    for pid in pids:
        if pid in _SUPERVISORS:
            continue
        try:
            os.waitpid(pid, os.WNOHANG)
        except (ChildProcessError, OSError):
            pass  # not the grader's child


def kill_all_kernels(reason: str = "the grader was interrupted") -> None:
    """Kill every kernel this process started (on an interrupt, or a stopped batch)."""
    with _LIVE_LOCK:
        kernels = list(_LIVE)
    for kernel in kernels:
        kernel.kill(reason)
