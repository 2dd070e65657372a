"""The model: attention against PyTorch's own, masks, caches, the attention contract, saving and loading."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import labutils
from labutils.model import (
    DecoderLayer,
    EncoderLayer,
    LearnedPositionalEncoding,
    ModelConfig,
    MultiHeadAttention,
    Seq2SeqTransformer,
    SinusoidalPositionalEncoding,
    WeightsError,
    attention_for,
    causal_mask,
    evaluating,
    load_pretrained,
    load_weights,
    save_weights,
    scaled_dot_product_attention,
)
from labutils.tokens import SOURCE_VOCAB, TARGET_VOCAB, code, collate

torch.set_num_threads(1)

D, H = 32, 4
PAIRS = [
    ("cosh(a*x)**3+tanh(b*x)", "1+3*a**2*x**2/2+b*x+O(x**6)"),
    ("sin(x)", "x-x**3/6+O(x**6)"),
    ("exp(2*x)", "1+2*x+2*x**2+O(x**6)"),
]


def small_config(**changes) -> ModelConfig:
    sizes = dict(d_model=D, n_heads=H, n_encoder_layers=2, n_decoder_layers=2, d_ff=64, dropout=0.0)
    return ModelConfig(**{**sizes, **changes})


def small_model(seed: int = 0, **changes) -> Seq2SeqTransformer:
    torch.manual_seed(seed)
    return Seq2SeqTransformer(small_config(**changes)).eval()


def batch():
    """A padded batch ``src, tgt_in, src_pad_mask, tgt_in_pad_mask``; ``tgt_in`` is tgt minus its last."""
    src, tgt, src_pad_mask, tgt_pad_mask = collate(
        [(code(s, SOURCE_VOCAB), code(t, TARGET_VOCAB)) for s, t in PAIRS]
    )
    return src, tgt[:, :-1], src_pad_mask, tgt_pad_mask[:, :-1]


def copy_into_torch(mine: MultiHeadAttention) -> torch.nn.MultiheadAttention:
    theirs = torch.nn.MultiheadAttention(D, H, batch_first=True).eval()
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([mine.q_proj.weight, mine.k_proj.weight, mine.v_proj.weight]))
        theirs.in_proj_bias.copy_(torch.cat([mine.q_proj.bias, mine.k_proj.bias, mine.v_proj.bias]))
        theirs.out_proj.weight.copy_(mine.out_proj.weight)
        theirs.out_proj.bias.copy_(mine.out_proj.bias)
    return theirs


# ------------------------------------------------------------------------------------------------ attention


@pytest.mark.parametrize("need_weights", [True, False])
def test_multi_head_attention_equals_torch_with_key_padding(need_weights):
    torch.manual_seed(0)
    mine = MultiHeadAttention(D, H).eval()
    theirs = copy_into_torch(mine)
    query, memory = torch.randn(2, 5, D), torch.randn(2, 7, D)
    key_pad_mask = torch.zeros(2, 7, dtype=torch.bool)
    key_pad_mask[0, 4:] = True
    out, weights = mine(query, memory, memory, key_pad_mask, need_weights=need_weights)
    expected, expected_weights = theirs(
        query, memory, memory, key_padding_mask=key_pad_mask, average_attn_weights=False
    )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    if need_weights:
        assert weights.shape == (2, H, 5, 7)
        torch.testing.assert_close(weights, expected_weights, atol=1e-5, rtol=1e-5)
    else:
        assert weights is None


def test_multi_head_attention_equals_torch_with_causal_mask():
    torch.manual_seed(1)
    mine = MultiHeadAttention(D, H).eval()
    theirs = copy_into_torch(mine)
    x = torch.randn(3, 6, D)
    key_pad_mask = torch.zeros(3, 6, dtype=torch.bool)
    key_pad_mask[1, 4:] = True
    for pad in (None, key_pad_mask):
        out, weights = mine(x, x, x, pad, causal=True, need_weights=True)
        expected, expected_weights = theirs(
            x, x, x, key_padding_mask=pad, attn_mask=causal_mask(6), average_attn_weights=False
        )
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(weights, expected_weights, atol=1e-5, rtol=1e-5)
        fast, _ = mine(x, x, x, pad, causal=True)
        torch.testing.assert_close(fast, out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["none", "padding", "causal", "both"])
def test_explicit_attention_equals_torch_sdpa(kind):
    torch.manual_seed(2)
    Q, K, V = torch.randn(2, H, 5, 8), torch.randn(2, H, 5, 8), torch.randn(2, H, 5, 8)
    mask = None
    if kind in ("padding", "both"):
        mask = torch.zeros(2, 1, 1, 5, dtype=torch.bool)
        mask[1, ..., 3:] = True
    if kind in ("causal", "both"):
        mask = causal_mask(5) if mask is None else mask | causal_mask(5)
    out, weights = scaled_dot_product_attention(Q, K, V, mask)
    expected = F.scaled_dot_product_attention(Q, K, V, attn_mask=None if mask is None else ~mask)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, H, 5))


def test_causal_mask_is_true_strictly_above_the_diagonal():
    mask = causal_mask(4)
    assert mask.dtype == torch.bool and mask.shape == (4, 4)
    assert mask.tolist() == [[j > i for j in range(4)] for i in range(4)]


@settings(max_examples=40, deadline=None)
@given(
    Lq=st.integers(1, 7),
    Lk=st.integers(1, 7),
    pad=st.lists(st.booleans(), min_size=7, max_size=7),
    seed=st.integers(0, 1000),
)
def test_attention_rows_sum_to_one_and_masked_weights_are_exactly_zero(Lq, Lk, pad, seed):
    torch.manual_seed(seed)
    Q, K, V = torch.randn(1, 2, Lq, 4) * 3, torch.randn(1, 2, Lk, 4) * 3, torch.randn(1, 2, Lk, 4)
    key_pad = torch.tensor(pad[:Lk])[None, None, None, :]  # (1, 1, 1, Lk)
    mask = key_pad | torch.ones(Lq, Lk, dtype=torch.bool).triu(1)
    out, weights = scaled_dot_product_attention(Q, K, V, mask)
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()
    assert (weights[mask.expand_as(weights)] == 0).all()
    allowed_somewhere = ~mask.all(-1).expand(1, 2, Lq)  # (1, 2, Lq)
    sums = weights.sum(-1)
    torch.testing.assert_close(sums[allowed_somewhere], torch.ones_like(sums[allowed_somewhere]))
    assert (sums[~allowed_somewhere] == 0).all()  # a query that may see nothing gets nothing, not NaN


def test_fully_masked_rows_give_finite_zeros_on_both_paths():
    mha = MultiHeadAttention(D, H).eval()
    x = torch.randn(1, 3, D)
    everything = torch.ones(1, 3, dtype=torch.bool)
    slow, weights = mha(x, x, x, everything, need_weights=True)
    fast, _ = mha(x, x, x, everything)
    assert (weights == 0).all()
    torch.testing.assert_close(slow, fast)
    assert torch.isfinite(fast).all()


# -------------------------------------------------------------------------------------- positional encodings


def copy_layer_into_torch(mine: torch.nn.Module, theirs: torch.nn.Module) -> torch.nn.Module:
    """``theirs`` (PyTorch's encoder or decoder layer) with the weights of ``mine``, in eval mode."""
    attention = [("self_attn", "self_attn"), ("cross_attn", "multihead_attn")]
    with torch.no_grad():
        for my_name, their_name in attention:
            if hasattr(mine, my_name):
                m, t = getattr(mine, my_name), getattr(theirs, their_name)
                t.in_proj_weight.copy_(torch.cat([m.q_proj.weight, m.k_proj.weight, m.v_proj.weight]))
                t.in_proj_bias.copy_(torch.cat([m.q_proj.bias, m.k_proj.bias, m.v_proj.bias]))
                t.out_proj.load_state_dict(m.out_proj.state_dict())
        theirs.linear1.load_state_dict(mine.feed_forward[0].state_dict())
        theirs.linear2.load_state_dict(mine.feed_forward[3].state_dict())
        for norm in ("norm1", "norm2", "norm3"):
            if hasattr(mine, norm):
                getattr(theirs, norm).load_state_dict(getattr(mine, norm).state_dict())
                getattr(theirs, norm).weight.normal_(1.0, 0.3)  # distinct norms: a swapped one would show
                getattr(mine, norm).load_state_dict(getattr(theirs, norm).state_dict())
    return theirs.eval()


def test_encoder_layer_equals_torchs_with_copied_weights():
    torch.manual_seed(0)
    mine = EncoderLayer(D, H, 64, dropout=0.0).eval()
    theirs = torch.nn.TransformerEncoderLayer(D, H, 64, dropout=0.0, batch_first=True, norm_first=True)
    theirs = copy_layer_into_torch(mine, theirs)
    x = torch.randn(3, 7, D)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 5:], pad[2, 3:] = True, True
    with torch.no_grad():
        torch.testing.assert_close(mine(x)[0], theirs(x), atol=1e-5, rtol=1e-4)
        keep = ~pad  # PyTorch's fast path may leave <pad> positions' outputs as they come
        torch.testing.assert_close(
            mine(x, pad)[0][keep], theirs(x, src_key_padding_mask=pad)[keep], atol=1e-5, rtol=1e-4
        )


