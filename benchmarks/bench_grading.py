"""What grading a class costs: 30 submissions of notebook 04 (its solution), graded with ``--jobs 2`` by the
grader as it is and by the grader before its supervisor, digests and sandbox, in one run.

    python benchmarks/bench_grading.py [--students 30] [--jobs 2] [--notebook 04_attention]
                                       [--baseline REV] [--sandbox auto] [--similarity 200]

Each grader runs as ``python -m labutils grade`` in a process of its own, on the same class laid out as
nbgrader collects it (``submitted/<student>/ps4/<notebook>.ipynb``): the current one from this checkout, the
baseline from ``git archive REV`` on its ``PYTHONPATH`` (by default the last commit before
``labutils/instructor/supervisor.py`` existed). The order is baseline, current, current, baseline, so that a
machine that gets busier or quieter during the run favours neither. Reports each run's wall time and points
(every copy should get full points), the ratio of the means, and the load average around the runs.

Then the similarity report's cost for a class of ``--similarity`` students: notebook 04's answers, each
student's with its names changed and one to three small edits of its syntax tree (a statement added, a constant
or an operator changed), so that many answers are alike and most differ. Not a test.
"""

import argparse
import ast
import compileall
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


def baseline_revision() -> str:
    """The last commit before the grader's supervisor: the parent of the oldest commit that has either
    ``labutils/instructor/supervisor.py`` or the ``--sandbox`` option of ``grade``."""

    def oldest(*args: str) -> str | None:
        found = subprocess.run(
            ["git", "log", "--format=%H", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
        return found[-1] if found else None

    firsts = [
        oldest("--diff-filter=A", "--", "labutils/instructor/supervisor.py"),
        oldest("-S", '"--sandbox"', "--", "labutils/cli/instructor.py"),
    ]
    firsts = [commit for commit in firsts if commit]
    if not firsts:
        sys.exit("no commit has the grader's supervisor: give --baseline REV")
    order = subprocess.run(
        ["git", "rev-list", "--topo-order", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return max(firsts, key=order.index)[:12] + "~1"  # the older of the two in the history


def export(revision: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", revision, "labutils"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    compileall.compile_dir(into / "labutils", quiet=2)  # as a checkout that has run: nothing to compile
    return into


def grade_once(package: Path, folder: Path, source: Path, jobs: int, extra: list[str]) -> tuple[float, str]:
    out = folder / f"out-{time.monotonic_ns()}" / "grades.csv"
    out.parent.mkdir()
    command = [sys.executable, "-m", "labutils", "grade", "submitted", "--source", str(source)]
    command += ["--out", str(out), "--jobs", str(jobs), "--timeout", "600", *extra]
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=folder, env={**os.environ, "PYTHONPATH": str(package)}, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if not out.with_name("grades-gradebook.csv").exists():
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
    gradebook = out.with_name("grades-gradebook.csv").read_text(encoding="utf-8").splitlines()
    totals = sorted({line.rsplit(",", 1)[1] for line in gradebook[1:]})
    return seconds, f"status {done.returncode}, totals {', '.join(totals)}"


def perturbed(code: str, rng: random.Random) -> str:
    """The answer with its names changed and up to three small edits of its syntax tree."""
    tree = ast.parse(code)
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    names |= {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    renamed = {name: f"v{rng.randrange(10**6)}" for name in names if name not in ("torch", "math", "F")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in renamed:
            node.id = renamed[node.id]
        elif isinstance(node, ast.arg) and node.arg in renamed:
            node.arg = renamed[node.arg]
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef))
    for _ in range(rng.randrange(1, 4)):
        edit = rng.randrange(3)
        if edit == 0:
            target = rng.choice([n for n in ast.walk(function) if isinstance(n, ast.Name)] or [None])
            if target is not None:
                extra = ast.parse(f"unused_{rng.randrange(100)} = {target.id}").body[0]
                function.body.insert(rng.randrange(len(function.body)), extra)
        elif edit == 1:
            constants = [
                n for n in ast.walk(function) if isinstance(n, ast.Constant) and type(n.value) is int
            ]
            if constants:
                rng.choice(constants).value += 1
        else:
            operators = [n for n in ast.walk(function) if isinstance(n, ast.BinOp)]
            if operators:
                rng.choice(operators).op = rng.choice([ast.Add(), ast.Sub(), ast.Mult(), ast.Div()])
    return ast.unparse(tree)


def similarity(students: int, notebook: Path) -> None:
    from labutils.instructor.similarity import Answer, similar_pairs
    from labutils.instructor.sources import defined_names

    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    solutions = []
    for cell in cells:
        meta = cell.get("metadata", {}).get("labutils", {})
        if meta.get("kind") == "answer":
            code = "".join(cell["source"])  # the solution, its markers aside
            code = "\n".join(line for line in code.splitlines() if line.strip() not in MARKERS)
            solutions.append((meta["grade_id"], defined_names(code)[-1], code))
    rng = random.Random(0)
    answers = [
        Answer(grade_id, f"s{n:03d}", f"s{n:03d}.ipynb", perturbed(code, rng), function)
        for n in range(students)
        for grade_id, function, code in solutions
    ]
    start = time.perf_counter()
    found = similar_pairs(answers)
    seconds = time.perf_counter() - start
    pairs = students * (students - 1) // 2 * len(solutions)
    print(
        f"similarity of {students} students x {len(solutions)} exercises ({pairs:,} pairs of answers): "
        f"{seconds:.1f} s; {len(found.pairs)} pairs listed, {found.common} of the common answer not listed, "
        f"{found.short} short answers not compared"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--notebook", default="04_attention")
    parser.add_argument("--baseline", help="git revision of the grader to compare with")
    parser.add_argument("--sandbox", default="auto", choices=["auto", "bwrap", "none"])
    parser.add_argument("--similarity", type=int, default=200, help="students in the similarity measure")
    parser.add_argument("--current", type=Path, default=ROOT, help="folder holding the current labutils")
    args = parser.parse_args()
    solution = ROOT / "solutions" / f"{args.notebook}.ipynb"
    revision = args.baseline or baseline_revision()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        baseline = export(revision, folder / "baseline")
        source = folder / "source"
        source.mkdir()
        shutil.copy(solution, source)
        for n in range(args.students):
            target = folder / "submitted" / f"student{n + 1:02d}" / "ps4" / solution.name
            target.parent.mkdir(parents=True)
            shutil.copy(solution, target)
        runs = {"baseline": [], "current": []}
        load = os.getloadavg()[0]
        for name in ("baseline", "current", "current", "baseline"):
            package = baseline if name == "baseline" else args.current
            extra = ["--sandbox", args.sandbox] if name == "current" else []
            seconds, said = grade_once(package, folder, source, args.jobs, extra)
            runs[name].append(seconds)
            print(f"{name:8} {seconds:6.1f} s  ({seconds / args.students:.2f} s per submission; {said})")
        after = os.getloadavg()[0]
    mean = {name: sum(values) / len(values) for name, values in runs.items()}
    print(
        f"{args.students} submissions of {args.notebook}, --jobs {args.jobs}: baseline ({revision}) "
        f"{mean['baseline']:.1f} s, current (--sandbox {args.sandbox}) {mean['current']:.1f} s: "
        f"ratio {mean['current'] / mean['baseline']:.3f}; load average {load:.1f} before, {after:.1f} after"
    )
    if args.similarity:
        similarity(args.similarity, solution)


if __name__ == "__main__":
    main()
