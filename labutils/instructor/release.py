"""Student versions of the notebooks: ``solutions/`` is the single source, ``notebooks/`` is made from it.

``python -m labutils student`` writes them; ``--check`` only compares and lists the notebooks that differ.
A student version is its solution notebook with

* the region between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` of each answer cell replaced by
  nbgrader's stub, ``# YOUR CODE HERE`` and ``raise NotImplementedError()``, at the region's indentation;
* the region between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` of each check cell removed;
* outputs and execution counts cleared, the run-time metadata dropped (``execution`` of the cells, the
  ``widgets`` state that a run saves in the notebook or a cell), every other piece of metadata kept
  (``metadata.labutils`` and nbgrader's ``metadata.nbgrader`` above all);
* cell ids ``<notebook>-<index>``, nbformat 4.5, written the way ``nbformat`` writes (sorted keys), so the
  same source always gives the same bytes.

Cells are recognised by ``metadata.labutils.kind``: ``"answer"`` (defines one function, holds one solution
region) and ``"check"`` (right after its answer cell, same ``grade_id``). Markers anywhere else are an error,
so that nothing of a solution can leak into a student notebook. Both kinds also carry nbgrader's own cell
metadata (:func:`nbgrader_metadata`), so that instructors who use nbgrader can: the answer cell is nbgrader's
"autograded answer", the check cell its "autograder tests", worth the exercise's points. In the student
version, check cells are read-only and neither kind can be deleted.

``python -m labutils release --out DIR`` (:func:`release`) builds what students are handed: the student
notebooks and a wheel of the package, checked to hold no solution and no hidden test.
"""

from __future__ import annotations

import ast
import copy
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import nbformat

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
_MARKERS = (BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN, END_HIDDEN)
STUB = "# YOUR CODE HERE\nraise NotImplementedError()"  # nbgrader's, so the two tools agree


class ReleaseError(ValueError):
    """A solution notebook that cannot be turned into a student version (the message names the cell)."""


def cell_id(notebook: str, index: int) -> str:
    """The stable id of cell ``index`` of ``notebook``: ``04_attention-007``."""
    return f"{notebook}-{index:03d}"


def _info(cell) -> dict:
    info = cell.get("metadata", {}).get("labutils", {})
    return info if isinstance(info, dict) else {}


def _replace_regions(
    source: str, begin: str, end: str, where: str, replacement: str | None
) -> tuple[str, list[str]]:
    """Replace each ``begin`` … ``end`` region (markers included) by ``replacement``, at its indentation.

    Returns the new text and the regions' contents (the lines between their markers).
    """
    out: list[str] = []
    regions: list[list[str]] = []
    inside = None
    for number, line in enumerate(source.split("\n"), start=1):
        stripped = line.strip()
        if stripped == begin:
            if inside is not None:
                raise ReleaseError(f"{where}: {begin!r} at line {number} inside another region")
            inside = line[: len(line) - len(line.lstrip())]
            regions.append([])
            if replacement is not None:
                out.extend(inside + part for part in replacement.split("\n"))
        elif stripped == end:
            if inside is None:
                raise ReleaseError(f"{where}: {end!r} at line {number} without {begin!r}")
            inside = None
        elif inside is None:
            out.append(line)
        else:
            regions[-1].append(line)
    if inside is not None:
        raise ReleaseError(f"{where}: {begin!r} is never closed by {end!r}")
    return "\n".join(out), ["\n".join(region) for region in regions]


def _function_name(source: str, where: str) -> str:
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise ReleaseError(
            f"{where}: the answer cell is not valid Python ({error.msg}, line {error.lineno})"
        ) from None
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    if len(functions) != 1 or len(tree.body) != 1:
        raise ReleaseError(f"{where}: an answer cell defines exactly one function and nothing else")
    return functions[0].name


def nbgrader_metadata(kind: str, grade_id: str, points: int) -> dict:
    """The ``metadata.nbgrader`` of an answer or check cell (nbgrader's schema 3; ids use ``-``, not ``.``)."""
    nbgrader_id = grade_id.replace(".", "-")
    if kind == "answer":
        return {"grade": False, "grade_id": nbgrader_id, "locked": False, "points": 0, "schema_version": 3,
                "solution": True}  # fmt: skip
    return {"grade": True, "grade_id": f"{nbgrader_id}-check", "locked": True, "points": points,
            "schema_version": 3, "solution": False}  # fmt: skip


def _check_nbgrader(cell, kind: str, grade_id: str, points: int, where: str) -> None:
    wanted = nbgrader_metadata(kind, grade_id, points)
    if cell.get("metadata", {}).get("nbgrader") != wanted:
        raise ReleaseError(f"{where}: the {kind} cell of {grade_id} needs metadata.nbgrader = {wanted}")


