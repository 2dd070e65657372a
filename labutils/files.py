"""Files: writing one so that a crash leaves the old file or the new one, never half of one; hashing one."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "sha256_of"]


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_options: Any) -> Iterator[IO]:
    """Open a file to write in place of ``path``; it replaces ``path`` only when the block ends without error.

    The data goes to a temporary file beside ``path`` (same folder, so the rename is atomic), is flushed to
    the disk, made readable by everyone (0o644: data, weights and grades are meant to be shared) and then
    renamed over ``path``. An error inside the block removes the temporary file and leaves ``path`` as it
    was. ``mode`` is ``"wb"`` or ``"w"``; ``open_options`` (``encoding``, ``newline``) go to ``open``::

        with atomic_write(path) as f:
            torch.save(payload, f)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write opens files to write, mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, mode, **open_options) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes the file private
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 of the file at ``path`` (hex): what records name the weights they were made from by."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
