"""The attention explorer: type an expression, see the model's series, sympy's verdict and its attention.

``labutils.explore()`` shows a text box (the lecture's ``cosh(a*x)**3+tanh(b*x)`` to start with), greedy or
beam decoding, the model (when there are two), and the view: ``matrix`` (a heatmap of one head, or a grid
of the layer's heads), ``lines`` (the line view: a line per pair, opacity = weight, one head, all heads in
their colours or their mean, and a token to select), ``model`` (every layer × head at once; a button per
map opens it in the matrix or the line view) or ``steps`` (decoding step by step: a slider and a play
button over the written tokens, with each step's top choices and its row of cross-attention). Below them:
the expression as the model reads it, the series the model writes, whether sympy confirms it, and the
picture.

How it stays responsive: the model runs in a background thread, after a short pause in typing or at once on
Enter; results are cached, so going back to an expression, a view or a head costs nothing; sympy runs in a
separate process with a time limit, so a slow ``simplify`` never freezes the notebook. The picture is a PNG
in an ``ipywidgets.Image``, drawn on a figure of its own (never through pyplot, which is not thread-safe).
Everything is ipywidgets' own: no JavaScript is fetched from anywhere.

This module is the interface only: what it shows comes from :func:`labutils.decode.predict` and
:func:`labutils.decode.decoding_steps`, :class:`labutils.metrics.SympyChecker` (sympy's verdict, in words
from :func:`labutils.metrics.verdict_text`) and :mod:`labutils.plotting` (arranged in ``views``). It is
one idea, long as it is: the controls, what each view offers, and the threads that keep them responsive.
"""

from __future__ import annotations

import base64
import html
import io
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for

import ipywidgets as w
from matplotlib.figure import Figure
from torch import nn

from labutils import metrics
from labutils.decode import DecodingSteps, Prediction, decoding_steps, describe_series, predict
from labutils.metrics import SympyChecker
from labutils.model import attention_for_codes
from labutils.plotting.maps import kinds_in, title_of
from labutils.tokens import SOURCE_VOCAB, TokenizationError, code
from labutils.widgets import views
from labutils.widgets.views import ALL_HEADS, MEAN, NO_TOKEN, VIEWS

__all__ = ["AttentionExplorer", "LECTURE_EXPRESSION", "VIEWS"]

LECTURE_EXPRESSION = "cosh(a*x)**3+tanh(b*x)"
KINDS = ("cross", "encoder", "decoder")  # the order the kind selector lists them
VIEW_NAMES = {"matrix": "matrix", "lines": "lines", "model": "model view", "steps": "steps"}
PLAY_INTERVAL_MS = 1500


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


def named_models(model) -> dict[str, nn.Module]:
    """``{name: model}``: a dict as given, or one model under the name of its kind."""
    if isinstance(model, Mapping):
        if not model:
            raise ValueError("no model: give a model, or a dict of at least one")
        return dict(model)
    return {getattr(model, "architecture", "encoder-decoder"): model}


def anatomy(model: nn.Module) -> dict:
    """``{"layers": {kind: n}, "heads": H}``: what one pass over ``x`` shows of the model's attention."""
    attention = attention_for_codes(model, code("x", SOURCE_VOCAB), [])
    layers = {kind: len(attention[kind]) for kind in kinds_in(attention)}
    return {"layers": layers, "heads": int(attention["cross"][0].shape[1])}


