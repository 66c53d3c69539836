"""Grade a folder of submitted notebooks into a CSV (the trusted classroom grader).

For each submission (``*.ipynb`` in the folder, in name order) and each autograded question:

1. the parent builds fresh inputs for every test of the question (each test is a call into
   :mod:`optlib.course.checks` read from the master; its seed is replaced by one drawn for this
   grading run, so answers cannot be looked up) and computes the reference answers itself;
2. the question's code (set-up + its own cells, see :mod:`optlib.course.grading.submission`) and the
   inputs go to a fresh sandboxed process (:mod:`optlib.course.grading.sandbox`), which sends back
   only what the learner's code produced, as plain JSON;
3. the parent compares that data with its reference answers (``Check.compare``); a test scores
   its share of the question's points when every case agrees.

The parent never executes submitted code and never unpickles anything. Stored outputs are never
read. Manually graded questions get an empty cell. A progress line is printed per submission.
"""

from __future__ import annotations

import csv
import random
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checks import CHECKS
from .master import Master, Question, TestCall, read_master
from .sandbox import Limits, Outcome, Sandbox
from .submission import Submission, read_submission

__all__ = ["QuestionResult", "Row", "grade_folder"]


@dataclass
class QuestionResult:
    points: float
    possible: float
    note: str = ""


@dataclass
class Row:
    file: str
    results: dict[str, QuestionResult] = field(default_factory=dict)
    note: str = ""

    @property
    def total(self) -> float:
        return sum(r.points for r in self.results.values())


@dataclass
class _PreparedTest:
    call: TestCall
    cases: list[dict]
    expected: list[Any]


def _prepare(master: Master, seed: int) -> dict[str, list[_PreparedTest]]:
    """Fresh inputs and reference answers for every test, computed once per grading run."""
    rng = random.Random(seed)
    prepared: dict[str, list[_PreparedTest]] = {}
    for q in master.autograded:
        tests = []
        for call in q.tests:
            check = CHECKS[call.check]
            options = {**call.options, "seed": rng.randrange(2**31)}
            cases = check.cases(**options)
            tests.append(_PreparedTest(call, cases, [check.expect(c) for c in cases]))
        prepared[q.name] = tests
    return prepared


def _clean(text: str, limit: int = 240) -> str:
    """A note safe for a CSV cell: one line, bounded, not read as a spreadsheet formula."""
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()[:limit]
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


_REVIEW = [
    (re.compile(r"\boptlib\s*\.\s*(course|checks|grading)\b|\bfrom\s+optlib\s+import\s+.*\b(course|checks)\b"),
     "imports optlib.course.checks/grading"),
    (re.compile(r"\bCHECKS\b|_expect\b|\b_probe\b"), "uses the checks' internals"),
    (re.compile(r"__code__|_getframe|\bgc\.get_objects|\binspect\.(stack|currentframe)"),
     "inspects or rewrites code"),
    (re.compile(r"\bos\.(kill|killpg|setsid|fork)\b|\bsignal\.(signal|setitimer|alarm)\b"),
     "touches processes or signals"),
]  # fmt: skip


def review_flags(sources: list[str]) -> list[str]:
    """What in a question's code deserves a human look (read as text, never run). Flags do
    not change the score: the score already needs right answers on fresh inputs."""
    text = "\n".join(sources)
    return [label for pattern, label in _REVIEW if pattern.search(text)]


def _score_question(q: Question, tests: list[_PreparedTest], outcome: Outcome) -> QuestionResult:
    share = q.points / len(tests)
    if outcome.status != "ok" or outcome.data is None:
        return QuestionResult(0.0, q.points, f"{outcome.status}: {outcome.detail}")
    if outcome.data.get("tampered") is not False:
        return QuestionResult(0.0, q.points, "the submission modified the checks or the grader")
    results = outcome.data.get("results")
    if not isinstance(results, list) or len(results) != len(tests):
        return QuestionResult(0.0, q.points, "malformed result")
    points, notes = 0.0, []
    for test, got_cases in zip(tests, results):
        check = CHECKS[test.call.check]
        try:
            if not isinstance(got_cases, list) or len(got_cases) != len(test.cases):
                raise AssertionError("malformed result")
            for i, (case, got, exp) in enumerate(zip(test.cases, got_cases, test.expected)):
                check.compare(case, got, exp, f"case {i + 1} of {len(test.cases)}")
        except AssertionError as err:
            notes.append(("hidden test" if test.call.hidden else "test") + f" failed: {err}")
            continue
        except Exception as err:  # a check that chokes on malformed data still fails the test
            notes.append(f"malformed result ({type(err).__name__})")
            continue
        points += share
    if not notes and points < q.points:  # rounding of equal shares
        points = q.points
    cell_errors = outcome.data.get("cell_errors")
    if notes and isinstance(cell_errors, list) and cell_errors:
        notes.insert(0, str(cell_errors[0]))
    return QuestionResult(points, q.points, "; ".join(notes))


