"""The shipped model: it loads safely, and batched cached decoding agrees with the slow reference."""

import pytest
import torch

from labutils import load_pairs, load_pretrained
from labutils.decode import translate
from labutils.model import WeightsError


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(2)
    try:
        return load_pretrained()
    except WeightsError:
        pytest.skip("this checkout ships no pretrained weights")


def test_shipped_weights_load_without_pickled_code(model):
    from importlib import resources

    path = resources.files("labutils") / "weights" / "model.pt"
    payload = torch.load(str(path), weights_only=True)  # raises if the file needs pickled code
    assert payload["format"] == "labutils.weights"
    assert payload["source_vocab"][:3] == ["<pad>", "<sos>", "<eos>"]


def test_batched_cached_decoding_agrees_with_one_at_a_time_without_cache(model):
    sources = [source for source, _ in load_pairs("test")[:100]]
    fast = translate(model, sources, batch_size=64, use_cache=True)
    slow = translate(model, sources, batch_size=1, use_cache=False)
    assert sum(a == b for a, b in zip(fast, slow)) >= 99


def test_the_default_config_is_the_shipped_models(model):
    import json
    from importlib import resources

    from labutils.model import ModelConfig, Seq2SeqTransformer

    assert model.config == ModelConfig(), "ModelConfig() is the shipped model's configuration"
    recorded = json.loads((resources.files("labutils") / "weights" / "config.json").read_text())["model"]
    assert {key: getattr(ModelConfig(), key) for key in recorded} == recorded
    fresh = Seq2SeqTransformer(ModelConfig())
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in model.parameters())
