"""The attention explorer, driven in-process as a student would: typing, Enter, selectors, bad input."""

import matplotlib

matplotlib.use("Agg")

import subprocess  # noqa: E402
import sys  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from tiny_models import writer  # noqa: E402

import labutils.widgets as widgets  # noqa: E402
import labutils.widgets.explorer as explorer_module  # noqa: E402
from labutils import metrics  # noqa: E402
from labutils.decode import Prediction, read_source  # noqa: E402
from labutils.metrics import Check  # noqa: E402
from labutils.model import attention_for_codes, save_weights  # noqa: E402
from labutils.plotting import KINDS  # noqa: E402
from labutils.tokens import TARGET_VOCAB, tokenize  # noqa: E402
from labutils.widgets import AttentionExplorer  # noqa: E402

LECTURE = "cosh(a*x)**3+tanh(b*x)"
LECTURE_SERIES = "1+b*x+3*a**2*x**2/2-b**3*x**3/3+7*a**4*x**4/8+2*b**5*x**5/15+O(x**6)"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model():
    return writer()


@pytest.fixture(scope="module")
def explorer(model):
    """One explorer for the module: its sympy worker starts once (importing torch and sympy takes seconds)."""
    explorer = AttentionExplorer(model, debounce=0.2, sympy_timeout=30.0)
    yield explorer
    explorer.close()
    explorer.expression.value = "sin(x)"  # after close: nothing runs, nothing raises
    assert explorer.wait(timeout=5)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def show(explorer, **values):
    """Set controls, as the front end would, and wait until the explorer shows them."""
    for name, value in values.items():
        getattr(explorer, name).value = value
    assert explorer.wait(timeout=60), "the explorer did not finish in 60 s"
    assert explorer.last_error is None, repr(explorer.last_error)


# ------------------------------------------------------------------------------------- the explorer


def test_explorer_shows_the_lecture_example_and_sympys_verdict(explorer, model):
    assert explorer.expression.value == LECTURE
    assert [value for _, value in explorer.layer.options] == [0, 1]  # cross: the decoder's two layers
    assert explorer.head.options[0] == ("all heads", "all")
    show(explorer)
    html = explorer.series_output.value
    assert "cosh(a*x)**3+tanh(b*x)" in html and "1" * 24 in html
    assert "not sympy&#x27;s series" in html and LECTURE_SERIES in html
    assert bytes(explorer.figure.value).startswith(PNG)
    assert explorer.status.value == ""  # nothing running, no error
    assert "model (greedy): " + "1" * 24 in explorer.summary()
    bundle = explorer._repr_mimebundle_()  # front ends without widgets show the PNG and the text
    assert {"application/vnd.jupyter.widget-view+json", "image/png", "text/plain"} <= set(bundle)
    assert "sympy's series: " + LECTURE_SERIES in bundle["text/plain"]


def test_typing_waits_for_a_pause_and_runs_the_model_once(explorer):
    show(explorer)
    before = dict(explorer.computed)
    explorer.debounce = 1.0
    try:
        for text in ("t", "ta", "tan(", "tan(hx", "tan(hx)+sinh(gx)"):
            explorer.expression.value = text  # keystrokes, far faster than the 1 s pause
        assert "waiting for you to finish typing" in explorer.status.value
        assert "labutils-busy" in explorer._dom_classes  # for a browser test to wait on
        show(explorer)
    finally:
        explorer.debounce = 0.2
    assert "labutils-busy" not in explorer._dom_classes
    assert explorer.computed["predictions"] == before["predictions"] + 1
    html = explorer.series_output.value
    assert "tan(h*x)+sinh(g*x)" in html and "you typed" in html


def test_enter_runs_the_model_without_waiting_for_the_pause(explorer):
    show(explorer)
    explorer.debounce = 600.0  # a pause the test would not survive
    try:
        explorer.expression.value = "sin(a*x)*cos(b*x)"
        explorer.expression._handle_custom_msg({"event": "submit"}, [])  # what the front end sends on Enter
        assert explorer.wait(timeout=60)
    finally:
        explorer.debounce = 0.2
    assert "sin(a*x)*cos(b*x)" in explorer.series_output.value


def test_selectors_redraw_and_the_cache_answers_what_was_seen(explorer, model):
    show(explorer, expression=LECTURE, kind="cross", layer=1, head="all", decoding="greedy")
    all_heads = bytes(explorer.figure.value)
    before = dict(explorer.computed)
    show(explorer, head=0)
    assert bytes(explorer.figure.value) != all_heads
    assert explorer.computed["drawings"] == before["drawings"] + 1
    show(explorer, head="all")
    assert bytes(explorer.figure.value) == all_heads  # from the cache: nothing drawn, nothing predicted
    assert explorer.computed == {**before, "drawings": before["drawings"] + 1}
    show(explorer, kind="encoder")
    assert [value for _, value in explorer.layer.options] == [0]  # the encoder has one layer
    assert explorer.layer.value == 0
    show(explorer, kind="decoder")
    assert [value for _, value in explorer.layer.options] == [0, 1]
    assert explorer.computed["predictions"] == before["predictions"]  # only drawings changed


