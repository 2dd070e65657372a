"""The parent of one submission's kernel: nothing the kernel starts outlives it.

The grader starts this program (``python -I -S supervisor.py -- <kernel command>``) in place of the kernel.
It starts the kernel as its child and, on Linux, makes itself a *child subreaper*
(``prctl(PR_SET_CHILD_SUBREAPER)``): a process the kernel starts that leaves its parent (a double fork, a new
session, a new process group) is adopted by this supervisor instead of by init, so it stays one of its
descendants. When the kernel exits, when the grader closes the pipe on this program's standard input (a
restart, the end of the submission, or the grader itself killed), or on SIGTERM, it kills every descendant
with SIGKILL, round after round until none is left, reaps them, and exits:

* with the kernel's own exit status (its signal raised again), when the kernel ended first;
* 0 when it was told to stop and every descendant was ended;
* 3 when some could not be ended within a few seconds (their ids on standard error).

Elsewhere there is no subreaper and no ``/proc``: the supervisor ends the kernel's process group (macOS) or
the kernel (Windows), and the grader the processes it saw below the kernel, but a process that detached
itself between two of the grader's looks (every 50 ms) is not found.

The grader also checks from outside that no process it saw in the kernel's tree is left; this program is
only the first line. Standard library only: it runs before, and apart from, anything of the package.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

PR_SET_CHILD_SUBREAPER = 36
POSIX = os.name == "posix"
LEFT_OVER = 3  # exit status: some descendant could not be ended
END_WITHIN = 5.0  # seconds of killing rounds before giving up


def set_subreaper(on: bool = True) -> bool:
    """Make this process a child subreaper (Linux: ``prctl(PR_SET_CHILD_SUBREAPER)``), or stop being one;
    False where that cannot be done."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process this one can see, from /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as file:
                stat = file.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()  # the command name, in parentheses, may hold anything
        if len(fields) >= 2 and fields[1].lstrip("-").isdigit():
            table[int(name)] = (int(fields[1]), fields[0])
    return table


def descendants(root: int) -> list[tuple[int, str]]:
    """(pid, state) of every process below ``root``."""
    if not os.path.isdir("/proc"):
        return []
    children: dict[int, list[int]] = {}
    table = _table()
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        found.append((pid, table[pid][1]))
        todo += children.get(pid, ())
    return found


def _reap() -> list[tuple[int, int]]:
    """(pid, wait status) of every child that ended: the kernel, and the processes adopted."""
    reaped = []
    while POSIX:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))
    return reaped


def end_all(kernel: subprocess.Popen) -> list[int]:
    """Kill every descendant, round after round, and reap them; the pids still alive after END_WITHIN s."""
    try:
        if POSIX:
            os.killpg(kernel.pid, signal.SIGKILL)  # the kernel's process group: all there is without /proc
        else:
            kernel.kill()
    except OSError:
        pass
    deadline = time.monotonic() + END_WITHIN
    while True:
        _reap()
        alive = [pid for pid, state in descendants(os.getpid()) if state not in ("Z", "X")]
        if not alive:
            return []
        if time.monotonic() > deadline:
            return alive
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


def _until_end_of_input(stop: threading.Event) -> None:
    """The grader holds the only other end of this process's standard input: its end (the grader closed it,
    or the grader is gone) means stop."""
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    stop.set()


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: supervisor.py -- KERNEL COMMAND...", file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1 :]
    set_subreaper()
    stop = threading.Event()
    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda number, frame: stop.set())
    # On POSIX the kernel leads a process group of its own: without /proc, that group is what can be ended.
    options = {"preexec_fn": os.setpgrp} if POSIX else {}
    kernel = subprocess.Popen(command, stdin=subprocess.DEVNULL, **options)
    threading.Thread(target=_until_end_of_input, args=(stop,), daemon=True).start()
    status = None  # the kernel's wait status (POSIX) or exit code
    while status is None and not stop.wait(0.05):
        if POSIX:
            status = next((code for pid, code in _reap() if pid == kernel.pid), None)
        else:
            status = kernel.poll()
    left = end_all(kernel)
    if status is None and POSIX:
        status = next((code for pid, code in _reap() if pid == kernel.pid), None)
    if left:
        print(f"labutils supervisor: could not end {' '.join(map(str, left))}", file=sys.stderr, flush=True)
        return LEFT_OVER
    if stop.is_set() or status is None:
        return 0  # told to stop: everything is ended
    if not POSIX:
        return status
    if os.WIFSIGNALED(status):  # the kernel was killed: so is this process, by the same signal
        number = os.WTERMSIG(status)
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the kernel's crash, told: no core file
        except (ImportError, ValueError, OSError):
            pass
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        time.sleep(1)
        return 128 + number
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
