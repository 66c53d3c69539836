"""The grader's sandbox from the outside: as an ordinary user, two runs at once, and refusals.

* As an ordinary user (created here when the tests run as root, and the grader started with
  ``setpriv``), grading is isolated, not silently weakened: a submission cannot read the
  instructor's private file, the grader's environment or memory, a classmate's notebook, or write
  into optlib or the virtual environment; the whole-job memory limit holds without cgroups.
* Two grading runs at once do not interact, even when one grades a submission that kills every
  process it can see.
* Without a working sandbox the grader refuses, saying what to install; unsandboxed grading needs
  a flag that names the risk, and is refused as root.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ._grading import IS_ROOT, MASTER, ROOT, grade, require_bwrap, rows, scores, with_answers

USER = "optlib-grader"
SECRET = "OPTLIB_INSTRUCTOR_SECRET_5d1c"

# Define gd_step (correctly) only if every attempt below failed.
PRYING = f"""import errno, os

found = []
for pid in os.listdir("/proc"):
    try:
        if b"{SECRET}" in open(f"/proc/{{pid}}/environ", "rb").read():
            found.append(("environment", pid))
        open(f"/proc/{{pid}}/mem", "rb").read(1)
        found.append(("memory", pid))
    except OSError:
        pass
for path in PRIVATE:
    try:
        open(path, "rb").read(1)
        found.append(("read", path))
    except OSError:
        pass
    try:
        with open(path, "w") as f:
            f.write("{{}}")
        found.append(("wrote", path))
    except OSError:
        pass
for folder in WRITABLE:
    try:
        open(os.path.join(folder, "planted.pth"), "w").close()
        found.append(("planted", folder))
    except OSError as err:
        if err.errno not in (errno.EROFS, errno.ENOENT):
            found.append(("not read-only", folder, err.errno))


def gd_step(theta, grad, lr):
    if found:
        raise ValueError(f"FOUND: {{found}}"[:300])
    return theta - lr * grad
"""

FORK_MEMORY = """import os, time

