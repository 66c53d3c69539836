"""pytest plugin for the chapter notebooks run under nbval: a time budget per notebook.

Load it with ``-p tests.nbtiming``. It measures each notebook's wall time (kernel start to last
cell), prints the slowest notebooks at the end of the run, and turns the last cell's report of
a notebook that exceeded the budget into a failure, so ``make test`` fails when a chapter gets too
slow for a 2-core laptop. Budget: ``NOTEBOOK_BUDGET_S`` (default 60 s).
"""

from __future__ import annotations

import os
import time

import pytest

BUDGET_S = float(os.environ.get("NOTEBOOK_BUDGET_S", "60"))
_start: dict[str, float] = {}
_elapsed: dict[str, float] = {}
_last_item: dict[str, str] = {}


def _notebook(item) -> str | None:
    path = str(getattr(item, "path", item.fspath))
    return path if path.endswith(".ipynb") else None


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        nb = _notebook(item)
        if nb:
            _last_item[nb] = item.nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    nb = _notebook(item)
    if nb and nb not in _start:
        _start[nb] = time.perf_counter()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    nb = _notebook(item)
    if not nb or call.when != "call" or _last_item.get(nb) != item.nodeid:
        return
    _elapsed[nb] = time.perf_counter() - _start[nb]
    report = outcome.get_result()
    if _elapsed[nb] > BUDGET_S and report.passed:
        report.outcome = "failed"
        report.longrepr = (
            f"{os.path.relpath(nb)} took {_elapsed[nb]:.1f} s, over the {BUDGET_S:.0f} s budget "
            "for one notebook on a 2-core CPU: make its experiments smaller or cache them."
        )


def pytest_terminal_summary(terminalreporter):
    if not _elapsed:
        return
    terminalreporter.section("notebook execution times (slowest first)")
    for nb, s in sorted(_elapsed.items(), key=lambda kv: -kv[1]):
        mark = "OVER BUDGET" if s > BUDGET_S else "ok"
        terminalreporter.write_line(f"{s:7.1f} s  {mark:11s} {os.path.relpath(nb)}")
