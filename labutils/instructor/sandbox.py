"""What a submission's kernel can see and import: a private copy of the package, and on Linux a sandbox.

**The private copy.** Kernels never import the grader's own files: the package is copied (its
``__pycache__`` included, so the kernel compiles nothing) into a temporary folder that comes first on the
kernel's ``PYTHONPATH``, and the kernel starts through a few lines (:data:`BOOT`) that take the grader's
package folder off ``sys.path`` and remove the finder of an editable install, which would otherwise fall back
to the checkout. Without the sandbox each submission gets a fresh copy (its kernel could change the copy);
inside the sandbox the copy is read-only and one serves the batch.

**The sandbox** (``--sandbox bwrap``, what ``auto`` picks when bubblewrap runs here): each kernel runs under
``bwrap`` with no network (a network namespace of its own, with only its own loopback), its own process
namespace (it sees no other process, and every process in it ends when the kernel does), no capabilities,
read-only views of the system, of this Python environment and of the private copy, a private ``/tmp``, and,
writable, only its own working folder and the grader's exchange folder for it. Nothing else is there: not the
other submissions, not the grader's checkout, not the output folder, not the instructor's home.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import labutils
from labutils.instructor.sources import GradingError

MODES = ("auto", "bwrap", "none")
PACKAGE_ROOT = Path(labutils.__file__).resolve().parent  # the package the grader judges with
#: what the kernel imports instead of the editable install's finder, and the paths it drops from sys.path
BOOT = """\
import os, runpy, sys
_drop = set({drop})
def _editable(item):
    return getattr(item, "__module__", "").startswith("__editable__")
