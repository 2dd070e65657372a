"""The decoder-only model: its layer against PyTorch's, the one sequence, padding, the cache, the loss, files."""

import json

import pytest
import torch
import torch.nn.functional as F
from test_model import copy_layer_into_torch

from labutils import gpt, models
from labutils.decode import beam_search, greedy_decode, translate
from labutils.gpt import SEP, SEQUENCE_VOCAB, DecoderOnlyConfig, DecoderOnlyTransformer, sequence_for
from labutils.model import EncoderLayer, WeightsError, attention_for, causal_mask, load_weights, save_weights
from labutils.tokens import EOS_IDX, PAD_IDX, SOURCE_VOCAB, TARGET_VOCAB, code, collate, tokenize

torch.set_num_threads(1)

D, H = 32, 4
PAIRS = [
    ("cosh(a*x)**3+tanh(b*x)", "1+3*a**2*x**2/2+b*x+O(x**6)"),
    ("sin(x)", "x-x**3/6+O(x**6)"),
    ("exp(2*x)", "1+2*x+2*x**2+O(x**6)"),
]


def small_model(seed: int = 0, **changes) -> DecoderOnlyTransformer:
    torch.manual_seed(seed)
    fields = {"d_model": D, "n_heads": H, "n_layers": 2, "d_ff": 64, **changes}
    return DecoderOnlyTransformer(DecoderOnlyConfig(**fields)).eval()


def batch():
    return collate([(code(s, SOURCE_VOCAB), code(t, TARGET_VOCAB)) for s, t in PAIRS])


def whole_sequence_logits(model: DecoderOnlyTransformer, source: str, series: str) -> torch.Tensor:
    """Logits at every position of ``<sos> source <sep> series`` written without gaps, one example."""
    inputs, _, _ = sequence_for(source, series)
    hidden, _ = model.run(torch.tensor([inputs]))
    return model.logits(hidden)[0]  # (L, V)


def test_a_causal_layer_equals_torchs_encoder_layer_with_a_causal_mask_and_copied_weights():
    torch.manual_seed(0)
    mine = EncoderLayer(D, H, 64, dropout=0.0).eval()
    theirs = torch.nn.TransformerEncoderLayer(D, H, 64, dropout=0.0, batch_first=True, norm_first=True)
    theirs = copy_layer_into_torch(mine, theirs)
    x = torch.randn(3, 9, D)
    pad = torch.zeros(3, 9, dtype=torch.bool)
    pad[1, 6:], pad[2, 4:] = True, True
    with torch.no_grad():
        expected = theirs(x, src_mask=causal_mask(9), is_causal=True)
        torch.testing.assert_close(mine(x, causal=True)[0], expected, atol=1e-5, rtol=1e-4)
        keep = ~pad
        expected = theirs(x, src_mask=causal_mask(9), src_key_padding_mask=pad, is_causal=True)
        torch.testing.assert_close(mine(x, pad, causal=True)[0][keep], expected[keep], atol=1e-5, rtol=1e-4)
        # and the weights it shows are those it used: causal, rows of one
        _, weights = mine(x, pad, need_weights=True, causal=True)
        assert (weights.triu(1) == 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, H, 9))


def test_the_vocabulary_is_the_union_of_source_and_series_tokens_and_the_separator():
    assert set(SEQUENCE_VOCAB.itos) == set(SOURCE_VOCAB.itos) | set(TARGET_VOCAB.itos) | {SEP}
    assert len(SEQUENCE_VOCAB.itos) == len(set(SEQUENCE_VOCAB.itos))
    assert SEQUENCE_VOCAB.itos[:3] == ["<pad>", "<sos>", "<eos>"]


def test_sequence_for_shifts_by_one_and_counts_only_the_series_and_eos():
    source, series = PAIRS[0]
    inputs, targets, counted = sequence_for(source, series)
    tokens = ["<sos>", *tokenize(source), SEP, *tokenize(series), "<eos>"]
    assert SEQUENCE_VOCAB.tokens_of(inputs) == tokens[:-1]
    assert SEQUENCE_VOCAB.tokens_of(targets) == tokens[1:]
    assert len(inputs) == len(targets) == len(counted)
    scored = [t for t, c in zip(SEQUENCE_VOCAB.tokens_of(targets), counted) if c]
    assert scored == [*tokenize(series), "<eos>"]  # the series and <eos>; never the source nor <sep>


