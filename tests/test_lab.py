"""``make lab`` opens JupyterLab for whoever runs it, root included (containers, Colab, lab machines).

JupyterLab refuses to start as root unless it is given ``--allow-root``. The Makefile passes the flag when
``id -u`` is 0, and only then: tested here with a stand-in ``id`` for either user, and by starting JupyterLab
the way the Makefile does and asking its server's ``/api``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JUPYTER = Path(sys.executable).parent / "jupyter"

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _lab_command(tmp_path: Path, uid: int) -> str:
    """The command ``make -n lab`` would run to start JupyterLab, for a user whose ``id -u`` is ``uid``."""
    bin_dir = tmp_path / f"uid{uid}"
    bin_dir.mkdir()
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (bin_dir / "id").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", "lab"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (line,) = [line for line in out.splitlines() if "jupyter lab" in line]
    return line


@needs_make
def test_make_lab_allows_root_and_only_root(tmp_path):
    assert _lab_command(tmp_path, 0).split()[1:] == ["lab", "--allow-root", "work/"]
    assert _lab_command(tmp_path, 1000).split()[1:] == ["lab", "work/"]


def _is_root() -> bool:
    return getattr(os, "geteuid", lambda: -1)() == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_lab(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    env = {  # JupyterLab's own files in the test's folder, not in the user's home
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    command = [
        str(JUPYTER), "lab", *flags, "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        "--ServerApp.port_retries=0", "--IdentityProvider.token=lab-test", str(tmp_path),
    ]  # fmt: skip
    with open(tmp_path / "lab.log", "w") as log:  # the child keeps its own copy of the file
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    return process, port


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_jupyterlab_started_as_make_lab_starts_it_serves_its_api(tmp_path):
    flags = ["--allow-root"] if _is_root() else []  # what make lab passes
    process, port = _start_lab(tmp_path, *flags)
    try:
        deadline, answer = time.monotonic() + 90, None
        while answer is None and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "lab.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=2) as response:
                    answer = json.load(response)
            except OSError:
                time.sleep(0.5)
        assert answer is not None and "version" in answer, (tmp_path / "lab.log").read_text()
    finally:
        _stop(process)


@pytest.mark.skipif(not _is_root(), reason="only root is refused")
def test_as_root_jupyterlab_refuses_without_the_flag(tmp_path):
    """Why the Makefile passes it: without --allow-root, root gets JupyterLab's refusal and no server."""
    process, _ = _start_lab(tmp_path)
    try:
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            _stop(process)
    assert process.returncode != 0
    assert "--allow-root" in (tmp_path / "lab.log").read_text()
