"""The attention explorer: type an expression, see the model's series, sympy's verdict and the attention maps.

``labutils.explore()`` shows a text box (the lecture's ``cosh(a*x)**3+tanh(b*x)`` to start with), selectors
for the kind of attention, the layer and the head (or all heads), and greedy or beam decoding. Below them: the
expression as the model reads it, the series the model writes, whether sympy confirms it, and the heatmap.

How it stays responsive: the model runs in a background thread, after a short pause in typing or at once on
Enter; results are cached, so going back to an expression or a head costs nothing; sympy runs in a separate
process with a time limit, so a slow ``simplify`` never freezes the notebook. The heatmap is a PNG in an
``ipywidgets.Image``, drawn on a figure of its own (never through pyplot, which is not thread-safe).

This module is the interface only: what it shows comes from :func:`labutils.decode.predict` (the series and
its attention maps), :class:`labutils.metrics.SympyChecker` (sympy's verdict, in words from
:func:`labutils.metrics.verdict_text`) and :mod:`labutils.plotting`. It needs ipywidgets, so ``labutils``
imports it only when ``labutils.explore`` is first used.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for

import ipywidgets as w
from matplotlib.figure import Figure

from labutils import metrics, plotting
from labutils.decode import Prediction, describe_series, predict
from labutils.metrics import Check, SympyChecker
from labutils.model import Seq2SeqTransformer, load_pretrained, load_weights
from labutils.plotting import next_tokens, plot_attention, plot_attention_grid
from labutils.tokens import TokenizationError

__all__ = ["explore", "AttentionExplorer"]

LECTURE_EXPRESSION = "cosh(a*x)**3+tanh(b*x)"
KINDS = ("cross", "encoder", "decoder")
ALL_HEADS = "all"

# ------------------------------------------------------------------------------------- the explorer


class _LRU:
    """A cache that forgets its least recently used entries beyond ``size``; safe to share between threads."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, default=None):
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class AttentionExplorer(w.VBox):
    """The explorer widget; its controls are attributes, so a script or a test can drive it.

    ``expression`` (Text), ``kind`` (Dropdown: cross, encoder, decoder), ``layer`` (Dropdown), ``head``
    (Dropdown: ``"all"`` or a head number), ``decoding`` (ToggleButtons: greedy, beam); outputs ``status``
    (HTML: working, or the error), ``series_output`` (HTML: expression, series, sympy's verdict) and
    ``figure`` (Image: the PNG of the heatmap). ``computed`` counts the work done (predictions, drawings,
    sympy checks): what the caches saved does not count. ``wait()`` blocks until the display is up to date.
    """

    def __init__(
        self,
        model: Seq2SeqTransformer,
        expression: str = LECTURE_EXPRESSION,
        *,
        kind: str = "cross",
        layer: int = -1,
        head: int | str = ALL_HEADS,
        decoding: str = "greedy",
        beam: int = 4,
        debounce: float = 0.5,
        sympy_timeout: float = 10.0,
        dpi: int = 100,
    ):
        config = model.config
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}")
        self.model, self.beam, self.debounce, self.dpi = model, beam, debounce, dpi
        self.n_layers = {"encoder": config.n_encoder_layers, "decoder": config.n_decoder_layers}
        self.n_layers["cross"] = config.n_decoder_layers
        self.computed = {"predictions": 0, "drawings": 0, "checks": 0}
        self.last_error: BaseException | None = None  # an unexpected error, kept for a bug report

        self.expression = w.Text(
            value=expression,
            description="expression",
            placeholder="e.g. tan(hx)+sinh(gx)",
            continuous_update=True,  # every keystroke arrives; a pause or Enter starts the model
            layout=w.Layout(width="34em"),
        )
        self.kind = w.Dropdown(
            options=[(plotting.KINDS[name][0], name) for name in KINDS],
            value=kind,
            description="attention",
            layout=w.Layout(width="24em"),
        )
        self.layer = w.Dropdown(
            description="layer", layout=w.Layout(width="13em"), style={"description_width": "initial"}
        )
        self.layer.options = self._layer_options(kind)
        self.layer.value = _index(layer, self.n_layers[kind], "layer")
        self.head = w.Dropdown(
            options=[("all heads", ALL_HEADS)] + [(f"head {h + 1}", h) for h in range(config.n_heads)],
            description="head",
            layout=w.Layout(width="14em"),
            style={"description_width": "initial"},
        )
        self.head.value = head if head == ALL_HEADS else _index(head, config.n_heads, "head")
        self.decoding = w.ToggleButtons(
            options=[("greedy", "greedy"), (f"beam ({beam})", "beam")],
            value=decoding,
            description="decoding",
            style={"button_width": "7.5em"},
        )
        self.status = w.HTML()
        self.series_output = w.HTML()
        self.figure = w.Image(format="png", layout=w.Layout(max_width="100%", height="auto"))
        super().__init__(
            children=[
                w.HBox([self.expression, self.decoding]),
                w.HBox([self.kind, self.layer, self.head]),
                self.status,
                self.series_output,
                self.figure,
            ]
        )

        self.add_class("labutils-explorer")
        for name in ("expression", "kind", "layer", "head", "decoding", "status", "series_output", "figure"):
            getattr(self, name).add_class(f"labutils-{name.replace('_', '-')}")

        self._predictions = _LRU(128)  # (text, decoding) → Prediction or the error message
        self._drawings = _LRU(64)  # (expression, decoding, kind, layer, head) → PNG bytes
        self._checks = _LRU(256)  # (expression, series) → Check
        self._checker = SympyChecker(sympy_timeout)
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="explorer-model")
        self._sympy_thread = ThreadPoolExecutor(1, thread_name_prefix="explorer-sympy")
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every change: work for an older one is skipped or not shown
        self._timer: threading.Timer | None = None
        self._pending: dict[ThreadPoolExecutor, set[Future]] = {
            self._model_thread: set(),
            self._sympy_thread: set(),
        }
        self._shown: Prediction | None = None
        self._shown_generation = 0
        self._syncing = False
        weakref.finalize(self, _shut_down, self._model_thread, self._sympy_thread, self._checker)

        self.expression.observe(self._on_typing, "value")
        self.expression.on_msg(self._on_text_message)
        self.kind.observe(self._on_kind, "value")
        for control in (self.layer, self.head, self.decoding):
            control.observe(self._on_selector, "value")
        self._schedule(0.0)
        self.wait(sympy=False)  # show the first expression at once; sympy's verdict follows

    def __repr__(self) -> str:
        return (
            f"AttentionExplorer({self.expression.value!r}, kind={self.kind.value!r}, "
            f"layer={self.layer.value}, head={self.head.value!r}, decoding={self.decoding.value!r})"
        )

    # ---- events (on the kernel's thread)

    def _on_typing(self, change) -> None:
        self._schedule(self.debounce)

    def _on_text_message(self, widget, content, buffers) -> None:
        if content.get("event") == "submit":  # Enter: what the deprecated Text.on_submit listened to
            self._schedule(0.0)

    def _on_kind(self, change) -> None:
        self._syncing = True  # new layer options must not start a run of their own
        try:
            index = min(self.layer.value or 0, self.n_layers[change["new"]] - 1)
            self.layer.options = self._layer_options(change["new"])
            self.layer.value = index
        finally:
            self._syncing = False
        self._schedule(0.0)

    def _on_selector(self, change) -> None:
        if not self._syncing:
            self._schedule(0.0)

    def _layer_options(self, kind: str) -> list[tuple[str, int]]:
        return [(f"layer {i + 1}", i) for i in range(self.n_layers[kind])]  # numbered from 1, as read

    # ---- scheduling

    def _schedule(self, delay: float) -> None:
        """Show the controls' current values after ``delay`` seconds, unless something changes before."""
        with self._lock:
            self._generation += 1
            generation = self._generation
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if delay > 0:
                self._timer = threading.Timer(delay, self._submit, (generation,))
                self._timer.daemon = True
                self._timer.start()
        if delay <= 0:
            self._submit(generation)
        else:
            self._set_status("waiting for you to finish typing…", busy=True)

    def _submit(self, generation: int) -> None:
        controls = (self.expression, self.decoding, self.kind, self.layer, self.head)
        request = tuple(control.value for control in controls)
        self._track(self._model_thread, self._show, generation, request)

    def _track(self, executor: ThreadPoolExecutor, function: Callable, *args) -> None:
        pending = self._pending[executor]
        try:
            future = executor.submit(self._guarded, function, *args)
        except RuntimeError:  # the explorer was closed
            return
        with self._lock:
            pending.add(future)
        future.add_done_callback(lambda done: self._untrack(pending, done))

    def _untrack(self, pending: set[Future], future: Future) -> None:
        with self._lock:
            pending.discard(future)

    def _guarded(self, function: Callable, *args) -> None:
        """Run ``function``; an unexpected error is shown in the widget, never lost in a thread."""
        try:
            function(*args)
        except Exception as error:  # a bug: say so where the student looks, and keep it for the report
            self.last_error = error
            self._set_status(f"unexpected error (please report it): {_describe(error)}", error=True)

    def _current(self, generation: int) -> bool:
        return generation == self._generation

    def wait(self, timeout: float | None = None, sympy: bool = True) -> bool:
        """Block until the display shows the controls' values (and sympy's verdict); False on ``timeout``."""
        deadline = None if timeout is None else _now() + timeout
        while True:
            timer = self._timer
            if timer is not None:
                timer.join(None if deadline is None else max(0.0, deadline - _now()))
            threads = [self._model_thread] + ([self._sympy_thread] if sympy else [])
            with self._lock:
                pending = [f for thread in threads for f in self._pending[thread] if not f.done()]
            idle = not pending and (self._timer is None or not self._timer.is_alive())
            if idle:
                return True
            remaining = None if deadline is None else deadline - _now()
            if remaining is not None and remaining <= 0:
                return False
            wait_for(pending, remaining)

    # ---- the work (on the explorer's threads)

    def _show(self, generation: int, request: tuple) -> None:
        if not self._current(generation):
            return  # the controls changed since: a newer request follows
        text, decoding, kind, layer, head = request
        prediction = self._predictions.get((text, decoding))
        if prediction is None:
            self._set_status("the model is writing the series…", busy=True, generation=generation)
            try:
                prediction = predict(self.model, text, decoding, self.beam)
            except (TokenizationError, ValueError) as error:
                prediction = _describe(error, name=False)  # a student's typo: cached like an answer
            self.computed["predictions"] += 1
            self._predictions.put((text, decoding), prediction)
        if isinstance(prediction, str):
            if self._current(generation):
                self._shown = None
                self._set_status(prediction, error=True)
                self.series_output.value = _error_html(text, prediction)
                self.figure.value = b""
            return
        key = (prediction.expression, decoding, kind, layer, head)
        png = self._drawings.get(key)
        if png is None:
            self._set_status("drawing…", busy=True, generation=generation)
            png = self._png(prediction, kind, layer, head)
            self.computed["drawings"] += 1
            self._drawings.put(key, png)
        if not self._current(generation):
            return
        check = self._checks.get((prediction.expression, prediction.series))
        self._shown, self._shown_generation = prediction, generation
        self.series_output.value = _series_html(text, prediction, check, self._checker.timeout)
        self.figure.value = png
        self._set_status("asking sympy…" if check is None else "", busy=check is None)
        if check is None:
            self._track(self._sympy_thread, self._check, prediction)

    def _check(self, prediction: Prediction) -> None:
        key = (prediction.expression, prediction.series)
        if self._checks.get(key) is None:
            if self._shown is not prediction:
                return  # the student moved on before sympy's turn came: check it if they come back
            check = self._checker.check(*key)
            self.computed["checks"] += 1
            self._checks.put(key, check)
        if self._shown is prediction:
            text = self.expression.value
            self.series_output.value = _series_html(
                text, prediction, self._checks.get(key), self._checker.timeout
            )
            self._set_status("", generation=self._shown_generation)

    def _png(self, prediction: Prediction, kind: str, layer: int, head: int | str) -> bytes:
        figure = self.draw(prediction, kind, layer, head)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=self.dpi, bbox_inches="tight", metadata={"Software": None})
        return buffer.getvalue()

    def draw(
        self,
        prediction: Prediction | None = None,
        kind: str | None = None,
        layer: int | None = None,
        head: int | str | None = None,
    ) -> Figure:
        """The heatmap shown (or of the given prediction and selection) as a matplotlib Figure.

        The figure is made without pyplot, so it is safe in a thread and never pops up on its own;
        ``IPython.display.display(figure)`` shows it, ``figure.savefig("name.png")`` saves it.
        """
        prediction = prediction or self._shown
        if prediction is None:
            raise ValueError("nothing to draw: the expression could not be read")
        kind = kind or self.kind.value
        layer = self.layer.value if layer is None else layer
        head = self.head.value if head is None else head
        attention = prediction.attention
        lq, lk = attention[kind][layer].shape[-2:]
        # tokens across and down, as plotting draws them: cross-attention in landscape when lq > lk
        across, down = (lq, lk) if kind == "cross" and lq > lk else (lk, lq)
        rows = {"predicted_tokens": _predicted(prediction)} if kind in ("decoder", "cross") else {}
        if head == ALL_HEADS:
            n_heads = attention[kind][layer].shape[1]
            panel = (_clip(0.16 * across, 1.8, 4.5), _clip(0.16 * down, 1.8, 5.0))

            def size_of(ncols: int) -> tuple[float, float]:
                return ncols * panel[0] + 3.2, math.ceil(n_heads / ncols) * panel[1] + 2.4

            def badness(ncols: int) -> float:  # far from 3:2, whether the maps are tall or square; gaps
                width, height = size_of(ncols)
                return abs(math.log(width / height / 1.5)) + 0.5 * (-n_heads % ncols)

            ncols = min(range(1, n_heads + 1), key=badness)
            nrows = math.ceil(n_heads / ncols)
            size = size_of(ncols)
            shrink = min(1.0, 11 / size[0], 10 / size[1])  # fits a notebook and a projector
            figure = Figure(figsize=(size[0] * shrink, size[1] * shrink), layout="constrained")
            axes = figure.subplots(nrows, ncols, squeeze=False)
            for extra in axes.flat[n_heads:]:
                extra.remove()
            title = f"{plotting.KINDS[kind][0]}, layer {layer + 1}, all heads"
            plot_attention_grid(
                attention, kind=kind, layers=layer, axes=axes.flat[:n_heads], title=title, **rows
            )
        else:
            size = (_clip(0.3 * across, 3.0, 8.0) + 2.8, _clip(0.3 * down, 2.5, 9.0) + 2.0)
            figure = Figure(figsize=size, layout="constrained")
            plot_attention(attention, kind=kind, layer=layer, head=head, ax=figure.subplots(), **rows)
        return figure

    # ---- what is shown

    def _set_status(
        self, message: str, busy: bool = False, error: bool = False, generation: int | None = None
    ) -> None:
        """Say what the explorer is doing; with ``generation``, only if nothing has changed since."""
        if generation is not None and not self._current(generation):
            return
        # The class lets a browser test wait for the explorer: ``.labutils-explorer:not(.labutils-busy)``.
        (self.add_class if busy else self.remove_class)("labutils-busy")
        if error:
            self.status.value = f'<span style="color:#b00020">⚠ {html.escape(message)}</span>'
        elif busy:
            self.status.value = f'<span style="color:#555">⏳ {html.escape(message)}</span>'
        else:
            self.status.value = ""

    def summary(self) -> str:
        """What the explorer shows, as plain text: the expression, the model's series, sympy's verdict."""
        text = self.expression.value
        prediction = self._predictions.get((text, self.decoding.value))
        if prediction is None:
            return f"expression: {text}"
        if isinstance(prediction, str):
            return f"expression: {text}\nerror: {prediction}"
        check = self._checks.get((prediction.expression, prediction.series))
        lines = [
            f"expression: {prediction.expression}",
            f"model ({prediction.decoding}): {describe_series(prediction)}",
            f"sympy: {_verdict_text(check, self._checker.timeout)}",
        ]
        if check is not None and check.verdict != metrics.OK and check.truth:
            lines.append(f"sympy's series: {check.truth}")
        return "\n".join(lines)

    def _repr_mimebundle_(self, **kwargs):
        """The widget, with a PNG and text for front ends that cannot show widgets (a static view)."""
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        bundle["text/plain"] = self.summary()
        if self.figure.value:
            bundle["image/png"] = base64.b64encode(self.figure.value).decode("ascii")
        return bundle

    def show_static(self) -> Figure | None:
        """Print the summary and show the heatmap with pyplot: the explorer without a widget front end."""
        import matplotlib.pyplot as plt

        self.wait()
        print(self.summary())
        if self._shown is None:
            return None
        attention = self._shown.attention
        kind, layer, head = self.kind.value, self.layer.value, self.head.value
        rows = {"predicted_tokens": _predicted(self._shown)} if kind in ("decoder", "cross") else {}
        if head == ALL_HEADS:
            figure = plot_attention_grid(attention, kind=kind, layers=layer, **rows)
        else:
            figure = plot_attention(attention, kind=kind, layer=layer, head=head, **rows)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "FigureCanvasAgg is non-interactive"
            plt.show()
        return figure

    def close(self) -> None:
        """Stop the explorer's threads and its sympy process, and close its widgets."""
        with self._lock:
            self._generation += 1
            if self._timer is not None:
                self._timer.cancel()
        _shut_down(self._model_thread, self._sympy_thread, self._checker)
        controls = (self.expression, self.kind, self.layer, self.head, self.decoding, self.status)
        for control in (*controls, self.series_output, self.figure, *self.children):
            control.close()
        super().close()


