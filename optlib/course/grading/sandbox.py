r"""Each submission's code in its own sandbox: bubblewrap, namespaces, whole-job limits.

A *job* is one learner process (:mod:`optlib.course.grading.serve`) started for one submission
by Debian's ``bubblewrap`` (``bwrap``), which gives it

* its own PID, mount, network, IPC, UTS, cgroup and user namespaces: it sees no other process
  (not the grader, not another job; the grader's command line and environment neither), has no
  network, and every process it starts dies with it (``bwrap`` is the namespace's init; killing
  it kills them all);
* a file system made of read-only views of the interpreter, its libraries and ``optlib``
  (without ``optlib/course``: the checks' reference code, the grader and the masters are not
  there; the serving code is copied in), plus private size-limited ``/tmp``, ``/var/tmp`` and
  ``/dev/shm`` that vanish with the job; no view of ``exercises/``, ``_build/``, the submissions,
  the instructor's files or the grader's process;
* an empty environment (``PATH``, ``HOME=/tmp``, one thread per math library).

**Limits that hold for the whole job** (:class:`Limits`): memory, number of processes (threads
count) and disk. As root, with cgroups available (v1 or v2), each job gets its own cgroup with
``memory`` and ``pids`` limits; otherwise the job's processes get per-process rlimits set from
inside its user namespace (so the process count is the job's own) and the grader sums their
resident memory while it waits, killing the job above the limit. Disk: each tmpfs has a size;
the number of files in them is watched. Time: a call or cell over its limit is interrupted
inside the job; if that does not stop it, the whole job is killed (SIGKILL to ``bwrap``).

**As root** the job runs as ``nobody`` (65534): ``bwrap`` itself is started through ``setpriv``
with no capabilities and no way to regain any, after ``unshare --mount`` has made the
interpreter visible to ``nobody`` where a parent directory (such as ``/root``) would hide it.
**As an ordinary user** ``bwrap`` uses unprivileged user namespaces; the job runs as that user
but sees only the read-only views above.

If the sandbox cannot start (``bwrap`` missing, user namespaces disabled), :class:`Isolation`
refuses with a message saying what to install or enable. ``unsandboxed=True`` runs jobs as plain
child processes of the current user (no namespaces: a submission can read and write whatever you
can): for notebooks you trust, and refused as root.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .proxy import Connection, PipeTransport, SandboxFailure

__all__ = ["Isolation", "Job", "Limits", "SandboxUnavailable", "remove_tree"]

NOBODY = 65534
SERVE = Path(__file__).with_name("serve.py")
INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: `sudo apt-get install bubblewrap`; Fedora: "
    "`sudo dnf install bubblewrap`; Arch: `sudo pacman -S bubblewrap`)"
)


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot start here; the message says what to install or enable."""


@dataclass(frozen=True)
class Limits:
    """Limits of one job (one submission's learner process and everything it starts).

    ``question_timeout_s`` bounds a question's cells and calls together, ``cell_timeout_s`` one
    cell or one call; ``memory_mb`` and ``processes`` hold for the whole job (threads count as
    processes); ``disk_mb`` is the size of each private tmpfs, ``files`` the number of files in
    them; ``file_size_mb`` bounds one file."""

    question_timeout_s: float = 60.0
    cell_timeout_s: float = 20.0
    memory_mb: int = 4096
    processes: int = 64
    disk_mb: int = 64
    files: int = 20000
    file_size_mb: int = 16

    def for_job(self) -> dict:
        """The rlimits the learner's side sets on itself (see serve._apply_limits)."""
        return {
            "address_space_mb": self.memory_mb,
            "processes": self.processes,
            "file_size_mb": self.file_size_mb,
            "open_files": 256,
        }


