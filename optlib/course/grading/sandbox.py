"""The grader's side of the sandbox: start the fork server, run one job, enforce the time limit.

**As root** (the intended set-up, e.g. in a container), the server runs as ``nobody``::

    setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs \
        python -I -m optlib.course.grading.child

with a minimal environment, one thread per library, and each job in a fresh empty directory
owned by ``nobody`` (mode 700) inside a root-owned directory that nobody can list. That user
cannot read root-only files, write the submissions or the instructor's files, signal or trace
the grader, and the expected answers exist only in the grader's memory.

**Not as root** (fallback): ``setpriv`` cannot switch users, so the server runs as the current
user with the same isolation except the user switch: a job can then read and write whatever
that user can. Use it for trusted notebooks (your own solutions, CI), or run the grader as root
in a throw-away container for a class. :class:`Sandbox` says which mode it is in (``mode``).

The time limit is enforced here: when a job overruns, its whole process group is killed with
SIGKILL; if the server does not answer after that, it is killed and restarted for the next job.
"""

from __future__ import annotations

import ctypes
import json
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Limits", "Outcome", "Sandbox"]

NOBODY = 65534
PR_SET_CHILD_SUBREAPER = 36
MAX_RESULT_BYTES = 16 * 2**20


@dataclass(frozen=True)
class Limits:
    """Per-question limits. ``question_timeout_s`` is wall-clock time for all the question's
    cells and probes; ``cell_timeout_s`` bounds each cell and each probe call."""

    question_timeout_s: float = 60.0
    cell_timeout_s: float = 20.0
    memory_mb: int = 4096
    file_size_mb: int = 16

    def for_child(self, timeout_s: float) -> dict[str, Any]:
        d = asdict(self)
        d["cpu_s"] = max(1, int(timeout_s) + 2)
        return d


@dataclass
class Outcome:
    """What came back from one job: ``status`` is ``ok``, ``timeout``, ``crashed`` or
    ``no-result``; ``data`` is the parsed JSON result (or None)."""

    status: str
    data: dict | None
    seconds: float
    detail: str = ""


def _minimal_env() -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/nonexistent",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "PYTHONHASHSEED": "0",
    }


def _server_limits() -> None:  # runs in the forked server before exec
    resource = __import__("resource")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (256, 256))


