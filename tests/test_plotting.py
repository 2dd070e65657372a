"""Plots: what they draw (the image data, masks, labels, titles), what they refuse, and what they write."""

import matplotlib

matplotlib.use("Agg")

import ast  # noqa: E402
import shutil  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import labutils.plotting as plotting  # noqa: E402
from labutils.plotting import (  # noqa: E402
    plot_attention,
    plot_attention_grid,
    plot_losses,
    plot_mask,
    plot_positional_encoding,
)

SOURCE = ["<sos>", "cosh", "(", "a", "*", "x", ")", "**", "3", "+", "tanh", "(", "b", "*", "x", ")", "<eos>"]
TARGET = ["<sos>", "1", "+", "b", "*", "x", "+", "3", "*", "a", "**", "2"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def softmax_rows(rng, shape, causal=False):
    scores = rng.normal(size=shape) * 2
    if causal:
        scores = np.where(np.triu(np.ones(shape[-2:], bool), 1), -np.inf, scores)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def image_of(ax):
    (image,) = ax.images
    return image.get_array()


def attention_dict(rng, n_layers=2, n_heads=4):
    ls, lt = len(SOURCE), len(TARGET)
    tensor = lambda shape, causal=False: torch.tensor(softmax_rows(rng, shape, causal))  # noqa: E731
    return {
        "encoder": [tensor((1, n_heads, ls, ls)) for _ in range(n_layers)],
        "decoder": [tensor((1, n_heads, lt, lt), causal=True) for _ in range(n_layers)],
        "cross": [tensor((1, n_heads, lt, ls)) for _ in range(n_layers)],
        "source_tokens": SOURCE,
        "target_tokens": TARGET,
    }


# ---------------------------------------------------------------------------------------- one head


def test_cross_attention_draws_the_weights_with_a_colorbar():
    w = softmax_rows(np.random.default_rng(0), (len(TARGET), len(SOURCE)))
    fig = plot_attention(w, TARGET, SOURCE)
    assert isinstance(fig, Figure)
    ax, bar = fig.axes  # the heatmap and its colorbar
    assert ax.images[0].colorbar.ax is bar
    data = image_of(ax)
    assert not np.ma.getmaskarray(data).any()
    np.testing.assert_allclose(data.data, w)
    assert ax.images[0].get_clim() == (0.0, 1.0)


def test_labels_are_distinct_when_tokens_repeat():
    w = softmax_rows(np.random.default_rng(1), (len(TARGET), len(SOURCE)))
    ax = plot_attention(w, TARGET, SOURCE).axes[0]
    x_labels = [t.get_text() for t in ax.get_xticklabels()]
    y_labels = [t.get_text() for t in ax.get_yticklabels()]
    assert x_labels == [f"{i}:{t}" for i, t in enumerate(SOURCE)]  # x: keys, the source
    predicted = TARGET[1:] + ["<eos>"]
    assert y_labels == [f"{i}:{t} → {p}" for i, (t, p) in enumerate(zip(TARGET, predicted))]  # y: queries
    assert len(set(x_labels)) == len(x_labels) and "5:x" in x_labels and "14:x" in x_labels


@pytest.mark.parametrize("kind", ["decoder", "cross"])
def test_decoder_rows_say_what_they_read_and_what_they_predict(kind):
    """The query at position i reads target token i and predicts token i + 1: the row's label says both."""
    n = len(TARGET)
    w = softmax_rows(np.random.default_rng(1), (n, n if kind == "decoder" else len(SOURCE)), causal=True)
    keys = TARGET if kind == "decoder" else SOURCE
    ax = plot_attention(w, TARGET, keys, kind=kind, head=None, landscape=False).axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows[0] == "0:<sos> → 1" and rows[4] == "4:* → x" and rows[-1] == f"{n - 1}:2 → <eos>"
    assert ax.get_ylabel() == "query (target token read → token predicted)"
    if kind == "decoder":  # the keys are what was read: key i is the token row i reads
        assert [t.get_text() for t in ax.get_xticklabels()] == [f"{i}:{t}" for i, t in enumerate(TARGET)]
    grid = plot_attention_grid(np.stack([w, w]), TARGET, keys, kind=kind, landscape=False)
    assert [t.get_text() for t in grid.axes[0].get_yticklabels()] == rows
    assert "read → token predicted" in grid.get_supylabel()


def test_a_grids_mask_legend_overlaps_no_text():
    n = len(TARGET)
    w = softmax_rows(np.random.default_rng(1), (4, n, n), causal=True)
    fig = plot_attention_grid(w, TARGET, TARGET, kind="decoder", layers=0)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["future key (causal)"]
    box = legend.get_window_extent(renderer)
    texts = [fig._supxlabel, fig._supylabel, fig._suptitle] + [
        label for ax in fig.axes for label in (*ax.get_xticklabels(), *ax.get_yticklabels(), ax.title)
    ]
    overlapping = [
        t.get_text() for t in texts if t.get_text() and box.overlaps(t.get_window_extent(renderer))
    ]
    assert overlapping == []


def test_cross_attention_in_landscape_puts_reads_and_predicts_along_x():
    w = softmax_rows(np.random.default_rng(1), (len(TARGET), 4))
    ax = plot_attention(w, TARGET, SOURCE[:4], kind="cross", head=None).axes[0]
    assert ax.get_xticklabels()[0].get_text() == "0:<sos> → 1"
    assert ax.get_xlabel().startswith("query (target token read → token predicted")


def test_next_tokens_end_with_eos_unless_the_series_goes_on():
    tokens = ["<sos>", "1", "+", "x"]
    assert plotting.next_tokens(tokens) == ["1", "+", "x", "<eos>"]
    assert plotting.next_tokens(tokens, written="1+x") == ["1", "+", "x", "<eos>"]
    # cut at the length limit: the model wrote a token past the last one shown
    assert plotting.next_tokens(tokens, written="1+x*") == ["1", "+", "x", "…"]
    # a whole target with its <eos> and padding: those positions predict nothing
    assert plotting.next_tokens(tokens + ["<eos>", "<pad>"]) == ["1", "+", "x", "<eos>", None, None]
    assert plotting.next_tokens(["<sos>", "1", "<pad>"]) == ["1", "<eos>", None]


def test_rows_that_predict_nothing_keep_their_plain_label_and_predictions_can_be_given():
    tokens = ["<sos>", "x", "<eos>", "<pad>"]
    w = np.array(
        [[1, 0, 0, 0], [0.5, 0.5, 0, 0], [0.2, 0.3, 0.5, 0], [0.2, 0.3, 0.5, 0]]
    )  # no weight on <pad>
    ax = plot_attention(w, tokens, tokens, kind="decoder", head=None).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "0:<sos> → x",
        "1:x → <eos>",
        "2:<eos>",
        "3:<pad>",
    ]
    given = ["x", "*", None, None]
    ax = plot_attention(w, tokens, tokens, kind="decoder", head=None, predicted_tokens=given).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()][:2] == ["0:<sos> → x", "1:x → *"]
    with pytest.raises(ValueError, match="one token .or None. for each of the 4 queries"):
        plot_attention(w, tokens, tokens, kind="decoder", head=None, predicted_tokens=given[:3])
    with pytest.raises(ValueError, match="predicted_tokens label the rows of decoder"):
        plot_attention(w, tokens, tokens, kind="encoder", head=None, predicted_tokens=given)


