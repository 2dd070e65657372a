"""Tools for the course's staff: grading submissions, the student release, the slide figures.

* :mod:`~labutils.instructor.grading`: ``python -m labutils grade``, the class;
  :mod:`~labutils.instructor.submission` grades one notebook in a kernel of its own, the points decided in
  the grader's process (:mod:`~labutils.instructor.runner` runs in the kernel and hands back data,
  :mod:`~labutils.instructor.calling` reads it). The kernel runs below a
  :mod:`~labutils.instructor.supervisor` that ends everything it starts (:mod:`~labutils.instructor.kernel`),
  imports a private copy of the package, in bubblewrap when it runs here
  (:mod:`~labutils.instructor.sandbox`); :mod:`~labutils.instructor.digest` stops the batch when what the
  verdicts depend on changes; :mod:`~labutils.instructor.similarity` pairs answers alike;
  :mod:`~labutils.instructor.sources` reads the notebooks and :mod:`~labutils.instructor.gradebook` writes
  the results;
* :mod:`~labutils.instructor.release`: ``python -m labutils student`` and ``release``, the student notebooks
  made from ``solutions/`` and the release checked for leaks;
* :mod:`~labutils.instructor.figures`: ``python -m labutils figures``, the slides' and README's figures.

They are built on the core and on :mod:`labutils.checks`; nothing in the core, the checks or the widgets
imports them (``make test`` holds this with import-linter contracts).

They ship in the student wheel: it is the same package the instructor installs, the release builds it with
``pip wheel`` from this repository, and nothing here is secret. The solutions and hidden tests live in
``solutions/``, which no wheel holds (the release's leak check looks for them in every file it hands out).
"""