class Sandbox:
    """Runs grading jobs in the fork server (see the module docstring).

    Args:
        limits: per-question limits.
        user: ``"auto"`` (``nobody`` when root, else the current user), ``"nobody"`` (require
            the user switch) or ``"current"`` (never switch; for trusted notebooks only).
    """

    def __init__(self, limits: Limits, user: str = "auto") -> None:
        if user not in ("auto", "nobody", "current"):
            raise ValueError(f"Invalid user: {user!r}; expected 'auto', 'nobody' or 'current'")
        can_switch = os.geteuid() == 0 and shutil.which("setpriv") is not None
        if user == "nobody" and not can_switch:
            raise RuntimeError("user='nobody' needs root and setpriv (util-linux)")
        self.switch_user = can_switch and user != "current"
        self.mode = "unprivileged user 65534" if self.switch_user else "current user (fallback)"
        self.limits = limits
        self._proc: subprocess.Popen | None = None
        self._buffer = b""
        self._base = Path(tempfile.mkdtemp(prefix="optlib-grade-"))
        os.chmod(self._base, 0o711)  # jobs can enter their own folder, nobody can list
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    # ------------------------------------------------------------------ server life cycle
    def _start(self) -> None:
        cmd = [sys.executable, "-I", "-m", "optlib.course.grading.child"]
        if self.switch_user:
            cmd = [
                "setpriv",
                f"--reuid={NOBODY}",
                f"--regid={NOBODY}",
                "--clear-groups",
                "--no-new-privs",
                *cmd,
            ]
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self._base,
            env=_minimal_env(),
            preexec_fn=_server_limits,
            start_new_session=True,
        )
        self._buffer = b""
        msg = self._receive(time.monotonic() + 300)
        if not msg or "ready" not in msg:
            self._stop()
            who = f"user {NOBODY}" if self.switch_user else "the current user"
            raise RuntimeError(
                f"the grading sandbox did not start: can {who} read the virtual environment "
                "and optlib? (as root, both must be world-readable; or use --user current)"
            )

    def _stop(self) -> None:
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self._proc.kill()
            self._proc.wait()
            self._proc = None
        self._reap_orphans()

    def close(self) -> None:
        self._stop()
        shutil.rmtree(self._base, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reap_orphans(self) -> None:
        """Processes of a dead server's jobs are re-parented to us (child subreaper): kill them."""
        keep = self._proc.pid if self._proc is not None else None
        me = os.getpid()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == keep:
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat_ = f.read()
                uid = os.stat(f"/proc/{entry}").st_uid
            except OSError:
                continue
            ppid = int(stat_[stat_.rfind(")") + 2 :].split()[1])
            sandboxed = uid == NOBODY if self.switch_user else True
            if ppid == me and sandboxed and int(entry) != keep:
                try:
                    os.kill(int(entry), signal.SIGKILL)
                    os.waitpid(int(entry), 0)
                except (ProcessLookupError, ChildProcessError):
                    pass

    # ------------------------------------------------------------------ messages
    def _receive(self, deadline: float) -> dict | None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(fd, 65536)
                if not chunk:  # the server is gone: wait until it is reaped, so poll() sees it
                    try:
                        self._proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        pass
                    return None
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    # ------------------------------------------------------------------ one job
    def run(self, cells: list[str], probes: list[dict], timeout_s: float | None = None) -> Outcome:
        """Run ``cells`` then ``probes`` in a fresh sandboxed process, within the time limit."""
        timeout_s = self.limits.question_timeout_s if timeout_s is None else timeout_s
        if self._proc is None or self._proc.poll() is not None:
            self._stop()
            self._start()
        workdir = Path(tempfile.mkdtemp(dir=self._base, prefix="job-"))
        if self.switch_user:
            os.chown(workdir, NOBODY, NOBODY)
        os.chmod(workdir, 0o700)
        job = {
            "workdir": str(workdir),
            "cells": cells,
            "probes": probes,
            "limits": self.limits.for_child(timeout_s),
        }
        start = time.monotonic()
        try:
            assert self._proc is not None and self._proc.stdin is not None
            self._proc.stdin.write((json.dumps(job) + "\n").encode())
            self._proc.stdin.flush()
            started = self._receive(start + 60)
            if not started or "started" not in started:
                self._stop()
                return Outcome("crashed", None, time.monotonic() - start, "sandbox did not start")
            pid = int(started["started"])
            done = self._receive(start + timeout_s)
            status, detail = "ok", ""
            if done is None and self._proc.poll() is not None:
                status, detail = "crashed", "the sandbox server was killed"
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                self._stop()
            elif done is None:
                status, detail = "timeout", f"exceeded {timeout_s:g} s"
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                if self._receive(time.monotonic() + 10) is None:
                    self._stop()  # the server is stuck or gone: start afresh next time
            elif done.get("status", 0) != 0:
                status = "crashed"
                detail = _describe_status(int(done["status"]))
            seconds = time.monotonic() - start
            data = _read_result(workdir / "result.json")
            if status == "ok" and data is None:
                status, detail = "no-result", "the job ended without a result"
            return Outcome(status, data if status == "ok" else None, seconds, detail)
        except (BrokenPipeError, OSError, ValueError) as err:
            self._stop()
            return Outcome("crashed", None, time.monotonic() - start, type(err).__name__)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            self._reap_orphans()


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals.__members__.values() else sig
        hint = {"SIGXCPU": " (CPU time limit)", "SIGXFSZ": " (file size limit)"}.get(str(name), "")
        return f"killed by {name}{hint}"
    return f"exit status {os.WEXITSTATUS(status)}"


def _read_result(path: Path) -> dict | None:
    """Read the job's JSON result without following links or reading huge files."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_RESULT_BYTES:
            return None
        raw = b""
        while chunk := os.read(fd, 1 << 20):
            raw += chunk
            if len(raw) > MAX_RESULT_BYTES:
                return None
    finally:
        os.close(fd)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None
