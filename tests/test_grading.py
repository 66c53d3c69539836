"""The trusted grader end to end: `otter assign`, then `python -m optlib.course.grading grade` on a
folder holding the solution, the blank student release, honest notebooks in every shape Jupyter
accepts, and crafted attacks (issue 15's list and the earlier ones); one CLI run, many checks.

Every integrity claim of the grader is proven here with a submission that tries to break it.
Bounded: small time limits; every process a submission starts is looked for afterwards, and the
host's /tmp and /dev/shm are checked for what a submission tried to leave there.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from optlib.course.grading.assign import assign
from optlib.course.grading.master import read_master

from ._grading import (
    IS_ROOT,
    MASTER,
    NAME,
    ROOT,
    code_cell,
    grade,
    insert_after_setup,
    require_bwrap,
    rows,
    scores,
    solutions,
    source,
    tagged,
    with_answers,
    write,
)

MARK = "optlib-grading-test-7f3a"  # in the names of every process and file the attacks make


def _forge_outputs(nb: dict) -> dict:
    """Stored outputs claiming that every check passed."""
    nb = json.loads(json.dumps(nb))
    for n, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        cell["execution_count"] = n + 1
        src = source(cell)
        if "grader.check" in src:
            text = "All tests passed!" if "check_all" in src else "q1 results: All passed!"
            cell["outputs"] = [{"output_type": "execute_result", "execution_count": n + 1,
                                "data": {"text/plain": text}, "metadata": {}}]  # fmt: skip
    nb["metadata"]["otter"]["results"] = {"q1": 2, "q2": 2, "q3": 2, "total": 6}
    return nb


MONKEYPATCH = """import dataclasses

import optlib.course.checks as checks

for _name, _check in list(checks.CHECKS.items()):
    checks.CHECKS[_name] = dataclasses.replace(
        _check, probe=lambda answer, case, _c=_check: _c.expect(case), compare=lambda *a: None
    )
checks.run_check = lambda *a, **k: None


def gd_step(theta, grad, lr):
    return None
"""

PATCH_GRADER_AND_EXIT = """import builtins, json, os

import optlib.course.grading.grade as grade

grade._score_question = lambda *a: None
with open("result.json", "w") as f:  # a forged result, then leave before the probes run
    json.dump({"results": [[{"passed": True}]], "tampered": False, "score": 6}, f)
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


while True:  # ignores every alarm: only killing the job stops it
    try:
        time.sleep(0.05)
    except BaseException:
        pass
"""

HANG_IN_FUNCTION = """def predict_iterations(kappa, tol):
    while True:
        pass
"""

# Issue 15's first attack, adapted: look for the probe's inputs in the calling frames, forge the
# job's result file and the grader's replies on every descriptor, compute answers with optlib's
# public code, and leave before any probe runs. A set-up cell that would work for any exercise.
UNIVERSAL_CHEAT = """import gc, json, os, sys

found = []
frame = sys._getframe()
while frame is not None:  # what the calling frames hold
    found += [k for k in frame.f_locals if k in ("case", "cases", "probes", "job", "expected")]
    frame = frame.f_back
found += [type(o).__name__ for o in gc.get_objects() if type(o).__name__ in ("Check", "Limits")]
forged = {"tampered": False, "cell_errors": [], "results": [[{"value": 1.0}] * 8] * 4, "score": 6}
for path in ("result.json", "/tmp/result.json", os.path.expanduser("~/result.json")):
    try:
        with open(path, "w") as f:
            json.dump(forged, f)
    except OSError:
        pass
reply = json.dumps({"op": "return", "value": {"$": "dict", "v": [["error", None]]}}) + "\\n"
for fd in range(3, 40):  # a forged reply on every descriptor, the grader's channel included
    try:
        os.write(fd, reply.encode())
    except OSError:
        pass
os._exit(0)
"""

DELEGATING = [
    """import optlib

def gd_step(theta, grad, lr):
    p = theta.clone().requires_grad_()
    p.grad = grad.clone()
    optlib.SGD([p], lr=lr).step()
    return p.detach()
""",
    """from optlib.experiments.rates import stable_lr_limit

def largest_stable_lr(A):
    return float(stable_lr_limit(0.0, float(torch.linalg.eigvalsh(A).max())))
