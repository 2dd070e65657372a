"""Torch threads and sympy workers on a busy machine: ``evaluate`` on 500 pairs, measured in one run.

    python benchmarks/bench_threads.py            # 500 test pairs, threads 1-2 x workers 1-2, and the default
    python benchmarks/bench_threads.py --n 200 --repeat 2

While it measures, one busy-looping process per core keeps every core loaded, as a lecture-hall laptop
running other work would be. Each setting runs ``python -m labutils evaluate --limit N --json`` in a fresh
process (``--threads T --workers W``, or no option for the default) and reads its ``seconds``: decoding and
sympy's checks, not loading. Prints each setting's time, its ratio to the best, and whether the default is
within 1.5x of the best. Not a test: the times depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys

from labutils.runtime import cores, plan_threads

BUSY = "while True: pass"


def evaluate(n: int, options: list[str]) -> float:
    command = [sys.executable, "-m", "labutils", "evaluate", "--limit", str(n), "--json", *options]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(json.loads(result.stdout)["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="pairs of the test split")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each setting (the fastest counts)")
    args = parser.parse_args()

    n_cores = cores()
    settings = {f"threads {t}, workers {w}": ["--threads", str(t), "--workers", str(w)]
                for t, w in itertools.product((1, 2), (1, 2))}  # fmt: skip
    default = "default (threads {}, workers {})".format(*plan_threads(n_cores=n_cores))
    settings[default] = []
    load = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(n_cores)]
    try:
        times = {name: [] for name in settings}
        for _ in range(args.repeat):
            for name, options in settings.items():  # interleaved, so that a drift in load hits them all
                times[name].append(evaluate(args.n, options))
                print(f"  {name}: {times[name][-1]:.1f} s", file=sys.stderr)
    finally:
        for process in load:
            process.kill()
            process.wait()
    best = min(min(t) for t in times.values())
    print(f"evaluate on {args.n} pairs, {n_cores} cores, each kept busy by another process")
    print("| setting | seconds | / best |")
    print("| --- | ---: | ---: |")
    for name, values in times.items():
        print(f"| {name} | {min(values):.1f} | {min(values) / best:.2f} |")
    ratio = min(times[default]) / best
    print(f"default / best = {ratio:.2f} ({'within' if ratio <= 1.5 else 'NOT within'} 1.5x)")


if __name__ == "__main__":
    main()