def test_a_batch_gives_each_row_the_logits_of_its_sequence_alone():
    """Sources padded at their end and the series after the longest: positions and masks hide the gap."""
    model = small_model()
    src, tgt, src_pad_mask, tgt_pad_mask = batch()
    logits = model(src, tgt[:, :-1], src_pad_mask, tgt_pad_mask[:, :-1])  # (B, Lt, V)
    for row, (source, series) in enumerate(PAIRS):
        alone = whole_sequence_logits(model, source, series)
        _, _, counted = sequence_for(source, series)
        n = sum(counted)
        torch.testing.assert_close(
            logits[row, :n], alone[torch.tensor(counted)], atol=1e-5, rtol=1e-5
        )


def test_the_training_loss_counts_the_series_tokens_and_eos_only():
    model = small_model()
    src, tgt, src_pad_mask, tgt_pad_mask = batch()
    logits = model(src, tgt[:, :-1], src_pad_mask, tgt_pad_mask[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD_IDX)
    # The same loss from the single sequences, scored where the mask says: series tokens and <eos>.
    total, count = 0.0, 0
    for source, series in PAIRS:
        alone = whole_sequence_logits(model, source, series)
        _, targets, counted = sequence_for(source, series)
        scored = torch.tensor(counted)
        series_codes = [TARGET_VOCAB.stoi[SEQUENCE_VOCAB.itos[t]] for t in torch.tensor(targets)[scored]]
        total += F.cross_entropy(alone[scored], torch.tensor(series_codes), reduction="sum")
        count += int(scored.sum())
        assert series_codes[-1] == EOS_IDX
    torch.testing.assert_close(loss, total / count, atol=1e-5, rtol=1e-5)


def test_a_series_token_never_changes_what_came_before_it():
    model = small_model()
    src, tgt, src_pad_mask, _ = batch()
    changed = tgt.clone()
    changed[:, 5:] = TARGET_VOCAB.stoi["7"]
    torch.testing.assert_close(model(src, tgt, src_pad_mask)[:, :5], model(src, changed, src_pad_mask)[:, :5])


def test_the_source_part_sees_only_itself():
    model = small_model()
    attn = attention_for(model, *PAIRS[0])
    Ls = len(attn["source_tokens"])
    for weights in attn["decoder"]:
        assert (weights[..., :Ls, Ls:] == 0).all()  # no source position looks at the series
        assert (weights.triu(1) == 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    for weights, cross in zip(attn["decoder"], attn["cross"]):
        torch.testing.assert_close(cross, weights[..., Ls:, :Ls])
    assert attn["sequence_tokens"] == attn["source_tokens"] + attn["target_tokens"]
    assert attn["source_tokens"][0] == "<sos>" and attn["target_tokens"][0] == SEP
    assert "encoder" not in attn
    # the maps are those of the pass that decodes: its cross rows are decode's, for the same tokens
    src = torch.tensor([code(PAIRS[0][0], SOURCE_VOCAB)])
    tgt = torch.tensor([code(PAIRS[0][1], TARGET_VOCAB)[:-1]])
    _, decoded = model.decode(tgt, model.encode(src), return_attention=True)
    for theirs, mine in zip(decoded["cross"], attn["cross"]):
        torch.testing.assert_close(theirs[..., : mine.size(-1)], mine)


@pytest.mark.parametrize("changes", [{}, {"norm_first": False, "positional": "learned", "tie_embeddings": False}])
def test_cached_decoding_equals_full_decoding(changes):
    model = small_model(**changes)
    src, tgt, src_pad_mask, _ = batch()
    tgt[0, 3] = PAD_IDX  # a token the model wrote is read as written, even a <pad>: both ways alike
    prompt = model.encode(src, src_pad_mask)
    full = model.decode(tgt, prompt)
    cache = model.new_cache()
    steps = [model.decode(tgt[:, i : i + 1], prompt, cache=cache) for i in range(tgt.size(1))]
    assert cache.length == prompt.size(1) + tgt.size(1)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_greedy_and_beam_decoding_with_the_cache_equal_those_without_and_batched_equal_alone():
    model = small_model(seed=3)
    src, _, src_pad_mask, _ = batch()
    cached = greedy_decode(model, src, src_pad_mask, max_len=25)
    assert cached == greedy_decode(model, src, src_pad_mask, max_len=25, use_cache=False)
    for row, (source, _) in enumerate(PAIRS):
        alone = greedy_decode(model, torch.tensor([code(source, SOURCE_VOCAB)]), None, max_len=25)
        assert alone[0] == cached[row]
    beams = beam_search(model, src, src_pad_mask, 3, max_len=12)
    plain = beam_search(model, src, src_pad_mask, 3, max_len=12, use_cache=False)
    for mine, theirs in zip(beams, plain):
        assert [c for c, _ in mine] == [c for c, _ in theirs]
        torch.testing.assert_close(torch.tensor([s for _, s in mine]), torch.tensor([s for _, s in theirs]))


def test_too_long_inputs_are_refused_with_a_one_line_reason():
    model = small_model(max_src_len=8, max_tgt_len=10)
    with pytest.raises(ValueError, match="max_src_len"):
        model.encode(torch.tensor([code("cosh(a*x)**3+tanh(b*x)", SOURCE_VOCAB)]))
    prompt = model.encode(torch.tensor([code("sin(x)", SOURCE_VOCAB)]))
    with pytest.raises(ValueError, match="max_tgt_len.*max_len"):
        model.decode(torch.ones(1, 11, dtype=torch.long), prompt)


def test_config_validation_says_what_is_wrong():
    with pytest.raises(ValueError, match="n_layers"):
        DecoderOnlyConfig(n_layers=0)
    with pytest.raises(ValueError, match="divisible"):
        DecoderOnlyConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="positional"):
        DecoderOnlyConfig(positional="rotary")


def test_save_load_round_trip_and_each_loader_names_the_other_kind(tmp_path):
    model = small_model(seed=5)
    path = save_weights(model, tmp_path / "gpt.pt")
    again = models.load_weights(path)
    assert isinstance(again, DecoderOnlyTransformer)
    src, tgt, src_pad_mask, tgt_pad_mask = batch()
    torch.testing.assert_close(again(src, tgt, src_pad_mask, tgt_pad_mask), model(src, tgt, src_pad_mask, tgt_pad_mask))
    with pytest.raises(WeightsError, match="decoder-only model, not the encoder-decoder"):
        load_weights(path)  # the encoder–decoder's own loader
    enc_dec = models.build("encoder-decoder", {"d_model": D, "n_heads": H, "n_encoder_layers": 1,
                                               "n_decoder_layers": 1, "d_ff": 64})  # fmt: skip
    other = save_weights(enc_dec, tmp_path / "seq2seq.pt")
    with pytest.raises(WeightsError, match="encoder-decoder model, not the decoder-only"):
        gpt.load_weights(other)
    assert isinstance(models.load_weights(other), type(enc_dec))


def test_unknown_model_names_are_refused_with_the_names_that_exist():
    with pytest.raises(ValueError, match="unknown model 'gpt'.*encoder-decoder, decoder-only"):
        models.check_kind("gpt")


def test_the_shipped_decoder_only_model_writes_the_lectures_series():
    from labutils.data import parse_expression, series_text
    from labutils.metrics import OK, check_equivalence

    model = models.load_shipped("decoder-only")
    assert isinstance(model, DecoderOnlyTransformer)
    assert model.config == DecoderOnlyConfig()  # the shipped model is the default configuration
    recorded = json.loads((models.shipped_weights_path("decoder-only").parent / "config.json").read_text())
    assert recorded["architecture"] == "decoder-only"
    assert {key: getattr(DecoderOnlyConfig(), key) for key in recorded["model"]} == recorded["model"]
    size = sum(p.numel() for p in model.parameters())
    assert models.shipped_weights_path("decoder-only").stat().st_size < 3 * 2**20
    assert size * 2 < 3 * 2**20  # half precision fits the package's 3 MB
    sources = ["cosh(a*x)**3+tanh(b*x)", "tan(h*x)+sinh(g*x)"]
    written = translate(model, sources)
    truths = [series_text(parse_expression(s)) for s in sources]
    assert check_equivalence(written, truths) == [OK, OK]
