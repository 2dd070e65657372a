"""Decoding: greedy and beam search (batching, the cache, true log-probabilities), and one typed expression."""

import itertools
import re

import pytest
import torch
from tiny_models import writer

from labutils.decode import beam_search, greedy_decode, predict, translate, translate_beams
from labutils.model import ModelConfig, Seq2SeqTransformer
from labutils.tokens import EOS_IDX, SOS_IDX, SOURCE_VOCAB, TARGET_VOCAB, code, pad_batch

torch.set_num_threads(1)

SOURCES = ["cosh(a*x)**3+tanh(b*x)", "sin(x)", "exp(2*x)", "tan(h*x)+sinh(g*x)", "cos(x)**2"]
MAX_LEN = 16


def small_model(seed: int = 1, eos_bias: float = 2.0, dropout: float = 0.0) -> Seq2SeqTransformer:
    """A random d_model=32 model whose sequences end at varied steps.

    A random model with tied embeddings mostly copies its input token forever; untied, with random output
    biases and ``<eos>`` made likelier by ``eos_bias``, it writes varied series of varied lengths.
    """
    torch.manual_seed(seed)
    sizes = dict(d_model=32, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=64, max_tgt_len=64)
    model = Seq2SeqTransformer(ModelConfig(**sizes, dropout=dropout, tie_embeddings=False)).eval()
    with torch.no_grad():
        model.generator.bias.normal_(0.0, 1.0)
        model.generator.bias[EOS_IDX] += eos_bias
    return model


def source_batch(sources=SOURCES):
    return pad_batch([code(s, SOURCE_VOCAB) for s in sources])


def log_probability(model, source: str, codes: list[int], finished: bool) -> float:
    """Teacher-forced sum of log p(token | prefix) over ``codes`` (and ``<eos>`` if the series finished)."""
    targets = codes + ([EOS_IDX] if finished else [])
    with torch.no_grad():
        logits = model(torch.tensor([code(source, SOURCE_VOCAB)]), torch.tensor([[SOS_IDX] + codes]))
    logp = logits[0, : len(targets)].log_softmax(-1)
    return logp[torch.arange(len(targets)), torch.tensor(targets)].sum().item()


def test_greedy_batched_equals_one_by_one_and_cache_equals_no_cache():
    model = small_model()
    src, src_pad_mask = source_batch()
    batched = greedy_decode(model, src, src_pad_mask, max_len=MAX_LEN)
    lengths = {len(codes) for codes in batched}
    assert len(lengths) > 1, "the test model should finish sequences at different steps"
    assert all(EOS_IDX not in codes and SOS_IDX not in codes[:1] for codes in batched)
    assert greedy_decode(model, src, src_pad_mask, max_len=MAX_LEN, use_cache=False) == batched
    for source, expected in zip(SOURCES, batched, strict=True):
        one_src, one_mask = source_batch([source])
        assert greedy_decode(model, one_src, one_mask, max_len=MAX_LEN) == [expected]
        assert greedy_decode(model, one_src, None, max_len=MAX_LEN, use_cache=False) == [expected]


def test_greedy_takes_the_argmax_at_every_step():
    model = small_model()
    src, src_pad_mask = source_batch(SOURCES[:1])
    codes = greedy_decode(model, src, src_pad_mask, max_len=MAX_LEN)[0]
    finished = len(codes) < MAX_LEN
    with torch.no_grad():
        logits = model(src, torch.tensor([[SOS_IDX] + codes]), src_pad_mask)
    assert logits[0].argmax(-1).tolist()[: len(codes) + finished] == codes + ([EOS_IDX] if finished else [])


def test_greedy_stops_at_once_when_every_sequence_ends():
    model = small_model(eos_bias=100.0)
    src, src_pad_mask = source_batch()
    calls = []
    model.generator.register_forward_hook(lambda *_: calls.append(1))  # one call per decoding step
    assert greedy_decode(model, src, src_pad_mask, max_len=MAX_LEN) == [[]] * len(SOURCES)
    assert len(calls) == 1
    assert translate(model, SOURCES) == [""] * len(SOURCES)


def test_decoding_leaves_a_training_model_training_and_ignores_dropout():
    model = small_model(dropout=0.5).train()
    src, src_pad_mask = source_batch()
    first = greedy_decode(model, src, src_pad_mask, max_len=MAX_LEN)
    assert model.training
    assert greedy_decode(model, src, src_pad_mask, max_len=MAX_LEN) == first


def test_max_len_beyond_the_model_is_refused():
    model = small_model()
    src, src_pad_mask = source_batch()
    with pytest.raises(ValueError, match="max_tgt_len"):
        greedy_decode(model, src, src_pad_mask, max_len=65)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, src, src_pad_mask, beam_size=0)


def test_beam_size_one_equals_greedy():
    model = small_model()
    src, src_pad_mask = source_batch()
    greedy = greedy_decode(model, src, src_pad_mask, max_len=MAX_LEN)
    beams = beam_search(model, src, src_pad_mask, beam_size=1, max_len=MAX_LEN)
    assert [hypotheses[0][0] for hypotheses in beams] == greedy
    assert all(len(hypotheses) == 1 for hypotheses in beams)