def test_encoder_rows_and_other_maps_are_not_shifted():
    w = softmax_rows(np.random.default_rng(1), (len(TARGET), len(TARGET)))
    for kind in ("encoder", None):
        ax = plot_attention(w, TARGET, TARGET, kind=kind, head=None).axes[0]
        assert [t.get_text() for t in ax.get_yticklabels()] == [f"{i}:{t}" for i, t in enumerate(TARGET)]


@pytest.mark.parametrize(
    "kind, words",
    [
        ("encoder", "encoder self-attention"),
        ("decoder", "decoder self-attention (causal)"),
        ("cross", "cross-attention"),
    ],
)
def test_title_names_kind_layer_and_head(kind, words):
    n = len(TARGET)
    w = softmax_rows(np.random.default_rng(2), (4, n, n), causal=True)
    title = plot_attention(w, TARGET, TARGET, kind=kind, layer=1, head=2).axes[0].get_title()
    assert words in title and "layer 2" in title and "head 3" in title  # numbered from 1, as read


def test_head_is_picked_from_heads_and_a_batch_of_one():
    w = softmax_rows(np.random.default_rng(3), (1, 4, len(TARGET), len(SOURCE)))
    for weights in (w, w[0], torch.tensor(w)):
        np.testing.assert_allclose(image_of(plot_attention(weights, TARGET, SOURCE, head=3).axes[0]), w[0, 3])


def test_attention_dict_gives_the_map_and_the_tokens_of_its_kind():
    attn = attention_dict(np.random.default_rng(4))
    ax = plot_attention(attn, kind="cross", layer=1, head=2).axes[0]
    np.testing.assert_allclose(image_of(ax), attn["cross"][1][0, 2].numpy())
    assert ax.get_yticklabels()[1].get_text() == "1:1 → +" and ax.get_xticklabels()[1].get_text() == "1:cosh"
    ax = plot_attention(attn, kind="encoder", layer=0, head=0).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [t.get_text() for t in ax.get_xticklabels()]
    assert ax.get_xticklabels()[1].get_text() == "1:cosh"
    with pytest.raises(ValueError, match="layer 2 is out of range.*2 layers"):
        plot_attention(attn, kind="cross", layer=2)


