r"""Grade a folder of submitted notebooks into a CSV (the trusted classroom grader).

For each assignment the grader first draws fresh inputs for every test of every question (each
test is a call into :mod:`optlib.course.checks` read from the master; its seed is replaced by
one drawn for this run) and computes the reference answers, in its own process. Then, for each
submission, in parallel across submissions (``jobs`` at a time, each in its own sandbox, see
:mod:`optlib.course.grading.sandbox`):

1. the notebook is read as data (:mod:`optlib.course.grading.submission`); a file that cannot be
   read, or that is a link or not a regular file, gets a row with a note;
2. one learner process runs its code cells in order, as Jupyter would; at each question's check
   point (its ``grader.check`` cell) the grader drives that question's probes: the learner's
   process receives one call at a time with fresh inputs and sends back plain data, which the
   grader compares with its reference answers (``Check.compare``); a test scores its share of
   the question's points when every case agrees, and an answer that delegates to the method's
   own implementation scores nothing for the question;
3. if the learner's process dies or overruns (its cell, its call or the question's time), that
   question scores 0 with the reason, and a fresh process re-runs the cells so far, without the
   cell that hung or crashed, for the next question;
4. the row goes to the CSV at once (written and flushed row by row), and a progress bar shows
   an estimate of the time left. ``resume=True`` skips the files already in the CSV, with the
   same inputs (the run's seed is kept beside the CSV).

Every failure while reading, running or cleaning up one submission is caught and recorded in
that submission's row; names and notes are sanitised (:func:`optlib.course.grading.report.clean`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checks import CHECKS, DELEGATION
from ..checks._core import delegation_message, not_defined_message
from .master import Master, Question, TestCall, read_master
from .proxy import MISSING, SandboxFailure, run_probe
from .report import CsvOut, Progress, clean, clean_name, say
from .review import review_flags, static_delegation
from .sandbox import Isolation, Job, Limits
from .serve import format_error
from .submission import Submission, read_submission

__all__ = ["QuestionResult", "Row", "grade_folder", "grade_submission", "prepare"]


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
class PreparedTest:
    call: TestCall
    cases: list[dict]
    expected: list[Any]


def prepare(master: Master, seed: int) -> dict[str, list[PreparedTest]]:
    """Fresh inputs and reference answers for every test, computed once per grading run."""
    rng = random.Random(seed)
    prepared: dict[str, list[PreparedTest]] = {}
    for q in master.autograded:
        tests = []
        for call in q.tests:
            check = CHECKS[call.check]
            options = {**call.options, "seed": rng.randrange(2**31)}
            cases = check.cases(**options)
            tests.append(PreparedTest(call, cases, [check.expect(c) for c in cases]))
        prepared[q.name] = tests
    return prepared


def forbidden_table(master: Master) -> dict[str, list[str]]:
    """The delegation table of the checks this master uses (sent to each learner process)."""
    return {
        t.check: list(DELEGATION[t.check].names)
        for q in master.autograded
        for t in q.tests
        if t.check in DELEGATION
    }


def _fmt(x: float) -> str:
    return f"{x:g}"


# --------------------------------------------------------------------------- one submission


class _Runner:
    """One submission's run: its cells in order, questions at their check points, a fresh
    learner process (re-running the cells so far) after one dies."""

    def __init__(self, master: Master, sub: Submission, prepared: dict,
                 isolation: Isolation, forbidden: dict[str, list[str]]) -> None:  # fmt: skip
        self.master, self.sub, self.prepared = master, sub, prepared
        self.isolation, self.forbidden = isolation, forbidden
        self.limits = isolation.limits
        self.job: Job | None = None
        self.history: list[int] = []  # positions of the cells run so far (for a fresh job)
        self.bad: set[int] = set()  # cells that hung or crashed a job: not run again
        self.cell_errors: dict[int, str] = {}
        self.notes: dict[int, list[str]] = {}
        self.lost: str | None = None  # why the job was lost before the next check point
        budget = self.limits.question_timeout_s * (len(master.autograded) + 2)
        self.end = time.monotonic() + budget  # the submission's time
        self.question_end = self.end

    def close(self) -> None:
        if self.job is not None:
            self.job.close()
            self.job = None

    # ------------------------------------------------------------------ the learner's process
    def _job(self) -> Job:
        """The current learner process, or a fresh one that has re-run the cells so far
        (with its own time limit, so a re-run does not eat the question's time)."""
        if self.job is None:
            started = time.monotonic()
            self.job = self.isolation.start(self.limits.cell_timeout_s, self.forbidden)
            replay = [p for p in self.history if p not in self.bad]
            if replay:
                self.job.connection.deadline = min(
                    self.end, time.monotonic() + self.limits.question_timeout_s
                )
                for pos in replay:
                    self._run_cell(pos, record=False)
            # starting a process and re-running earlier cells is not the question's time
            self.question_end = min(self.end, self.question_end + time.monotonic() - started)
        self.job.connection.deadline = min(self.end, self.question_end)
        return self.job

    def _run_cell(self, pos: int, record: bool = True) -> None:
        assert self.job is not None
        cell = self.sub.cells[pos]
        try:
            result = self.job.connection.run_cell(
                cell.index, cell.source, self.limits.cell_timeout_s
            )
        except SandboxFailure:
            self.bad.add(pos)
            raise
        if record:
            if result["error"]:
                self.cell_errors[pos] = f"cell {cell.index}: {format_error(result['error'])}"
            if result["notes"]:
                self.notes[pos] = [f"cell {cell.index}: {n}" for n in result["notes"]]

    def _lose(self, err: SandboxFailure) -> str:
        """Close a job that failed; say why (limits named when a limit killed it)."""
        job, self.job = self.job, None
        if job is None:
            return f"{err.status}: {err.detail}"
        detail = job.failure_detail(err)
        job.close()
        return detail

    # ------------------------------------------------------------------ the notebook
    def run(self) -> dict[str, QuestionResult]:
        results: dict[str, QuestionResult] = {}
        points = self.sub.check_points()
        n = len(self.sub.cells)
        due: dict[int, list[Question]] = {}
        for q in self.master.autograded:
            due.setdefault(points.get(q.name, n), []).append(q)
        start = 0
        self.question_end = time.monotonic() + self.limits.question_timeout_s
        for pos in range(n + 1):
            if pos < n:
                self._cell(pos)
            for q in due.get(pos, []):
                region = list(range(start, min(pos + 1, n)))
                results[q.name] = self._question(q, region, q.name in points)
                start = pos + 1
                self.question_end = time.monotonic() + self.limits.question_timeout_s
        return results

    def _cell(self, pos: int) -> None:
        """Run cell ``pos``; a job lost here costs the next question."""
        self.history.append(pos)
        if self.lost is not None:
            return  # the job is gone; a fresh one re-runs this cell for the next question
        if time.monotonic() > min(self.end, self.question_end):
            self.lost = "timeout: the question's time limit was reached"
            self.close()  # the cells it did not run are re-run by the next question's job
            return
        try:
            self._job()
            self._run_cell(pos)
        except SandboxFailure as err:
            self.lost = self._lose(err)

    def _question(self, q: Question, region: list[int], has_check: bool) -> QuestionResult:
        notes: list[str] = []
        if not has_check:
            notes.append(f'no grader.check("{q.name}") cell: graded after the last cell')
        sources = self.sub.sources_until(region[-1] if region else len(self.sub.cells) - 1)
        if self.lost is not None:
            result = QuestionResult(0.0, q.points, self.lost)
            self.lost = None
        elif time.monotonic() > self.end:
            result = QuestionResult(0.0, q.points, "submission time limit reached")
        else:
            try:
                result = self._serve(q, self.prepared[q.name], sources)
            except SandboxFailure as err:
                result = QuestionResult(0.0, q.points, self._lose(err))
        for pos in region:
            notes += self.notes.get(pos, [])
        errors = [self.cell_errors[p] for p in region if p in self.cell_errors]
        if result.points < q.points and errors:
            notes.insert(0, errors[0])
        flags = review_flags(sources)
        if flags:
            notes.append("review: " + ", ".join(flags))
        result.note = "; ".join(filter(None, [result.note, *notes]))
        return result

    def _serve(self, q: Question, tests: list[PreparedTest], sources: list[str]) -> QuestionResult:
        """Drive the question's probes and compare; delegation scores nothing."""
        conn = self._job().connection
        share = q.points / len(tests)
        points, notes = 0.0, []
        hung: set[str] = set()  # targets whose call timed out: not called again
        for test in tests:
            check, target = CHECKS[test.call.check], test.call.target
            names = list(DELEGATION[test.call.check].names) if test.call.check in DELEGATION else []
            what = "hidden test" if test.call.hidden else "test"
            conn.check, conn.delegated = test.call.check, set()
            answer = conn.lookup(target)
            if answer is MISSING or answer is None:
                state = "None" if answer is None else "undefined"
                message = not_defined_message(test.call.check, target, state)
                notes.append(f"{what} failed: {message}")
                continue
            got_cases: list[Any] = []
            skipped = "Timeout: skipped after an earlier call timed out"
            timed_out = skipped if target in hung else None
            for case in test.cases:
                if timed_out is not None or conn.delegated:
                    got_cases.append({"error": timed_out or "not run"})
                    continue
                got = run_probe(check, answer, case)
                if isinstance(got, dict) and str(got.get("error", "")).startswith("Timeout"):
                    timed_out = skipped
                    hung.add(target)
                got_cases.append(got)
            delegated = conn.delegated | static_delegation(sources, target, names)
            if delegated:
                message = delegation_message(test.call.check, target, delegated)
                return QuestionResult(0.0, q.points, message)
            try:
                for i, (case, got, exp) in enumerate(zip(test.cases, got_cases, test.expected)):
                    check.compare(case, got, exp, f"case {i + 1} of {len(test.cases)}")
            except AssertionError as err:
                notes.append(f"{what} failed: {err}")
                continue
            except Exception as err:  # a check that chokes on odd data still fails the test
                notes.append(f"{what} failed: malformed result ({type(err).__name__})")
                continue
            points += share
        if not notes and points < q.points:  # rounding of equal shares
            points = q.points
        return QuestionResult(points, q.points, "; ".join(notes))


def grade_submission(
    master: Master,
    path: Path,
    prepared: dict[str, list[PreparedTest]],
    isolation: Isolation,
    forbidden: dict[str, list[str]],
) -> Row:
    """One row for the file at ``path``; every failure is caught and recorded in it."""
    row = Row(clean_name(path.name))
    runner = None
    try:
        sub = read_submission(path)
        if sub.error:
            row.note = sub.error
            for q in master.autograded:
                row.results[q.name] = QuestionResult(0.0, q.points, "")
            return row
        runner = _Runner(master, sub, prepared, isolation, forbidden)
        row.results = runner.run()
    except Exception as err:  # noqa: BLE001  (one file, one row: never the whole class)
        where = traceback.extract_tb(err.__traceback__)[-1]
        row.note = f"grader error while grading this file: {type(err).__name__}: {err} " \
                   f"({Path(where.filename).name}:{where.lineno})"  # fmt: skip
    finally:
        if runner is not None:
            try:
                runner.close()
            except Exception as err:  # noqa: BLE001
                row.note = (row.note + "; " if row.note else "") + f"clean-up: {type(err).__name__}"
    for q in master.autograded:
        row.results.setdefault(q.name, QuestionResult(0.0, q.points, "not graded"))
    return row


# --------------------------------------------------------------------------- a folder


def _entries(folder: Path) -> list[tuple[str, Path, str | None]]:
    """(safe name, path, reason to skip) of every ``*.ipynb`` entry, in name order."""
    out = []
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: os.fsencode(e.name))
    for e in entries:
        if not e.name.endswith(".ipynb") or e.name.startswith("."):
            continue
        reason = None
        try:
            if e.is_symlink():
                reason = "skipped: a symbolic link (grade the file itself)"
            elif not e.is_file(follow_symlinks=False):
                reason = "skipped: not a regular file"
        except OSError as err:
            reason = f"skipped: {type(err).__name__}"
        out.append((clean_name(e.name), Path(e.path), reason))
    return out


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