def test_decoder_layer_equals_torchs_with_copied_weights():
    torch.manual_seed(1)
    mine = DecoderLayer(D, H, 64, dropout=0.0).eval()
    theirs = torch.nn.TransformerDecoderLayer(D, H, 64, dropout=0.0, batch_first=True, norm_first=True)
    theirs = copy_layer_into_torch(mine, theirs)
    x, memory = torch.randn(3, 6, D), torch.randn(3, 9, D)
    tgt_pad, src_pad = torch.zeros(3, 6, dtype=torch.bool), torch.zeros(3, 9, dtype=torch.bool)
    tgt_pad[1, 4:], src_pad[2, 5:] = True, True
    with torch.no_grad():
        ours, _, _ = mine(x, memory, src_pad, tgt_pad)
        expected = theirs(
            x,
            memory,
            tgt_mask=causal_mask(6),
            tgt_key_padding_mask=tgt_pad,
            memory_key_padding_mask=src_pad,
            tgt_is_causal=True,
        )
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)
        ours_plain, _, _ = mine(x, memory)
        torch.testing.assert_close(
            ours_plain, theirs(x, memory, tgt_mask=causal_mask(6), tgt_is_causal=True), atol=1e-5, rtol=1e-4
        )


def test_evaluating_switches_dropout_off_and_restores_the_mode():
    model = small_model(dropout=0.5).train()
    with evaluating(model) as same:
        assert same is model and not model.training
        assert not any(module.training for module in model.modules())
    assert model.training and all(module.training for module in model.modules())
    model.eval()
    with pytest.raises(RuntimeError), evaluating(model):
        raise RuntimeError("inside")
    assert not model.training


