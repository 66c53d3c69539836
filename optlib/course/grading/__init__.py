r"""Exercises for the classroom: otter-grader for authoring and self-checks, a trusted grader.

Two layers, because otter's own grading runs its tests inside the student's kernel, after the
student's code, and so trusts the submission:

* **authoring and self-check** (:mod:`~optlib.course.grading.assign`): ``otter assign`` turns
  each master notebook in ``exercises/`` into a student release and an autograder version; in
  the released notebook ``grader.check("q1")`` gives the learner instant, advisory feedback,
  through the same protocol as the grader (:func:`optlib.course.checks.run_check`);
* **grading** (:mod:`~optlib.course.grading.grade`): each submission runs in its own bubblewrap
  sandbox (:mod:`~optlib.course.grading.sandbox`), its cells in order as Jupyter would run them
  (:mod:`~optlib.course.grading.submission`); the grader drives each question's probes through
  stand-ins (:mod:`~optlib.course.grading.proxy`) and the learner's side
  (:mod:`~optlib.course.grading.serve`) answers one call at a time with plain data, which the
  grader compares with reference answers it computed itself (:mod:`optlib.course.checks`).

**What a grade relies on** (each backed by tests in ``tests/test_grading*.py``):

* Points come only from comparing, in the grader's process, data produced by the learner's code
  for inputs drawn fresh for this run, sent one call at a time, with reference answers that never
  leave that process. The learner's process never sees the probe loop, the inputs of a call before
  the call, the expected answers or a score; it writes no result file and no tamper flag, and
  cannot end a question with a pass (leaving early, forging a reply or crashing scores 0 for that
  question). Stored outputs, otter's results and anything the code prints are ignored; nothing
  the learner's process sends is executed or unpickled.
* Each submission runs in its own sandbox (own PID, mount, network, IPC namespaces; private
  ``/tmp``, ``/var/tmp`` and ``/dev/shm``; read-only views of the interpreter and optlib without
  ``optlib/course``; no view of the submissions, the masters, ``_build/``, your files or the
  grader's process), as ``nobody`` when the grader runs as root. Memory, process and disk limits
  hold for the whole job (cgroups as root where available; otherwise rlimits set inside the job's
  user namespace and a watchdog on its resident memory and files). Every process a job starts
  dies with it; two jobs, or two grading runs at once, cannot see or signal each other.
* A cell or call over its time limit is interrupted, a job that does not stop is killed: it
  costs that question, and the next question re-runs the cells so far in a fresh job without the
  cell that hung. One file costs one row: whatever goes wrong while reading, running or cleaning
  up one submission is recorded in its row of a CSV written and flushed row by row, with names
  and notes made safe (control characters and escape sequences removed, invalid UTF-8 escaped, a
  leading ``= + - @`` neutralised). Links and non-regular files are skipped with a note.
* Without a working sandbox the grader refuses and says what to install; it never falls back to
  less isolation. ``--unsafe-run-submissions-as-me`` runs without a sandbox (for notebooks you
  trust), and is refused as root.
* An answer that delegates to torch.optim's or optlib's own implementation of the method asked
  for scores nothing for that question, with the reason (:data:`optlib.course.checks.DELEGATION`).

**What it does not guarantee:**

* That the learner wrote the code: copying, or a classmate's or a chatbot's answer, is a teaching
  matter, not something a sandbox can decide.
* Delegation that a submission deliberately hides: the watch runs inside the learner's process
  (a profiler, class and alias checks), and code that sets out to defeat it (rewriting the server,
  re-loading torch's source under another name) can; the grader also reads each answer's own
  definition in the notebook (which the submission cannot change), and flags code that inspects
  frames, the interpreter's hooks or its file descriptors for review in the notes.
* Protection against a kernel or bubblewrap vulnerability: the sandbox is as strong as the
  namespaces and bubblewrap it rests on; run the grader in a throw-away machine or container for
  high-stakes grading, and keep the kernel and bubblewrap updated.
* Whole-job limits as strict without cgroups: as an ordinary user the memory watchdog samples
  four times a second, so a job can exceed its memory limit briefly (each process is also held to
  it by an rlimit); files in the private tmpfs are counted the same way.
* The same inputs for every student across runs: each run draws its own (``--seed`` reproduces
  one; ``--resume`` keeps the interrupted run's).

Install bubblewrap first (Debian/Ubuntu: ``sudo apt-get install bubblewrap``). Command line
(``python -m optlib.course.grading --help``)::

    python -m optlib.course.grading assign exercises/01_gradient_descent.ipynb
    python -m optlib.course.grading grade 01_gradient_descent submissions/ grades.csv
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Limits", "assign", "grade_folder", "read_master"]

_WHERE = {
    "Limits": ".sandbox",
    "assign": ".assign",
    "grade_folder": ".grade",
    "read_master": ".master",
}


def __getattr__(name: str) -> Any:  # imported on first use: checks import the protocol alone
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