def test_beam_decoding(explorer):
    show(explorer, expression=LECTURE, decoding="beam")
    assert "model (beam)" in explorer.series_output.value
    show(explorer, decoding="greedy")


@pytest.mark.parametrize(
    "text, message",
    [("sin(x)+$", "unknown character &#x27;$&#x27; at position 7"), ("sin(x", "unbalanced &#x27;(&#x27;")],
)
def test_a_bad_expression_shows_the_tokenizers_message(explorer, text, message):
    show(explorer, expression=text)
    assert message in explorer.status.value
    assert message in explorer.series_output.value
    assert bytes(explorer.figure.value) == b""  # no heatmap of an expression that is not there
    assert "error: " in explorer.summary()
    show(explorer, expression=LECTURE)
    assert bytes(explorer.figure.value).startswith(PNG)


def test_a_correct_series_is_confirmed(explorer, model, monkeypatch):
    def perfect(model, expression, decoding="greedy", beam=4):
        normalized, src_codes = read_source(expression)
        codes = TARGET_VOCAB.encode(tokenize(LECTURE_SERIES))[:20]
        return Prediction(normalized, decoding, LECTURE_SERIES, attention_for_codes(model, src_codes, codes))

    monkeypatch.setattr(explorer_module, "predict", perfect)
    show(explorer, expression="cosh(ax)**3+tanh(bx)")
    assert "✓ the same series as sympy" in explorer.series_output.value
    assert "sympy's series" not in explorer.summary()


def _row_labels(figure) -> list[str]:
    """The tick labels of the first map that say ``reads → predicts`` (rows, or columns in landscape)."""
    ax = figure.axes[0]
    labels = [t.get_text() for t in (*ax.get_yticklabels(), *ax.get_xticklabels())]
    return [label for label in labels if " → " in label]


def test_decoder_maps_label_each_row_with_what_it_reads_and_predicts(explorer, model, monkeypatch):
    show(explorer, expression=LECTURE, decoding="greedy")  # "1" written up to the limit, 24 tokens
    cut = explorer.draw(kind="decoder", layer=1, head=0)
    assert _row_labels(cut)[:2] == ["0:<sos> → 1", "1:1 → 1"]
    assert cut.axes[0].get_ylabel().startswith("query (target token read → token predicted")
    assert not any("<eos>" in label for label in _row_labels(cut))  # cut at the limit: no end is claimed
    assert (
        _row_labels(explorer.draw(kind="encoder", layer=0, head=0)) == []
    )  # the encoder reads, nothing more

    series = "1+b*x+O(x**6)"

    def whole(model, expression, decoding="greedy", beam=4):
        normalized, src_codes = read_source(expression)
        codes = TARGET_VOCAB.encode(tokenize(series))
        return Prediction(normalized, decoding, series, attention_for_codes(model, src_codes, codes))

    monkeypatch.setattr(explorer_module, "predict", whole)
    show(explorer, expression="cos(a*x)+tanh(b*x)")
    expected = ["0:<sos> → 1", "1:1 → +", "2:+ → b", "3:b → *", "4:* → x", "5:x → +", "6:+ → O(x**6)"]
    expected.append("7:O(x**6) → <eos>")  # the model wrote <eos> after its last token
    for kind, head in (("cross", 0), ("decoder", 0), ("decoder", "all"), ("cross", "all")):
        assert _row_labels(explorer.draw(kind=kind, layer=1, head=head)) == expected, (kind, head)


def test_cross_attention_of_a_long_series_is_drawn_on_a_landscape_figure(explorer):
    show(explorer, expression=LECTURE, decoding="greedy")  # 25 rows of the series, 17 tokens of the source
    figure = explorer.draw(kind="cross", layer=1, head=0)
    ax = figure.axes[0]
    assert ax.get_xlabel().startswith("query")  # the series along x
    width, height = figure.get_size_inches()
    assert width > height