def _minimal_env() -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "MPLCONFIGDIR": "/tmp",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def remove_tree(path: str | Path) -> None:
    """Delete a directory tree without recursion, without following links and without long
    paths (a job can create trees far deeper than Python's recursion limit or PATH_MAX): every
    subdirectory is moved up to the top before it is emptied. What cannot be removed is left."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        root = os.open(path, flags)
    except OSError:
        return
    tag = f".optlib-rm-{os.getpid()}-{time.monotonic_ns()}-"
    counter = 0
    try:
        for _ in range(10_000_000):
            progress = False
            for entry in list(os.scandir(root)):
                try:
                    if not entry.is_dir(follow_symlinks=False):
                        os.unlink(entry.name, dir_fd=root)
                        progress = True
                        continue
                    try:
                        sub = os.open(entry.name, flags, dir_fd=root)
                    except PermissionError:
                        os.chmod(entry.name, 0o700, dir_fd=root, follow_symlinks=False)
                        sub = os.open(entry.name, flags, dir_fd=root)
                    try:
                        for child in list(os.scandir(sub)):
                            if child.is_dir(follow_symlinks=False):
                                counter += 1
                                os.rename(child.name, f"{tag}{counter}", src_dir_fd=sub,
                                          dst_dir_fd=root)  # fmt: skip
                            else:
                                os.unlink(child.name, dir_fd=sub)
                    finally:
                        os.close(sub)
                    os.rmdir(entry.name, dir_fd=root)
                    progress = True
                except OSError:
                    continue
            if not progress:
                break
    finally:
        os.close(root)
    try:
        os.rmdir(path)
    except OSError:
        pass


# --------------------------------------------------------------------------- cgroups


def _mountinfo() -> list[tuple[str, str, str, str]]:
    """(root, mount point, fs type, super options) of every mount."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, rfields = left.split(), right.split()
                if len(fields) >= 5 and len(rfields) >= 3:
                    out.append((fields[3], fields[4], rfields[0], rfields[2]))
    except OSError:
        pass
    return out


class _Cgroups:
    """Per-job cgroups under the grader's own cgroup (root only): v1 memory + pids
    hierarchies, or a v2 subtree with both controllers enabled."""

    def __init__(self, version: int, memory_dir: str, pids_dir: str) -> None:
        self.version = version
        self.memory_dir, self.pids_dir = memory_dir, pids_dir
        self._counter = 0
        self._lock = threading.Lock()
        self._sweep()

    @classmethod
    def detect(cls) -> _Cgroups | None:
        if os.geteuid() != 0:
            return None
        try:
            own = open("/proc/self/cgroup").read().splitlines()
        except OSError:
            return None
        paths = {}
        for line in own:
            num, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            for c in controllers.split(",") if controllers else [""]:
                paths[c] = path
        mounts = _mountinfo()

        def where(fstype: str, option: str | None) -> str | None:
            for root, point, kind, opts in mounts:
                if kind == fstype and (option is None or option in opts.split(",")):
                    rel = os.path.relpath(paths.get(option or "", "/"), root)
                    return os.path.normpath(os.path.join(point, rel))
            return None

        memory, pids = where("cgroup", "memory"), where("cgroup", "pids")
        if memory and pids and all(os.access(d, os.W_OK) for d in (memory, pids)):
            return cls(1, memory, pids)
        unified = where("cgroup2", None)
        if unified and os.access(unified, os.W_OK):
            try:
                available = open(os.path.join(unified, "cgroup.controllers")).read().split()
                if {"memory", "pids"} <= set(available):
                    control = os.path.join(unified, "cgroup.subtree_control")
                    enabled = open(control).read().split()
                    if not {"memory", "pids"} <= set(enabled):
                        with open(control, "w") as f:
                            f.write("+memory +pids")
                    return cls(2, unified, unified)
            except OSError:
                return None
        return None

    def _sweep(self) -> None:
        """Remove empty job cgroups left by a grader that was killed."""
        for base in {self.memory_dir, self.pids_dir}:
            try:
                names = os.listdir(base)
            except OSError:
                continue
            for name in names:
                m = re.fullmatch(r"optlib-grade-(\d+)-\d+", name)
                if m and not os.path.exists(f"/proc/{m.group(1)}"):
                    try:
                        os.rmdir(os.path.join(base, name))
                    except OSError:
                        pass

    def create(self, limits: Limits) -> _JobCgroup:
        with self._lock:
            self._counter += 1
            name = f"optlib-grade-{os.getpid()}-{self._counter}"
        return _JobCgroup(self, name, limits)