def _predicted(prediction: Prediction) -> list[str | None]:
    """What each row of the decoder's maps predicts: the next token written (``<eos>`` after the last)."""
    return next_tokens(prediction.attention["target_tokens"], written=prediction.series)


def _describe(error: BaseException, name: bool = True) -> str:
    """One line for an error, never empty: its first line of message, or what it is when it has none."""
    lines = str(error).strip().splitlines()
    if not lines:
        return f"{type(error).__name__} (without a message)"
    return f"{type(error).__name__}: {lines[0]}" if name else lines[0]


def _shut_down(model_thread: ThreadPoolExecutor, sympy_thread: ThreadPoolExecutor, checker: SympyChecker):
    model_thread.shutdown(wait=False, cancel_futures=True)
    sympy_thread.shutdown(wait=False, cancel_futures=True)
    checker.close()


def _now() -> float:
    import time

    return time.monotonic()


def _clip(value: float, low: float, high: float) -> float:
    return float(min(max(value, low), high))


def _index(value: int, n: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -n <= value < n:
        raise ValueError(f"{name} {value!r} is out of range: the model has {n} (0..{n - 1})")
    return value % n


def _verdict_text(check: Check | None, timeout: float) -> str:
    if check is None:
        return "checking…"
    return metrics.verdict_text(check.verdict, timeout, check.detail)


def _code(text: str) -> str:
    return f"<code>{html.escape(text)}</code>"


def _series_html(text: str, prediction: Prediction, check: Check | None, timeout: float) -> str:
    rows = [("expression", _code(prediction.expression))]
    if prediction.expression != text.replace(" ", ""):
        rows[0] = ("expression", f"{_code(prediction.expression)} <small>(you typed {_code(text)})</small>")
    series = (
        _code(prediction.series)
        if prediction.series
        else f"<i>{html.escape(describe_series(prediction))}</i>"
    )
    if prediction.outside:
        warning = f"outside the training family: {prediction.outside}; expect mistakes"
        rows.append(("⚠", f'<span style="color:#8a6d00">{html.escape(warning)}</span>'))
    rows.append((f"model ({prediction.decoding})", series))
    colour = {None: "#555", metrics.OK: "#1b7f3b"}.get(check and check.verdict, "#b00020")
    if check is not None and check.verdict in (metrics.TIMEOUT, metrics.UNWRITABLE, metrics.ERROR):
        colour = "#8a6d00"  # nobody's mistake: not the model's red
    verdict = html.escape(_verdict_text(check, timeout))
    rows.append(("sympy", f'<span style="color:{colour}">{verdict}</span>'))
    if check is not None and check.verdict != metrics.OK and check.truth:
        rows.append(("sympy's series", _code(check.truth)))
    cells = "".join(
        f'<tr><td style="padding-right:1em;text-align:right;vertical-align:top"><b>{name}</b></td>'
        f'<td style="text-align:left;word-break:break-all">{value}</td></tr>'
        for name, value in rows
    )
    return f"<table>{cells}</table>"


def _error_html(text: str, message: str) -> str:
    return (
        f"<table><tr><td style='padding-right:1em'><b>expression</b></td><td>{_code(text)}</td></tr>"
        f"<tr><td style='padding-right:1em'><b>error</b></td>"
        f"<td style='color:#b00020'>{html.escape(message)}</td></tr></table>"
    )


# ------------------------------------------------------------------------------------- the entry point


def _has_widget_front_end() -> bool:
    """True inside a Jupyter kernel (JupyterLab, classic notebook, VS Code, Colab); False in plain Python."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def load_model(
    model: Seq2SeqTransformer | None = None, checkpoint: str | os.PathLike | None = None
) -> Seq2SeqTransformer:
    """``model`` itself, the weights in ``checkpoint`` (file or run folder), or the shipped model."""
    if model is not None and checkpoint is not None:
        raise ValueError("give model= or checkpoint=, not both")
    if model is not None:
        return model
    return load_weights(checkpoint) if checkpoint is not None else load_pretrained()


def explore(
    expression: str = LECTURE_EXPRESSION,
    model: Seq2SeqTransformer | None = None,
    checkpoint: str | os.PathLike | None = None,
    **options,
) -> AttentionExplorer:
    """The attention explorer for ``model`` (or the weights in ``checkpoint``, or the shipped model).

    In a notebook, the returned widget shows itself. Without a widget front end (plain Python), the
    explorer prints what it would show and draws the heatmap with matplotlib. ``options``: ``kind``,
    ``layer``, ``head`` (indices from 0, as in Python; the controls and titles number them from 1),
    ``decoding``, ``beam``, ``debounce`` (seconds of pause before the model runs), ``sympy_timeout``
    (seconds), ``dpi``. Works from a plain script too, without an ``if __name__ == "__main__":`` guard.
    """
    explorer = AttentionExplorer(load_model(model, checkpoint), expression, **options)
    if not _has_widget_front_end():
        explorer.show_static()
    return explorer
