"""The trusted grader end to end: `otter assign`, then `python -m optlib.course.grading grade` on a
folder holding the solution, the blank student release and crafted cheats; one CLI run, many checks.

Every integrity claim of the grader is proven here with a submission that tries to break it.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from optlib.course.grading.assign import assign
from optlib.course.grading.master import read_master

ROOT = Path(__file__).resolve().parents[1]
MASTER = ROOT / "exercises" / "01_gradient_descent.ipynb"
NAME = MASTER.stem
IS_ROOT = os.geteuid() == 0
SLEEP_MARK = "317.25"  # a daemon's `sleep` argument, to find it afterwards


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _tagged(nb: dict, tag: str) -> list[dict]:
    return [
        c
        for c in nb["cells"]
        if c["cell_type"] == "code" and tag in c.get("metadata", {}).get("tags", [])
    ]


def _with_answers(student: dict, answers: list[str | None]) -> dict:
    """The student release with its code answer cells (q1, q2, q3) replaced where not None."""
    nb = copy.deepcopy(student)
    for cell, new in zip(_tagged(nb, "otter_answer_cell"), answers):
        if new is not None:
            cell["source"] = new
    return nb


def _forge_outputs(nb: dict) -> dict:
    """Stored outputs claiming that every check passed."""
    nb = copy.deepcopy(nb)
    for n, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        cell["execution_count"] = n + 1
        src = _source(cell)
        if "grader.check" in src:
            text = "All tests passed!" if "check_all" in src else "q1 results: All passed!"
            cell["outputs"] = [
                {
                    "output_type": "execute_result",
                    "execution_count": n + 1,
                    "data": {"text/plain": text},
                    "metadata": {},
                }
            ]
    nb["metadata"]["otter"]["results"] = {"q1": 2, "q2": 2, "q3": 2, "total": 6}
    return nb


MONKEYPATCH = """import dataclasses

import optlib.course.checks as checks

for _name, _check in list(checks.CHECKS.items()):
    checks.CHECKS[_name] = dataclasses.replace(
        _check, probe=lambda answer, case, _c=_check: _c.expect(case), compare=lambda *a: None
    )
    setattr(checks, _name, lambda *a, **k: print("OK"))
checks.run_check = lambda *a, **k: None


def gd_step(theta, grad, lr):
    return None
"""

SWAP_PROBE_CODE = """from optlib.course import checks

_swap = {  # each probe would return the reference answer instead of calling the learner's code
    "gd_step": lambda answer, case: CHECKS["gd_step"].expect(case),
    "largest_stable_lr": lambda answer, case: CHECKS["largest_stable_lr"].expect(case),
    "predict_iterations": lambda answer, case: CHECKS["predict_iterations"].expect(case),
}
for _name, _fake in _swap.items():
    checks.CHECKS[_name].probe.__code__ = _fake.__code__


def gd_step(theta, grad, lr):
    return None
"""

PATCH_GRADER = """import builtins, json, os, sys

import otter
import optlib.course.grading.child as child
import optlib.course.grading.grade as grade

otter.Notebook.check = lambda self, *a, **k: print("All test cases passed!")
grade._score_question = lambda q, tests, outcome: grade.QuestionResult(q.points, q.points)
child._run_job = lambda *a, **k: None
_real_import = builtins.__import__
builtins.__import__ = lambda name, *a, **k: _real_import(name, *a, **k)
with open("result.json", "w") as f:  # a forged result, then leave before the probes run
    json.dump({"cell_errors": [], "results": [[{"passed": True}] * 4, [{"passed": True}] * 6],
               "passed": True, "score": 6}, f)
os._exit(0)
"""

EXITS = """import sys

def largest_stable_lr(A):
    return None

sys.exit(0)
"""

RAISE_INTERRUPT = """def predict_iterations(kappa, tol):
    raise KeyboardInterrupt

raise SystemExit(0)
"""

LOOP = """import time