class _JobCgroup:
    def __init__(self, parent: _Cgroups, name: str, limits: Limits) -> None:
        self.version = parent.version
        self.memory = os.path.join(parent.memory_dir, name)
        self.pids = os.path.join(parent.pids_dir, name)
        self.dirs = sorted({self.memory, self.pids})
        for d in self.dirs:
            os.mkdir(d)
        memory = str(limits.memory_mb * 2**20)
        if self.version == 1:
            self._write(self.memory, "memory.limit_in_bytes", memory)
            self._write(self.memory, "memory.memsw.limit_in_bytes", memory, optional=True)
            self._write(self.memory, "memory.swappiness", "0", optional=True)
        else:
            self._write(self.memory, "memory.max", memory)
            self._write(self.memory, "memory.swap.max", "0", optional=True)
        self._write(self.pids, "pids.max", str(limits.processes))

    @staticmethod
    def _write(d: str, name: str, value: str, optional: bool = False) -> None:
        try:
            with open(os.path.join(d, name), "w") as f:
                f.write(value)
        except OSError:
            if not optional:
                raise

    @property
    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    def pids_in(self) -> list[int]:
        found: set[int] = set()
        for f in self.procs_files:
            try:
                found |= {int(x) for x in open(f).read().split()}
            except (OSError, ValueError):
                pass
        return sorted(found)

    def oom_killed(self) -> bool:
        try:
            if self.version == 1:
                text = open(os.path.join(self.memory, "memory.oom_control")).read()
                m = re.search(r"oom_kill (\d+)", text)
                failcnt = int(open(os.path.join(self.memory, "memory.failcnt")).read() or 0)
                return bool(m and int(m.group(1)) > 0) or failcnt > 0
            text = open(os.path.join(self.memory, "memory.events")).read()
            m = re.search(r"oom_kill (\d+)", text)
            return bool(m and int(m.group(1)) > 0)
        except (OSError, ValueError):
            return False

    def kill_and_remove(self) -> None:
        for _ in range(200):
            pids = self.pids_in()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        for d in self.dirs:
            for _ in range(100):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


# --------------------------------------------------------------------------- isolation


def _traversable_by_others(path: str) -> bool:
    """Whether a user other than the owner can reach and read ``path``."""
    p = Path(path)
    for d in [*reversed(p.parents), p]:
        try:
            mode = d.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH or (d == p and not mode & stat.S_IROTH):
            return False
    return True


def _sources() -> list[str]:
    """What a job must see, read-only: the interpreter's installation, the virtual environment,
    the site directories of torch and numpy when they live elsewhere, and optlib's package."""
    import torch

    import optlib

    paths = [sys.base_prefix, sys.prefix]
    for module in (torch, __import__("numpy")):
        site = str(Path(module.__file__).resolve().parents[1])
        paths.append(site)
    paths.append(str(Path(optlib.__file__).resolve().parent))
    out: list[str] = []
    for p in sorted({os.path.realpath(p) for p in paths}, key=len):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


def _bwrap_features(bwrap: str) -> set[str]:
    try:
        text = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    return {f for f in ("--size", "--disable-userns", "--info-fd") if f in text}