def test_causal_cells_are_masked_not_zero():
    n = len(TARGET)
    w = softmax_rows(np.random.default_rng(5), (n, n), causal=True)
    ax = plot_attention(w, TARGET, TARGET, kind="decoder").axes[0]
    data = image_of(ax)
    future = np.triu(np.ones((n, n), bool), 1)
    assert (np.ma.getmaskarray(data) == future).all()
    np.testing.assert_allclose(data.data[~future], w[~future])
    assert "future key (causal)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_pad_cells_are_masked_from_tokens_or_from_pad_masks():
    tokens = TARGET[:8] + ["<pad>", "<pad>"]
    source = SOURCE[:-3] + ["<eos>", "<pad>", "<pad>"]
    w = softmax_rows(np.random.default_rng(6), (10, 17))
    w[:, -2:] = 0
    w /= w.sum(-1, keepdims=True)
    expected = np.zeros((10, 17), bool)
    expected[8:, :] = True
    expected[:, 15:] = True
    inferred = image_of(plot_attention(w, tokens, source).axes[0])
    assert (np.ma.getmaskarray(inferred) == expected).all()
    np.testing.assert_allclose(inferred.data[~expected], w[~expected])
    query_pad = torch.tensor([[False] * 8 + [True] * 2])  # (1, Lq), as pad_batch gives for one example
    key_pad = np.arange(17) >= 15
    given = image_of(plot_attention(w, key_pad_mask=key_pad, query_pad_mask=query_pad).axes[0])
    assert (np.ma.getmaskarray(given) == expected).all()


def test_a_mask_argument_hides_its_cells():
    w = softmax_rows(np.random.default_rng(7), (5, 6))
    mask = np.zeros((5, 6), bool)
    mask[:, 0] = True
    w[mask] = 0
    ax = plot_attention(w, kind=None, layer=None, head=None, mask=mask).axes[0]
    assert (np.ma.getmaskarray(image_of(ax)) == mask).all()
    assert ax.get_title() == "attention"  # any map: no kind, layer or head to name
    assert "masked" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_weight_on_masked_cells_is_reported():
    n = len(TARGET)
    leaky = softmax_rows(np.random.default_rng(8), (n, n))  # no causal mask applied
    with pytest.warns(UserWarning, match="masked cell.*carry attention weight"):
        plot_attention(leaky, TARGET, TARGET, kind="decoder")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_attention(
            softmax_rows(np.random.default_rng(8), (n, n), causal=True), TARGET, TARGET, kind="decoder"
        )


def test_shape_mismatch_says_the_shapes():
    w = np.full((12, 17), 1 / 17)
    with pytest.raises(ValueError, match=r"12 queries × 17 keys.*11 query tokens and 17 key tokens"):
        plot_attention(w, TARGET[:11], SOURCE)
    with pytest.raises(ValueError, match="did you swap query_tokens and key_tokens"):
        plot_attention(w, SOURCE, TARGET)


def test_batch_of_more_than_one_is_refused():
    with pytest.raises(ValueError, match=r"batch of 2 examples.*weights\[0\]"):
        plot_attention(np.full((2, 4, 12, 17), 1 / 17), TARGET, SOURCE)
    with pytest.raises(ValueError, match="head 4 is out of range.*4 heads"):
        plot_attention(np.full((4, 12, 17), 1 / 17), TARGET, SOURCE, head=4)
    with pytest.raises(ValueError, match="unknown kind"):
        plot_attention(np.full((12, 17), 1 / 17), kind="self")


def test_draws_into_a_given_axes():
    fig, (left, right) = plt.subplots(1, 2)
    returned = plot_attention(np.full((12, 17), 1 / 17), TARGET, SOURCE, ax=right)
    assert returned is fig and right.images and not left.images


def test_long_sequences_get_thinned_legible_labels_in_a_bounded_figure():
    n = 100
    w = softmax_rows(np.random.default_rng(9), (n, n), causal=True)
    fig = plot_attention(w, [f"t{i}" for i in range(n)], [f"t{i}" for i in range(n)], kind="decoder")
    width, height = fig.get_size_inches()
    assert width <= 16 and height <= 16
    ax = fig.axes[0]
    labels = ax.get_xticklabels()
    ticked = set(ax.xaxis.get_majorticklocs()) | set(ax.xaxis.get_minorticklocs())
    assert len(labels) < n and ticked == set(range(n))  # every k-th labelled, each one ticked
    assert min(t.get_fontsize() for t in labels) >= 6
    assert "labelled" in ax.get_xlabel()


# ------------------------------------------------------------------------------------------ grids


def test_grid_of_one_layer_shares_one_scale_and_one_colorbar():
    w = softmax_rows(np.random.default_rng(10), (1, 4, len(TARGET), len(SOURCE)))
    fig = plot_attention_grid(w, TARGET, SOURCE, layers=1)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 4 and len(fig.axes) == 5  # four heads and a single colorbar
    assert {ax.images[0].get_clim() for ax in panels} == {(0.0, 1.0)}
    for head, ax in enumerate(panels):
        np.testing.assert_allclose(image_of(ax), w[0, head])
        assert ax.get_title() == f"layer 2, head {head + 1}"
    assert "cross-attention" in fig.get_suptitle()
    # four maps wider than tall: two rows of two, nearer a 3:2 page than one row of four
    assert [ax.get_subplotspec().rowspan.start for ax in panels] == [0, 0, 1, 1]
    assert [len(ax.get_yticklabels()) for ax in panels] == [len(TARGET), 0, len(TARGET), 0]  # outer axes only
    assert [len(ax.get_xticklabels()) > 0 for ax in panels] == [False, False, True, True]
    tall = softmax_rows(np.random.default_rng(10), (4, 40, 8))  # maps taller than wide stand in one row
    fig = plot_attention_grid(tall, [f"t{i}" for i in range(40)], SOURCE[:8], kind="cross", landscape=False)
    assert [ax.get_subplotspec().rowspan.start for ax in fig.axes if ax.images] == [0, 0, 0, 0]
    asked = plot_attention_grid(w, TARGET, SOURCE, ncols=4)  # as asked: one row of four
    assert [ax.get_subplotspec().rowspan.start for ax in asked.axes if ax.images] == [0, 0, 0, 0]