def largest_stable_lr(A):
    return 0.0


while True:  # ignores every alarm: only the per-question timeout stops it
    try:
        time.sleep(0.05)
    except BaseException:
        pass
"""

HANG_IN_FUNCTION = """def predict_iterations(kappa, tol):
    while True:
        pass
"""


def _pickle_payload(marker: Path) -> str:
    return f"""import os, pickle


class Payload:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))


def gd_step(theta, grad, lr):
    return Payload()


with open("result.json", "wb") as f:
    f.write(pickle.dumps(Payload()))
"""


def _tamper(folder: Path) -> str:
    return f'''import glob, os

for path in glob.glob("{folder}/*.ipynb") + glob.glob("{MASTER.parent}/*.ipynb"):
    for attempt in (lambda: open(path, "w").write("{{}}"), lambda: os.remove(path)):
        try:
            attempt()
        except OSError:
            pass


def gd_step(theta, grad, lr):
    return theta - lr * grad
'''


KILL_SERVER = """import os, signal

os.kill(os.getppid(), signal.SIGKILL)
"""

DAEMON = f"""import os, subprocess

subprocess.Popen(["sleep", "{SLEEP_MARK}"], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    subprocess.Popen(["sleep", "{SLEEP_MARK}"])
    os._exit(0)


def gd_step(theta, grad, lr):
    return theta - lr * grad
"""


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    out = assign(MASTER, tmp_path_factory.mktemp("assignments"))
    student = json.loads((out / "student" / f"{NAME}.ipynb").read_text())
    solution = json.loads((out / "autograder" / f"{NAME}.ipynb").read_text())
    return out, student, solution


@pytest.fixture(scope="module")
def graded(released, tmp_path_factory):
    """Grade one folder of crafted submissions with the CLI; return rows, log and evidence."""
    out, student, solution = released
    folder = tmp_path_factory.mktemp("submissions")
    private = tmp_path_factory.mktemp("private")
    os.chmod(private, 0o700)
    marker = private / "unpickled"
    sol = [_source(c) for c in _tagged(solution, "otter_assign_solution_cell")]
    subs = {
        "a_solution": solution,
        "b_blank": student,
        "c_forged_outputs": _forge_outputs(student),
        "d_monkeypatch_checks": _with_answers(student, [MONKEYPATCH, None, None]),
        "d_swap_probe_code": _with_answers(student, [SWAP_PROBE_CODE, None, None]),
        "e_patch_grader_and_exit": _with_answers(student, [PATCH_GRADER, EXITS, RAISE_INTERRUPT]),
        "f_infinite_loop_q2": _with_answers(student, [sol[0], LOOP, sol[2]]),
        "g_hang_in_function_q3": _with_answers(student, [sol[0], sol[1], HANG_IN_FUNCTION]),
        "h_pickle_payload": _with_answers(student, [_pickle_payload(marker), None, None]),
        "j_kill_server_q1": _with_answers(student, [KILL_SERVER, sol[1], sol[2]]),
        "k_daemon": _with_answers(student, [DAEMON, sol[1], sol[2]]),
    }
    if IS_ROOT:  # as the same user (fallback mode) a submission could really write them
        subs["i_tamper_files"] = _with_answers(student, [_tamper(folder), sol[1], sol[2]])
    for name, nb in subs.items():
        (folder / f"{name}.ipynb").write_text(json.dumps(nb))
    (folder / "l_not_a_notebook.ipynb").write_text("{ this is not json")
    before = {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in folder.iterdir()
    }
    master_before = hashlib.sha256(MASTER.read_bytes()).hexdigest()
    csv_path = tmp_path_factory.mktemp("out") / "grades.csv"
    cmd = [sys.executable, "-m", "optlib.course.grading", "grade", str(MASTER), str(folder),
           str(csv_path), "--timeout", "8", "--cell-timeout", "3"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(csv_path, newline="") as f:
        rows = {r["file"].removesuffix(".ipynb"): r for r in csv.DictReader(f)}
    after = {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in folder.iterdir()
    }
    leftovers = subprocess.run(["pgrep", "-f", f"sleep {SLEEP_MARK}"], capture_output=True,
                               text=True).stdout.split()  # fmt: skip
    return {
        "rows": rows,
        "log": done.stdout,
        "csv": csv_path.read_text(),
        "unchanged": before == after,
        "master_unchanged": master_before == hashlib.sha256(MASTER.read_bytes()).hexdigest(),
        "marker": marker.exists(),
        "leftovers": leftovers,
        "n": len(subs) + 1,
    }


def _scores(row: dict) -> tuple[float, float, float, float]:
    return tuple(float(row[k]) for k in ("q1", "q2", "q3", "total"))


def test_csv_has_one_row_per_submission_and_the_right_columns(graded):
    header = graded["csv"].splitlines()[0]
    assert header == "file,q1,q2,q3,q4,total,notes"
    assert len(graded["rows"]) == graded["n"]
    assert all(r["q4"] == "" for r in graded["rows"].values())  # manual question


def test_progress_line_per_submission(graded):
    lines = [ln for ln in graded["log"].splitlines() if ln.startswith("[")]
    assert len(lines) == graded["n"]
    assert lines[-1].startswith(f"[{graded['n']}/{graded['n']}]")


def test_round_trip_solution_full_marks_blank_zero(graded):
    assert _scores(graded["rows"]["a_solution"]) == (2, 2, 2, 6)
    assert _scores(graded["rows"]["b_blank"]) == (0, 0, 0, 0)
    assert "returned None" in graded["rows"]["b_blank"]["notes"]


def test_forged_outputs_get_nothing(graded):
    assert _scores(graded["rows"]["c_forged_outputs"]) == (0, 0, 0, 0)


def test_monkeypatching_the_checks_gains_nothing(graded):
    assert _scores(graded["rows"]["d_monkeypatch_checks"]) == (0, 0, 0, 0)
    row = graded["rows"]["d_swap_probe_code"]  # rewrites the probes' code objects in place
    assert _scores(row) == (0, 0, 0, 0)
    assert "modified the checks or the grader" in row["notes"]
    assert "review: " in row["notes"] and "rewrites code" in row["notes"]


def test_patching_the_grader_forging_results_and_exiting_gain_nothing(graded):
    row = graded["rows"]["e_patch_grader_and_exit"]
    assert _scores(row) == (0, 0, 0, 0)


def test_an_infinite_loop_costs_that_question_only(graded):
    row = graded["rows"]["f_infinite_loop_q2"]
    assert _scores(row) == (2, 0, 2, 4)
    assert "timeout" in row["notes"]
    row = graded["rows"]["g_hang_in_function_q3"]
    assert _scores(row) == (2, 2, 0, 4)
    assert "Timeout" in row["notes"]


def test_grader_never_unpickles(graded):
    assert _scores(graded["rows"]["h_pickle_payload"])[0] == 0
    assert not graded["marker"]


def test_submission_files_are_never_modified(graded):
    assert graded["unchanged"]
    assert graded["master_unchanged"]
    if IS_ROOT:  # the tampering submission ran, failed to write, and scores what it answered
        assert _scores(graded["rows"]["i_tamper_files"]) == (2, 2, 2, 6)
        assert "unprivileged user 65534" in graded["log"]


def test_killing_the_sandbox_costs_that_question_only(graded):
    row = graded["rows"]["j_kill_server_q1"]
    assert _scores(row) == (0, 2, 2, 4)
    assert "sandbox server was killed" in row["notes"]


def test_no_process_outlives_its_question(graded):
    assert _scores(graded["rows"]["k_daemon"]) == (2, 2, 2, 6)
    assert graded["leftovers"] == []


def test_unreadable_notebook_is_reported(graded):
    row = graded["rows"]["l_not_a_notebook"]
    assert _scores(row) == (0, 0, 0, 0)
    assert "unreadable notebook" in row["notes"]


def test_hidden_tests_never_appear_in_the_student_release(released):
    out, student, solution = released
    master = read_master(MASTER)
    hidden = [t for q in master.questions for t in q.tests if t.hidden]
    assert hidden, "the master should have hidden tests"
    text = (out / "student" / f"{NAME}.ipynb").read_text()
    for t in hidden:
        assert f"seed={t.options['seed']}" not in text
    assert "BEGIN SOLUTION" not in text and "Model answer" not in text
    assert "eigvalsh" not in text  # the q2 solution
    # ... while the autograder version keeps them
    auto = (out / "autograder" / f"{NAME}.ipynb").read_text()
    assert all(f"seed={t.options['seed']}" in auto for t in hidden)


def test_student_release_carries_its_public_tests(released):
    _, student, _ = released
    init = _source(student["cells"][0])
    assert "checks.gd_step(gd_step)" in init and "otter.Notebook(tests_dir=" in init


def _otter_run(autograder_zip: Path, notebook: dict, workdir: Path) -> dict[str, float]:
    workdir.mkdir()
    (workdir / f"{NAME}.ipynb").write_text(json.dumps(notebook))
    cmd = [sys.executable, "-m", "otter", "run", "-a", str(autograder_zip), "-o", str(workdir),
           str(workdir / f"{NAME}.ipynb")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())["tests"]
    return {t["name"]: t["score"] for t in results if t["name"].startswith("q")}


@pytest.mark.slow
def test_otter_round_trip_solution_full_marks_blank_zero(released, tmp_path):
    """The authoring layer is consistent: otter's own grader, with every hidden test, gives the
    solution full marks and the blank student release nothing."""
    out, student, solution = released
    (autograder_zip,) = (out / "autograder").glob("*.zip")
    assert _otter_run(autograder_zip, solution, tmp_path / "solution") == {
        "q1": 2.0,
        "q2": 2.0,
        "q3": 2.0,
    }
    assert _otter_run(autograder_zip, student, tmp_path / "blank") == {
        "q1": 0.0,
        "q2": 0.0,
        "q3": 0.0,
    }


def test_fallback_mode_as_the_current_user(released, tmp_path):
    """Without the user switch (not root, or --user current) honest notebooks grade the same."""
    _, student, solution = released
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "solution.ipynb").write_text(json.dumps(solution))
    (tmp_path / "in" / "blank.ipynb").write_text(json.dumps(student))
    cmd = [sys.executable, "-m", "optlib.course.grading", "grade", NAME, str(tmp_path / "in"),
           str(tmp_path / "g.csv"), "--user", "current", "--timeout", "30"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "current user (fallback)" in done.stdout
    with open(tmp_path / "g.csv", newline="") as f:
        rows = {r["file"]: r["total"] for r in csv.DictReader(f)}
    assert rows == {"blank.ipynb": "0", "solution.ipynb": "6"}


def test_fingerprint_covers_every_module_that_defines_a_check():
    """Patching a probe in a chapter's check module (not only optlib.course.checks) is detected."""
    import sys

    from optlib.course import checks
    from optlib.course.grading import child

    owners = {check.probe.__module__ for check in checks.CHECKS.values()} - {"optlib.course.checks"}
    assert owners, "expected chapter check modules besides optlib.course.checks"
    for owner in sorted(owners):
        mod = sys.modules[owner]
        name, fn = next(
            (n, f)
            for n, f in vars(mod).items()
            if callable(f) and getattr(f, "__module__", None) == owner and hasattr(f, "__code__")
        )
        before = child.fingerprint()
        original = fn.__code__
        try:
            fn.__code__ = (lambda *a, **k: None).__code__
            assert child.fingerprint() != before, f"patching {owner}.{name} went unnoticed"
        finally:
            fn.__code__ = original
        assert child.fingerprint() == before
