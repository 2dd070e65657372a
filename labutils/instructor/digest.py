"""What the grader's verdicts depend on, hashed: a change made from inside a kernel stops the batch.

Three kinds of files are watched: the package the grader judges with (every file of it, ``__pycache__``
included: a forged ``.pyc`` would judge the next run), the source notebooks, and the grader's own output files
so far. Before the batch each file's sha256 is taken; after every submission each file is looked at again:
a file whose ``stat`` (size, modification and change times, inode) is unchanged is the same file, any other is
hashed again, and a file added to or gone from the package or the sources counts too. (A process can set a
file's modification time back, but not its change time, which the system sets on every write.)

The package's and the sources' digests are recorded in ``<out>-digest.json`` beside the grades: ``--resume``
continues only with the same package and sources (compiled files aside); after a batch stopped by a change,
no run with that ``--out`` starts while the changed files differ from what they were.
"""

from __future__ import annotations

import compileall
import json
import os
from collections.abc import Iterable
from pathlib import Path

from labutils.files import sha256_of
from labutils.instructor.gradebook import write_file
from labutils.instructor.sandbox import PACKAGE_ROOT
from labutils.instructor.sources import GradingError

PACKAGE, SOURCES, STOPPED = "package", "sources", "stopped"


class ChangedError(GradingError):
    """What the grader judges with differs from what earlier grades of the same ``--out`` were made with."""


def digest_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}-digest.json")


def _stat(path: Path) -> tuple | None:
    try:
        s = path.stat()
    except OSError:
        return None
    return (s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, s.st_dev)


def _hash(path: Path) -> str | None:
    try:
        return sha256_of(path)
    except OSError:
        return None


class Tree:
    """The files below a folder (the source notebooks: only ``*.ipynb``, hidden folders aside, as
    :func:`~labutils.instructor.sources.load_sources` reads them), by their path relative to it."""

    def __init__(self, root: Path, shown: str, suffix: str = ""):
        self.root, self.shown, self.suffix = Path(root), shown, suffix
        self.files: dict[str, tuple[tuple | None, str | None]] = {}

    def _names(self) -> list[str]:
        found = []
        for folder, dirs, files in os.walk(self.root):
            if self.suffix:
                dirs[:] = [d for d in dirs if not d.startswith(".")]
            relative = Path(folder).relative_to(self.root)
            found += [(relative / name).as_posix() for name in files if name.endswith(self.suffix)]
        return sorted(found)

    def show(self, name: str) -> str:
        return f"{self.shown}/{name}"

    def take(self) -> None:
        self.files = {name: (_stat(self.root / name), _hash(self.root / name)) for name in self._names()}

    def changed(self) -> list[str]:
        """The files that differ from when they were taken (their names relative to the root)."""
        differ, now = [], self._names()
        for name in now:
            known = self.files.get(name)
            stat = _stat(self.root / name)
            if known is None:
                differ.append(name)
            elif stat != known[0]:
                digest = _hash(self.root / name)
                if digest != known[1]:
                    differ.append(name)
                else:
                    self.files[name] = (stat, digest)  # touched, not changed
        differ += set(self.files) - set(now)
        return sorted(differ)

    def now(self) -> dict[str, str | None]:
        return {name: _hash(self.root / name) for name in self._names()}

    def record(self) -> dict[str, str | None]:
        return {name: digest for name, (_, digest) in self.files.items()}


class Digest:
    """The package, the sources and the outputs of one batch; :meth:`check` names what changed."""

    def __init__(self, sources: str | os.PathLike, out: str | os.PathLike):
        self.trees = {
            PACKAGE: Tree(PACKAGE_ROOT, PACKAGE_ROOT.name),
            SOURCES: Tree(Path(sources), str(sources).rstrip("/\\") or ".", ".ipynb"),
        }
        self.outputs: dict[str, tuple[tuple | None, str | None]] = {}
        self.out, self.path = Path(out), digest_path(out)
        self.stopped: dict | None = None

    def take(self) -> None:
        # Compiled before the digest is taken, so that no import while the batch runs writes a .pyc that would
        # count as a change (a folder the grader cannot write to is left as it is).
        compileall.compile_dir(PACKAGE_ROOT, quiet=2, workers=1)
        for tree in self.trees.values():
            tree.take()

    def check(self) -> list[str]:
        """Every watched file that changed since it was taken or written, as a path to show."""
        differ = [tree.show(name) for tree in self.trees.values() for name in tree.changed()]
        for name, (stat, digest) in self.outputs.items():
            if _stat(Path(name)) != stat and _hash(Path(name)) != digest:
                differ.append(name)
        return sorted(differ)

    def wrote(self, paths: Iterable[Path]) -> None:
        """The grader wrote ``paths``: each is watched from now on, as it is now."""
        for path in paths:
            self.outputs[str(path)] = (_stat(Path(path)), _hash(Path(path)))

    def write(self) -> None:
        """The record beside the grades: the package's and the sources' digests, and a stop if there was one."""
        record = {kind: tree.record() for kind, tree in self.trees.items()}
        if self.stopped:
            record[STOPPED] = self.stopped
        write_file(self.path, json.dumps(record, indent=1, sort_keys=True) + "\n")
        self.wrote([self.path])

    def stop(self, changed: list[str], where: str) -> None:
        """Remember a stop: each changed file of the package or the sources with what it was before (None:
        it was not there), so that no later run of this ``--out`` starts until it is so again."""
        files = {}
        for kind, tree in self.trees.items():
            for name in tree.changed():
                files.setdefault(kind, {})[name] = tree.files.get(name, (None, None))[1]
        self.stopped = {"while": where, **files}

    def previous(self) -> dict:
        """The record of an earlier run of this ``--out``: ``{}`` when there is none."""
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def compare(self, record: dict, resume: bool) -> None:
        """Raise ChangedError when grading must not start against ``record``, an earlier run's."""
        now = {kind: tree.now() for kind, tree in self.trees.items()}
        stopped = record.get(STOPPED)
        if isinstance(stopped, dict):
            differ = [
                self.trees[kind].show(name)
                for kind in self.trees
                for name, digest in _mapping(stopped.get(kind)).items()
                if now[kind].get(name) != digest
            ]
            if differ:
                raise ChangedError(
                    f"{differ[0]}{_more(differ)} was changed while {stopped.get('while', 'a submission')} was "
                    f"graded, and still differs: restore it before grading again (or delete {self.path})"
                )
        if not resume or not isinstance(record.get(PACKAGE), dict):
            return
        differ = []
        for kind, tree in self.trees.items():
            before = _mapping(record.get(kind))
            for name in sorted(set(before) | set(now[kind])):
                if "__pycache__" not in name and before.get(name) != now[kind].get(name):
                    differ.append(tree.show(name))
        if differ:
            raise ChangedError(
                f"{differ[0]}{_more(differ)} differs from what the grades in {self.out} were made with"
                ": restore it to continue with --resume, or grade everything again with --force"
            )


def _mapping(value) -> dict[str, str | None]:
    if not isinstance(value, dict):
        return {}
    return {str(k): (str(v) if v is not None else None) for k, v in value.items()}


def _more(names: list[str]) -> str:
    return f" (and {len(names) - 1} more)" if len(names) > 1 else ""
