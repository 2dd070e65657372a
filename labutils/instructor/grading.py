"""Grading a class's submitted notebooks: ``python -m labutils grade``.

Each submission is graded in a kernel of its own (:mod:`~labutils.instructor.submission`); the points are
decided in this process, which student code never reaches. Around that, the batch holds the grader itself:

* nothing a submission starts outlives it: each kernel runs below a supervisor that ends every process the
  kernel started, before the submission's rows are written (:mod:`~labutils.instructor.kernel`); a process
  that could not be ended is a note and a non-zero exit;
* the grader cannot be changed from inside a kernel: kernels import a private copy of the package, and the
  digest of what the verdicts depend on (the package, the source notebooks, the grader's own output files) is
  taken before the batch and checked after every submission (:mod:`~labutils.instructor.digest`). A change
  stops the batch at once, with one line naming the submission and the file; nothing of that submission is
  counted, what was graded before is kept, and ``--resume`` continues once the files are restored;
* on Linux, with bubblewrap, each kernel runs in a sandbox: no network, a read-only system, its own
  submission and nothing else of the machine (:mod:`~labutils.instructor.sandbox`).

Results go to a CSV file one whole submission at a time, so an interrupted batch loses nothing and
``--resume`` continues it; at the end, a gradebook with one row per student, and the pairs of students whose
answers are alike (:mod:`~labutils.instructor.similarity`).
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from labutils.instructor import sandbox
from labutils.instructor.calling import NOT_THE_PACKAGE, PACKAGE
from labutils.instructor.digest import ChangedError, Digest, digest_path
from labutils.instructor.gradebook import (
    COLUMNS,
    ERROR,
    FAILED,
    GRADED,
    INCOMPLETE,
    SIMILARITY_COLUMNS,
    TOTAL_COLUMNS,
    Ledger,
    Result,
    class_summary,
    feedback_names,
    gradebook_path,
    similarity_path,
    totals_path,
    write_file,
    write_gradebook,
    write_similarity,
)
from labutils.instructor.kernel import Adoptions, Limits, kill_all_kernels
from labutils.instructor.similarity import Answer, Similarity, similar_pairs
from labutils.instructor.sources import (
    GradingError,
    Source,
    SubmissionError,
    find_submissions,
    identify,
    load_sources,
    read_notebook,
)
from labutils.instructor.submission import grade_submission, make_plan, score, where

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "solutions"

__all__ = [
    "COLUMNS", "TOTAL_COLUMNS", "SIMILARITY_COLUMNS", "GRADED", "INCOMPLETE", "FAILED", "ERROR", "GradingError",
    "ChangedError", "SubmissionError", "Limits", "Source", "Result", "Report", "Ledger", "load_sources",
    "read_notebook", "identify", "make_plan", "grade_submission", "grade", "totals_path", "gradebook_path",
    "similarity_path", "digest_path", "feedback_names", "class_summary", "kill_all_kernels", "PACKAGE",
    "NOT_THE_PACKAGE", "compile_student_pattern", "where", "score",
]  # fmt: skip


@dataclass
class Report:
    graded: int  # submissions graded in this run
    skipped: int  # already done (--resume)
    problems: list[str]  # "submission: status (why)" for every submission not fully graded
    summary: str
    duplicates: list[str] = field(default_factory=list)  # a student with two files of one notebook
    stopped: str | None = None  # the one line saying why the batch stopped, when a watched file changed
    similar: int = 0  # pairs in the similarity report
    sandbox: str = "none"

    @property
    def status(self) -> int:
        return 1 if self.problems or self.stopped else 0


class _Batch:
    """The submissions of one run, graded side by side; each written, once its kernel is ended, only if
    nothing the verdicts depend on changed meanwhile."""

    def __init__(self, digest: Digest, ledger: Ledger, feedback: Path, names: dict, log, total: int):
        self.digest, self.ledger, self.feedback, self.names, self.log = digest, ledger, feedback, names, log
        self.total, self.count = total, 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.running: list[str] = []  # submissions in flight since the last check
        self.stopped: str | None = None
        self.errors: list[Result] = []
        self.left: list[str] = []  # processes that could not be ended
        self.texts: dict[Path, str] = {}  # feedback files written, to write again after a change
        self.results: list[Result] = []

    def start(self, key: str) -> bool:
        with self.lock:
            if self.stop.is_set():
                return False
            self.running.append(key)
            return True

    def finish(self, result: Result, adoptions: Adoptions) -> None:
        """After the submission's kernels are ended: sweep what the grader adopted, check, then write."""
        left = adoptions.sweep()
        with self.lock:
            try:
                if left:
                    self.left.append(
                        f"{result.submission}: processes adopted by the grader: {', '.join(left)}"
                    )
                if self.stop.is_set():
                    return  # stopped while it ran: nothing of it counts
                changed = self.digest.check()
                if changed:
                    return self._stop(changed)
                target = self.feedback / self.names[result.submission]
                target.parent.mkdir(parents=True, exist_ok=True)
                write_file(target, result.text)
                self.texts[target] = result.text
                self.ledger.write(result)
                self.digest.wrote([target, self.ledger.out, self.ledger.totals])
                self.results.append(result)
                if result.status == ERROR:
                    self.errors.append(result)
                if result.left:
                    self.left.append(f"{result.submission}: could not end {', '.join(result.left)}")
                self.count += 1
                why = f" ({result.notes})" if result.status != GRADED and result.notes else ""
                self.log(
                    f"[{self.count}/{self.total}] {result.submission}: {result.points:g} / "
                    f"{result.max_points:g} {result.status}{why}"
                )
            finally:
                self.running.remove(result.submission)

    def _stop(self, changed: list[str]) -> None:
        suspects = list(self.running)
        who = suspects[0] if len(suspects) == 1 else " or ".join(suspects) + " (graded at the same time)"
        self.stop.set()
        kill_all_kernels("the batch was stopped")
        self.digest.stop(changed, who)
        mine = {str(path) for path in [self.ledger.out, self.ledger.totals, *self.texts, self.digest.path]}
        if mine & set(changed):  # the grader's own files: written again from what it wrote
            self.digest.wrote(self.ledger.restore())
            for path, text in self.texts.items():
                write_file(path, text)
            self.digest.wrote(self.texts)
        self.digest.write()
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        restore = "restore it, then" if set(changed) - mine else "the grader wrote its own files again:"
        self.stopped = (
            f"grading stopped: {changed[0]}{more} changed while {who} was graded; nothing of "
            f"{'it' if len(suspects) == 1 else 'them'} was counted; {restore} continue with --resume"
        )


