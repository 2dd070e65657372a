"""What grading a class costs: 30 submissions of notebook 04 (its solution), graded with ``--jobs 2``.

    python benchmarks/bench_grading.py [--students 30] [--jobs 2] [--notebook 04_attention]

The class is laid out as nbgrader collects it (``submitted/<student>/ps4/<notebook>.ipynb``); each
submission is graded as ``python -m labutils grade`` does it: a fresh kernel, the student's cells, the grader's
own cell after each answer, the judging in this process. Reports the wall time, the time per submission and
the points (every copy should get full points). Not a test.
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from labutils.instructor import grading
from labutils.instructor.grading import Limits

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--notebook", default="04_attention")
    args = parser.parse_args()
    solution = ROOT / "solutions" / f"{args.notebook}.ipynb"
    with tempfile.TemporaryDirectory() as folder:
        submitted = Path(folder) / "submitted"
        for n in range(args.students):
            target = submitted / f"student{n + 1:02d}" / "ps4" / solution.name
            target.parent.mkdir(parents=True)
            shutil.copy(solution, target)
        out = Path(folder) / "grades.csv"
        start = time.perf_counter()
        report = grading.grade(
            [str(submitted)],
            out=out,
            limits=Limits(timeout=600),
            jobs=args.jobs,
            log=lambda line: print(line, file=sys.stderr),
        )
        seconds = time.perf_counter() - start
        gradebook = grading.gradebook_path(out).read_text(encoding="utf-8").splitlines()
    totals = sorted({line.rsplit(",", 1)[1] for line in gradebook[1:]})
    print(f"{args.students} submissions of {args.notebook}, --jobs {args.jobs}: {seconds:.1f} s")
    print(f"{seconds / args.students:.1f} s per submission; status {report.status}; totals {', '.join(totals)}")


if __name__ == "__main__":
    main()
