"""Training tokens per second of ``Seq2SeqTransformer`` against ``torch.nn.Transformer`` of the same size.

    python benchmarks/bench_model_throughput.py --n 20

Both models get the same embeddings, positional encodings and output head, the same random length-grouped
batches and the same optimizer; only the transformer in between differs. Steps alternate between the two
models so that a busy machine slows both alike. Prints target tokens per second and the ratio. Not a test.
"""

from __future__ import annotations

import argparse
import math
import random
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labutils.model import (
    ModelConfig,
    Seq2SeqTransformer,
    SinusoidalPositionalEncoding,
    load_pretrained,
    load_weights,
)
from labutils.tokens import EOS_IDX, PAD_IDX, SOS_IDX


class TorchTransformer(nn.Module):
    """``nn.Transformer`` between the same embeddings, encodings and (tied) output head as ours."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.src_embed = nn.Embedding(config.src_vocab_size, d)
        self.tgt_embed = nn.Embedding(config.tgt_vocab_size, d)
        self.src_pos = SinusoidalPositionalEncoding(d, config.max_src_len)
        self.tgt_pos = SinusoidalPositionalEncoding(d, config.max_tgt_len)
        self.dropout = nn.Dropout(config.dropout)
        with warnings.catch_warnings():  # "enable_nested_tensor is True, but …": an inference-only fast path
            warnings.simplefilter("ignore", UserWarning)
            self.transformer = nn.Transformer(
                d,
                config.n_heads,
                config.n_encoder_layers,
                config.n_decoder_layers,
                config.d_ff,
                config.dropout,
                batch_first=True,
                norm_first=config.norm_first,
            )
        self.generator = nn.Linear(d, config.tgt_vocab_size)
        if config.tie_embeddings:
            self.generator.weight = self.tgt_embed.weight

    def forward(self, src: Tensor, tgt: Tensor, src_pad_mask: Tensor, tgt_pad_mask: Tensor) -> Tensor:
        scale = math.sqrt(self.config.d_model)
        x = self.dropout(self.src_pos(self.src_embed(src) * scale))  # (B, Ls, d)
        y = self.dropout(self.tgt_pos(self.tgt_embed(tgt) * scale))  # (B, Lt, d)
        causal = nn.Transformer.generate_square_subsequent_mask(tgt.size(1), dtype=torch.bool)
        h = self.transformer(
            x,
            y,
            tgt_mask=causal,
            src_key_padding_mask=src_pad_mask,
            tgt_key_padding_mask=tgt_pad_mask,
            memory_key_padding_mask=src_pad_mask,
            tgt_is_causal=True,
        )
        return self.generator(h)  # (B, Lt, V)


def model_config(checkpoint: str | None) -> tuple[ModelConfig, str]:
    """The checkpoint's config, else the shipped model's, else ``ModelConfig()``."""
    if checkpoint:
        return load_weights(checkpoint).config, checkpoint
    if (Path(__file__).resolve().parents[1] / "labutils" / "weights" / "model.pt").is_file():
        return load_pretrained().config, "shipped model"
    return ModelConfig(), "ModelConfig()"


def random_batches(config: ModelConfig, n: int, max_tokens: int, seed: int = 0) -> list[tuple[Tensor, ...]]:
    """``n`` batches of random codes, grouped by length: ``src, tgt, src_pad_mask, tgt_pad_mask``."""
    rng = random.Random(seed)
    batches = []
    for _ in range(n):
        Lt_max = rng.randint(20, min(300, config.max_tgt_len))  # Taylor series are long, sources short
        Ls_max = rng.randint(8, min(40, config.max_src_len))
        B = max(1, max_tokens // Lt_max)
        src = torch.randint(3, config.src_vocab_size, (B, Ls_max))
        tgt = torch.randint(3, config.tgt_vocab_size, (B, Lt_max))
        for i in range(B):  # lengths within a group differ a little: some padding, as in a real batch
            ls, lt = rng.randint(Ls_max - 4, Ls_max), rng.randint(int(Lt_max * 0.9), Lt_max)
            src[i, 0], src[i, ls - 1], src[i, ls:] = SOS_IDX, EOS_IDX, PAD_IDX
            tgt[i, 0], tgt[i, lt - 1], tgt[i, lt:] = SOS_IDX, EOS_IDX, PAD_IDX
        batches.append((src, tgt, src == PAD_IDX, tgt == PAD_IDX))
    return batches


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[Tensor, ...]) -> float:
    """One teacher-forced step; returns its seconds."""
    src, tgt, src_pad_mask, tgt_pad_mask = batch
    start = time.perf_counter()
    logits = model(src, tgt[:, :-1], src_pad_mask, tgt_pad_mask[:, :-1])  # (B, Lt-1, V)
    loss = F.cross_entropy(logits.transpose(1, 2), tgt[:, 1:], ignore_index=PAD_IDX)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="take the model size from this weights file or run folder")
    parser.add_argument("--n", type=int, default=20, help="training steps per model")
    parser.add_argument("--max-tokens", type=int, default=4096, help="target tokens per batch")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    config, name = model_config(args.checkpoint)
    torch.manual_seed(0)
    models = {"Seq2SeqTransformer": Seq2SeqTransformer(config), "nn.Transformer": TorchTransformer(config)}
    optimizers = {key: torch.optim.AdamW(m.parameters(), lr=1e-4) for key, m in models.items()}
    for key, m in models.items():
        print(f"{key:20s} {sum(p.numel() for p in m.parameters()):,} parameters")
    batches = random_batches(config, args.n, args.max_tokens)
    tokens = sum(int((~b[3][:, 1:]).sum()) for b in batches)
    print(f"size from {name}; {args.n} batches, {tokens:,} target tokens; {torch.get_num_threads()} threads")

    seconds = dict.fromkeys(models, 0.0)
    for key, m in models.items():  # warm-up
        m.train()
        train_step(m, optimizers[key], batches[0])
    for batch in batches:
        for key, m in models.items():
            seconds[key] += train_step(m, optimizers[key], batch)
    rates = {key: tokens / s for key, s in seconds.items()}
    for key, rate in rates.items():
        print(f"{key:20s} {rate:10,.0f} training tokens/s")
    ratio = rates["Seq2SeqTransformer"] / rates["nn.Transformer"]
    print(f"Seq2SeqTransformer / nn.Transformer throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()
