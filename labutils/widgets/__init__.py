"""The attention explorer (``labutils.explore()``): the interface over decoding, sympy's verdicts and the plots.

``explorer`` holds the widget, ``views`` what it draws for each view (``matrix``, ``lines``, ``model``,
``steps``) with :mod:`labutils.plotting`. It needs ipywidgets, so ``labutils`` imports it only when
``labutils.explore`` is first used.
"""

from __future__ import annotations

import os

from torch import nn

from labutils import models
from labutils.model import WeightsError
from labutils.widgets.explorer import LECTURE_EXPRESSION, VIEWS, AttentionExplorer

__all__ = ["explore", "AttentionExplorer", "LECTURE_EXPRESSION", "VIEWS", "load_model", "shipped_models"]


def _has_widget_front_end() -> bool:
    """True inside a Jupyter kernel (JupyterLab, classic notebook, VS Code, Colab); False in plain Python."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def shipped_models() -> nn.Module | dict[str, nn.Module]:
    """The models shipped with the package: a dict by kind when there are two, else the encoder–decoder."""
    found = {}
    for kind in models.KINDS:
        try:
            found[kind] = models.load_shipped(kind)
        except WeightsError:
            if kind == models.DEFAULT_KIND:
                raise
    return found if len(found) > 1 else found[models.DEFAULT_KIND]


def load_model(model=None, checkpoint: str | os.PathLike | None = None):
    """``model`` itself (one, or a dict by name), the weights in ``checkpoint`` (file or run folder, of either
    kind), or the shipped models."""
    if model is not None and checkpoint is not None:
        raise ValueError("give model= or checkpoint=, not both")
    if model is not None:
        return model
    return models.load_weights(checkpoint) if checkpoint is not None else shipped_models()


def explore(
    expression: str = LECTURE_EXPRESSION,
    model=None,
    checkpoint: str | os.PathLike | None = None,
    **options,
) -> AttentionExplorer:
    """The attention explorer for ``model`` (or a dict of models by name, the weights in ``checkpoint``, or
    the shipped models).

    In a notebook, the returned widget shows itself. Without a widget front end (plain Python), the
    explorer prints what it would show and draws the view with matplotlib. ``options``: ``view`` (matrix,
    lines, model, steps), ``kind``, ``layer``, ``head`` (indices from 0, as in Python; the controls and
    titles number them from 1), ``decoding``, ``beam``, ``debounce`` (seconds of pause before the model
    runs), ``sympy_timeout`` (seconds), ``dpi``, ``model_name``. Works from a plain script too, without an
    ``if __name__ == "__main__":`` guard.
    """
    explorer = AttentionExplorer(load_model(model, checkpoint), expression, **options)
    if not _has_widget_front_end():
        explorer.show_static()
    return explorer