def test_grid_of_layers_and_heads_from_the_dict_masks_each_panel():
    attn = attention_dict(np.random.default_rng(11), n_layers=2, n_heads=3)
    fig = plot_attention_grid(attn, kind="decoder")
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 6 and len(fig.axes) == 7
    future = np.triu(np.ones((len(TARGET),) * 2, bool), 1)
    assert all((np.ma.getmaskarray(image_of(ax)) == future).all() for ax in panels)
    assert panels[5].get_title() == "layer 2, head 3"
    assert [len(ax.get_xticklabels()) > 0 for ax in panels] == [False] * 3 + [True] * 3
    assert len(fig.legends) == 1


def test_cross_attention_of_a_long_series_is_landscape():
    long_target = [f"t{i}" for i in range(30)]
    w = softmax_rows(np.random.default_rng(12), (30, len(SOURCE)))
    ax = plot_attention(w, long_target, SOURCE, kind="cross", head=None).axes[0]
    np.testing.assert_allclose(image_of(ax), w.T)  # queries along x, keys down y
    assert ax.get_xlabel().startswith("query") and ax.get_ylabel().startswith("key")
    assert ax.get_yticklabels()[1].get_text() == "1:cosh"
    ax = plot_attention(w, long_target, SOURCE, kind="cross", head=None, landscape=False).axes[0]
    np.testing.assert_allclose(image_of(ax), w)


def test_grid_draws_into_given_axes():
    attn = attention_dict(np.random.default_rng(12), n_layers=1, n_heads=2)
    fig, axes = plt.subplots(1, 2)
    assert plot_attention_grid(attn, kind="cross", layers=0, axes=axes) is fig
    np.testing.assert_allclose(image_of(axes[1]), attn["cross"][0][0, 1].numpy())
    with pytest.raises(ValueError, match="2 panels to draw but only 1 axes"):
        plot_attention_grid(attn, kind="cross", axes=axes[:1])


# ------------------------------------------------------------------------------------------- masks


def test_plot_mask_draws_allowed_and_masked_with_a_legend():
    n = 6
    causal = np.triu(np.ones((n, n), bool), 1)
    fig = plot_mask(causal, TARGET[:n], TARGET[:n], title="causal mask")
    (ax,) = fig.axes
    assert (np.asarray(image_of(ax)) == causal).all()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["allowed (21)", "masked (15)"]
    assert ax.get_title() == "causal mask"
    additive = torch.zeros(n, n).masked_fill(
        torch.tensor(causal), float("-inf")
    )  # as nn.Transformer makes it
    assert (np.asarray(image_of(plot_mask(additive).axes[0])) == causal).all()
    allowed = plot_mask(~causal, true_means="allowed").axes[0]
    assert (np.asarray(image_of(allowed)) == causal).all()
    assert image_of(plot_mask(np.array([False, False, True])).axes[0]).shape == (1, 3)
    with pytest.raises(ValueError, match="must be boolean"):
        plot_mask(np.full((2, 2), 0.5))


# -------------------------------------------------------------------------------------------- saving


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_save_writes_the_format_of_the_suffix(tmp_path, suffix, magic):
    path = tmp_path / "figures" / f"map{suffix}"
    plot_attention(np.full((3, 4), 0.25), save=path)
    assert path.read_bytes().startswith(magic)


def test_save_rejects_unknown_suffixes_before_drawing(tmp_path):
    with pytest.raises(ValueError, match=r"\.png, \.svg or \.pdf"):
        plot_attention(np.full((3, 4), 0.25), save=tmp_path / "map.jpg")
    with pytest.raises(ValueError, match=r"\.png, \.svg or \.pdf"):
        plot_mask(np.eye(3, dtype=bool), save=tmp_path / "mask")
    assert not list(tmp_path.iterdir()) and not plt.get_fignums()


# ------------------------------------------------------------------------------ losses and encodings

LOG = """step,epoch,sequences,lr,train_loss,val_loss,val_exact,elapsed_s
100,0.1,6400,0.0003,2.5,2.6,0.0,10.0
200,0.2,12800,0.0003,1.2,1.4,0.25,20.0
300,0.3,19200,0.0003,0.6,,,30.0
400,0.4,25600,0.0003,0.3,0.5,0.75,40.0
"""