class Isolation:
    """How jobs are started (see the module docstring); checked when created.

    Args:
        limits: the job limits.
        unsandboxed: run jobs without a sandbox (refused as root).
    """

    def __init__(self, limits: Limits, *, unsandboxed: bool = False) -> None:
        self.limits = limits
        self.unsandboxed = unsandboxed
        self.root = os.geteuid() == 0
        self.cgroups: _Cgroups | None = None
        self._stage: str | None = None
        self._lock = threading.Lock()
        self._live: set[Job] = set()
        if unsandboxed:
            if self.root:
                raise SandboxUnavailable(
                    "refusing to run submissions unsandboxed as root: they could do anything "
                    "root can; grade with the sandbox (" + INSTALL_HINT + ")"
                )
            self.mode = "UNSANDBOXED: submissions run as you and can read and write your files"
            return
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxUnavailable(
                "the grading sandbox needs bubblewrap (`bwrap`), which is not installed: "
                + INSTALL_HINT
                + ". (Only for notebooks you trust: --unsafe-run-submissions-as-me.)"
            )
        self.bwrap = bwrap
        self.features = _bwrap_features(bwrap)
        self.sources = _sources()
        self.package = str(Path(__import__("optlib").__file__).resolve().parent)
        if self.root:
            self.cgroups = _Cgroups.detect()
            hidden = [p for p in self.sources if not _traversable_by_others(p)]
            if hidden:
                self._stage = tempfile.mkdtemp(prefix="optlib-grade-stage-")
                os.chmod(self._stage, 0o755)
                for i in range(len(self.sources)):
                    os.mkdir(os.path.join(self._stage, str(i)))
        limits_word = (
            f"cgroup v{self.cgroups.version} limits" if self.cgroups else "rlimits + watchdog"
        )
        who = f"user {NOBODY}" if self.root else "your user, in a user namespace"
        self.mode = f"bubblewrap sandbox as {who}; {limits_word}"
        self._preflight()

    # ------------------------------------------------------------------ start
    def _bwrap_args(self, serve_fd: int, info_fd: int | None) -> list[str]:
        args = [self.bwrap, "--unshare-all", "--unshare-user", "--die-with-parent",
                "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox"]  # fmt: skip
        if "--disable-userns" in self.features:
            args.append("--disable-userns")
        args += ["--ro-bind", "/usr", "/usr"]
        for link in ("/bin", "/lib", "/lib32", "/lib64", "/sbin"):
            if os.path.islink(link):
                args += ["--symlink", os.readlink(link), link]
            elif os.path.isdir(link):
                args += ["--ro-bind", link, link]
        if os.path.exists("/etc/ld.so.cache"):
            args += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
        args += ["--proc", "/proc", "--dev", "/dev"]
        size = str(self.limits.disk_mb * 2**20)
        for where in ("/tmp", "/var/tmp", "/dev/shm"):
            if "--size" in self.features:
                args += ["--size", size]
            args += ["--tmpfs", where]
        # after the private tmpfs: bwrap mounts in order, so a Python or virtual environment that
        # lives under /tmp (a CI checkout, say) stays visible instead of being covered by them
        for i, src in enumerate(self.sources):
            origin = os.path.join(self._stage, str(i)) if self._stage else src
            args += ["--ro-bind", origin, src]
        args += ["--tmpfs", os.path.join(self.package, "course")]
        args += ["--ro-bind-data", str(serve_fd), "/run/grader/serve.py"]
        if info_fd is not None and "--info-fd" in self.features:
            args += ["--info-fd", str(info_fd)]
        args += ["--chdir", "/tmp", "--clearenv"]
        for key, value in _minimal_env().items():
            args += ["--setenv", key, value]
        args += ["--", sys.executable, "-I", "-B", "/run/grader/serve.py"]
        return args

    def _command(self, serve_fd: int, info_fd: int | None, cgroup: _JobCgroup | None) -> list[str]:
        if self.unsandboxed:
            return [sys.executable, "-I", "-B", str(SERVE)]
        args = self._bwrap_args(serve_fd, info_fd)
        if not self.root:
            return args
        script = ["set -e"]
        if cgroup is not None:
            script += [f"echo $$ > {shlex.quote(f)}" for f in cgroup.procs_files]
        if self._stage:
            script += [
                f"mount --bind {shlex.quote(src)} {shlex.quote(os.path.join(self._stage, str(i)))}"
                for i, src in enumerate(self.sources)
            ]
        script.append(
            f'exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups '
            '--inh-caps=-all --bounding-set=-all --no-new-privs "$@"'
        )
        sh = ["sh", "-c", "\n".join(script), "sh", *args]
        if self._stage:
            return ["unshare", "--mount", "--propagation", "private", "--", *sh]
        return sh

    def start(self, call_timeout: float | None = None, forbidden: dict | None = None) -> Job:
        """A fresh job, ready for requests (raises SandboxFailure if it does not come up);
        ``forbidden``: the delegation table, resolved before any learner code runs."""
        return Job(self, call_timeout, forbidden or {})

    def _preflight(self) -> None:
        """Start one job and stop it: a sandbox that cannot start refuses here, with bwrap's
        own words and what to enable."""
        try:
            job = self.start()
        except SandboxFailure as err:
            raise SandboxUnavailable(
                f"the grading sandbox did not start ({err.detail}). bubblewrap needs "
                "unprivileged user namespaces: enable them (`sysctl kernel.unprivileged_userns_"
                "clone=1`; on Ubuntu 24.04 also `sysctl kernel.apparmor_restrict_unprivileged_"
                "userns=0`), and the interpreter, the virtual environment and optlib must be "
                "readable" + (f" by user {NOBODY}" if self.root else "") + "."
            ) from None
        job.close()

    def close(self) -> None:
        with self._lock:
            live = list(self._live)
        for job in live:
            job.close()
        if self._stage:
            remove_tree(self._stage)
            self._stage = None

    def __enter__(self) -> Isolation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Job:
    """One learner process in its sandbox, with a :class:`Connection` to it."""

    def __init__(self, isolation: Isolation, call_timeout: float | None, forbidden: dict) -> None:
        self.isolation = isolation
        limits = isolation.limits
        self.cgroup = isolation.cgroups.create(limits) if isolation.cgroups else None
        self.sandbox_pid: int | None = None
        self.killed_for: str | None = None
        self._workdir: str | None = None
        self._closed = False
        self._last_check = 0.0
        self._info_fd: int | None = None
        serve_fd = os.open(SERVE, os.O_RDONLY | os.O_CLOEXEC)
        info_r, info_w = os.pipe()
        try:
            cmd = isolation._command(serve_fd, info_w, self.cgroup)
            cwd = None
            if isolation.unsandboxed:
                self._workdir = tempfile.mkdtemp(prefix="optlib-grade-job-")
                cwd = self._workdir
            env = _minimal_env()
            if isolation.unsandboxed:
                env.update(HOME=self._workdir or "/tmp", TMPDIR=self._workdir or "/tmp",
                           MPLCONFIGDIR=self._workdir or "/tmp")  # fmt: skip
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(serve_fd, info_w),
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except BaseException:
            os.close(info_r)
            os.close(info_w)
            if self.cgroup is not None:
                self.cgroup.kill_and_remove()
            raise
        finally:
            os.close(serve_fd)
        os.close(info_w)
        self._info_fd = info_r
        os.set_blocking(info_r, False)
        with isolation._lock:
            isolation._live.add(self)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        transport = PipeTransport(self.proc.stdin.fileno(), self.proc.stdout.fileno(), self._watch)
        self.connection = Connection(transport, call_timeout)
        try:
            ready = transport.receive(time.monotonic() + 180)
            if ready.get("op") != "ready":
                raise SandboxFailure("crashed", "the learner's process did not start")
            self.init = self.connection.init(forbidden, limits.for_job(), timeout=120)
        except SandboxFailure as err:
            stderr = self._stderr()
            self.close()
            raise SandboxFailure(err.status, (stderr or err.detail)[-600:]) from None

    # ------------------------------------------------------------------ limits
    def _stderr(self) -> str:
        try:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=5)
            return err.decode("utf-8", "replace").strip()
        except (OSError, subprocess.SubprocessError, ValueError):
            return ""

    def _pid_in_sandbox(self) -> int | None:
        if self.sandbox_pid is None and self._info_fd is not None:
            try:
                data = os.read(self._info_fd, 4096)
            except BlockingIOError:
                return None
            except OSError:
                data = b""
            try:
                self.sandbox_pid = int(json.loads(data)["child-pid"])
            except (ValueError, KeyError, TypeError):
                pass
            os.close(self._info_fd)
            self._info_fd = None
        return self.sandbox_pid

    def _watch(self) -> None:
        """Called while the grader waits: enforce the whole-job limits a cgroup does not."""
        now = time.monotonic()
        if now - self._last_check < 0.25:
            return
        self._last_check = now
        limits = self.isolation.limits
        pid = self._pid_in_sandbox()
        if pid is not None:
            for where in ("tmp", "var/tmp", "dev/shm"):
                try:
                    st = os.statvfs(f"/proc/{pid}/root/{where}")
                except OSError:
                    continue
                if st.f_files - st.f_ffree > limits.files:
                    self.kill(f"more than {limits.files} files in /{where}")
                    raise SandboxFailure("limit", self.killed_for or "")
        if self.cgroup is None:
            rss = _tree_rss(self.proc.pid)
            if rss > limits.memory_mb * 2**20:
                self.kill(f"more than {limits.memory_mb} MiB of memory (whole job)")
                raise SandboxFailure("limit", self.killed_for or "")

    def failure_detail(self, err: SandboxFailure) -> str:
        """What to write in the CSV about a job that ended badly."""
        if self.killed_for:
            return f"limit: {self.killed_for}"
        if self.cgroup is not None and self.cgroup.oom_killed():
            return f"limit: more than {self.isolation.limits.memory_mb} MiB of memory (whole job)"
        return f"{err.status}: {err.detail}"

    # ------------------------------------------------------------------ end
    def kill(self, reason: str | None = None) -> None:
        if reason and not self.killed_for:
            self.killed_for = reason
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.kill()
        except OSError:
            pass
        if self.cgroup is not None:
            for pid in self.cgroup.pids_in():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def close(self) -> None:
        """End the job: its whole process tree and cgroup, its files (none on disk when
        sandboxed: its tmpfs vanish with it)."""
        if self._closed:
            return
        self._closed = True
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                os.write(self.proc.stdin.fileno(), b'{"op":"end"}\n')
            except OSError:
                pass
            try:
                self.proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if self._info_fd is not None:
            os.close(self._info_fd)
            self._info_fd = None
        if self.cgroup is not None:
            self.cgroup.kill_and_remove()
        if self._workdir:
            remove_tree(self._workdir)
        with self.isolation._lock:
            self.isolation._live.discard(self)


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants (a job's processes stay descendants
    of its bwrap: the namespace's init adopts orphans)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
            with open(f"/proc/{entry}/statm", "rb") as f:
                resident = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
        rss[int(entry)] = resident * page
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total
