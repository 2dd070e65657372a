"""The decoder-only model against the encoder–decoder: decode time per expression, measured in one run.

    python benchmarks/bench_models.py --n 256 --repeats 3

Both shipped models decode the same test expressions with batched, cached greedy decoding (the ``translate``
default), and one expression at a time (what the explorer does). Runs of the two alternate, so that a
machine busy with something else slows both alike; the figure is the ratio of their best times. Not a test.
"""

from __future__ import annotations

import argparse
import time

import torch

from labutils import models
from labutils.data import load_pairs
from labutils.decode import translate


def best_time(model, sources: list[str], batch_size: int) -> tuple[float, list[str]]:
    start = time.perf_counter()
    written = translate(model, sources, batch_size=batch_size)
    return time.perf_counter() - start, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="test expressions, batched")
    parser.add_argument("--n-single", type=int, default=32, help="test expressions, one at a time")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    shipped = {kind: models.load_shipped(kind) for kind in models.KINDS}
    sources = [source for source, _ in load_pairs("test")][: args.n]
    print(f"{len(sources)} test expressions batched ({args.batch_size} a batch), {args.n_single} one at a time; "
          f"{torch.get_num_threads()} threads; best of {args.repeats}")  # fmt: skip
    for name, size, batch_size in (("batched", args.n, args.batch_size), ("one at a time", args.n_single, 1)):
        best = {kind: float("inf") for kind in shipped}
        for _ in range(args.repeats):
            for kind, model in shipped.items():  # alternate: both see the same machine
                seconds, _ = best_time(model, sources[:size], batch_size)
                best[kind] = min(best[kind], seconds)
        per = {kind: 1000 * best[kind] / size for kind in shipped}
        ratio = best["decoder-only"] / best["encoder-decoder"]
        print(f"{name:>14}: encoder-decoder {per['encoder-decoder']:.2f} ms, decoder-only "
              f"{per['decoder-only']:.2f} ms per expression: decoder-only / encoder-decoder = {ratio:.2f}x")  # fmt: skip
    for kind, model in shipped.items():
        print(f"{kind}: {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    main()