def validate(nb, name: str) -> list[dict]:
    """Check the conventions of a solution notebook; return its answer cells' ``metadata.labutils``."""
    info = nb.get("metadata", {}).get("labutils")
    if not isinstance(info, dict) or info.get("notebook") != name or not info.get("version"):
        raise ReleaseError(f"{name}: metadata.labutils must be {{'notebook': {name!r}, 'version': …}}")
    answers = []
    cells = nb.cells
    for index, cell in enumerate(cells):
        kind, where = _info(cell).get("kind"), f"{name}, cell {index}"
        text = cell.source
        if kind == "answer":
            grade_id = _info(cell).get("grade_id", "")
            if not grade_id.startswith(f"{name}.") or not isinstance(_info(cell).get("points"), int):
                raise ReleaseError(
                    f"{where}: an answer cell needs a grade_id '{name}.<function>' and integer points"
                )
            function = _function_name(text, where)
            if grade_id != f"{name}.{function}":
                raise ReleaseError(f"{where}: grade_id {grade_id!r} does not name the function {function!r}")
            if len(_replace_regions(text, BEGIN_SOLUTION, END_SOLUTION, where, "")[1]) != 1:
                raise ReleaseError(
                    f"{where}: an answer cell holds one {BEGIN_SOLUTION} … {END_SOLUTION} region"
                )
            after = cells[index + 1] if index + 1 < len(cells) else None
            if (
                after is None
                or _info(after).get("kind") != "check"
                or _info(after).get("grade_id") != grade_id
            ):
                raise ReleaseError(
                    f"{where}: the answer cell must be followed by its check cell ({grade_id})"
                )
            _check_nbgrader(cell, "answer", grade_id, _info(cell)["points"], where)
            _check_nbgrader(after, "check", grade_id, _info(cell)["points"], f"{name}, cell {index + 1}")
            answers.append(dict(_info(cell)))
        elif kind == "check":
            _replace_regions(text, BEGIN_HIDDEN, END_HIDDEN, where, None)
            if BEGIN_SOLUTION in text or END_SOLUTION in text:
                raise ReleaseError(f"{where}: a check cell holds no solution region")
        elif any(marker in text for marker in _MARKERS):
            raise ReleaseError(f"{where}: solution or hidden-test markers outside an answer or check cell")
    return answers


def student_notebook(nb, name: str):
    """The student version of the solution notebook ``nb`` (a copy; ``nb`` is left as it is)."""
    validate(nb, name)
    nb = copy.deepcopy(nb)
    for index, cell in enumerate(nb.cells):
        kind, where = _info(cell).get("kind"), f"{name}, cell {index}"
        if kind == "answer":
            cell.source = _replace_regions(cell.source, BEGIN_SOLUTION, END_SOLUTION, where, STUB)[0]
            cell.metadata["deletable"] = False
        elif kind == "check":
            cell.source = _replace_regions(cell.source, BEGIN_HIDDEN, END_HIDDEN, where, None)[0].strip("\n")
            cell.metadata["deletable"], cell.metadata["editable"] = False, False
    return clean(nb, name)