def test_plot_losses_reads_a_run_log(tmp_path):
    (tmp_path / "log.csv").write_text(LOG)
    for log in (tmp_path / "log.csv", tmp_path):  # the file or its run folder
        fig = plot_losses(log)
        loss_ax, exact_ax = fig.axes
        assert loss_ax.get_yscale() == "log"
        train, val = loss_ax.get_lines()
        np.testing.assert_allclose(train.get_xydata(), [[100, 2.5], [200, 1.2], [300, 0.6], [400, 0.3]])
        np.testing.assert_allclose(
            val.get_xydata(), [[100, 2.6], [200, 1.4], [400, 0.5]]
        )  # empty cells skipped
        np.testing.assert_allclose(exact_ax.get_lines()[0].get_ydata(), [0.0, 0.25, 0.75])


def test_stage_names_never_overlap_where_a_stage_is_short(tmp_path):
    """A stage of 2 steps between two long ones: its name and the next one's would share the top line."""
    stages = ["1"] * 40 + ["2"] * 2 + ["3"] * 40 + ["3 decay"] * 40
    rows = [f"{s},{100 * (i + 1)},0.1,6400,0.0003,1.0,1.0,0.5,10.0" for i, s in enumerate(stages)]
    (tmp_path / "log.csv").write_text(
        "stage,step,epoch,sequences,lr,train_loss,val_loss,val_exact,elapsed_s\n" + "\n".join(rows) + "\n"
    )
    fig = plot_losses(tmp_path)
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    assert [t.get_text().strip() for t in ax.texts] == ["stage 1", "stage 2", "stage 3", "stage 3 decay"]
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    assert all(ax.bbox.contains(b.x0, b.y0) for b in boxes)  # moved down, not out of the axes
    plt.close(fig)


def test_plot_losses_errors_name_the_file_and_the_columns(tmp_path):
    with pytest.raises(FileNotFoundError, match="no training log"):
        plot_losses(tmp_path)
    (tmp_path / "log.csv").write_text("step,train_loss,val_loss\n1,2.0,2.0\n")
    with pytest.raises(ValueError, match="lacks column.*val_exact"):
        plot_losses(tmp_path / "log.csv")


def sinusoids(max_len=50, d_model=16):
    position, i = np.arange(max_len)[:, None], np.arange(0, d_model, 2)
    pe = np.zeros((max_len, d_model))
    pe[:, 0::2], pe[:, 1::2] = (
        np.sin(position / 10000 ** (i / d_model)),
        np.cos(position / 10000 ** (i / d_model)),
    )
    return pe


def test_positional_encoding_is_centred_at_zero_with_optional_curves():
    pe = sinusoids()
    fig = plot_positional_encoding(torch.tensor(pe)[None])  # a (1, max_len, d_model) buffer
    heat, bar = fig.axes
    np.testing.assert_allclose(image_of(heat), pe)
    low, high = heat.images[0].get_clim()
    assert low == -high and high == pytest.approx(1.0)
    fig = plot_positional_encoding(pe, dims=(0, 5))
    assert len(fig.axes) == 3
    curves = fig.axes[1] if fig.axes[1].get_lines() else fig.axes[2]
    np.testing.assert_allclose(curves.get_lines()[1].get_ydata(), pe[:, 5])
    with pytest.raises(ValueError, match="dimension 16 is out of range"):
        plot_positional_encoding(pe, dims=(16,))


def test_public_functions():
    assert sorted(plotting.__all__) == sorted(
        [
            "plot_attention",
            "plot_attention_grid",
            "plot_mask",
            "plot_attention_lines",
            "plot_model_view",
            "plot_decoding_step",
            "animate_decoding",
            "next_tokens",
            "plot_losses",
            "plot_positional_encoding",
            "plot_transformer",
        ]
    )


def test_plotting_imports_only_tokens_from_the_package():
    imported = set()
    for path in Path(plotting.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import)]
        imported |= {alias.name for node in imports for alias in node.names}
    outside = {
        name for name in imported if name.startswith("labutils") and not name.startswith("labutils.plotting")
    }
    assert outside == {"labutils.tokens"}


def test_stage_names_stay_inside_the_axes_and_clear_of_the_curves(tmp_path):
    """A short last stage at the right edge, and validation exact match reaching 100% under the names."""
    stages = ["1"] * 60 + ["2"] * 60 + ["2 decay"] * 2
    rows = [
        f"{s},{100 * (i + 1)},0.1,6400,0.0003,{2.0 / (i + 1)},{2.1 / (i + 1)},{min(1.0, i / 60)},10.0"
        for i, s in enumerate(stages)
    ]
    (tmp_path / "log.csv").write_text(
        "stage,step,epoch,sequences,lr,train_loss,val_loss,val_exact,elapsed_s\n" + "\n".join(rows) + "\n"
    )
    fig = plot_losses(tmp_path)
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    loss_ax, exact_ax = fig.axes
    boxes = [t.get_window_extent(renderer) for t in loss_ax.texts]
    assert len(boxes) == 3
    assert all(loss_ax.bbox.x0 <= b.x0 and b.x1 <= loss_ax.bbox.x1 for b in boxes)
    for axis in (loss_ax, exact_ax):
        for line in (line for line in axis.get_lines() if not line.get_label().startswith("_")):  # the curves
            points = axis.transData.transform(line.get_xydata())
            assert not any(b.contains(x, y) for b in boxes for x, y in points), line.get_label()
    assert max(exact_ax.get_yticks()) == 1.0  # the axis runs higher, its ticks stop at 100%
    plt.close(fig)