def test_an_unexpected_error_is_shown_not_lost_in_a_thread(explorer, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(explorer_module, "predict", broken)
    explorer.expression.value = "sinh(m*x)"
    assert explorer.wait(timeout=60)
    assert "unexpected error" in explorer.status.value and "RuntimeError: boom" in explorer.status.value
    assert isinstance(explorer.last_error, RuntimeError)
    explorer.last_error = None


def test_an_error_without_a_message_still_says_something(explorer, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError()

    monkeypatch.setattr(explorer_module, "predict", broken)
    explorer.expression.value = "sinh(n*x)"
    assert explorer.wait(timeout=60)
    assert "RuntimeError (without a message)" in explorer.status.value
    explorer.last_error = None


def test_the_selectors_number_layers_and_heads_from_1(explorer):
    assert [label for label, _ in explorer.layer.options][0] == "layer 1"
    assert [label for label, _ in explorer.head.options][:2] == ["all heads", "head 1"]
    assert [value for _, value in explorer.head.options][1] == 0  # the values stay indices


def test_explore_works_from_a_plain_script_without_a_main_guard(model, tmp_path):
    save_weights(model, tmp_path / "model.pt")
    script = tmp_path / "lab.py"  # no `if __name__ == "__main__":`, as a student writes it
    script.write_text(
        "import matplotlib\n"
        "matplotlib.use('Agg')\n"
        "import labutils\n"
        "print('script body ran')\n"
        f"explorer = labutils.explore('tan(hx)+sinh(gx)', checkpoint={str(tmp_path / 'model.pt')!r}, sympy_timeout=120)\n"
        "explorer.close()\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("script body ran") == 1  # the sympy worker did not run the script again
    assert "sympy's series: x*(g+h)" in result.stdout
    assert "unexpected error" not in result.stdout + result.stderr


def test_a_slow_sympy_is_cut_off(explorer, monkeypatch):
    monkeypatch.setattr(explorer_module.SympyChecker, "check", lambda self, e, p: Check(metrics.TIMEOUT))
    show(explorer, expression="tanh(f*x)**2")
    assert "sympy needed more than 30 s" in explorer.series_output.value


# ------------------------------------------------------------------------------------- without a front end


def test_explore_without_a_front_end_prints_and_draws(model, tmp_path, capsys):
    save_weights(model, tmp_path / "model.pt")
    explorer = widgets.explore("tan(hx)+sinh(gx)", checkpoint=tmp_path / "model.pt", head=1, sympy_timeout=30)
    try:
        printed = capsys.readouterr().out
        assert "expression: tan(h*x)+sinh(g*x)" in printed
        assert "model (greedy): " + "1" * 24 in printed
        assert "sympy's series: x*(g+h)" in printed
        (number,) = plt.get_fignums()  # the static figure, drawn with pyplot
        title = plt.figure(number).axes[0].get_title()
        assert title == KINDS["cross"][0] + ", layer 2, head 2"  # layer=-1 and head=1, numbered from 1
    finally:
        explorer.close()
    with pytest.raises(ValueError, match="not both"):
        widgets.explore(model=model, checkpoint=tmp_path / "model.pt")


def test_import_labutils_needs_no_jupyter_and_explore_is_lazy():
    code = (
        "import sys, labutils\n"
        "assert not {'ipywidgets', 'IPython'} & set(sys.modules), 'import labutils imported Jupyter'\n"
        "from labutils import explore\n"
        "import labutils.widgets\n"
        "assert explore is labutils.widgets.explore\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_explorer_warns_outside_the_family_and_never_reddens_what_is_nobodys_mistake():
    attention = {"target_tokens": ["<sos>"]}
    outside = Prediction("x*sin(a*x)", "greedy", "x+O(x**6)", attention, "x stands outside the functions")
    page = widgets.views.series_html("x*sin(a*x)", outside, None, 10.0)
    assert "outside the training family: x stands outside the functions" in page
    inside = Prediction("sin(x)", "greedy", "x+O(x**6)", attention)
    assert "outside the training family" not in widgets.views.series_html("sin(x)", inside, None, 10.0)
    unwritable = widgets.views.series_html("sin(n*x)", inside, Check(metrics.UNWRITABLE, "n*x+O(x**6)"), 10.0)
    assert "#b00020" not in unwritable and "cannot write" in unwritable


# ------------------------------------------------------------------------------------- the views


def test_the_line_view_offers_the_mean_and_a_token_whose_lines_alone_are_drawn(explorer):
    show(explorer, expression=LECTURE, decoding="greedy", view="lines", kind="cross", layer=1, head="all")
    assert explorer.token.layout.display is None and explorer._steps_row.layout.display == "none"
    assert [value for _, value in explorer.head.options][:3] == ["all", "mean", 0]
    assert explorer.token.options[0] == ("all tokens", -1) and explorer.token.options[2] == ("1:1", 1)
    every = bytes(explorer.figure.value)
    assert every.startswith(PNG)
    show(explorer, token=3)
    assert bytes(explorer.figure.value) != every
    figure = explorer.draw()
    ax = figure.axes[0]
    starts = {
        tuple(segment[0])
        for c in ax.collections
        if c.get_gid() == "attention-lines"
        for segment in c.get_segments()
    }
    assert len(starts) == 1  # the lines of query 3 only
    assert "all 2 heads" in ax.get_title()
    show(explorer, token=-1, view="matrix")
    assert [value for _, value in explorer.head.options][:2] == ["all", 0]  # no mean for the heatmaps


def test_the_model_view_opens_a_map_in_the_matrix_or_the_line_view(explorer):
    show(explorer, expression=LECTURE, view="model", kind="decoder", head=1)
    assert explorer._model_row.layout.display is None and explorer.layer.layout.display == "none"
    buttons = explorer.open_buttons.children
    assert [b.description for b in buttons] == ["L1 H1", "L1 H2", "L2 H1", "L2 H2"]  # 2 layers × 2 heads
    figure = explorer.draw()
    assert len([ax for ax in figure.axes if ax.images]) == 4
    framed = [ax.get_label() for ax in figure.axes if ax.images and ax.spines["top"].get_linewidth() > 2]
    assert framed == [f"layer {explorer.layer.value + 1}, head 2"]
    explorer.open_in.value = "lines"
    buttons[2].click()  # layer 2, head 1
    assert explorer.wait(timeout=60) and explorer.last_error is None
    assert (explorer.view.value, explorer.kind.value, explorer.layer.value, explorer.head.value) == (
        "lines",
        "decoder",
        1,
        0,
    )
    assert "decoder self-attention (causal), layer 2, head 1" in explorer.draw().axes[0].get_title()
    show(explorer, view="matrix", kind="cross")


def test_the_steps_view_steps_through_the_written_tokens(explorer, model):
    from labutils.decode import decoding_steps

    show(explorer, expression=LECTURE, decoding="greedy", view="steps", layer=1, head="mean")
    assert explorer._steps_row.layout.display is None and explorer.kind.layout.display == "none"
    assert [value for _, value in explorer.kind.options] == ["cross"]
    assert explorer.step.max == explorer.play.max == 24  # "1" written 24 times, to the length limit
    first = bytes(explorer.figure.value)
    show(explorer, step=5)
    assert bytes(explorer.figure.value) != first
    figure = explorer.draw()
    steps = decoding_steps(model, LECTURE)
    row_ax = figure.axes[3]
    expected = steps.cross[1][:, 4].numpy().mean(0)  # step 5, the mean over the heads of layer 2
    assert row_ax.images[0].get_array().data[0] == pytest.approx(expected, abs=1e-6)
    assert "step 5 of 24" in figure.get_suptitle()
    before = explorer.computed["steps"]
    show(explorer, step=6)
    assert explorer.computed["steps"] == before  # one pass for every step, cached
    show(explorer, expression="sin(a*x)")  # a new series: the slider's range follows
    assert explorer.step.max == 24 and explorer.step.value == 6
    show(explorer, view="matrix", expression=LECTURE, step=1, head="all")


def test_two_models_one_explorer(model):
    from test_steps import decoder_only

    explorer = AttentionExplorer(
        {"encoder-decoder": model, "decoder-only": decoder_only(max_tgt_len=12)}, debounce=0.2
    )
    try:
        assert explorer.model_name.layout.display is None
        assert [value for _, value in explorer.kind.options] == ["cross", "encoder", "decoder"]
        show(explorer, model_name="decoder-only")
        assert [value for _, value in explorer.kind.options] == ["cross", "decoder"]  # it has no encoder
        assert [label for label, _ in explorer.kind.options][0] == "series → source, within self-attention"
        for view in ("matrix", "lines", "model", "steps"):
            show(explorer, view=view)
            assert bytes(explorer.figure.value).startswith(PNG), view
        show(explorer, view="lines", kind="decoder")
        assert "decoder-only model (greedy)" in explorer.summary()
        show(explorer, model_name="encoder-decoder")
        assert "model (greedy): " + "1" * 24 in explorer.summary().replace("encoder-decoder ", "")
    finally:
        explorer.close()


@pytest.mark.parametrize("view", ["lines", "model", "steps"])
def test_without_a_front_end_each_view_is_drawn_with_pyplot(model, tmp_path, capsys, view):
    save_weights(model, tmp_path / "model.pt")
    explorer = widgets.explore(
        "tan(hx)+sinh(gx)", checkpoint=tmp_path / "model.pt", view=view, sympy_timeout=30
    )
    try:
        assert "expression: tan(h*x)+sinh(g*x)" in capsys.readouterr().out
        (number,) = plt.get_fignums()
        figure = plt.figure(number)
        words = {"lines": "line opacity", "model": "2 layers × 2 heads", "steps": "step 1 of 24"}[view]
        texts = [figure.get_suptitle()] + [ax.get_title() for ax in figure.axes]
        assert any(words in text for text in texts), texts
    finally:
        explorer.close()
