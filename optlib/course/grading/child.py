"""The sandboxed side of the classroom grader: a fork server that never runs learner code itself.

Started by :mod:`optlib.course.grading.sandbox` as ``python -I -m optlib.course.grading.child``, as
an unprivileged user when the grader runs as root. It imports torch and :mod:`optlib.course.checks`
once (the slow part), makes itself non-dumpable (other processes of the same user cannot ptrace it)
and a child subreaper (orphans of a job come back to it and are killed), then serves jobs read
as JSON lines on stdin. For each job it forks a fresh process that

1. starts a new session (its own process group, which the parent kills on timeout), moves into
   the job's empty working directory, points HOME/TMPDIR there, applies CPU, memory, file-size
   and open-file limits, and cuts every inherited file descriptor (stdin/stdout/stderr become
   ``/dev/null``), so it cannot talk to the server or the grader except through its result;
2. executes the set-up cells and the question's cells in a fresh ``__main__`` namespace, each
   under a per-cell alarm; an exception or timeout in a cell is recorded and the next cell runs;
3. runs each probe (captured from :mod:`optlib.course.checks` before any learner code ran) on the
   learner's objects, for each case of fresh inputs, under the same alarm;
4. writes plain JSON (the probes' data and the cell errors) to ``result.json`` and exits.

The server answers ``{"started": pid}`` and, once the job's process has ended and its
leftovers are killed, ``{"done": pid, "status": ...}``. Expected answers never come here.
"""

from __future__ import annotations

import builtins
import ctypes
import dataclasses
import json
import os
import re
import resource
import signal
import sys
import types
from typing import Any

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
MAX_ERROR = 300


class CellTimeout(BaseException):
    """Raised by the per-cell alarm (a BaseException, so ``except Exception`` cannot eat it)."""


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(option, value, 0, 0, 0)


def _send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def kill_descendants(parent: int) -> None:
    """SIGKILL and reap every process whose parent is ``parent`` (we are its subreaper, so
    orphans land here), repeating until none is left."""
    for _ in range(100):
        kids = _children_of(parent)
        if not kids:
            return
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in kids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _strip_magics(source: str) -> str | None:
    """IPython syntax as plain Python: ``%line``/``!shell`` lines become ``pass``; a ``%%cell``
    magic skips the cell (None)."""
    if source.lstrip().startswith("%%"):
        return None
    return re.sub(r"(?m)^(\s*)[%!].*$", r"\1pass", source)


def _describe(err: BaseException) -> str:
    name = type(err).__name__ if not isinstance(err, CellTimeout) else "Timeout"
    return f"{name}: {err}"[:MAX_ERROR]


class _alarm:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _on_alarm(signum: int, frame: Any) -> None:
    raise CellTimeout("cell exceeded its time limit")


def fingerprint() -> tuple:
    """Identities of what the probes and this harness run: the functions of optlib.course.checks, of
    every chapter module that defines a registered check, and of this module (code, defaults,
    globals), the check registry, ``json`` and the torch and
    builtin entry points the probes call. Learner code that patches any of them (a function's
    ``__code__``, a module attribute, a registry entry) changes the fingerprint, and the job
    then reports tampering instead of data. (A layer, not a proof: code running in this process
    can in principle patch anything; see :mod:`optlib.course.grading` for what the grade relies
    on.)"""
    import torch

    from optlib.course import checks

    modules = {checks.__name__: checks, __name__: sys.modules[__name__], "json": json}
    for check in checks.CHECKS.values():
        for field in dataclasses.fields(check):
            owner = getattr(getattr(check, field.name), "__module__", None) or ""
            if owner.startswith("optlib.") and owner in sys.modules:
                modules[owner] = sys.modules[owner]
    items: list = []
    for _, mod in sorted(modules.items()):
        for name, value in list(vars(mod).items()):
            items.append((mod.__name__, name, id(value)))
            if isinstance(value, types.FunctionType):
                items.append((id(value.__code__), id(value.__defaults__), id(value.__kwdefaults__)))
    for check in checks.CHECKS.values():
        items.extend(id(getattr(check, f.name)) for f in dataclasses.fields(check))
    for name in ("tensor", "as_tensor", "equal", "isclose", "unravel_index", "zeros"):
        items.append(id(getattr(torch, name)))
    for name in ("tolist", "clone", "reshape", "to", "detach", "double", "numel", "backward"):
        items.append(id(getattr(torch.Tensor, name)))
    for name in ("float", "int", "isinstance", "len", "range", "type", "str", "zip", "dict"):
        items.append(id(getattr(builtins, name)))
    return tuple(items)


def _confine(job: dict) -> None:
    os.setsid()
    workdir = job["workdir"]
    os.chdir(workdir)
    for var in ("HOME", "TMPDIR", "MPLCONFIGDIR"):
        os.environ[var] = workdir
    limits = job["limits"]
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    mem = int(limits["memory_mb"]) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    size = int(limits["file_size_mb"]) * 2**20
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, 65536)
    signal.signal(signal.SIGALRM, _on_alarm)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)


def _run_job(job: dict, probes: dict, snapshot: tuple) -> None:
    _confine(job)
    cell_timeout = float(job["limits"]["cell_timeout_s"])
    namespace: dict[str, Any] = {
        "__name__": "__main__",
        "__builtins__": builtins,
        "display": lambda *a, **k: None,
    }
    cell_errors = []
    for i, source in enumerate(job["cells"]):
        code = _strip_magics(source)
        if code is None:
            cell_errors.append(f"cell {i + 1}: cell magic skipped")
            continue
        try:
            with _alarm(cell_timeout):
                exec(compile(code, f"<cell {i + 1}>", "exec"), namespace)
        except BaseException as err:  # the learner's code may raise anything
            cell_errors.append(f"cell {i + 1}: {_describe(err)}")
    results = []
    timed_out: set[str] = set()  # a target that hung once is not called again
    tampered = fingerprint() != snapshot
    for test in [] if tampered else job["probes"]:
        probe = probes[test["check"]]
        target = test["target"]
        out = []
        for case in test["cases"]:
            if target not in namespace:
                out.append({"error": f"NameError: name {target!r} is not defined"})
                continue
            if target in timed_out:
                out.append({"error": "Timeout: skipped after an earlier call timed out"})
                continue
            try:
                with _alarm(cell_timeout):
                    out.append(probe(namespace[target], case))
            except CellTimeout as err:
                timed_out.add(target)
                out.append({"error": _describe(err)})
            except BaseException as err:
                out.append({"error": _describe(err)})
        results.append(out)
    try:
        payload = json.dumps({"cell_errors": cell_errors, "results": results, "tampered": tampered})
    except (TypeError, ValueError) as err:
        payload = json.dumps({"cell_errors": cell_errors, "fatal": _describe(err)})
    path = os.path.join(job["workdir"], "result.json")
    try:
        os.unlink(path)
    except OSError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.write(fd, payload.encode())
    os.close(fd)


def serve() -> None:
    """The fork server's loop (see the module docstring)."""
    _prctl(PR_SET_DUMPABLE, 0)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    import torch

    torch.set_num_threads(1)
    import optlib  # noqa: F401  (learner code imports it; warm it once)
    from optlib.course.checks import CHECKS

    probes = {name: check.probe for name, check in CHECKS.items()}
    snapshot = fingerprint()
    _send({"ready": os.getpid()})
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                _run_job(job, probes, snapshot)
                code = 0
            finally:
                os._exit(code)
        _send({"started": pid})
        _, status = os.waitpid(pid, 0)
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        kill_descendants(os.getpid())
        _send({"done": pid, "status": status})


if __name__ == "__main__":
    serve()