# ------------------------------------------------------------------------------------- the line view


def drawn_lines(ax):
    """[(query, key, colour RGBA)] of every line the line view drew, read back from the figure.

    Each line runs from a query token's point to a key token's point; the points are where the token
    labels are anchored (the annotations named query-i and key-j).
    """
    anchors = {}
    for text in ax.texts:
        gid = text.get_gid() or ""
        if gid.startswith(("query-", "key-")):
            side, index = gid.split("-")
            anchors[(side, tuple(np.round(text.xy, 9)))] = int(index)
    found = []
    for collection in ax.collections:
        if collection.get_gid() != "attention-lines":
            continue
        for segment, colour in zip(collection.get_segments(), collection.get_colors(), strict=True):
            start, end = (tuple(np.round(p, 9)) for p in segment)
            found.append((anchors[("query", start)], anchors[("key", end)], tuple(colour)))
    return found


@pytest.mark.parametrize("landscape", [False, True])
def test_line_opacities_equal_the_weights_they_draw(landscape):
    attn = attention_dict(np.random.default_rng(20), n_layers=2, n_heads=4)
    w = attn["cross"][1][0].numpy()  # (H, Lt, Ls)
    fig = plotting.plot_attention_lines(attn, kind="cross", layer=1, head=2, landscape=landscape)
    lines = drawn_lines(fig.axes[0])
    assert lines, "no line drawn"
    for query, key, colour in lines:
        assert colour[3] == pytest.approx(w[2, query, key], abs=1e-6)
    drawn = {(q, k) for q, k, _ in lines}
    assert len(drawn) == len(lines)  # one line per pair
    missing = [(q, k) for q in range(len(TARGET)) for k in range(len(SOURCE)) if (q, k) not in drawn]
    assert all(w[2, q, k] < plotting.lines.MIN_WEIGHT for q, k in missing)
    title = fig.axes[0].get_title()
    assert "cross-attention" in title and "layer 2, head 3" in title and "opacity = attention weight" in title


def test_all_heads_in_their_colours_and_the_mean_in_black():
    attn = attention_dict(np.random.default_rng(21), n_layers=1, n_heads=3)
    w = attn["encoder"][0][0].numpy()
    ax = plotting.plot_attention_lines(attn, kind="encoder", layer=0, head="all").axes[0]
    collections = [c for c in ax.collections if c.get_gid() == "attention-lines"]
    assert [c.get_label() for c in collections] == ["head 1", "head 2", "head 3"]
    for h, collection in enumerate(collections):
        colours = collection.get_colors()
        assert {tuple(np.round(c[:3], 6)) for c in colours} == {
            tuple(np.round(matplotlib.colors.to_rgb(plotting.lines.head_colour(h)), 6))
        }
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["head 1", "head 2", "head 3"]
    mean = plotting.plot_attention_lines(attn, kind="encoder", layer=0, head="mean").axes[0]
    for query, key, colour in drawn_lines(mean):
        assert colour[3] == pytest.approx(w[:, query, key].mean(), abs=1e-6)
    assert "mean of 3 heads" in mean.get_title()


def test_masked_pairs_get_no_line_and_a_selected_token_keeps_only_its_lines():
    n = len(TARGET)
    w = softmax_rows(np.random.default_rng(22), (n, n), causal=True)
    ax = plotting.plot_attention_lines(w, TARGET, TARGET, kind="decoder", head=None, min_weight=0).axes[0]
    lines = drawn_lines(ax)
    assert lines and all(key <= query for query, key, _ in lines)  # never a future key
    assert len(lines) == n * (n + 1) // 2  # every allowed pair, even the faintest (min_weight=0)
    ax = plotting.plot_attention_lines(w, TARGET, TARGET, kind="decoder", head=None, highlight_query=5).axes[
        0
    ]
    assert {query for query, _, _ in drawn_lines(ax)} == {5}
    marked = [t for t in ax.texts if t.get_gid() == "query-5"]
    assert marked[0].get_bbox_patch() is not None and marked[0].get_text() == "5:x → +"
    ax = plotting.plot_attention_lines(w, TARGET, TARGET, kind="decoder", head=None, highlight_key=0).axes[0]
    assert {key for _, key, _ in drawn_lines(ax)} == {0}
    with pytest.raises(ValueError, match="query 12 is out of range"):
        plotting.plot_attention_lines(w, TARGET, TARGET, kind="decoder", head=None, highlight_query=12)


def test_the_line_view_labels_rows_as_the_heatmaps_do_and_refuses_what_they_refuse():
    attn = attention_dict(np.random.default_rng(23), n_layers=1, n_heads=2)
    ax = plotting.plot_attention_lines(attn, kind="cross", layer=0, head=0).axes[0]
    queries = [t.get_text() for t in ax.texts if (t.get_gid() or "").startswith("query-")]
    keys = [t.get_text() for t in ax.texts if (t.get_gid() or "").startswith("key-")]
    assert queries[:2] == ["0:<sos> → 1", "1:1 → +"] and keys[1] == "1:cosh"
    with pytest.raises(ValueError, match="head 'some'"):
        plotting.plot_attention_lines(attn, kind="cross", layer=0, head="some")
    with pytest.raises(ValueError, match="choose one"):
        plotting.plot_attention_lines(attn["cross"][0], TARGET, SOURCE, head=None)
    with pytest.raises(ValueError, match="12 queries × 17 keys"):
        plotting.plot_attention_lines(attn["cross"][0], TARGET[:5], SOURCE, head=0)