def grade_submission(
    master: Master,
    sub: Submission,
    prepared: dict[str, list[_PreparedTest]],
    sandbox: Sandbox,
    submission_timeout_s: float,
) -> Row:
    row = Row(sub.path.name)
    if sub.error:
        row.note = sub.error
    deadline = time.monotonic() + submission_timeout_s
    for q in master.questions:
        if q.manual:
            continue
        tests = prepared[q.name]
        if sub.error:
            row.results[q.name] = QuestionResult(0.0, q.points, "not graded")
            continue
        if q.name not in sub.regions:
            row.results[q.name] = QuestionResult(0.0, q.points, f'no grader.check("{q.name}") cell')
            continue
        left = deadline - time.monotonic()
        if left <= 1:
            row.results[q.name] = QuestionResult(0.0, q.points, "submission time limit reached")
            continue
        probes = [{"check": t.call.check, "target": t.call.target, "cases": t.cases} for t in tests]
        outcome = sandbox.run(
            sub.setup + sub.regions[q.name],
            probes,
            timeout_s=min(sandbox.limits.question_timeout_s, left),
        )
        result = _score_question(q, tests, outcome)
        flags = review_flags(sub.setup + sub.regions[q.name])
        if flags:
            result.note = "; ".join(filter(None, [result.note, "review: " + ", ".join(flags)]))
        row.results[q.name] = result
    return row


def _fmt(x: float) -> str:
    return f"{x:g}"


def write_csv(master: Master, rows: list[Row], out: Path) -> None:
    """One row per submission: file, points per question (empty for manual ones), total, notes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", *(q.name for q in master.questions), "total", "notes"])
        for row in rows:
            cells = ["" if q.manual else _fmt(row.results[q.name].points) for q in master.questions]
            notes = [row.note] if row.note else []
            notes += [f"{name}: {r.note}" for name, r in row.results.items() if r.note]
            w.writerow([row.file, *cells, _fmt(row.total), _clean(" | ".join(notes), 600)])


def grade_folder(
    master_path: str | Path,
    submissions: str | Path,
    out: str | Path,
    *,
    limits: Limits | None = None,
    submission_timeout_s: float | None = None,
    seed: int | None = None,
    user: str = "auto",
    log: Callable[[str], None] = print,
) -> list[Row]:
    """Grade every ``*.ipynb`` in ``submissions`` against the master at ``master_path``, write
    the CSV to ``out`` and return the rows (see the module docstring)."""
    master = read_master(master_path)
    limits = limits or Limits()
    files = sorted(p for p in Path(submissions).glob("*.ipynb") if p.is_file())
    seed = secrets.randbelow(2**31) if seed is None else seed
    budget = submission_timeout_s or limits.question_timeout_s * max(1, len(master.autograded))
    prepared = _prepare(master, seed)
    possible = sum(q.points for q in master.autograded)
    rows = []
    with Sandbox(limits, user=user) as sandbox:
        log(
            f"grading {len(files)} submission(s) of {master.name} "
            f"({sandbox.mode}; {limits.question_timeout_s:g} s per question)"
        )
        for n, path in enumerate(files, 1):
            start = time.monotonic()
            row = grade_submission(master, read_submission(path, master), prepared, sandbox, budget)
            rows.append(row)
            parts = ", ".join(
                f"{name} {_fmt(r.points)}/{_fmt(r.possible)}" for name, r in row.results.items()
            )
            flag = "  [" + row.note + "]" if row.note else ""
            log(
                f"[{n}/{len(files)}] {path.name}: {parts} -> total {_fmt(row.total)}/"
                f"{_fmt(possible)} ({time.monotonic() - start:.1f} s){flag}"
            )
    write_csv(master, rows, Path(out))
    log(f"wrote {out}")
    return rows
