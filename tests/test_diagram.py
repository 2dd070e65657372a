"""The transformer's diagram: every box of the paper's figure named, with its module and its mask."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from labutils.model import ModelConfig
from labutils.plotting import plot_transformer


@pytest.fixture
def texts():
    fig = plot_transformer(ModelConfig(n_encoder_layers=2, n_decoder_layers=5))
    fig.canvas.draw()
    ax = fig.axes[0]  # its axis is off: the texts are the diagram's own and the title
    yield fig, [t for t in [*ax.texts, ax.title] if t.get_text().strip()]
    plt.close(fig)


def test_every_box_of_the_figure_is_named_with_its_module(texts):
    _, found = texts
    words = "\n".join(t.get_text() for t in found)
    for box in ("Input Embedding", "Output Embedding", "Positional Encoding", "Multi-Head Self-Attention",
                "Masked Multi-Head Self-Attention", "Multi-Head Cross-Attention", "Feed Forward", "LayerNorm",
                "Linear", "Softmax"):  # fmt: skip
        assert box in words, box
    for module in ("src_embed", "tgt_embed", "self_attn", "cross_attn", "feed_forward", "norm1", "norm2",
                   "norm3", "encoder_norm", "decoder_norm", "generator"):  # fmt: skip
        assert module in words, module


def test_the_masks_and_the_layer_counts_come_from_the_config(texts):
    _, found = texts
    words = "\n".join(t.get_text() for t in found)
    assert "src_pad_mask" in words and "causal | tgt_pad_mask" in words
    assert "encoder layer × 2" in words and "decoder layer × 5" in words
    without = plot_transformer()
    assert any("× N" in t.get_text() for t in without.findobj(matplotlib.text.Text))
    plt.close(without)


def test_no_two_texts_overlap_and_all_lie_inside_the_figure(texts):
    fig, found = texts
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in found]
    whole = fig.bbox
    for text, box in boxes:
        assert whole.x0 <= box.x0 and box.x1 <= whole.x1 and whole.y0 <= box.y0 and box.y1 <= whole.y1, text
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1 :]:
            assert not box_a.overlaps(box_b), f"{a!r} overlaps {b!r}"


def test_it_saves_and_draws_into_a_given_axes(tmp_path):
    fig, ax = plt.subplots()
    assert plot_transformer(ax=ax, save=tmp_path / "t.png") is fig
    assert (tmp_path / "t.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="png"):
        plot_transformer(save=tmp_path / "t.bmp")
    plt.close("all")