def test_a_cache_takes_no_target_padding_mask():
    model = small_model()
    src, tgt, src_pad_mask, tgt_pad_mask = batch()
    memory = model.encode(src, src_pad_mask)
    with pytest.raises(ValueError, match="takes no tgt_pad_mask"):
        model.decode(tgt[:, :1], memory, src_pad_mask, tgt_pad_mask[:, :1], cache=model.new_cache())


def test_sinusoidal_positional_encoding_matches_the_formula():
    d_model, max_len = 16, 50
    pe = SinusoidalPositionalEncoding(d_model, max_len).pe
    assert pe.shape == (max_len, d_model)
    for pos in (0, 1, 7, 49):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


@pytest.mark.parametrize("Encoding", [SinusoidalPositionalEncoding, LearnedPositionalEncoding])
def test_positional_encoding_offset_continues_where_it_left_off(Encoding):
    encoding = Encoding(8, 10)
    x = torch.zeros(1, 6, 8)
    whole = encoding(x)
    assert torch.equal(encoding(x[:, 2:4], offset=2), whole[:, 2:4])
    with pytest.raises(ValueError, match="at most 10 positions"):
        encoding(x, offset=5)


# ------------------------------------------------------------------------------------------------- model


def test_config_validation_says_what_is_wrong():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        ModelConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="positional"):
        ModelConfig(positional="rotary")
    with pytest.raises(ValueError, match="dropout"):
        ModelConfig(dropout=1.5)
    with pytest.raises(ValueError, match="n_heads"):
        ModelConfig(n_heads=0)