reports = []
for _ in range(4):
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(r)
        block = bytearray(250 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        os.write(w, b"ok")
        time.sleep(30)
        os._exit(0)
    os.close(w)
    reports.append(r)
if all(os.read(r, 2) == b"ok" for r in reports):
    def predict_iterations(kappa, tol):
        import math
        return math.ceil(math.log(tol) / math.log((kappa - 1) / (kappa + 1)))
"""


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    from optlib.course.grading.assign import assign

    out = assign(MASTER, tmp_path_factory.mktemp("assignments"))
    student = json.loads((out / "student" / f"{MASTER.stem}.ipynb").read_text())
    solution = json.loads((out / "autograder" / f"{MASTER.stem}.ipynb").read_text())
    return student, solution


def _solutions(solution: dict) -> list[str]:
    from ._grading import solutions

    return solutions(solution)


def _ordinary_user() -> tuple[int, int] | None:
    """(uid, gid) of a user without privileges to grade as; created when we are root."""
    if not IS_ROOT:
        return os.getuid(), os.getgid()
    if not all(shutil.which(t) for t in ("useradd", "setpriv", "unshare", "mount")):
        return None
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        done = subprocess.run(["useradd", "--system", "--create-home", "--home-dir",
                               f"/home/{USER}", "--shell", "/usr/sbin/nologin", USER],
                              capture_output=True)  # fmt: skip
        if done.returncode != 0:
            return None
        entry = pwd.getpwnam(USER)
    return entry.pw_uid, entry.pw_gid


def _hidden_parents(paths: list[str]) -> dict[str, str]:
    """Directories an ordinary user cannot enter on the way to ``paths`` (e.g. /root), each
    with the child the grader needs from it."""
    hidden: dict[str, str] = {}
    for p in paths:
        parts = Path(p).resolve().parts
        for i in range(1, len(parts)):
            d = Path(*parts[:i])
            if not d.stat().st_mode & 0o001:
                hidden.setdefault(str(d), parts[i])
                break
    return hidden


def _as_user(uid: int, gid: int, env: dict) -> list[str]:
    """A command prefix that runs as ``uid``; as root, in a private mount namespace where the
    interpreter under a closed directory (such as /root) is visible to that user. This only
    stands in for an instructor whose Python lives in their own home."""
    if not IS_ROOT:
        return ["env", "-i", *(f"{k}={v}" for k, v in env.items())]
    hidden = _hidden_parents([sys.base_prefix, sys.prefix, str(ROOT)])
    script = ["set -e"]
    for n, (d, child) in enumerate(hidden.items()):
        script += [f'S{n}=$(mktemp -d /tmp/optlib-stage-XXXXXX)',
                   f'mount --bind "{d}/{child}" "$S{n}"',
                   f'mount -t tmpfs -o mode=755 none "{d}"',
                   f'mkdir "{d}/{child}"', f'mount --move "$S{n}" "{d}/{child}"',
                   f'rmdir "$S{n}"']  # fmt: skip
    script.append(f'exec setpriv --reuid={uid} --regid={gid} --clear-groups "$@"')
    env_cmd = ["env", "-i", *(f"{k}={v}" for k, v in env.items())]
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            "\n".join(script), "sh", *env_cmd]  # fmt: skip


@pytest.mark.slow
def test_as_an_ordinary_user_grading_is_isolated(released):
    require_bwrap()
    student, solution = released
    user = _ordinary_user()
    if user is None:
        pytest.skip("no way to run as an ordinary user here (needs root and util-linux)")
    uid, gid = user
    base = Path(tempfile.mkdtemp(prefix="optlib-user-test-"))
    try:
        os.chmod(base, 0o755)
        folder, private = base / "in", base / "private"
        folder.mkdir()
        private.mkdir(mode=0o700)
        secret = private / "secret.txt"
        secret.write_text("the instructor's answers")
        secret.chmod(0o600)
        classmate = folder / "a_classmate.ipynb"
        classmate.write_text(json.dumps(solution))
        venv_site = next(p for p in sys.path if p.endswith("site-packages"))
        prying = (f"PRIVATE = {[str(secret), str(classmate)]!r}\n"
                  f"WRITABLE = {[venv_site, str(ROOT / 'optlib'), str(folder), str(base)]!r}\n"
                  + PRYING)  # fmt: skip
        sol = _solutions(solution)
        (folder / "b_prying.ipynb").write_text(
            json.dumps(with_answers(student, [prying, sol[1], FORK_MEMORY]))
        )
        for path in (base, folder, private, secret, classmate, folder / "b_prying.ipynb"):
            os.chown(path, uid, gid)
        before = classmate.read_bytes()
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(base), "LANG": "C.UTF-8",
               SECRET: "1"}  # fmt: skip
        done = grade(folder, base / "grades.csv", "--timeout", "20", "--cell-timeout", "5",
                     "--memory-mb", "1024", prefix=_as_user(uid, gid, env), env=None)  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "your user, in a user namespace" in done.stdout  # isolated, not weakened
        r = rows(base / "grades.csv")
        assert scores(r["a_classmate"]) == (2, 2, 2, 6)
        row = r["b_prying"]
        assert scores(row)[:2] == (2, 2), row["notes"]  # nothing it tried worked
        assert scores(row)[2] == 0 and "limit" in row["notes"]  # 4 x 250 MB > 1 GiB: stopped
        assert classmate.read_bytes() == before and secret.read_text().startswith("the instr")

        unsafe = grade(folder, base / "unsafe.csv", "--timeout", "20", "--jobs", "1",
                       "--unsafe-run-submissions-as-me",
                       prefix=_as_user(uid, gid, env))  # fmt: skip
        assert unsafe.returncode == 0, unsafe.stderr[-2000:]
        assert "UNSANDBOXED" in unsafe.stdout
        assert scores(rows(base / "unsafe.csv")["a_classmate"]) == (2, 2, 2, 6)
    finally:
        shutil.rmtree(base, ignore_errors=True)


KILL_EVERYTHING = """import os, time

def gd_step(theta, grad, lr):
    return theta - lr * grad

for _ in range(100):  # SIGKILL every process this job can see, for five seconds
    os.system("kill -KILL -1 2>/dev/null")
    time.sleep(0.05)
"""


@pytest.mark.slow
def test_two_grading_runs_at_once_do_not_interact(released, tmp_path):
    require_bwrap()
    student, solution = released
    sol = _solutions(solution)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "killer.ipynb").write_text(json.dumps(with_answers(student, [KILL_EVERYTHING, sol[1],
                                                                      sol[2]])))  # fmt: skip
    (a / "solution.ipynb").write_text(json.dumps(solution))
    for name in ("one", "two"):
        (b / f"{name}.ipynb").write_text(json.dumps(solution))
    cmds = [[sys.executable, "-m", "optlib.course.grading", "grade", str(MASTER), str(folder),
             str(tmp_path / f"{folder.name}.csv"), "--timeout", "20", "--cell-timeout", "8",
             "--jobs", "1"] for folder in (a, b)]  # fmt: skip
    procs = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in cmds]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    ra, rb = rows(tmp_path / "a.csv"), rows(tmp_path / "b.csv")
    assert scores(rb["one"]) == scores(rb["two"]) == (2, 2, 2, 6)
    assert scores(ra["solution"]) == (2, 2, 2, 6)
    assert scores(ra["killer"]) == (0, 2, 2, 4)  # it killed only its own job, in q1's region


def _refusal(tmp_path: Path, *extra: str, path: str | None = None) -> subprocess.CompletedProcess:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    env = {**os.environ, "PATH": path} if path is not None else None
    return grade(folder, tmp_path / "g.csv", *extra, env=env, timeout=300)


def test_without_bubblewrap_grading_refuses_and_says_what_to_install(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    for tool in ("sh", "setpriv", "unshare", "mount"):  # everything but bwrap
        if shutil.which(tool):
            os.symlink(shutil.which(tool), empty / tool)
    done = _refusal(tmp_path, path=str(empty))
    assert done.returncode == 2
    assert "bubblewrap" in done.stderr and "apt-get install bubblewrap" in done.stderr
    assert not (tmp_path / "g.csv").exists()


def test_a_sandbox_that_cannot_start_is_a_refusal_with_the_reason(tmp_path):
    fake = Path(tempfile.mkdtemp(prefix="optlib-fake-bwrap-"))  # reachable by user 65534 too
    fake.chmod(0o755)
    (fake / "bwrap").write_text("#!/bin/sh\necho 'bwrap: No permissions to create new "
                                "namespace, likely because the kernel does not allow "
                                "non-privileged user namespaces.' >&2\nexit 1\n")  # fmt: skip
    (fake / "bwrap").chmod(0o755)
    try:
        done = _refusal(tmp_path, path=f"{fake}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    finally:
        shutil.rmtree(fake)
    assert done.returncode == 2
    assert "did not start" in done.stderr and "user namespaces" in done.stderr
    assert "No permissions to create new namespace" in done.stderr


@pytest.mark.skipif(not IS_ROOT, reason="the refusal is for root")
def test_unsandboxed_grading_is_refused_as_root(tmp_path):
    done = _refusal(tmp_path, "--unsafe-run-submissions-as-me")
    assert done.returncode == 2 and "refusing" in done.stderr and "root" in done.stderr
