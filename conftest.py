"""pytest settings for the whole repository: how long each notebook takes when nbval runs it.

``make test`` runs nbval over ``solutions/`` and ``notebooks/``; the time budget is per notebook (each
within 45 seconds on two CPU cores), so the run ends with one line per notebook: its cells' setup, run and
teardown time added up, kernel start included.
"""

from __future__ import annotations

from collections import defaultdict

_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _seconds[path] += report.duration


def pytest_terminal_summary(terminalreporter):
    if _seconds:
        terminalreporter.section("seconds per notebook")
        for path, seconds in sorted(_seconds.items()):
            terminalreporter.write_line(f"{seconds:6.1f} s  {path}")
