"""The series step: labutils' truncated-series arithmetic against sympy.series, and pairs per second.

    python benchmarks/bench_series.py [--n 200] [--pairs 2000] [--workers 2]

Both series are computed on the same simplified expressions of the family, in one run; the printed
ratio is sympy's time over ours. Every pair of results is compared, so a fast wrong answer cannot pass.
"""

import argparse
import random
import time

from labutils import data
from labutils.series import format_series, sympy_series_coefficients, taylor_coefficients


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="expressions for the series comparison")
    parser.add_argument("--pairs", type=int, default=2000, help="pairs for the end-to-end rate (0: skip)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=99)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    expressions, shapes = [], set()
    while len(expressions) < args.n:
        d = data.draw(rng)
        if d.shape in shapes:
            continue
        shapes.add(d.shape)
        expr = data.simplified(d)
        if expr.has(data.x):
            expressions.append(expr)
    taylor_coefficients(expressions[0])  # load each function's coefficients once

    start = time.perf_counter()
    ours = [format_series(taylor_coefficients(e)) for e in expressions]
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    theirs = [format_series(sympy_series_coefficients(e)) for e in expressions]
    t_sympy = time.perf_counter() - start
    agree = sum(a == b for a, b in zip(ours, theirs))
    print(f"series of {len(expressions)} simplified expressions (distinct shapes):")
    print(f"  labutils  {1000 * t_ours / len(expressions):7.2f} ms each")
    print(f"  sympy     {1000 * t_sympy / len(expressions):7.2f} ms each")
    print(f"  speed-up  {t_sympy / t_ours:7.1f}x   identical results: {agree}/{len(expressions)}")

    if args.pairs:
        start = time.perf_counter()
        pairs, report = data.generate_pairs(args.pairs, seed=args.seed, workers=args.workers)
        elapsed = time.perf_counter() - start
        print(
            f"end to end: {len(pairs)} pairs in {elapsed:.1f} s with {args.workers} workers "
            f"= {len(pairs) / elapsed:.1f} pairs/s ({report})"
        )


if __name__ == "__main__":
    main()