sys.meta_path[:] = [finder for finder in sys.meta_path if not _editable(finder)]
sys.path_hooks[:] = [hook for hook in sys.path_hooks if not _editable(hook)]
sys.path[:] = [os.getcwd()] + [p for p in sys.path[1:] if p not in _drop and not p.startswith("__editable__")]
sys.path_importer_cache.clear()
del os, _drop, _editable
sys.argv[0] = "ipykernel_launcher"
runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
"""
# Files of /etc a Python kernel reads (the dynamic linker, names, time zone, certificates, fonts); never all of
# /etc, which may hold the machine's secrets.
_ETC = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "passwd", "group", "nsswitch.conf",
    "hosts", "host.conf", "gai.conf", "ssl", "ca-certificates", "alternatives", "mime.types", "fonts",
    "matplotlibrc", "os-release", "debian_version", "locale.alias",
)  # fmt: skip
_SYSTEM = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
_ENV = (
    "PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_NUMERIC", "TZ", "TERM", "PYTHONHASHSEED",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "JPY_SESSION_NAME",
    "PYDEVD_DISABLE_FILE_VALIDATION", "MPLBACKEND", "CUDA_VISIBLE_DEVICES",
)  # fmt: skip


def copy_package(into: Path) -> Path:
    """A copy of the package the grader judges with, in ``into/labutils``; returns ``into``."""
    shutil.copytree(PACKAGE_ROOT, into / "labutils", symlinks=False)
    return into


def checkout_paths() -> list[str]:
    """The ``sys.path`` entries through which the grader's own package is importable, unless they hold other
    packages too (a ``site-packages``): the kernel drops them."""
    parent = str(PACKAGE_ROOT.parent)
    shared = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    return [parent] if parent not in shared else []


def boot_code() -> str:
    return BOOT.replace(
        "{drop}", json.dumps(sorted(checkout_paths() + [os.path.realpath(p) for p in checkout_paths()]))
    )


def kernel_pythonpath() -> str:
    """The grader's ``PYTHONPATH`` without its own package's folder (the copy goes in front of it)."""
    dropped = set(checkout_paths())
    kept = [
        p
        for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if p and os.path.abspath(p) not in dropped
    ]
    return os.pathsep.join(kept)


# ------------------------------------------------------------------------------------------------ bwrap


@functools.lru_cache(maxsize=1)
def bwrap_problem() -> str | None:
    """Why the sandbox cannot run here, or None when it can (tried once: bwrap with the options it needs)."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap is for Linux, this is {sys.platform}"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed (Debian, Ubuntu: apt-get install bubblewrap)"
    command = [bwrap, *_system_binds(), "--proc", "/proc", "--dev", "/dev", *_namespaces(), "--", "true"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bwrap does not run here ({type(error).__name__}: {error})"
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return f"bwrap does not run here ({said})"
    return None


def choose(mode: str, log) -> str:
    """The sandbox the batch uses: ``bwrap`` or ``none``. ``auto`` says in one line why it has none."""
    if mode not in MODES:
        raise GradingError(f"--sandbox {mode}: expected one of {', '.join(MODES)}")
    if mode == "none":
        return "none"
    problem = bwrap_problem()
    if problem is None:
        return "bwrap"
    if mode == "bwrap":
        raise GradingError(f"--sandbox bwrap: {problem}")
    log(f"no sandbox: {problem}; each submission runs with your permissions (see the README)")
    return "none"


def _namespaces() -> list[str]:
    options = ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    options += ["--die-with-parent", "--new-session"]
    if os.geteuid() == 0:
        options += ["--cap-drop", "ALL"]  # root in the sandbox, but without the power to remount or kill
    return options


def _system_binds() -> list[str]:
    binds: list[str] = []
    for name in _SYSTEM:
        path = Path("/") / name
        if path.is_symlink():
            binds += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            binds += ["--ro-bind", str(path), str(path)]
    for name in _ETC:
        if (Path("/etc") / name).exists():
            binds += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    return binds


def _python_binds() -> list[str]:
    """This Python and its environment, read-only: the interpreter's installation, the virtual environment,
    and any folder of ``sys.path`` outside them (but never the grader's own package folder)."""
    roots = {
        Path(sys.base_prefix).resolve(),
        Path(sys.prefix).resolve(),
        Path(sys.executable).resolve().parent,
    }
    dropped = {Path(p).resolve() for p in checkout_paths()}
    for entry in sys.path:
        path = Path(entry).resolve() if entry else None
        if path is not None and path.is_dir() and path not in dropped and path.parts[1:2] != ("tmp",):
            roots.add(path)
    kept = sorted(root for root in roots if not any(other in root.parents for other in roots))
    binds = []
    for root in kept:
        if str(root) != "/" and not any(
            str(root) == f"/{name}" or str(root).startswith(f"/{name}/") for name in _SYSTEM
        ):
            binds += ["--ro-bind", str(root), str(root)]
    return binds


@dataclass
class View:
    """What one batch's kernels see: the sandbox (``bwrap`` or ``none``) and the private copy of the package."""

    mode: str
    memory_mb: float = 4096.0
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="labutils-package-")))
    _shared: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def package(self) -> Path:
        """The folder to put first on a new submission's ``PYTHONPATH``: one read-only copy for the batch in
        the sandbox, a fresh one for each submission without it."""
        if self.mode == "bwrap":
            with self._lock:
                if self._shared is None:
                    self._shared = copy_package(self.folder / "shared")
            return self._shared
        return copy_package(Path(tempfile.mkdtemp(prefix="copy-", dir=self.folder)))

    def release(self, package: Path) -> None:
        if package != self._shared:
            shutil.rmtree(package, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def command(
        self, kernel: list[str], package: Path, writable: list[Path], readable: list[Path]
    ) -> list[str]:
        """The kernel's command: as it is without the sandbox, else inside bwrap."""
        if self.mode != "bwrap":
            return kernel
        tmp = ["--size", str(int(self.memory_mb * 1_000_000)), "--tmpfs", "/tmp"]
        # The private /tmp first: what is bound after it (an environment or a checkout under /tmp, the
        # package's copy) is mounted on top of it instead of being hidden by it.
        options = [*_system_binds(), "--proc", "/proc", "--dev", "/dev", *tmp, *_python_binds()]
        options += ["--dir", "/tmp/home", "--setenv", "HOME", "/tmp/home"]
        # The kernel's parent in the sandbox is its init (pid 1): ipykernel must not take that for its parent
        # having exited. The process namespace ends the kernel with its supervisor instead.
        options += ["--unsetenv", "JPY_PARENT_PID"]
        options += ["--ro-bind", str(package), str(package)]
        for path in readable:
            options += ["--ro-bind", str(path), str(path)]
        for path in writable:
            options += ["--bind", str(path), str(path)]
        return [shutil.which("bwrap") or "bwrap", *options, *_namespaces(), "--", *kernel]

    def environment(self, env: dict[str, str], package: Path) -> dict[str, str]:
        """The kernel's environment: the copy first on PYTHONPATH; in the sandbox, only what a kernel needs
        (the grader's own variables, tokens included, stay outside)."""
        path = os.pathsep.join(p for p in (str(package), kernel_pythonpath()) if p)
        if self.mode == "bwrap":
            env = {name: env[name] for name in _ENV if name in env}
            env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
            env["MPLCONFIGDIR"] = "/tmp/home/.matplotlib"
            env["IPYTHONDIR"] = "/tmp/home/.ipython"
        return {**env, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}