def _run_file(out: Path) -> Path:
    return out.with_name(out.name + ".run.json")


def grade_folder(
    master_path: str | Path,
    submissions: str | Path,
    out: str | Path,
    *,
    limits: Limits | None = None,
    seed: int | None = None,
    jobs: int | None = None,
    resume: bool = False,
    unsandboxed: bool = False,
    log: Callable[[str], None] = say,
) -> list[Row]:
    """Grade every ``*.ipynb`` in ``submissions`` against the master at ``master_path`` into
    the CSV ``out`` (see the module docstring) and return the rows graded in this run.

    Raises :class:`~optlib.course.grading.sandbox.SandboxUnavailable` when the sandbox cannot
    start (with what to install), ``FileExistsError`` when ``out`` exists and ``resume`` is
    False, ``ValueError`` when a resumed CSV belongs to another assignment."""
    master_path, out = Path(master_path), Path(out)
    torch.set_num_threads(1)  # the cores are the jobs'
    master = read_master(master_path)
    limits = limits or Limits()
    digest = hashlib.sha256(master_path.read_bytes()).hexdigest()
    run_file = _run_file(out)
    if out.exists() and not resume:
        raise FileExistsError(f"{out} exists: pass --resume to continue it, or remove it")
    if resume and run_file.exists():
        saved = json.loads(run_file.read_text())
        if saved.get("master_sha256") != digest:
            raise ValueError(f"{out} was graded against another version of {master_path.name}")
        seed = int(saved["seed"])
    seed = secrets.randbelow(2**31) if seed is None else int(seed)
    header = ["file", *(q.name for q in master.questions), "total", "notes"]
    entries = _entries(Path(submissions))
    names = _unique([e[0] for e in entries])
    with Isolation(limits, unsandboxed=unsandboxed) as isolation:
        csv_out = CsvOut(out, header, resume=resume)
        run_file.write_text(json.dumps({"master": str(master_path), "master_sha256": digest,
                                        "seed": seed}))  # fmt: skip
        todo = [(n, p, r) for n, (_, p, r) in zip(names, entries) if n not in csv_out.done]
        workers = max(1, jobs or len(os.sched_getaffinity(0)))
        log(
            f"grading {len(todo)} submission(s) of {master.name} with {workers} worker(s) "
            f"({isolation.mode}; {limits.question_timeout_s:g} s per question)"
            + (f"; {len(csv_out.done)} already graded" if csv_out.done else "")
        )
        prepared = prepare(master, seed)
        forbidden = forbidden_table(master)
        possible = sum(q.points for q in master.autograded)
        progress = Progress(len(todo), workers, log)
        rows: list[Row] = []
        lock = threading.Lock()

        def finish(name: str, row: Row, seconds: float) -> None:
            row.file = name
            with lock:
                _write_row(csv_out, master, row)
                rows.append(row)
                parts = ", ".join(f"{q} {_fmt(r.points)}/{_fmt(r.possible)}"
                                  for q, r in row.results.items())  # fmt: skip
                flag = f"  [{clean(row.note, 120)}]" if row.note else ""
                progress.finished(
                    f"[{progress.done + 1}/{len(todo)}] {name}: {parts} -> total "
                    f"{_fmt(row.total)}/{_fmt(possible)} ({seconds:.1f} s){flag}"
                )

        def work(path: Path) -> tuple[Row, float]:
            start = time.monotonic()
            row = grade_submission(master, path, prepared, isolation, forbidden)
            return row, time.monotonic() - start

        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grade") as pool:
                running: dict[Future, str] = {}
                queue = list(todo)
                while queue or running:
                    while queue and len(running) < workers:
                        name, path, reason = queue.pop(0)
                        if reason is not None:
                            row = Row(name, note=reason)
                            for q in master.autograded:
                                row.results[q.name] = QuestionResult(0.0, q.points, "")
                            finish(name, row, 0.0)
                            continue
                        running[pool.submit(work, path)] = name
                    if not running:
                        continue
                    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for future in done:
                        name = running.pop(future)
                        row, seconds = future.result()
                        finish(name, row, seconds)
        except KeyboardInterrupt:
            isolation.close()
            log(f"\ninterrupted: {len(rows)} graded this run; run again with --resume to go on")
            raise
        finally:
            progress.close()
            csv_out.close()
    log(f"wrote {out}")
    return rows


def _write_row(csv_out: CsvOut, master: Master, row: Row) -> None:
    cells = [
        "" if q.manual else _fmt(row.results.get(q.name, QuestionResult(0, q.points)).points)
        for q in master.questions
    ]
    notes = [row.note] if row.note else []
    notes += [f"{name}: {r.note}" for name, r in row.results.items() if r.note]
    csv_out.write([row.file, *cells, _fmt(row.total), clean(" | ".join(notes), 1500)])