# ------------------------------------------------------------------------------------- the model view


def test_the_model_view_shows_every_layer_and_head_on_one_scale():
    attn = attention_dict(np.random.default_rng(24), n_layers=2, n_heads=3)
    fig = plotting.plot_model_view(attn, kind="decoder", selected=(1, 2))
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_label() for ax in panels] == [f"layer {l}, head {h}" for l in (1, 2) for h in (1, 2, 3)]
    future = np.triu(np.ones((len(TARGET),) * 2, bool), 1)
    for ax in panels:
        layer, head = (int(word.strip(",")) - 1 for word in ax.get_label().split()[1::2])
        data = image_of(ax)
        np.testing.assert_allclose(data.data[~future], attn["decoder"][layer][0, head].numpy()[~future])
        assert (np.ma.getmaskarray(data) == future).all()
        assert ax.images[0].get_clim() == (0.0, 1.0)
    framed = [ax.get_label() for ax in panels if ax.spines["top"].get_linewidth() > 2]
    assert framed == ["layer 2, head 3"]
    assert len(fig.axes) == len(panels) + 1  # one colorbar
    assert "2 layers × 3 heads" in fig.get_suptitle()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["future key (causal)"]


# ------------------------------------------------------------------------------------- every view, both models


def decoder_only_dict(rng, n_layers=2, n_heads=2):
    """What a decoder-only model's attention_for gives: its whole sequence, no encoder."""
    source, series = SOURCE[:-1], ["<sep>"] + TARGET[1:]
    sequence = source + series
    tensor = lambda shape, causal=False: torch.tensor(softmax_rows(rng, shape, causal))  # noqa: E731
    whole = [tensor((1, n_heads, len(sequence), len(sequence)), causal=True) for _ in range(n_layers)]
    return {
        "decoder": whole,
        "cross": [w[:, :, len(source) :, : len(source)] for w in whole],
        "source_tokens": source,
        "target_tokens": series,
        "sequence_tokens": sequence,
    }


@pytest.mark.parametrize("model", ["encoder-decoder", "decoder-only"])
def test_every_view_renders_every_kind_of_either_model(model):
    rng = np.random.default_rng(25)
    attn = attention_dict(rng) if model == "encoder-decoder" else decoder_only_dict(rng)
    kinds = [k for k in ("encoder", "decoder", "cross") if k in attn]
    assert kinds == (["encoder", "decoder", "cross"] if model == "encoder-decoder" else ["decoder", "cross"])
    for kind in kinds:
        for figure in (
            plot_attention(attn, kind=kind, layer=1, head=0),
            plot_attention_grid(attn, kind=kind, layers=1),
            plotting.plot_attention_lines(attn, kind=kind, layer=1, head="all"),
            plotting.plot_model_view(attn, kind=kind),
        ):
            assert isinstance(figure, Figure)
            plt.close(figure)
    if model == "decoder-only":
        ax = plotting.plot_attention_lines(attn, kind="decoder", layer=0, head=0).axes[0]
        queries = [t.get_text() for t in ax.texts if (t.get_gid() or "").startswith("query-")]
        n_source = len(attn["source_tokens"])
        assert all("→" not in q for q in queries[:n_source])  # the source's rows predict nothing scored
        assert queries[n_source] == f"{n_source}:<sep> → 1" and queries[-1].endswith("→ <eos>")
        assert "series → source" in plot_attention(attn, kind="cross", layer=0, head=0).axes[0].get_title()
        assert any(t.get_text() == "key\n(sequence token)" for t in ax.texts)  # not the target's
        heatmap = plot_attention(attn, kind="decoder", layer=0, head=0).axes[0]
        assert heatmap.get_xlabel().startswith("key (sequence token")
        assert "query (sequence token" in plotting.plot_model_view(attn, kind="decoder").get_supylabel()


# ------------------------------------------------------------------------------------- a decoding step


class Steps:
    """What decode.decoding_steps returns, made by hand: four steps of a series over six source tokens."""

    def __init__(self, rng, n_layers=2, n_heads=3):
        self.expression = "sin(a*x)"
        self.source_tokens = ["<sos>", "sin", "(", "a", "*", "x", ")", "<eos>"]
        self.read = ["<sos>", "a", "*", "x"]
        self.written = ["a", "*", "x", "<eos>"]
        self.top = [
            [("a", 0.9), ("x", 0.05), ("1", 0.03)],
            [("*", 0.99996), ("+", 0.00003), ("x", 0.00001)],
            [("x", 0.6), ("a", 0.4), ("*", 0.0)],
            [("+", 0.5), ("<eos>", 0.45), ("*", 0.05)],
        ]
        shape = (n_heads, len(self.written), len(self.source_tokens))
        self.cross = [torch.tensor(softmax_rows(rng, shape)) for _ in range(n_layers)]
        self.architecture = "encoder-decoder"