def grade(
    paths: Iterable[str],
    source: str | os.PathLike = DEFAULT_SOURCE,
    out: str | os.PathLike = "grades.csv",
    feedback: str | os.PathLike | None = None,
    limits: Limits = Limits(),
    jobs: int = 1,
    resume: bool = False,
    force: bool = False,
    log: Callable[[str], None] | None = None,
    student_pattern: str | re.Pattern | None = None,
    sandbox_mode: str = "auto",
) -> Report:
    """Grade every submission; write grades.csv, its totals file, the feedback files as results arrive, and
    the gradebook (one row per student) and the similarity report at the end.

    ``student_pattern``: a regular expression with a group ``student``, searched in each file's name; without
    it students are named by their folder (nbgrader's ``submitted/<student>/<assignment>/``).
    ``sandbox_mode``: ``auto`` (bubblewrap when it runs here, else none, said in one line), ``bwrap`` or
    ``none``. Raises GradingError for a usage error, ChangedError when the package or the sources differ from
    what earlier grades of this ``--out`` were made with.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    pattern = compile_student_pattern(student_pattern)
    paths = list(paths)
    mode = sandbox.choose(sandbox_mode, log)
    sources = load_sources(source)
    submissions = find_submissions(paths, pattern)
    feedback = Path(feedback) if feedback is not None else Path(out).parent / "feedback"
    if feedback.exists() and not feedback.is_dir():
        raise GradingError(f"--feedback {feedback}: not a folder")
    digest = Digest(source, out)
    digest.take()
    digest.compare(digest.previous(), resume)
    ledger = Ledger(out, resume=resume, force=force)
    digest.write()
    digest.wrote([ledger.out, ledger.totals])
    names = dict(
        zip([s.key for s in submissions], feedback_names([s.file for s in submissions]), strict=True)
    )
    todo = [s for s in submissions if s.key not in ledger.done]
    skipped = len(submissions) - len(todo)
    if skipped:
        log(f"{skipped} submission(s) already graded in {ledger.out}: skipped")
    batch = _Batch(digest, ledger, feedback, names, log, len(todo))
    secret = secrets.randbits(63)
    view = sandbox.View(mode, limits.memory_mb)
    with Adoptions() as adoptions:

        def work(one) -> None:
            if batch.start(one.key):
                result = grade_submission(one.file, sources, limits, one.key, secret, one.student, view)
                batch.finish(result, adoptions)

        try:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(work, one) for one in todo]
                try:
                    for future in as_completed(futures):
                        future.result()
                except BaseException:
                    batch.stop.set()
                    for future in futures:
                        future.cancel()
                    kill_all_kernels()
                    raise
        finally:
            view.close()
    problems = [f"{row[0]}: {row[4]} ({row[5]})" for row in ledger.done.values() if row[4] != GRADED]
    problems += [
        f"{result.submission}: {ERROR} ({result.notes}; --resume grades it again)" for result in batch.errors
    ]
    problems += [f"{line} (still running: end them yourself)" for line in batch.left]
    duplicates = write_gradebook(gradebook_path(out), ledger.done.values(), sorted(sources))
    similarity = _similarity(submissions, batch.results, ledger, sources)
    write_similarity(similarity_path(out), similarity.pairs)
    summary = class_summary(ledger.rows()) + "\n" + similarity.summary(str(similarity_path(out)))
    return Report(
        len(batch.results), skipped, problems, summary, duplicates, batch.stopped, len(similarity.pairs), mode
    )


def _similarity(submissions, results: list[Result], ledger: Ledger, sources: dict[str, Source]) -> Similarity:
    """The class's answers, this run's as graded, those of earlier runs (--resume) read again."""
    answers, seen = [], set()
    for result in results:
        seen.add(result.submission)
        answers += _answers(result.submission, result.student, result.answers, sources.get(result.notebook))
    for one in submissions:
        row = ledger.done.get(one.key)
        if one.key in seen or row is None or row[1] not in sources:
            continue
        try:
            notebook = read_notebook(one.file)
            source, _ = identify(notebook, sources)
        except SubmissionError:
            continue
        plan = make_plan(notebook, source, Limits())
        codes = {s.exercise.grade_id: s.code for s in plan.steps if s.role == "student" and s.exercise}
        answers += _answers(one.key, row[6], codes, source)
    return similar_pairs(answers)


def _answers(submission: str, student: str, codes: dict[str, str], source: Source | None) -> list[Answer]:
    if source is None:
        return []
    functions = {exercise.grade_id: exercise.function for exercise in source.exercises}
    return [
        Answer(grade_id, student, submission, code, functions[grade_id])
        for grade_id, code in codes.items()
        if grade_id in functions
    ]


def compile_student_pattern(pattern: str | re.Pattern | None) -> re.Pattern | None:
    """The ``--student-pattern``, checked: it must compile and have a group named ``student``."""
    if pattern is None or isinstance(pattern, re.Pattern):
        compiled = pattern
    else:
        try:
            compiled = re.compile(pattern)
        except re.error as error:
            raise GradingError(f"--student-pattern {pattern!r}: not a regular expression ({error})") from None
    if compiled is not None and "student" not in compiled.groupindex:
        raise GradingError(f"--student-pattern {compiled.pattern!r}: needs a group (?P<student>...)")
    return compiled
