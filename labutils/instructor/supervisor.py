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

Elsewhere (macOS) there is no subreaper: the supervisor still ends the kernel's process group and the
descendants it can see, but a process that detached itself before that is not found.

The grader also checks from outside that no process it saw in the kernel's tree is left; this program is
only the first line. Standard library only: it runs before, and apart from, anything of the package.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
LEFT_OVER = 3  # exit status: some descendant could not be ended
END_WITHIN = 5.0  # seconds of killing rounds before giving up


def _prctl(option: int, value: int) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
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
    reaped = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


def end_all(group: int | None = None) -> list[int]:
    """Kill every descendant, round after round, and reap them; the pids still alive after END_WITHIN s."""
    if group is not None:
        try:
            os.killpg(group, signal.SIGKILL)  # without /proc: the kernel's process group at least
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


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: supervisor.py -- KERNEL COMMAND...", file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1 :]
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    stop = []
    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        signal.signal(getattr(signal, name), lambda number, frame: stop.append(number))
    # The kernel leads a process group of its own: without /proc, ending that group is what can be done.
    kernel = subprocess.Popen(command, stdin=subprocess.DEVNULL, preexec_fn=os.setpgrp)
    watching = True  # the grader's pipe on standard input: its end (EOF) means stop
    status = None
    while not stop:
        try:
            ready, _, _ = select.select([0] if watching else [], [], [], 0.05)
        except (OSError, ValueError):
            ready, watching = [], False
        if ready:
            try:
                data = os.read(0, 4096)
            except OSError:
                data = b""
            if not data:
                break
        for pid, code in _reap():
            if pid == kernel.pid:
                status = code
        if status is not None:
            break
    left = end_all(kernel.pid)
    if status is None:
        for pid, code in _reap():
            if pid == kernel.pid:
                status = code
    if left:
        print(f"labutils supervisor: could not end {' '.join(map(str, left))}", file=sys.stderr, flush=True)
        return LEFT_OVER
    if stop or status is None:
        return 0
    if os.WIFSIGNALED(status):
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