def test_a_decoding_step_draws_the_steps_row_as_cells_and_as_lines():
    steps = Steps(np.random.default_rng(26))
    figure = plotting.plot_decoding_step(steps, 2, layer=1, head=1)
    text_ax, bars_ax, lines_ax, row_ax = figure.axes
    row = steps.cross[1][1, 2].numpy()
    np.testing.assert_allclose(image_of(row_ax), row[None, :])
    alphas = sorted(line.get_color()[3] for line in lines_ax.lines if line.get_gid() == "attention-line")
    assert alphas == pytest.approx(sorted(w for w in row if w >= 0.005))
    assert [t.get_text() for t in row_ax.get_xticklabels()] == steps.source_tokens
    assert "series so far:  a*" in text_ax.texts[0].get_text() and text_ax.texts[1].get_text() == "x"
    top_down = sorted(bars_ax.get_yticklabels(), key=lambda t: -t.get_position()[1])
    assert [t.get_text() for t in top_down] == ["x", "a", "*"]  # best on top
    bars = {t.get_text(): bar for t, bar in zip(bars_ax.get_yticklabels(), bars_ax.patches, strict=True)}
    assert bars["x"].get_width() == 0.6
    assert bars["x"].get_facecolor() != bars["a"].get_facecolor()  # the token written stands out
    assert "step 3 of 4" in figure.get_suptitle() and "layer 2, head 2" in lines_ax.get_title()
    mean = plotting.plot_decoding_step(steps, -1)  # the last step, the mean over the heads
    np.testing.assert_allclose(image_of(mean.axes[3]), steps.cross[-1][:, 3].numpy().mean(0)[None, :])
    sure = [t.get_text() for t in plotting.plot_decoding_step(steps, 1).axes[1].texts]
    assert sure[0] == ">99.9%" and sure[2] == "<0.1%"  # never a certainty a softmax cannot give
    assert "(wrote <eos>, not among them)" not in mean.axes[1].get_title()
    with pytest.raises(ValueError, match="step 4 is out of range"):
        plotting.plot_decoding_step(steps, 4)


def test_an_animation_has_one_frame_per_written_token(tmp_path):
    from PIL import Image

    steps = Steps(np.random.default_rng(27))
    path = plotting.animate_decoding(steps, tmp_path / "steps.gif", size=(6, 3.4), dpi=40)
    with Image.open(path) as gif:
        assert gif.n_frames == len(steps.written)
    again = plotting.animate_decoding(steps, tmp_path / "again.gif", size=(6, 3.4), dpi=40)
    assert again.read_bytes() == path.read_bytes()  # made again, the same bytes
    with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
        plotting.animate_decoding(steps, tmp_path / "steps.avi")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg on the PATH")
def test_an_mp4_of_the_steps(tmp_path):
    steps = Steps(np.random.default_rng(28))
    path = plotting.animate_decoding(steps, tmp_path / "steps.mp4", size=(6, 3.4), dpi=40)
    assert path.read_bytes()[4:8] == b"ftyp"  # an MP4 container


def test_without_ffmpeg_an_mp4_is_refused_and_a_gif_is_not(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    steps = Steps(np.random.default_rng(28))
    with pytest.raises(ValueError, match="an MP4 needs ffmpeg on the PATH"):
        plotting.animate_decoding(steps, tmp_path / "steps.mp4")
    assert not (tmp_path / "steps.mp4").exists()


# ------------------------------------------------------------------------------------- without Jupyter


def test_the_static_views_draw_without_ipywidgets_or_ipython(tmp_path):
    """Every static view, with ipywidgets and IPython unimportable: plotting needs neither."""
    code = f"""
import sys
for name in ("ipywidgets", "IPython", "ipykernel"):
    sys.modules[name] = None
import matplotlib
matplotlib.use("Agg")
import numpy as np, torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_plotting import Steps, attention_dict
from labutils import plotting
attn = attention_dict(np.random.default_rng(0))
for kind in ("encoder", "decoder", "cross"):
    plotting.plot_attention(attn, kind=kind, layer=0, head=0, save={str(tmp_path)!r} + f"/{{kind}}.png")
    plotting.plot_attention_lines(attn, kind=kind, layer=0, head="all", save={str(tmp_path)!r} + f"/{{kind}}_lines.png")
    plotting.plot_model_view(attn, kind=kind, save={str(tmp_path)!r} + f"/{{kind}}_model.png")
steps = Steps(np.random.default_rng(0))
plotting.plot_decoding_step(steps, 0, save={str(tmp_path)!r} + "/step.png")
plotting.animate_decoding(steps, {str(tmp_path)!r} + "/steps.gif", size=(4, 2.25), dpi=30)
assert not any(sys.modules.get(name) for name in ("ipywidgets", "IPython", "ipykernel"))
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    made = sorted(p.name for p in tmp_path.iterdir())
    assert len(made) == 11 and "steps.gif" in made