def test_beam_scores_are_sorted_true_log_probabilities_and_cache_agrees():
    model = small_model(seed=1)
    src, src_pad_mask = source_batch()
    beams = beam_search(model, src, src_pad_mask, beam_size=4, max_len=MAX_LEN)
    uncached = beam_search(model, src, src_pad_mask, beam_size=4, max_len=MAX_LEN, use_cache=False)
    assert [[c for c, _ in h] for h in uncached] == [[c for c, _ in h] for h in beams]
    flat = [s for h in beams for _, s in h]
    assert [s for h in uncached for _, s in h] == pytest.approx(flat, abs=1e-5)
    for source, hypotheses in zip(SOURCES, beams, strict=True):
        assert len(hypotheses) == 4
        scores = [score for _, score in hypotheses]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(codes) for codes, _ in hypotheses}) == 4  # four different series
        for codes, score in hypotheses:
            assert EOS_IDX not in codes
            finished = len(codes) < MAX_LEN
            assert score == pytest.approx(log_probability(model, source, codes, finished), abs=1e-4)


def test_beam_search_finds_the_exact_best_when_the_beam_holds_everything():
    """With a beam as wide as the vocabulary and two steps, nothing is pruned: compare with brute force."""
    model = small_model(seed=2, eos_bias=1.0)
    source, V = SOURCES[3], len(TARGET_VOCAB)
    src, src_pad_mask = source_batch([source])
    beams = beam_search(model, src, src_pad_mask, beam_size=V, max_len=2)[0]
    everything = [([], log_probability(model, source, [], True))]
    for first, second in itertools.product(range(V), repeat=2):
        if first == EOS_IDX:
            continue
        finished = second == EOS_IDX
        codes = [first] if finished else [first, second]
        everything.append((codes, log_probability(model, source, codes, finished)))
    everything.sort(key=lambda hypothesis: -hypothesis[1])
    assert [score for _, score in beams] == pytest.approx([score for _, score in everything[:V]], abs=1e-4)
    assert {tuple(c) for c, _ in beams[:5]} == {tuple(c) for c, _ in everything[:5]}


def test_translate_keeps_input_order_across_sorted_batches():
    model = small_model()
    sources = SOURCES * 2
    batched = translate(model, sources, batch_size=3, max_len=MAX_LEN)
    alone = [translate(model, [source], max_len=MAX_LEN)[0] for source in SOURCES]
    assert batched == alone * 2
    assert all(isinstance(series, str) for series in batched)
    src, src_pad_mask = source_batch()
    codes = greedy_decode(model, src, src_pad_mask, max_len=MAX_LEN)
    assert alone == [TARGET_VOCAB.decode(c) for c in codes]


def test_translate_with_beams_returns_the_best_beam():
    model = small_model(seed=1)
    beams = translate_beams(model, SOURCES, beam=3, batch_size=2, max_len=MAX_LEN)
    assert all(len(hypotheses) == 3 for hypotheses in beams)
    assert all(isinstance(text, str) and isinstance(score, float) for h in beams for text, score in h)
    assert translate(model, SOURCES, beam=3, batch_size=2, max_len=MAX_LEN) == [h[0][0] for h in beams]


# ------------------------------------------------------------------------------------- one typed expression

LECTURE = "cosh(a*x)**3+tanh(b*x)"


@pytest.fixture(scope="module")
def model():
    return writer()


def test_predict_shows_the_tokens_the_model_wrote(model):
    prediction = predict(model, "tan(hx)+sinh(gx)")
    assert prediction.expression == "tan(h*x)+sinh(g*x)"
    assert prediction.series == "1" * 24  # the model writes until max_tgt_len
    attention = prediction.attention
    assert attention["target_tokens"] == ["<sos>"] + ["1"] * 23  # <sos> + tokens, cut to max_tgt_len
    assert attention["source_tokens"][1:-1] == [
        "tan",
        "(",
        "h",
        "*",
        "x",
        ")",
        "+",
        "sinh",
        "(",
        "g",
        "*",
        "x",
        ")",
    ]
    ls, lt = len(attention["source_tokens"]), len(attention["target_tokens"])
    assert [tuple(w.shape) for w in attention["cross"]] == [(1, 2, lt, ls)] * 2
    assert [tuple(w.shape) for w in attention["encoder"]] == [(1, 2, ls, ls)]
    rows = attention["decoder"][1].sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows))


def test_predict_draws_a_malformed_series_as_written():
    """Unbalanced parentheses cannot be re-read from text; the maps still show the model's own tokens."""
    prediction = predict(writer("(", max_tgt_len=12), LECTURE)
    assert prediction.series == "(" * 12
    assert prediction.attention["target_tokens"] == ["<sos>"] + ["("] * 11


@pytest.mark.parametrize(
    "text, message",
    [
        ("sin(x)+$", "unknown character '$' at position 7"),
        ("sin(x", "unbalanced '('"),
        ("x+", "cannot read 'x+' as an expression"),
        ("exp(1)*x", "which the model cannot read"),  # sympy writes E*x
    ],
)
def test_predict_refuses_what_the_model_cannot_read(model, text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        predict(model, text)


@pytest.mark.parametrize(
    "text, outside",
    [("tan(hx)+sinh(gx)", None), ("sin(x)", None), ("x*sin(a*x)", "x stands outside the functions"),
     ("sin(12*a*x)", "the argument 12*a*x of sin")],
)  # fmt: skip
def test_a_prediction_says_why_its_expression_is_outside_the_family(model, text, outside):
    found = predict(model, text).outside
    assert found == outside if outside is None else outside in found
