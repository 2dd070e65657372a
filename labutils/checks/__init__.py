"""Exercise checks: a student's function tested against the package's own, with feedback to act on.

A check cell calls one function of this package with the function its answer cell defines::

    checks.masked_attention(masked_attention)

The package is a small core (:mod:`~labutils.checks.core`: exercises, cases, running and publishing;
:mod:`~labutils.checks.compare`: comparisons and hints; :mod:`~labutils.checks.guard`: what an answer may not
use) and a module per notebook (:mod:`~labutils.checks.tokenization` … :mod:`~labutils.checks.gpt`;
notebooks 04 and 05 have two each: attention and :mod:`~labutils.checks.multi_head`, the transformer's layers
and :mod:`~labutils.checks.training`).
Adding an exercise is one judge function and its list of typical mistakes in its notebook's module, declared
with :func:`~labutils.checks.core.exercise` (see there: cases, call, judge).

The contract (the grader, :mod:`labutils.instructor.grading`, relies on it):

* A check runs named tests of the answer against the package's implementation (or PyTorch's). Each test
  passes or fails; ``points = round(max_points * passed / (passed + failed), 2)``.
* A check never raises. An unsolved stub (``NotImplementedError``, nbgrader's ``raise NotImplementedError()``)
  is "not done yet" and earns 0; an exception in the answer is reported by its one-line message and the line
  of the answer that raised it.
* A wrong result is compared with what the typical mistakes would give (no 1/√d, softmax over the wrong axis,
  mask inverted, ...): if it equals one, the message names that mistake (``Hint: ...``). Messages say what
  came back for a test input and where it is wrong (type, shape, dtype, the first wrong entry), never the
  reference answer's output or code.
* While the answer runs, the labutils functions the exercise asks the student to write (with their
  re-exports, and any name in the answer's globals bound to them) are switched off: calling one raises
  :class:`ForbiddenCall`, so an answer that only calls the package earns nothing, and the feedback says why.
* A check call publishes exactly one display output, a bundle holding ``text/plain``, ``text/html`` and
  :data:`MIME_TYPE` (``application/vnd.labutils.check+json``) with::

      {"grade_id": "04_attention.masked_attention", "points": 1.5, "max_points": 2,
       "messages": ["✓ no key masked", ..., "✗ padding mask: weights: ... Hint: ..."],
       "passed": ["no key masked", ...], "failed": ["padding mask"], "feedback": "Exercise 4.2 ..."}

  ``messages`` holds one line per test, ``"✓ name"`` or ``"✗ name: what to change"`` (or, for an unsolved
  stub, the single "not done yet" line); ``feedback`` is the summary line followed by the same lines.

  Outside IPython the feedback is printed instead. The call returns None (a returned object would be a
  second output), so it is the last statement of its cell. Under nbgrader (``NBGRADER_EXECUTION`` set to
  ``autograde`` or ``validate``) it returns the points instead: nbgrader scores an "autograder tests" cell
  by the number the cell returns, and by its full points when it returns nothing.
* Hidden tests vary the inputs: each is declared in its notebook's module with :func:`hidden_test`, a
  function that draws a case from a generator, and the one-sentence requirement it tests::

      @hidden_test("04_attention.causal_mask", "a causal mask of any length hides exactly the keys after ...")
      def any_length(generator) -> Case:
          return Case((integer(generator, 2, 64),))

  The grader (:mod:`labutils.instructor.grading`) draws the generators from a secret of its grading run,
  runs the answer on them in the student's kernel and judges what comes back in its own process; a check in
  a notebook runs them only under nbgrader. A hidden test is named ``"hidden test: <requirement>"`` in
  ``passed``/``failed``, and its failure says nothing more. (The older form, ``@checks.hidden_test(grade_id)``
  on ``fn(answer)`` in a check cell, is run by the next check of that grade_id in the kernel; ``labutils
  grade`` never runs it.)
* :data:`EXERCISES` maps each grade_id to its :class:`Exercise` (number, function name, points, forbidden).
* ``with checks.capture() as results:`` collects :class:`CheckResult` objects instead of displaying them.
"""

from labutils.checks.core import EXERCISES, MIME_TYPE, CheckResult, Exercise, capture, hidden_test
from labutils.checks.guard import ForbiddenCall

# The checks, one module per notebook; importing them declares their exercises in EXERCISES, in order.
# isort: off
from labutils.checks.tokenization import split_tokens, build_vocabulary
from labutils.checks.coding_and_padding import encode, pad_codes, make_batch
from labutils.checks.embedding import sinusoidal_encoding, embed, project_2d
from labutils.checks.attention import attention, masked_attention, causal_mask
from labutils.checks.multi_head import split_heads, multi_head_attention
from labutils.checks.transformer import encoder_layer_forward, decoder_layer_forward
from labutils.checks.training import teacher_forcing_loss, training_step
from labutils.checks.translation import greedy_translate, series_log_probability
from labutils.checks.gpt import build_sequence, greedy_generate

# isort: on

__all__ = [
    "MIME_TYPE",
    "EXERCISES",
    "Exercise",
    "CheckResult",
    "ForbiddenCall",
    "capture",
    "hidden_test",
    # the checks, in the order of the notebooks
    "split_tokens",
    "build_vocabulary",
    "encode",
    "pad_codes",
    "make_batch",
    "sinusoidal_encoding",
    "embed",
    "project_2d",
    "attention",
    "masked_attention",
    "causal_mask",
    "split_heads",
    "multi_head_attention",
    "encoder_layer_forward",
    "decoder_layer_forward",
    "teacher_forcing_loss",
    "training_step",
    "greedy_translate",
    "series_log_probability",
    "build_sequence",
    "greedy_generate",
]
