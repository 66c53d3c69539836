"""Every exercise master through the real sandbox: its solution scores full marks (so every
registered check works through the grader's protocol, public and hidden tests alike, callbacks
and optimizer classes included), and issue 15's set-up cell that "works for every exercise"
scores nothing on any of them."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from optlib.course.grading.grade import forbidden_table, grade_submission, prepare
from optlib.course.grading.master import read_master
from optlib.course.grading.sandbox import Isolation, Limits

from ._grading import MASTER, ROOT, insert_after_setup, notebook_from_master, require_bwrap
from .test_grading import UNIVERSAL_CHEAT

MASTERS = [*sorted((ROOT / "exercises").glob("[0-9]*.ipynb")), MASTER]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def isolation():
    require_bwrap()
    with Isolation(Limits(question_timeout_s=120, cell_timeout_s=60)) as iso:
        yield iso


def _grade(master_path: Path, nb: dict, folder: Path, isolation: Isolation) -> dict[str, float]:
    master = read_master(master_path)
    path = folder / f"{master_path.stem}-{random.randrange(10**9)}.ipynb"
    path.write_text(json.dumps(nb))
    prepared = prepare(master, seed=random.randrange(2**31))
    row = grade_submission(master, path, prepared, isolation, forbidden_table(master))
    assert not row.note, row.note
    return {q: r.points for q, r in row.results.items()} | {
        "notes": " | ".join(f"{q}: {r.note}" for q, r in row.results.items() if r.note)
    }


def test_every_solution_full_marks_and_the_universal_cheat_nothing(isolation, tmp_path):
    jobs = []
    for path in MASTERS:
        master = read_master(path)
        full = {q.name: q.points for q in master.autograded}
        blank = notebook_from_master(path, answers=False)
        cheat = insert_after_setup(blank, UNIVERSAL_CHEAT)
        jobs += [(path, notebook_from_master(path), full),
                 (path, cheat, dict.fromkeys(full, 0.0))]  # fmt: skip
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda j: _grade(j[0], j[1], tmp_path, isolation), jobs))
    failures = []
    for (path, _, expected), got in zip(jobs, results):
        notes = got.pop("notes")
        if got != expected:
            failures.append(f"{path.name}: expected {expected}, got {got}: {notes[:600]}")
    assert not failures, "\n".join(failures)
