"""What grading costs beyond running the notebooks: the six solutions, executed, then graded.

    python benchmarks/bench_grading.py [--jobs 1]

(a) runs each solution notebook top to bottom in a fresh kernel (nbclient), (b) grades the six with
``labutils.instructor.grading`` (fresh kernel each, the student's cells, then the grader's check cells). The
grader's own cost is (b) - (a); it can be negative, since the grader stops after a notebook's last exercise. Not a test.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from labutils.instructor import grading
from labutils.instructor.grading import Limits

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    notebooks = sorted((ROOT / "solutions").glob("*.ipynb"))

    start = time.perf_counter()
    for path in notebooks:
        with tempfile.TemporaryDirectory() as folder:
            nb = nbformat.read(path, as_version=4)
            NotebookClient(
                nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": folder}}
            ).execute()
    executed = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        report = grading.grade(
            [str(ROOT / "solutions")],
            out=Path(folder) / "grades.csv",
            limits=Limits(timeout=600),
            jobs=args.jobs,
            log=lambda line: print(line, file=sys.stderr),
        )
        graded = time.perf_counter() - start
    print(f"(a) running the {len(notebooks)} solution notebooks: {executed:.1f} s")
    print(f"(b) grading them (jobs={args.jobs}), status {report.status}: {graded:.1f} s")
    print(f"(b) - (a): {graded - executed:+.1f} s (the grader runs a notebook only up to its last exercise)")


if __name__ == "__main__":
    main()