def test_default_config_uses_the_package_vocabularies():
    config = ModelConfig()
    assert (config.src_vocab_size, config.tgt_vocab_size) == (37, 30)


@pytest.mark.parametrize("changes", [{}, {"norm_first": False}, {"positional": "learned"}])
def test_attention_contract_shapes_and_fast_path_agreement(changes):
    model = small_model(**changes)
    src, tgt, src_pad_mask, tgt_pad_mask = batch()
    B, Ls, Lt = src.size(0), src.size(1), tgt.size(1)
    logits, attn = model(src, tgt, src_pad_mask, tgt_pad_mask, return_attention=True)
    assert logits.shape == (B, Lt, len(TARGET_VOCAB))
    assert set(attn) == {"encoder", "decoder", "cross"}
    assert [w.shape for w in attn["encoder"]] == [(B, H, Ls, Ls)] * 2
    assert [w.shape for w in attn["decoder"]] == [(B, H, Lt, Lt)] * 2
    assert [w.shape for w in attn["cross"]] == [(B, H, Lt, Ls)] * 2
    fast = model(src, tgt, src_pad_mask, tgt_pad_mask)
    assert isinstance(fast, torch.Tensor)
    torch.testing.assert_close(fast, logits, atol=1e-5, rtol=1e-5)
    for w in attn["decoder"]:
        assert (w.triu(1) == 0).all()  # the causal upper triangle, exactly
    for w in attn["encoder"] + attn["cross"]:
        assert (w[src_pad_mask[:, None, None, :].expand_as(w)] == 0).all()  # <pad> keys, exactly
    for w in attn["encoder"] + attn["decoder"] + attn["cross"]:
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))


def test_padding_does_not_change_the_logits_of_an_example():
    model = small_model()
    src, tgt, src_pad_mask, tgt_pad_mask = batch()
    logits = model(src, tgt, src_pad_mask, tgt_pad_mask)
    s, t = code(PAIRS[1][0], SOURCE_VOCAB), code(PAIRS[1][1], TARGET_VOCAB)[:-1]
    alone = model(torch.tensor([s]), torch.tensor([t]))
    torch.testing.assert_close(logits[1:2, : len(t)], alone, atol=1e-5, rtol=1e-5)


