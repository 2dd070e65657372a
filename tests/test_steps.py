"""Decoding step by step: each step of ``decoding_steps`` is what decoding computed when it wrote that token."""

import pytest
import torch
from tiny_models import writer

from labutils import decode
from labutils.decode import decoding_steps, greedy_decode, read_source
from labutils.tokens import EOS, PAD_IDX, SOS_IDX, TARGET_VOCAB


def decoder_only(max_tgt_len: int = 12):
    from labutils.gpt import DecoderOnlyConfig, DecoderOnlyTransformer

    torch.manual_seed(1)
    config = DecoderOnlyConfig(
        d_model=32, n_heads=2, n_layers=2, d_ff=64, max_tgt_len=max_tgt_len, tie_embeddings=False
    )
    model = DecoderOnlyTransformer(config).eval()
    with torch.no_grad():  # random, but writing tokens of a series: never <pad> or <sos>
        model.generator.bias[[PAD_IDX, SOS_IDX]] = -100.0
    return model


def greedy_steps_as_decoded(model, expression):
    """Greedy decoding with its key/value cache, recording each step's logits and cross-attention row.

    The model's ``decode`` is wrapped: each call (one new token, the cache holding the rest) is asked for
    its attention too, and the caller gets the logits alone, as greedy decoding asks.
    """
    recorded = []
    original = model.decode

    def decode_and_record(tgt, memory, src_pad_mask=None, tgt_pad_mask=None, cache=None, **kwargs):
        logits, attention = original(tgt, memory, src_pad_mask, tgt_pad_mask, cache, return_attention=True)
        recorded.append((logits[0, -1], [w[0, :, -1] for w in attention["cross"]]))  # (V,), [(H, Ls)]
        return logits

    _, src_codes = read_source(expression, model.config.max_src_len)
    model.decode = decode_and_record
    try:
        codes = greedy_decode(model, torch.tensor([src_codes]), None, use_cache=True)[0]
    finally:
        del model.decode
    return codes, recorded


@pytest.mark.parametrize("kind", ["encoder-decoder", "decoder-only"])
def test_each_step_is_the_row_greedy_decoding_computed_when_it_wrote_that_token(kind):
    model = writer(max_tgt_len=10) if kind == "encoder-decoder" else decoder_only(max_tgt_len=10)
    expression = "cosh(a*x)**3+tanh(b*x)"
    codes, recorded = greedy_steps_as_decoded(model, expression)
    steps = decoding_steps(model, expression)
    assert len(steps) == len(recorded)  # one step per call of the decoder: every token written
    written = TARGET_VOCAB.tokens_of(codes) + ([EOS] if len(codes) < model.config.max_tgt_len else [])
    assert steps.written == written[: len(steps)]
    n_source = len(steps.source_tokens)
    for t, (logits, rows) in enumerate(recorded):
        for layer, row in enumerate(rows):
            # The decoder-only model's prompt ends in the <pad> that replaced the source's <eos>: its
            # column gets no weight and has no label.
            torch.testing.assert_close(steps.cross[layer][:, t], row[:, :n_source], atol=1e-5, rtol=1e-4)
            assert float(row[:, n_source:].abs().sum()) == 0.0
        probabilities = logits.float().softmax(-1)
        token, p = steps.top[t][0]
        assert token == steps.written[t] == TARGET_VOCAB.itos[int(probabilities.argmax())]
        assert p == pytest.approx(float(probabilities.max()), abs=1e-5)
    assert steps.architecture == kind


def test_steps_say_what_each_step_read_and_end_with_eos_only_when_the_model_ended():
    cut = decoding_steps(writer(max_tgt_len=8), "sin(a*x)")  # writes "1" to its length limit
    assert cut.written == ["1"] * 8 and cut.read == ["<sos>"] + ["1"] * 7
    assert cut.series == "1" * 8 and EOS not in cut.written
    assert [len(top) for top in cut.top] == [5] * 8
    assert all(a[1] >= b[1] for top in cut.top for a, b in zip(top, top[1:]))  # best first
    assert all(sum(p for _, p in top) <= 1 + 1e-6 for top in cut.top)
    ended = decoding_steps(writer("O(x**6)", max_tgt_len=8), "sin(a*x)", top=3)
    assert [len(top) for top in ended.top] == [3] * len(ended)
    assert ended.cross[0].shape == (2, len(ended), len(ended.source_tokens))
    assert ended.expression == "sin(a*x)" and ended.source_tokens[:2] == ["<sos>", "sin"]


def test_steps_of_a_beam_and_the_errors_a_student_can_make():
    model = writer(max_tgt_len=6)
    beam = decoding_steps(model, "tan(hx)", decoding="beam", beam=2)
    assert beam.decoding == "beam" and beam.expression == "tan(h*x)" and len(beam) == 6
    with pytest.raises(ValueError, match="unknown decoding 'best'"):
        decoding_steps(model, "sin(x)", decoding="best")
    with pytest.raises(ValueError, match="unknown character"):
        decoding_steps(model, "sin(x)+$")
    assert "decoding_steps" in decode.__all__