def clean(nb, name: str):
    """Outputs, execution counts cleared, run-time metadata dropped, stable ids, nbformat 4.5 (in place)."""
    nb.nbformat, nb.nbformat_minor = 4, 5
    nb.metadata.pop("widgets", None)  # widget state of the run that made the outputs: gone with them
    for index, cell in enumerate(nb.cells):
        cell.id = cell_id(name, index)
        cell.metadata.pop("execution", None)
        cell.metadata.pop("widgets", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def render(nb) -> str:
    """The notebook's text as nbformat writes it (validated), with a final newline."""
    nbformat.validate(nb)
    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def _read(path: Path):
    try:
        return nbformat.read(path, as_version=4)
    except Exception as error:  # JSON or schema errors: name the file
        raise ReleaseError(f"{path}: not a readable notebook ({error})") from None


def build(source: str | Path, out: str | Path) -> dict[Path, str]:
    """Every student notebook's path in ``out`` and its text, from the ``*.ipynb`` of ``source``."""
    source, out = Path(source), Path(out)
    return {
        out / path.name: render(student_notebook(_read(path), path.stem))
        for path in sorted(source.glob("*.ipynb"))
    }


def differences(source: str | Path, out: str | Path) -> list[str]:
    """What is out of sync: one line per student notebook that differs, is missing, or has no source."""
    wanted = build(source, out)
    problems = []
    for path, text in wanted.items():
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.read_bytes() != text.encode("utf-8"):
            problems.append(f"{path}: differs from {Path(source) / path.name}")
    for path in sorted(Path(out).glob("*.ipynb")):
        if path not in wanted:
            problems.append(f"{path}: has no source in {source}")
    return problems


def write(source: str | Path, out: str | Path) -> tuple[list[Path], list[Path]]:
    """Write the student notebooks that changed and remove those without a source: (written, removed)."""
    wanted = build(source, out)  # everything is built before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, text in wanted.items():
        data = text.encode("utf-8")
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
            written.append(path)
    removed = [path for path in sorted(out.glob("*.ipynb")) if path not in wanted]
    for path in removed:
        path.unlink()
    return written, removed


# ---------------------------------------------------------------------------------------------- the release


def secrets(source: str | Path) -> dict[str, str]:
    """What must never reach students: each solution and hidden-test region of ``source``, by where it is."""
    found = {}
    for path in sorted(Path(source).glob("*.ipynb")):
        for index, cell in enumerate(_read(path).cells):
            where = f"{path.name}, cell {index}"
            for begin, end in ((BEGIN_SOLUTION, END_SOLUTION), (BEGIN_HIDDEN, END_HIDDEN)):
                for number, region in enumerate(_replace_regions(cell.source, begin, end, where, None)[1]):
                    if region.strip():
                        found[f"{where}, region {number + 1}"] = _squeeze(region)
    return found


def _squeeze(text: str) -> str:
    """``text`` with each line stripped and blank lines dropped, so that re-indenting hides nothing."""
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def _texts(folder: Path):
    """(name, text) of every file under ``folder``, members of wheels and zip files included."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        if path.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    yield f"{name}:{member}", archive.read(member).decode("utf-8", "replace")
        else:
            yield name, path.read_bytes().decode("utf-8", "replace")


def leaks(folder: str | Path, source: str | Path) -> list[str]:
    """Where a solution or hidden test of ``source`` shows up under ``folder`` (or a marker in a notebook)."""
    hidden = secrets(source)
    found = []
    for name, text in _texts(Path(folder)):
        if name.endswith(".ipynb"):  # compare cell sources, not their JSON escaping
            text = "\n".join(cell.source for cell in nbformat.reads(text, as_version=4).cells)
            found += [f"{name}: holds the marker {marker!r}" for marker in _MARKERS if marker in text]
        squeezed = _squeeze(text)
        found += [
            f"{name}: holds the text of {where}" for where, region in hidden.items() if region in squeezed
        ]
    return found


def release(source: str | Path, out: str | Path, project: str | Path) -> list[Path]:
    """Build the student release in ``out`` (which must not exist or be empty); return the files written.

    ``out`` gets ``notebooks/`` (the student versions of ``source``), a wheel of the package built from
    ``project`` (the repository), and a README for students. Everything is built in a temporary folder
    beside ``out`` and checked with :func:`leaks` before it is moved into place, so a failed build leaves
    nothing behind.
    """
    source, out, project = Path(source), Path(out), Path(project)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReleaseError(f"{out} is not empty: choose a new folder")
    if not (project / "pyproject.toml").is_file():
        raise ReleaseError(
            f"{project} is not the labutils repository (no pyproject.toml): release builds from it"
        )
    notebooks = build(source, "notebooks")  # every notebook is made before anything is written
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes a private folder; a release is to be shared
    try:
        for path, text in notebooks.items():
            (staging / path).parent.mkdir(parents=True, exist_ok=True)
            (staging / path).write_text(text, encoding="utf-8")
        wheel = _build_wheel(project, staging)
        (staging / "README.md").write_text(_student_readme(wheel.name, sorted(notebooks)), encoding="utf-8")
        problems = leaks(staging, source)
        if problems:
            raise ReleaseError(f"the release would give away solutions: {problems[0]}")
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return sorted(p for p in out.rglob("*") if p.is_file())


def _build_wheel(project: Path, into: Path) -> Path:
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", scratch,
             str(project)],
            capture_output=True, text=True,
        )  # fmt: skip
        wheels = list(Path(scratch).glob("labutils-*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            last = (done.stderr.strip().splitlines() or ["no wheel was made"])[-1]
            raise ReleaseError(f"building the labutils wheel failed: {last}")
        return Path(shutil.copy2(wheels[0], into / wheels[0].name))


def _student_readme(wheel: str, notebooks: list[Path]) -> str:
    listing = "\n".join(f"- `{path.as_posix()}`" for path in notebooks)
    return f"""# Transformer Lab (Lab 9): student release

Seven notebooks that build, step by step, an encoder-decoder transformer that writes Taylor series,
then a decoder-only one (GPT) for the same task.

## Set up (once)

```bash
python -m venv .venv && . .venv/bin/activate       # Windows: .venv\\Scripts\\activate
pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu   # or your GPU build of torch
pip install {wheel}
jupyter lab notebooks/
```

On Colab: upload `{wheel}` and the notebook, then run `!pip install {wheel}` in a first cell.

## The notebooks

{listing}

Work through them in order. Each exercise cell holds `# YOUR CODE HERE` and `raise NotImplementedError()`:
replace those two lines with your code, run the cell, then run the check cell below it for feedback.
Everything after an exercise also runs while it is unsolved, using the package's own version.
"""
