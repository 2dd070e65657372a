"""Small random models with a predictable answer, shared by the tests of decoding and of the explorer."""

import torch

from labutils.model import ModelConfig, Seq2SeqTransformer
from labutils.tokens import TARGET_VOCAB


def writer(favourite: str = "1", max_tgt_len: int = 24) -> Seq2SeqTransformer:
    """A random model that writes ``favourite`` over and over: predictable, and wrong."""
    torch.manual_seed(0)
    config = ModelConfig(
        d_model=32, n_heads=2, n_encoder_layers=1, n_decoder_layers=2, d_ff=64, max_tgt_len=max_tgt_len
    )
    model = Seq2SeqTransformer(config).eval()
    with torch.no_grad():
        model.generator.bias[TARGET_VOCAB.stoi[favourite]] += 10.0
    return model