""",
    """def predict_iterations(kappa, tol):  # runs gradient descent instead of predicting
    A = torch.diag(torch.tensor([1.0, kappa], dtype=torch.float64))
    p = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([p], lr=2 / (1 + kappa))
    k, start = 0, float(p.norm())
    while float(p.detach().norm()) > tol * start:
        p.grad = A @ p.detach()
        opt.step()
        k += 1
    return k
""",
]


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


KILL_PARENT = """import os, signal

os.kill(os.getppid(), signal.SIGKILL)
"""

KILL_SELF = """import os, signal

def gd_step(theta, grad, lr):
    return theta - lr * grad

os.kill(os.getpid(), signal.SIGKILL)
"""

DAEMON = f"""import os, subprocess

subprocess.Popen(["sleep", "317.25"], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    subprocess.Popen(["/bin/sh", "-c", "exec -a {MARK}-daemon sleep 317"])
    os._exit(0)


def gd_step(theta, grad, lr):
    return theta - lr * grad
"""

# ~150 processes in a setsid chain that SIGKILL and SIGALRM every process they can see, again
# and again; grading of every other submission must not notice.
FORK_KILLER = f"""import os, signal, time

def chain(n):
    for _ in range(n):
        try:
            if os.fork():
                return
        except OSError:
            return
        os.setsid()

chain(150)
try:
    os.execvp("/bin/sh", ["{MARK}-killer", "-c",
               "while true; do kill -ALRM -1; kill -KILL -1; sleep 0.05; done"])
except OSError:
    os._exit(0)
"""

SURROGATE_ERROR = "def largest_stable_lr(A):\n    raise ValueError(chr(0xDC80) + '=1+1')\n"

DEEP_DIRS = """import os

os.chdir("/tmp")
for i in range(3000):
    os.mkdir("d")
    os.chdir("d")
os.chdir("/tmp")


def gd_step(theta, grad, lr):
    return theta - lr * grad
"""


def _leaks(folder: Path, zip_path: Path, private: Path, venv_site: Path) -> str:
    return f"""import glob, os

leaks = []
for pid in os.listdir("/proc"):
    try:
        cmd = open(f"/proc/{{pid}}/cmdline", "rb").read()
        env = open(f"/proc/{{pid}}/environ", "rb").read()
    except OSError:
        continue
    if b"optlib.course.grading" in cmd + env or b"{folder.name}" in cmd + env:
        leaks.append(("grader's process", pid))
for path in ({str(folder)!r}, {str(MASTER)!r}, {str(zip_path)!r}, {str(private)!r},
             {str(ROOT / "exercises")!r}, {str(ROOT / "_build")!r}):
    try:
        if os.path.isdir(path):
            leaks.append((path, os.listdir(path)[:3]))
        else:
            leaks.append((path, open(path, "rb").read(40)))
    except OSError:
        pass
try:
    import optlib.course.checks
    leaks.append("optlib.course.checks")
except ImportError:
    pass
try:
    with open({str(venv_site / (MARK + ".pth"))!r}, "w") as f:
        f.write("import os; os.system('touch /tmp/{MARK}-pth')")
    leaks.append("wrote a .pth into the virtual environment")
except OSError:
    pass


def gd_step(theta, grad, lr):
    if leaks:
        raise ValueError(f"LEAKS: {{leaks}}"[:300])
    return theta - lr * grad
"""


SHM_PRODUCER = f"""import os

answer = "def gd_step(theta, grad, lr):\\n    return theta - lr * grad\\n"
for where in ("/dev/shm", "/tmp", "/var/tmp"):
    with open(os.path.join(where, "{MARK}-answer.py"), "w") as f:
        f.write(answer)
with open("/dev/shm/{MARK}-ballast", "wb") as f:
    try:
        f.write(b"x" * (20 << 20))
    except OSError:
        pass
exec(answer)
"""

# 200 processes at once, in a job allowed 64 (threads included): the answer exists only if the
# limit did not hold.
MANY_PROCESSES = """import os, time

started = 0
for _ in range(200):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    started += 1
if started == 200:
    def largest_stable_lr(A):
        return float(2 / torch.linalg.eigvalsh(A).max())
"""

SHM_CONSUMER = f"""import os

for where in ("/dev/shm", "/tmp", "/var/tmp"):
    path = os.path.join(where, "{MARK}-answer.py")
    if os.path.exists(path):
        exec(open(path).read())
"""

# Four children that each hold 300 MB at the same time (each within the per-process limit, all
# together over the 1 GiB limit of the whole job); the answer is defined only if they managed.
FORK_MEMORY = """import os, time

reports = []
for _ in range(4):
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(r)
        block = bytearray(300 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        os.write(w, b"ok")
        time.sleep(30)
        os._exit(0)
    os.close(w)
    reports.append(r)
held = all(os.read(r, 2) == b"ok" for r in reports)
if held:
    def predict_iterations(kappa, tol):
        import math
        return math.ceil(math.log(tol) / math.log((kappa - 1) / (kappa + 1)))
"""

DISK_FILL = """import os

written = 0
chunk = b"x" * (1 << 20)
try:
    for n in range(64):
        with open(f"/tmp/fill-{n}", "wb") as f:
            for _ in range(16):
                written += f.write(chunk)
except OSError:
    pass
if written >= 1 << 30:
    def largest_stable_lr(A):
        return float(2 / torch.linalg.eigvalsh(A).max())
"""

MANY_FILES = """import os

os.makedirs("/tmp/many", exist_ok=True)
for i in range(150_000):
    open(f"/tmp/many/{i}", "w").close()


def gd_step(theta, grad, lr):
    return theta - lr * grad
"""


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    out = assign(MASTER, tmp_path_factory.mktemp("assignments"))
    student = json.loads((out / "student" / f"{NAME}.ipynb").read_text())
    solution = json.loads((out / "autograder" / f"{NAME}.ipynb").read_text())
    return out, student, solution


def _honest(student: dict, sol: list[str]) -> dict[str, dict | bytes]:
    """Notebooks whose grader.check passes in Jupyter, in the shapes issue 15 found mis-graded."""
    numpy_q2 = ("def largest_stable_lr(A):\n"
                "    return float(2 / np.linalg.eigvalsh(A.numpy()).max())\n")  # fmt: skip
    numpy_in_q1 = with_answers(student, ["import numpy as np\n\n" + sol[0], numpy_q2, sol[2]])
    timed = with_answers(student, ["%%time\n" + sol[0] + "\n%time x = 1\n", sol[1], sol[2]])
    no_tags = with_answers(student, sol)
    for cell in no_tags["cells"]:
        cell.get("metadata", {}).pop("tags", None)
    no_tags["cells"].insert(1, code_cell("!pip install -q otter-grader\n%pip install numpy"))
    trailing = with_answers(student, [sol[0] + '\ngrader.check("q1")\n', sol[1], sol[2]])
    bom = b"\xef\xbb\xbf" + json.dumps(with_answers(student, sol)).encode()
    return {"y1_numpy_imported_in_q1": numpy_in_q1, "y2_time_magics": timed,
            "y3_no_tags_and_pip": no_tags, "y4_trailing_check": trailing,
            "y5_bom": bom}  # fmt: skip


def _combined(folder: Path, zip_path: Path, secret: Path, venv_site: Path, sol: list[str]):
    """Attacks that change nothing when they fail, in one notebook: daemons, tampering with the
    submissions and the master, a 3000-deep tree, reading secrets, planting a .pth, leaving an
    answer in /dev/shm and /tmp, signalling the parent (the sandbox's init)."""
    q1 = "\n".join([DAEMON, _tamper(folder), DEEP_DIRS, SHM_PRODUCER,
                     _leaks(folder, zip_path, secret, venv_site)])  # fmt: skip
    return [q1, KILL_PARENT + "\n" + sol[1], sol[2]]


@pytest.fixture(scope="module")
def graded(released, tmp_path_factory):
    """Grade one folder of crafted submissions with the CLI; return rows, log and evidence."""
    require_bwrap()
    out, student, solution = released
    folder = tmp_path_factory.mktemp("submissions")
    private = tmp_path_factory.mktemp("private")
    os.chmod(private, 0o700)
    secret = private / "secret.txt"
    secret.write_text("instructor's secret")
    os.chmod(secret, 0o600)
    marker = private / "unpickled"
    (zip_path,) = (out / "autograder").glob("*.zip")
    venv_site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    sol = solutions(solution)
    never_run = json.loads(json.dumps(student))
    answers = tagged(never_run, "otter_answer_cell")
    never_run["cells"] = [c for c in never_run["cells"] if not any(c is a for a in answers)]
    honest = _honest(student, sol)
    subs: dict[str | bytes, dict | bytes | str] = {
        "a_solution": solution,
        "a0_fork_killer": with_answers(student, [FORK_KILLER, sol[1], sol[2]]),
        "b_blank_forged_outputs": _forge_outputs(student),
        "d_patch_checks_and_grader": with_answers(student, [MONKEYPATCH, EXITS, RAISE_INTERRUPT]),
        "d_patch_grader_and_exit": with_answers(student, [PATCH_GRADER_AND_EXIT, None, None]),
        "f_loop_q2_hang_q3": with_answers(student, [sol[0], LOOP, HANG_IN_FUNCTION]),
        "h_pickle_q1_surrogate_q2": with_answers(student, [_pickle_payload(marker),
                                                           SURROGATE_ERROR, sol[2]]),  # fmt: skip
        "k_harmless_attacks": with_answers(student, _combined(folder, zip_path, secret,
                                                              venv_site, sol)),  # fmt: skip
        "l_not_a_notebook": "{ this is not json",
        "m_universal_cheat": insert_after_setup(student, UNIVERSAL_CHEAT),
        "m_universal_cheat_then_solutions": insert_after_setup(solution, UNIVERSAL_CHEAT),
        "o_deep_json": "[" * 200_000,
        "u_shm_consumer": with_answers(student, [SHM_CONSUMER, MANY_PROCESSES, sol[2]]),
        "v_limits": with_answers(student, [MANY_FILES, DISK_FILL, FORK_MEMORY]),
        "dl_delegating": with_answers(student, DELEGATING),
        "nr_never_run": never_run,
        "y2_time_magics": honest["y2_time_magics"],
        "y3_no_tags_and_pip": honest["y3_no_tags_and_pip"],
        "=HYPERLINK(\"http-evil\")": honest["y1_numpy_imported_in_q1"],
        b"y4_trailing_check_\xff": honest["y4_trailing_check"],
        "\x1b[31my5_bom\x1b[0m": honest["y5_bom"],
    }
    for name, nb in subs.items():
        write(folder, name, nb)
    os.symlink(out / "autograder" / f"{NAME}.ipynb", folder / "z_symlink.ipynb")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in folder.iterdir() if not p.is_symlink()}  # fmt: skip
    master_before = hashlib.sha256(MASTER.read_bytes()).hexdigest()
    host_tmp_before = set(os.listdir("/tmp")) | set(os.listdir("/dev/shm"))
    csv_path = tmp_path_factory.mktemp("out") / "grades.csv"
    done = grade(folder, csv_path, "--timeout", "15", "--cell-timeout", "3", "--memory-mb",
                 "1024", "--disk-mb", "32", "--max-files", "2000", "--jobs", "2")  # fmt: skip
    csv_path.with_suffix(".log").write_text(done.stdout + done.stderr)  # for a human look
    assert done.returncode == 0, done.stderr[-3000:]
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
             for p in folder.iterdir() if not p.is_symlink()}  # fmt: skip
    leftovers = subprocess.run(["pgrep", "-f", f"{MARK}|sleep 317"], capture_output=True,
                               text=True).stdout.split()  # fmt: skip
    host_new = (set(os.listdir("/tmp")) | set(os.listdir("/dev/shm"))) - host_tmp_before
    return {
        "rows": rows(csv_path),
        "log": done.stdout,
        "csv": csv_path.read_bytes(),
        "unchanged": before == after,
        "master_unchanged": master_before == hashlib.sha256(MASTER.read_bytes()).hexdigest(),
        "marker": marker.exists(),
        "pth": (venv_site / (MARK + ".pth")).exists(),
        "leftovers": leftovers,
        "host_new": sorted(n for n in host_new if MARK in n or n.startswith("optlib-grade")),
        "n": len(subs) + 1,
    }


HONEST = ("a_solution", "y2_time_magics", "y3_no_tags_and_pip", "'=HYPERLINK(\"http-evil\")",
          "y4_trailing_check_\\xff", "y5_bom")  # fmt: skip


def test_csv_has_one_row_per_submission_and_the_right_columns(graded):
    text = graded["csv"].decode("utf-8")  # valid UTF-8 whatever the submissions did
    assert text.splitlines()[0] == "file,q1,q2,q3,q4,total,notes"
    assert len(graded["rows"]) == graded["n"]
    assert all(r["q4"] == "" for r in graded["rows"].values())  # manual question


def test_progress_line_per_submission_with_an_estimate(graded):
    lines = [ln for ln in graded["log"].splitlines() if ln.startswith("[")]
    assert len(lines) == graded["n"]
    assert lines[-1].startswith(f"[{graded['n']}/{graded['n']}]")
    assert "left" in lines[0] and "s per file" in lines[0]
    assert "\x1b" not in graded["log"]  # no escape sequence from a file name reaches a terminal


def test_round_trip_solution_full_marks_blank_zero(graded):
    assert scores(graded["rows"]["a_solution"]) == (2, 2, 2, 6)
    row = graded["rows"]["b_blank_forged_outputs"]  # stored outputs claim full marks
    assert scores(row) == (0, 0, 0, 0) and "returned None" in row["notes"]


def test_patching_the_checks_or_the_grader_gains_nothing(graded):
    for name in ("d_patch_checks_and_grader", "d_patch_grader_and_exit"):
        row = graded["rows"][name]
        assert scores(row) == (0, 0, 0, 0), name
        assert "No module named 'optlib.course" in row["notes"]  # not even visible


def test_a_set_up_cell_for_every_exercise_scores_nothing(graded):
    """Issue 15's first attack: no inputs in any frame, no result file to forge, a forged reply
    ends its own job, and leaving early ends nothing but its own process. Its own answers, if
    any, still count: it gains nothing and costs only the question in whose region it ran."""
    assert scores(graded["rows"]["m_universal_cheat"]) == (0, 0, 0, 0)
    row = graded["rows"]["m_universal_cheat_then_solutions"]  # its forged reply is caught
    assert scores(row) == (0, 2, 2, 4) and "does not answer the request" in row["notes"]


def test_an_infinite_loop_or_a_hang_costs_that_question_only(graded):
    row = graded["rows"]["f_loop_q2_hang_q3"]
    assert scores(row) == (2, 0, 0, 2)
    q2, q3 = row["notes"].split(" | q3: ")
    assert "timeout" in q2 and "Timeout" in q3


def test_grader_never_unpickles_and_odd_text_stays_in_its_row(graded):
    row = graded["rows"]["h_pickle_q1_surrogate_q2"]
    assert scores(row) == (0, 0, 2, 2)
    assert "returned a Payload" in row["notes"] and "\\udc80=1+1" in row["notes"]
    assert not graded["marker"]


def test_submissions_the_master_and_the_venv_are_never_modified_or_read(graded):
    """One notebook: daemons, tampering, a 3000-deep tree, reading the grader's process, the
    submissions, the master, the autograder zip, _build/, a private file and the checks,
    writing a .pth into the venv, an answer left in /dev/shm, SIGKILL to its parent. Its own
    answers are right: it scores full marks only if none of that worked."""
    row = graded["rows"]["k_harmless_attacks"]
    assert scores(row) == (2, 2, 2, 6), row["notes"]
    assert graded["unchanged"] and graded["master_unchanged"] and not graded["pth"]
    if IS_ROOT:
        assert "sandbox as user 65534" in graded["log"]


def test_nothing_the_jobs_started_or_wrote_outlives_them(graded):
    assert graded["leftovers"] == []
    assert graded["host_new"] == []


def test_tmp_and_shm_are_private_to_each_job_and_processes_are_limited(graded):
    row = graded["rows"]["u_shm_consumer"]  # finds nothing k_harmless_attacks left (q1)
    assert scores(row) == (0, 0, 2, 2), row["notes"]  # and cannot start 200 processes (q2)


def test_one_job_cannot_damage_the_others(graded):
    """The fork-chain killer is graded first, beside the others: every honest row still gets
    full marks, none says timeout or crashed."""
    assert scores(graded["rows"]["a0_fork_killer"])[0] == 0
    for name in HONEST:
        row = graded["rows"][name]
        assert scores(row) == (2, 2, 2, 6), (name, row["notes"])


def test_limits_hold_for_the_whole_job(graded):
    """150 000 files in /tmp (2000 allowed, q1), 1 GiB into a 32 MiB /tmp (q2), four children
    holding 300 MB each (1.2 GB together) under 1 GiB for the job (q3): each answer is defined
    only if the attack succeeded."""
    row = graded["rows"]["v_limits"]
    assert scores(row) == (0, 0, 0, 0), row["notes"]
    assert "files" in row["notes"].split(" | q2: ")[0]


def test_one_bad_file_costs_one_row(graded):
    r = graded["rows"]
    assert "unreadable notebook" in r["l_not_a_notebook"]["notes"]
    assert "nested too deeply" in r["o_deep_json"]["notes"]


def test_names_and_notes_are_safe_in_a_spreadsheet_and_a_terminal(graded):
    r = graded["rows"]
    assert "'=HYPERLINK(\"http-evil\")" in r  # neutralised
    assert "y4_trailing_check_\\xff" in r  # invalid UTF-8 escaped
    assert "y5_bom" in r  # escape sequences gone
    for row in r.values():
        for cell in row.values():
            assert cell[:1] not in ("=", "+", "-", "@") and "\x1b" not in cell


def test_links_are_skipped_with_a_note(graded):
    row = graded["rows"]["z_symlink"]
    assert scores(row) == (0, 0, 0, 0) and "symbolic link" in row["notes"]


def test_honest_notebooks_score_full_marks(graded):
    """Issue 15's four mis-graded notebooks (numpy imported in q1's cell and used in q2, %%time
    on an answer cell, tags stripped plus !pip, a trailing grader.check) and a BOM."""
    for name in HONEST:
        row = graded["rows"][name]
        assert scores(row) == (2, 2, 2, 6), (name, row["notes"])
    assert "pip" in graded["rows"]["y3_no_tags_and_pip"]["notes"]  # skipped, with a note


def test_delegating_answers_score_nothing_with_the_reason(graded):
    row = graded["rows"]["dl_delegating"]
    assert scores(row) == (0, 0, 0, 0)
    notes = row["notes"]
    assert notes.count("scores nothing") == 3
    assert "optlib.SGD" in notes and "stable_lr_limit" in notes and "torch.optim.SGD" in notes


def test_answers_never_run_say_which_cell_to_run(graded):
    notes = graded["rows"]["nr_never_run"]["notes"]
    for name in ("gd_step", "largest_stable_lr", "predict_iterations"):
        assert f"run the cell that defines `{name}`" in notes
    assert "NoneType" not in notes


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
    auto = (out / "autograder" / f"{NAME}.ipynb").read_text()
    assert all(f"seed={t.options['seed']}" in auto for t in hidden)


def test_student_release_carries_its_public_tests(released):
    _, student, _ = released
    init = source(student["cells"][0])
    assert "checks.gd_step(gd_step)" in init and "otter.Notebook(tests_dir=" in init
    assert tagged(student, "otter_answer_cell")


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
        "q1": 2.0, "q2": 2.0, "q3": 2.0,
    }  # fmt: skip
    assert _otter_run(autograder_zip, student, tmp_path / "blank") == {
        "q1": 0.0, "q2": 0.0, "q3": 0.0,
    }  # fmt: skip


def test_resume_grades_only_what_is_missing_with_the_same_inputs(released, tmp_path):
    require_bwrap()
    _, student, solution = released
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder, "a", solution)
    out = tmp_path / "g.csv"
    assert grade(folder, out, "--timeout", "30").returncode == 0
    again = grade(folder, out, "--timeout", "30")
    assert again.returncode != 0 and "--resume" in again.stderr  # never overwritten silently
    write(folder, "b", student)
    seed_before = json.loads((tmp_path / "g.csv.run.json").read_text())["seed"]
    done = grade(folder, out, "--timeout", "30", "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 already graded" in done.stdout and "[1/1] b.ipynb" in done.stdout
    assert {k: r["total"] for k, r in rows(out).items()} == {"a": "6", "b": "0"}
    assert json.loads((tmp_path / "g.csv.run.json").read_text())["seed"] == seed_before