class AttentionExplorer(w.VBox):
    """The explorer widget; its controls are attributes, so a script or a test can drive it.

    ``expression`` (Text), ``decoding`` (ToggleButtons: greedy, beam), ``model_name`` (Dropdown, shown
    with two models or more), ``view`` (ToggleButtons: matrix, lines, model, steps), ``kind`` (Dropdown:
    the kinds the model has), ``layer`` (Dropdown), ``head`` (Dropdown: ``"all"``, ``"mean"`` or a head,
    as the view offers), ``token`` (Dropdown, lines: a query token whose lines alone are drawn),
    ``step`` (IntSlider, steps: numbered from 1) and ``play`` (Play, linked to it in the browser),
    ``open_in`` and ``open_buttons`` (model view: a button per layer and head opens that map); outputs
    ``status`` (HTML: working, or the error), ``series_output`` (HTML: expression, series, sympy's verdict)
    and ``figure`` (Image: the PNG of the view). ``computed`` counts the work done (predictions, step
    passes, drawings, sympy checks): what the caches saved does not count. ``wait()`` blocks until the
    display is up to date.
    """

    def __init__(
        self,
        model,
        expression: str = LECTURE_EXPRESSION,
        *,
        view: str = "matrix",
        kind: str = "cross",
        layer: int = -1,
        head: int | str = ALL_HEADS,
        decoding: str = "greedy",
        beam: int = 4,
        debounce: float = 0.5,
        sympy_timeout: float = 10.0,
        dpi: int = 100,
        model_name: str | None = None,
    ):
        self.models = named_models(model)
        name = model_name if model_name is not None else next(iter(self.models))
        if name not in self.models:
            raise ValueError(f"unknown model {name!r}: the explorer has {', '.join(self.models)}")
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}: use one of {', '.join(VIEWS)}")
        self._anatomy = {key: anatomy(m) for key, m in self.models.items()}
        if kind not in self._anatomy[name]["layers"]:
            have = ", ".join(k for k in KINDS if k in self._anatomy[name]["layers"])
            raise ValueError(f"unknown kind {kind!r}: the {name} model has {have}")
        self.beam, self.debounce, self.dpi = beam, debounce, dpi
        self.computed = {"predictions": 0, "steps": 0, "drawings": 0, "checks": 0}
        self.last_error: BaseException | None = None  # an unexpected error, kept for a bug report
        self._local = threading.local()  # per thread: controls being set by the explorer itself

        self.expression = w.Text(
            value=expression,
            description="expression",
            placeholder="e.g. tan(hx)+sinh(gx)",
            continuous_update=True,  # every keystroke arrives; a pause or Enter starts the model
            layout=w.Layout(width="34em"),
        )
        self.decoding = w.ToggleButtons(
            options=[("greedy", "greedy"), (f"beam ({beam})", "beam")],
            value=decoding,
            description="decoding",
            style={"button_width": "7.5em"},
        )
        self.model_name = w.Dropdown(options=list(self.models), value=name, description="model")
        self.model_name.layout.display = None if len(self.models) > 1 else "none"
        self.view = w.ToggleButtons(
            options=[(VIEW_NAMES[v], v) for v in VIEWS],
            value=view,
            description="view",
            style={"button_width": "7.5em"},
        )
        self.kind = w.Dropdown(description="attention", layout=w.Layout(width="24em"))
        self.layer = w.Dropdown(
            description="layer", layout=w.Layout(width="13em"), style={"description_width": "initial"}
        )
        self.head = w.Dropdown(
            description="head", layout=w.Layout(width="16em"), style={"description_width": "initial"}
        )
        self.token = w.Dropdown(
            options=[("all tokens", NO_TOKEN)],
            value=NO_TOKEN,
            description="token",
            layout=w.Layout(width="18em"),
            style={"description_width": "initial"},
        )
        self.step = w.IntSlider(
            value=1, min=1, max=1, description="step", continuous_update=False, layout=w.Layout(width="34em")
        )
        self.play = w.Play(value=1, min=1, max=1, interval=PLAY_INTERVAL_MS, description="play")
        w.jslink((self.play, "value"), (self.step, "value"))  # in the browser: no round trip per tick
        self.open_in = w.ToggleButtons(
            options=[("open in matrix", "matrix"), ("open in lines", "lines")],
            value="matrix",
            description="click a map:",
            style={"button_width": "9em", "description_width": "initial"},
        )
        self.open_buttons = w.GridBox(layout=w.Layout(grid_gap="2px 4px"))
        self.status = w.HTML()
        self.series_output = w.HTML()
        self.figure = w.Image(format="png", layout=w.Layout(max_width="100%", height="auto"))
        self._steps_row = w.HBox([self.play, self.step])
        self._model_row = w.VBox([self.open_in, self.open_buttons])
        super().__init__(
            children=[
                w.HBox([self.expression, self.decoding]),
                w.HBox([self.view, self.model_name]),
                w.HBox([self.kind, self.layer, self.head, self.token]),
                self._steps_row,
                self._model_row,
                self.status,
                self.series_output,
                self.figure,
            ]
        )
        self.add_class("labutils-explorer")
        names = ("expression", "decoding", "model_name", "view", "kind", "layer", "head", "token", "step")
        for control in (*names, "play", "open_in", "open_buttons", "status", "series_output", "figure"):
            getattr(self, control).add_class(f"labutils-{control.replace('_', '-')}")

        with self._setting():
            self._fit_controls(kind=kind, layer=layer, head=head)

        self._predictions = _LRU(128)  # (model, text, decoding) → Prediction or the error message
        self._steps = _LRU(32)  # (model, expression, decoding) → DecodingSteps
        self._drawings = _LRU(96)  # (model, expression, decoding, view, …) → PNG bytes
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
        self._listed: tuple | None = None  # what the token and step selectors list now
        weakref.finalize(self, _shut_down, self._model_thread, self._sympy_thread, self._checker)

        self.expression.observe(self._on_typing, "value")
        self.expression.on_msg(self._on_text_message)
        for control in (self.model_name, self.view, self.kind):
            control.observe(self._on_structure, "value")
        for control in (self.layer, self.head, self.decoding, self.token, self.step):
            control.observe(self._on_selector, "value")
        self._schedule(0.0)
        self.wait(sympy=False)  # show the first expression at once; sympy's verdict follows

    @property
    def model(self) -> nn.Module:
        """The model the explorer shows now."""
        return self.models[self.model_name.value]

    def __repr__(self) -> str:
        return (
            f"AttentionExplorer({self.expression.value!r}, model={self.model_name.value!r}, "
            f"view={self.view.value!r}, kind={self.kind.value!r}, layer={self.layer.value}, "
            f"head={self.head.value!r}, decoding={self.decoding.value!r})"
        )

    # ---- the controls each view offers

    def _setting(self):
        """``with self._setting():`` the explorer sets controls itself; their changes start no run."""
        explorer = self

        class Setting:
            def __enter__(self):
                self.before = getattr(explorer._local, "setting", False)
                explorer._local.setting = True

            def __exit__(self, *exc):
                explorer._local.setting = self.before

        return Setting()

    def _is_setting(self) -> bool:
        return getattr(self._local, "setting", False)

    def _fit_controls(
        self, kind: str | None = None, layer: int | None = None, head: int | str | None = None
    ) -> None:
        """Options and visibility of the kind, layer, head and model-view controls for the model and view."""
        shape = self._anatomy[self.model_name.value]
        view = self.view.value
        kinds = [k for k in KINDS if k in shape["layers"]]
        if view == "steps":
            kinds = ["cross"]  # a step's row is its cross-attention
        wanted_kind = self.kind.value if kind is None else kind
        kind = wanted_kind if wanted_kind in kinds else kinds[0]
        decoder_only = "encoder" not in shape["layers"]
        self.kind.options = [(title_of(k, decoder_only=decoder_only), k) for k in kinds]
        self.kind.value = kind
        n_layers = shape["layers"][kind]
        if layer is not None:  # asked for: it must exist
            layer = _index(layer, n_layers, "layer")
        else:  # kept from before, as far as this kind has layers
            layer = min(self.layer.value if self.layer.value is not None else n_layers - 1, n_layers - 1)
        self.layer.options = [(f"layer {i + 1}", i) for i in range(n_layers)]  # numbered from 1, as read
        self.layer.value = layer
        heads = [(f"head {h + 1}", h) for h in range(shape["heads"])]
        first = {
            "lines": [("all heads", ALL_HEADS), ("mean of the heads", MEAN)],
            "steps": [("mean of the heads", MEAN)],
        }
        options = first.get(view, [("all heads", ALL_HEADS)]) + heads
        wanted = self.head.value if head is None else head
        if isinstance(wanted, int) and not isinstance(wanted, bool):
            wanted = _index(wanted, shape["heads"], "head")
        values = [value for _, value in options]
        self.head.options = options
        self.head.value = wanted if wanted in values else values[0]
        show = {
            self.kind: view != "steps",
            self.layer: view != "model",
            self.head: view != "model",
            self.token: view == "lines",
            self._steps_row: view == "steps",
            self._model_row: view == "model",
        }
        for control, shown in show.items():
            control.layout.display = None if shown else "none"
        self._make_open_buttons(n_layers, shape["heads"])

    def _make_open_buttons(self, n_layers: int, n_heads: int) -> None:
        """The model view's buttons: one per layer and head, laid out as the maps are."""
        buttons = []
        for layer in range(n_layers):
            for head in range(n_heads):
                button = w.Button(
                    description=f"L{layer + 1} H{head + 1}",
                    tooltip=f"open layer {layer + 1}, head {head + 1}",
                    layout=w.Layout(width="auto"),
                )
                button.add_class(f"labutils-open-{layer + 1}-{head + 1}")
                button.on_click(lambda _, layer=layer, head=head: self.open_map(layer, head))
                buttons.append(button)
        for old in self.open_buttons.children:
            old.close()
        self.open_buttons.children = buttons
        self.open_buttons.layout.grid_template_columns = f"repeat({n_heads}, max-content)"

    def open_map(self, layer: int, head: int, view: str | None = None) -> None:
        """Open one map of the model view in the matrix or the line view (``view``, default ``open_in``)."""
        with self._setting():
            self.view.value = view or self.open_in.value
            self._fit_controls(layer=layer, head=head)
        self._schedule(0.0)

    def _list_for(self, prediction: Prediction, steps: DecodingSteps | None, kind: str) -> None:
        """The token selector's tokens (lines) and the step slider's range (steps), for what is shown."""
        listed = self._listed
        if listed is not None and listed[0] is prediction and listed[1] is steps and listed[2] == kind:
            return
        self._listed = (prediction, steps, kind)
        with self._setting():
            tokens = views.query_tokens(prediction, kind)
            options = [("all tokens", NO_TOKEN)] + [(f"{i}:{t}", i) for i, t in enumerate(tokens)]
            value = self.token.value if 0 <= self.token.value < len(tokens) else NO_TOKEN
            self.token.options = options
            self.token.value = value
            if steps is not None:
                n = len(steps.written)
                self.step.max = self.play.max = n
                self.step.value = min(self.step.value, n)

    # ---- events (on the kernel's thread)

    def _on_typing(self, change) -> None:
        self._schedule(self.debounce)

    def _on_text_message(self, widget, content, buffers) -> None:
        if content.get("event") == "submit":  # Enter: what the deprecated Text.on_submit listened to
            self._schedule(0.0)

    def _on_structure(self, change) -> None:
        if self._is_setting():
            return
        with self._setting():  # new options for the kind, layer and head must not start runs of their own
            self._fit_controls()
        self._schedule(0.0)

    def _on_selector(self, change) -> None:
        if not self._is_setting():
            self._schedule(0.0)

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
        controls = (self.model_name, self.expression, self.decoding, self.view, self.kind, self.layer)
        controls += (self.head, self.token, self.step)
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
        name, text, decoding, view, kind, layer, head, token, step = request
        model = self.models[name]
        prediction = self._predictions.get((name, text, decoding))
        if prediction is None:
            self._set_status("the model is writing the series…", busy=True, generation=generation)
            try:
                prediction = predict(model, text, decoding, self.beam)
            except (TokenizationError, ValueError) as error:
                prediction = _describe(error, name=False)  # a student's typo: cached like an answer
            self.computed["predictions"] += 1
            self._predictions.put((name, text, decoding), prediction)
        if isinstance(prediction, str):
            if self._current(generation):
                self._shown = None
                self._set_status(prediction, error=True)
                self.series_output.value = views.error_html(text, prediction)
                self.figure.value = b""
            return
        steps = None
        if view == "steps":
            steps = self._steps.get((name, prediction.expression, decoding))
            if steps is None:
                self._set_status("going through the steps…", busy=True, generation=generation)
                steps = decoding_steps(model, prediction.expression, decoding, self.beam)
                self.computed["steps"] += 1
                self._steps.put((name, prediction.expression, decoding), steps)
        if not self._current(generation):
            return
        self._list_for(prediction, steps, kind)
        token = token if view == "lines" else NO_TOKEN  # what a view does not use leaves its drawing alone
        step = min(step, len(steps.written)) if steps is not None else 0
        key = (name, prediction.expression, decoding, view, kind, layer, head, token, step)
        png = self._drawings.get(key)
        if png is None:
            self._set_status("drawing…", busy=True, generation=generation)
            png = self._png(self.draw(prediction, view, kind, layer, head, token, step, steps))
            self.computed["drawings"] += 1
            self._drawings.put(key, png)
        if not self._current(generation):
            return
        check = self._checks.get((prediction.expression, prediction.series))
        self._shown, self._shown_generation = prediction, generation
        self.series_output.value = views.series_html(text, prediction, check, self._checker.timeout)
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
            self.series_output.value = views.series_html(
                text, prediction, self._checks.get(key), self._checker.timeout
            )
            self._set_status("", generation=self._shown_generation)

    def _png(self, figure: Figure) -> bytes:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=self.dpi, bbox_inches="tight", metadata={"Software": None})
        return buffer.getvalue()

    def draw(
        self,
        prediction: Prediction | None = None,
        view: str | None = None,
        kind: str | None = None,
        layer: int | None = None,
        head: int | str | None = None,
        token: int | None = None,
        step: int | None = None,
        steps: DecodingSteps | None = None,
        new_figure: Callable[..., Figure] = Figure,
    ) -> Figure:
        """The picture shown (or of the given prediction and selection) as a matplotlib Figure.

        ``step`` is numbered from 1, as the slider shows it. The figure is made without pyplot (unless
        ``new_figure`` is ``pyplot.figure``), so it is safe in a thread and never pops up on its own;
        ``IPython.display.display(figure)`` shows it, ``figure.savefig("name.png")`` saves it.
        """
        prediction = prediction or self._shown
        if prediction is None:
            raise ValueError("nothing to draw: the expression could not be read")
        view = view or self.view.value
        kind = kind or self.kind.value
        layer = self.layer.value if layer is None else layer
        head = self.head.value if head is None else head
        if view == "matrix":
            return views.draw_matrix(prediction, kind, layer, head, new_figure)
        if view == "lines":
            token = self.token.value if token is None else token
            return views.draw_lines(prediction, kind, layer, head, token, new_figure)
        if view == "model":
            selected = (layer, head) if isinstance(head, int) else None
            return views.draw_model(prediction, kind, selected, new_figure)
        if steps is None:
            steps = self._steps.get((self.model_name.value, prediction.expression, prediction.decoding))
        if steps is None:
            steps = decoding_steps(self.model, prediction.expression, prediction.decoding, self.beam)
        step = self.step.value if step is None else step
        return views.draw_steps(steps, step - 1, layer, head, new_figure)

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
        prediction = self._predictions.get((self.model_name.value, text, self.decoding.value))
        if prediction is None:
            return f"expression: {text}"
        if isinstance(prediction, str):
            return f"expression: {text}\nerror: {prediction}"
        check = self._checks.get((prediction.expression, prediction.series))
        model = f"{self.model_name.value} model" if len(self.models) > 1 else "model"
        lines = [
            f"expression: {prediction.expression}",
            f"{model} ({prediction.decoding}): {describe_series(prediction)}",
            f"sympy: {views.verdict_text(check, self._checker.timeout)}",
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
        """Print the summary and show the view with pyplot: the explorer without a widget front end."""
        import warnings

        import matplotlib.pyplot as plt

        self.wait()
        print(self.summary())
        if self._shown is None:
            return None
        figure = self.draw(new_figure=plt.figure)
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
        controls = (self.expression, self.decoding, self.model_name, self.view, self.kind, self.layer)
        controls += (self.head, self.token, self.step, self.play, self.open_in, self.status)
        for control in (*controls, *self.open_buttons.children, self.open_buttons, self.series_output):
            control.close()
        for control in (self.figure, self._steps_row, self._model_row, *self.children):
            control.close()
        super().close()


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


def _index(value: int, n: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -n <= value < n:
        raise ValueError(f"{name} {value!r} is out of range: the model has {n} (0..{n - 1})")
    return value % n
