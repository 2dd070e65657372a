"""How much the key/value cache and batching speed up greedy decoding, measured in one run.

    python benchmarks/bench_decode.py --n 256
    python benchmarks/bench_decode.py --checkpoint runs/my-run --n 64 --file sources.txt

Times (a) batched greedy decoding with the cache, (b) one expression at a time with the whole decoder
recomputed at every step (batch 1, no cache), (c) batched without the cache, at the same batch size; prints
(b)/(a) and (c)/(a), sequences per second, and the fastest batch size on this machine. Not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from labutils.decode import translate
from labutils.model import ModelConfig, Seq2SeqTransformer, load_pretrained, load_weights


def load_model(checkpoint: str | None) -> tuple[Seq2SeqTransformer, str]:
    """The checkpoint, else the shipped model, else a random ``ModelConfig()`` model."""
    if checkpoint:
        return load_weights(checkpoint), checkpoint
    shipped = Path(__file__).resolve().parents[1] / "labutils" / "weights" / "model.pt"
    if shipped.is_file():
        return load_pretrained(), "shipped model"
    torch.manual_seed(0)
    return Seq2SeqTransformer(ModelConfig()).eval(), "random ModelConfig() model (no shipped weights yet)"


def load_sources(n: int, file: str | None) -> list[str]:
    """The first ``n`` sources of ``--file`` (one a line; a tab and a target allowed), else the test split."""
    if file:
        lines = [line.split("\t")[0].strip() for line in Path(file).read_text().splitlines()]
        sources = [line for line in lines if line]
    else:
        try:
            from labutils.data import load_pairs

            sources = [source for source, _ in load_pairs("test")]
        except Exception as error:  # the shipped data set may not exist yet
            sys.exit(f"cannot read the test split ({type(error).__name__}: {error}); pass --file SOURCES")
    if not sources:
        sys.exit("no sources to decode")
    return sources[:n]


def timed(run: Callable[[], list[str]]) -> tuple[float, list[str]]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", help="weights file or run folder (default: shipped model, else random)"
    )
    parser.add_argument("--n", type=int, default=256, help="sources to decode")
    parser.add_argument("--n-slow", type=int, default=32, help="sources for the slow one-at-a-time run (b)")
    parser.add_argument("--file", help="sources, one per line, if the test split is not available")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size of (a) and (c)")
    parser.add_argument("--batch-sizes", default="8,32,64,128", help="batch sizes to try for (a)")
    parser.add_argument(
        "--max-len", type=int, help="most tokens per series (default: the model's max_tgt_len)"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model, name = load_model(args.checkpoint)
    sources = load_sources(args.n, args.file)
    slow = sources[: args.n_slow]
    print(f"model: {name}; {len(sources)} sources ({len(slow)} for (b)); {torch.get_num_threads()} threads")

    def greedy(batch: list[str], batch_size: int, use_cache: bool) -> Callable[[], list[str]]:
        return lambda: translate(
            model, batch, batch_size=batch_size, use_cache=use_cache, max_len=args.max_len
        )

    translate(model, sources[:4], max_len=args.max_len)  # warm-up
    t_a, out_a = timed(greedy(sources, args.batch_size, True))
    t_c, out_c = timed(greedy(sources, args.batch_size, False))
    t_a_slow, out_a_slow = timed(greedy(slow, args.batch_size, True))
    t_b, out_b = timed(lambda: [greedy([s], 1, False)()[0] for s in slow])
    empty = sum(not series for series in out_a)

    print(f"(a) batched, cache       : {len(sources) / t_a:8.1f} sequences/s  ({t_a:.2f} s)")
    print(f"(c) batched, no cache    : {len(sources) / t_c:8.1f} sequences/s  ({t_c:.2f} s)")
    print(f"(b) one by one, no cache : {len(slow) / t_b:8.1f} sequences/s  ({t_b:.2f} s on {len(slow)})")
    print(f"(c)/(a) time ratio, same batch size {args.batch_size}: {t_c / t_a:.1f}x")
    print(f"(b)/(a) time ratio on the same {len(slow)} sources: {t_b / t_a_slow:.1f}x")
    same_c = sum(a == c for a, c in zip(out_a, out_c, strict=True))
    same_b = sum(a == b for a, b in zip(out_a_slow, out_b, strict=True))
    print(f"identical outputs: (c) {same_c}/{len(out_a)}, (b) {same_b}/{len(out_b)}; {empty} empty series")

    rates = {}
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        seconds, _ = timed(greedy(sources, batch_size, True))
        rates[batch_size] = len(sources) / seconds
        print(f"  batch size {batch_size:4d}: {rates[batch_size]:8.1f} sequences/s")
    best = max(rates, key=rates.get)
    print(f"fastest batch size here: {best} ({rates[best]:.1f} sequences/s)")


if __name__ == "__main__":
    main()