def test_future_tokens_do_not_change_earlier_logits():
    model = small_model()
    src, tgt, src_pad_mask, _ = batch()
    changed = tgt.clone()
    changed[:, 5:] = 7
    torch.testing.assert_close(
        model(src, tgt, src_pad_mask)[:, :5], model(src, changed, src_pad_mask)[:, :5], atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("changes", [{}, {"norm_first": False, "positional": "learned"}])
def test_cached_decoding_equals_full_decoding(changes):
    model = small_model(**changes)
    src, tgt, src_pad_mask, _ = batch()
    memory = model.encode(src, src_pad_mask)
    full = model.decode(tgt, memory, src_pad_mask)
    cache = model.new_cache()
    steps = [model.decode(tgt[:, i : i + 1], memory, src_pad_mask, cache=cache) for i in range(tgt.size(1))]
    assert cache.length == tgt.size(1)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cache_reorder_selects_batch_rows():
    model = small_model()
    src, tgt, src_pad_mask, _ = batch()
    memory = model.encode(src, src_pad_mask)
    cache = model.new_cache()
    model.decode(tgt[:, :4], memory, src_pad_mask, cache=cache)  # a prefix of 4 in one call
    index = torch.tensor([2, 0, 2])
    cache.reorder(index)
    step = model.decode(tgt[index, 4:5], memory[index], src_pad_mask[index], cache=cache)
    full = model.decode(tgt[index, :5], memory[index], src_pad_mask[index])
    torch.testing.assert_close(step[:, 0], full[:, 4], atol=1e-5, rtol=1e-5)


def test_long_targets_work_and_too_long_inputs_are_refused():
    model = small_model()
    src = torch.tensor([code("sin(x)", SOURCE_VOCAB)])
    assert model(src, torch.ones(1, 400, dtype=torch.long)).shape == (1, 400, len(TARGET_VOCAB))
    with pytest.raises(ValueError, match="max_src_len"):
        model(torch.ones(1, 65, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="max_tgt_len"):
        model(src, torch.ones(1, 513, dtype=torch.long))
    with pytest.raises(ValueError, match="boolean"):
        model(src, src, src_pad_mask=(src == 0).float())


def test_tied_embeddings_share_one_matrix():
    model = small_model(tie_embeddings=True)
    assert model.generator.weight is model.tgt_embed.weight
    untied = small_model(tie_embeddings=False)
    assert untied.generator.weight is not untied.tgt_embed.weight


def test_attention_for_labels_match_the_axes():
    model = small_model()
    model.train()
    result = attention_for(model, "cosh(a*x)**3", "1+3*a**2*x**2/2")
    assert model.training  # left as it was found
    assert result["source_tokens"][:3] == ["<sos>", "cosh", "("] and result["source_tokens"][-1] == "<eos>"
    assert result["target_tokens"][:3] == ["<sos>", "1", "+"]
    Ls, Lt = len(result["source_tokens"]), len(result["target_tokens"])
    assert all(w.shape == (1, H, Ls, Ls) for w in result["encoder"])
    assert all(w.shape == (1, H, Lt, Lt) for w in result["decoder"])
    assert all(w.shape == (1, H, Lt, Ls) for w in result["cross"])
    empty = attention_for(model, "sin(x)", "")
    assert empty["target_tokens"] == ["<sos>"] and empty["cross"][0].shape == (1, H, 1, 6)


# ------------------------------------------------------------------------------------------ saving, loading


@pytest.mark.parametrize("changes", [{}, {"positional": "learned", "tie_embeddings": False}])
def test_save_load_round_trip_gives_identical_logits(tmp_path, changes):
    model = small_model(**changes)
    src, tgt, src_pad_mask, tgt_pad_mask = batch()
    path = save_weights(model, tmp_path / "run" / "best.pt", step=12)
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]  # no temporary file left behind
    loaded = load_weights(path)
    assert not loaded.training and loaded.config == model.config
    assert torch.equal(
        loaded(src, tgt, src_pad_mask, tgt_pad_mask), model(src, tgt, src_pad_mask, tgt_pad_mask)
    )
    from_folder = load_weights(tmp_path / "run")
    assert torch.equal(from_folder.generator.bias, model.generator.bias)
    payload = torch.load(path, weights_only=True)
    assert payload["format_version"] == 1 and payload["labutils_version"] == labutils.__version__
    assert payload["step"] == 12 and payload["target_vocab"] == TARGET_VOCAB.itos


def test_bad_weights_files_give_weights_error_naming_the_file(tmp_path):
    good = save_weights(small_model(), tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a model at all" * 50)
    other = tmp_path / "other.pt"
    torch.save({"model": {}}, other)
    newer = tmp_path / "newer.pt"
    payload = torch.load(good, weights_only=True)
    torch.save({**payload, "format_version": 2}, newer)
    vocab = tmp_path / "vocab.pt"
    torch.save({**payload, "target_vocab": payload["target_vocab"][::-1]}, vocab)
    cases = {
        tmp_path / "missing.pt": "no such",
        tmp_path: "without best.pt",
        truncated: "not a readable",
        garbage: "not a readable",
        other: "not a labutils weights file",
        newer: "newer",
        vocab: "target vocabulary",
    }
    for path, reason in cases.items():
        with pytest.raises(WeightsError, match=reason) as error:
            load_weights(path)
        message = str(error.value)
        assert str(path) in message and "\n" not in message


def test_load_pretrained_explains_when_nothing_is_shipped():
    try:
        model = load_pretrained()
    except WeightsError as error:
        assert "ships no pretrained weights" in str(error)
    else:
        assert isinstance(model, Seq2SeqTransformer) and not model.training
