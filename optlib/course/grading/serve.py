r"""The learner's side of a check: run the learner's cells, then serve calls, one at a time.

This one file is all of :mod:`optlib.course` that a grading sandbox sees: the grader copies it
in and runs ``python -I -B serve.py`` (see :mod:`optlib.course.grading.sandbox`); the checks'
reference code, the master notebooks and the other submissions stay outside. It imports only the
standard library and torch (numpy when present). :func:`optlib.course.checks.run_check` runs the
same server inside the learner's own kernel, so that a check sees the learner's code in exactly
the same way in both places.

The trusted side (:mod:`optlib.course.grading.proxy`) sends one request at a time and waits for
its reply; the server never sees the probe loop, the inputs of a call before the call, the
expected answers or a score, and it writes nothing but replies. Requests:

* ``init``: resolve what each check's answer must not delegate to (before any learner code runs)
  and apply the process limits;
* ``cell``: run one cell's source (IPython syntax already turned into Python by the trusted side)
  in the learner's namespace, under the cell's time limit;
* ``lookup``: the learner's object bound to a name (or that the name is undefined);
* ``call``, ``getattr``, ``setattr``: call an object of the learner's, read or set an attribute.

A reply is ``{"op": "return", "value": ...}`` or ``{"op": "raise", "error": {...}}`` (the
learner's code raised). While serving a call the server may itself send ``callback`` requests:
the learner's code called a function that the probe passed in, which runs on the trusted side.

Values travel as JSON (see :func:`encode_tensor` and ``Server._encode``): numbers, strings,
``None``, containers, tensors and numpy arrays by value; tensors, generators and modules that the
trusted side passed in as *mirrors* (both sides keep a copy; whichever side gives up control sends
the state of every mirror that changed: values, ``.grad``, generator state); anything else of the
learner's as a *handle* (an id that the trusted side can call or read attributes of).

While the learner's code serves a call, a profiler watches for the code of the implementations
the current check forbids (``init``'s table: torch.optim's or optlib's own version of the method
asked for) and for answers that are, or subclass, such a class; a hit is reported with the reply
as ``"delegated"``. This watch runs in the learner's process, so a submission that sets out to
defeat it can; the trusted side does not rely on it alone (see :mod:`optlib.course.grading`).
"""

from __future__ import annotations

import base64
import builtins
import importlib
import inspect
import io
import json
import math
import os
import resource
import signal
import sys
import time
import traceback
import types
from collections.abc import Callable
from typing import Any

import torch

try:  # numpy travels by value when present
    import numpy as np
except ImportError:  # pragma: no cover - numpy comes with torch in practice
    np = None  # type: ignore[assignment]

PROTOCOL = 1
MAX_DEPTH = 48
MAX_MESSAGE_BYTES = 256 * 2**20
MAX_ERROR = 400
DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.complex128,
        torch.complex64, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8,
        torch.bool,
    )
}  # fmt: skip
_REPLIES = ("return", "raise")
MAX_ITEMS = 1_000_000
_VIEWS = {"dict_keys", "dict_values", "dict_items", "list_iterator", "tuple_iterator",
          "set_iterator", "dict_keyiterator", "dict_valueiterator", "dict_itemiterator",
          "range_iterator", "list_reverseiterator"}  # fmt: skip


class WireError(Exception):
    """A value that cannot travel, or a malformed message."""


class CellTimeout(BaseException):
    """Raised by the time limit inside the learner's code (a BaseException, so that ``except
    Exception`` in the learner's code does not swallow it)."""


class LearnerRaised(Exception):
    """The learner's code raised: ``info`` describes it as plain data."""

    def __init__(self, info: dict, original: BaseException | None = None) -> None:
        super().__init__(info.get("message", ""))
        self.info = info
        self.original = original


# --------------------------------------------------------------------------- tensors as data


_NUMPY = {torch.float64, torch.float32, torch.float16, torch.complex128, torch.complex64,
          torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool}  # fmt: skip


def _plain(t: torch.Tensor) -> torch.Tensor:
    """``t``'s values as a dense, contiguous, CPU, plain tensor (no autograd, no subclass)."""
    with torch._C.DisableTorchFunctionSubclass():
        x = torch.Tensor.detach(t)
        if x.layout != torch.strided:
            raise WireError(f"a {x.layout} tensor cannot be sent (only dense tensors)")
        if str(x.dtype).removeprefix("torch.") not in DTYPES:
            raise WireError(f"a tensor of dtype {x.dtype} cannot be sent")
        if x.device.type != "cpu":
            x = x.cpu()
        if x.is_conj() or x.is_neg():
            x = x.resolve_conj().resolve_neg()
        return x if x.is_contiguous() else x.contiguous()


def _raw(x: torch.Tensor) -> bytes:
    """The bytes of a tensor from :func:`_plain` (exact for every dtype)."""
    if not x.numel():
        return b""
    if x.dtype in _NUMPY:
        return x.numpy().tobytes()
    return x.reshape(-1).view(torch.uint8).numpy().tobytes()


def encode_tensor(t: torch.Tensor) -> dict:
    """``{"dtype", "shape", "data"}`` of a dense CPU tensor's values (base64 of its bytes;
    exact for every dtype). Subclasses travel as plain tensors."""
    x = _plain(t)
    return {
        "dtype": str(x.dtype).removeprefix("torch."),
        "shape": list(x.shape),
        "data": base64.b64encode(_raw(x)).decode("ascii"),
    }


def decode_tensor(d: Any, max_bytes: int = MAX_MESSAGE_BYTES) -> torch.Tensor:
    """The tensor :func:`encode_tensor` describes, in memory of its own (validated: ``d`` may
    come from anywhere)."""
    if not isinstance(d, dict) or d.get("dtype") not in DTYPES:
        raise WireError("malformed tensor")
    shape = d.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > 16
        or not all(type(n) is int and 0 <= n < 2**40 for n in shape)
    ):
        raise WireError("malformed tensor shape")
    dtype = DTYPES[d["dtype"]]
    data = d.get("data")
    if not isinstance(data, str) or len(data) > max_bytes * 4 // 3 + 4:
        raise WireError("malformed tensor data")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise WireError("malformed tensor data") from None
    itemsize = _ITEMSIZE[dtype]
    if math.prod(shape) * itemsize != len(raw):
        raise WireError("tensor data does not match its shape")
    if not raw:
        return torch.empty(shape, dtype=dtype)
    if np is not None and dtype in _NUMPY:
        array = np.frombuffer(raw, dtype=_NP_DTYPES[dtype]).reshape(shape)
        return torch.from_numpy(array.copy())
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)


_ITEMSIZE = {d: torch.empty((), dtype=d).element_size() for d in DTYPES.values()}
_NP_DTYPES = {d: torch.empty((), dtype=d).numpy().dtype for d in _NUMPY} if np is not None else {}


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The raw bytes of ``t``'s values, to notice any change (NaNs and -0.0 included)."""
    return _raw(_plain(t))


def _tensor_signature(t: torch.Tensor | None) -> tuple | None:
    if t is None:
        return None
    return (str(t.dtype), tuple(t.shape), tensor_bytes(t))


def same_signature(a: tuple | None, b: tuple | None) -> bool:
    return a == b


def _grad_of(t: torch.Tensor) -> torch.Tensor | None:
    if not (t.is_leaf or t.retains_grad):
        return None
    grad = t.grad
    return grad if isinstance(grad, torch.Tensor) else None


def tensor_state(t: torch.Tensor) -> dict:
    """What a mirrored tensor carries: values, gradient, ``requires_grad``."""
    grad = _grad_of(t)
    return {
        "t": encode_tensor(t),
        "grad": encode_tensor(grad) if grad is not None else None,
        "rg": bool(t.requires_grad),
    }


def tensor_signature(t: torch.Tensor) -> tuple:
    grad = _grad_of(t)
    return (_tensor_signature(t), _tensor_signature(grad), bool(t.requires_grad))


def signatures_equal(a: tuple, b: tuple) -> bool:
    return same_signature(a[0], b[0]) and same_signature(a[1], b[1]) and a[2] == b[2]


def apply_tensor_state(t: torch.Tensor, state: dict, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
    """Make ``t`` hold ``state`` (from :func:`tensor_state`), in place where the shape allows, so
    that every reference to ``t`` (an optimizer's param list, a probe's variable) sees it."""
    if not isinstance(state, dict):
        raise WireError("malformed tensor state")
    values = decode_tensor(state.get("t"), max_bytes)
    grad = state.get("grad")
    grad = decode_tensor(grad, max_bytes) if grad is not None else None
    with torch.no_grad():
        if t.shape == values.shape and t.dtype == values.dtype:
            t.copy_(values)
        else:
            t.data = values.clone()
        rg = state.get("rg")
        if isinstance(rg, bool) and t.is_leaf and t.requires_grad != rg and (
            t.is_floating_point() or t.is_complex() or not rg
        ):
            t.requires_grad_(rg)
        if grad is None:
            t.grad = None
        elif (
            t.grad is not None and t.grad.shape == grad.shape and t.grad.dtype == grad.dtype
        ):
            t.grad.copy_(grad)
        else:
            try:
                t.grad = grad.clone()
            except (RuntimeError, TypeError) as err:
                raise WireError(f"a gradient does not fit its tensor: {err}") from None


def generator_state(g: torch.Generator) -> dict:
    return {"state": base64.b64encode(g.get_state().numpy().tobytes()).decode("ascii")}


def apply_generator_state(g: torch.Generator, state: Any) -> None:
    try:
        raw = base64.b64decode(state["state"], validate=True)
        g.set_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone())
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise WireError(f"malformed generator state ({type(err).__name__})") from None


def encode_ndarray(a: Any) -> dict:
    if a.dtype.kind not in "biufc":
        raise WireError(f"a numpy array of dtype {a.dtype} cannot be sent")
    a = np.ascontiguousarray(a)
    return {
        "dtype": a.dtype.str,
        "shape": list(a.shape),
        "data": base64.b64encode(a.tobytes()).decode("ascii"),
    }


def decode_ndarray(d: Any, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    if np is None:
        raise WireError("numpy is not available")
    try:
        dtype = np.dtype(d["dtype"])
        shape = d["shape"]
        raw = base64.b64decode(d["data"], validate=True)
    except (KeyError, TypeError, ValueError) as err:
        raise WireError(f"malformed array ({type(err).__name__})") from None
    if (
        dtype.kind not in "biufc"
        or not isinstance(shape, list)
        or len(shape) > 16
        or not all(type(n) is int and n >= 0 for n in shape)
        or math.prod(shape) * dtype.itemsize != len(raw)
        or len(raw) > max_bytes
    ):
        raise WireError("malformed array")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def describe_exception(err: BaseException, cell_prefix: str = "<cell ") -> dict:
    """Plain data about an exception of the learner's: type, message, and where in the
    learner's cells it happened (the innermost frame in a cell)."""
    name = "Timeout" if isinstance(err, CellTimeout) else type(err).__name__
    try:
        message = str(err)
    except BaseException:  # a learner's exception whose __str__ raises
        message = "(the exception's message could not be read)"
    where = ""
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if frame.filename.startswith(cell_prefix):
            where = f"{frame.filename.strip('<>')}, line {frame.lineno}"
            if frame.name != "<module>":
                where += f", in {frame.name}"
            break
    return {
        "type": name[:100],
        "module": str(getattr(type(err), "__module__", ""))[:100],
        "message": message[:MAX_ERROR],
        "where": where,
    }


def format_error(info: dict) -> str:
    text = f"{info.get('type', 'Error')}: {info.get('message', '')}".rstrip(": ")
    return f"{text} ({info['where']})" if info.get("where") else text


# --------------------------------------------------------------------------- delegation watch


def _unwrap(fn: Any) -> Any:
    for _ in range(20):
        inner = getattr(fn, "__wrapped__", None) or getattr(fn, "__func__", None)
        if inner is None:
            return fn
        fn = inner
    return fn


def _codes_of(obj: Any, owner_file: str | None = None) -> list[types.CodeType]:
    """The code objects that run when ``obj`` (a function or a class's own methods) runs,
    nested functions included."""
    found: list[types.CodeType] = []
    members = [obj]
    if isinstance(obj, type):
        members = []
        for value in vars(obj).values():
            if isinstance(value, property):
                members += [value.fget, value.fset, value.fdel]
            else:
                members.append(value)
    for member in members:
        code = getattr(_unwrap(member), "__code__", None)
        if isinstance(code, types.CodeType):
            if owner_file is not None and code.co_filename != owner_file:
                continue  # a shared decorator's wrapper, not this class's code
            stack = [code]
            while stack:
                c = stack.pop()
                found.append(c)
                stack += [k for k in c.co_consts if isinstance(k, types.CodeType)]
    return found


def resolve(name: str) -> Any:
    """The object a dotted path names (``torch.optim.SGD``, ``optlib.linalg.richardson``)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(name)


class Forbidden:
    """What one check's answer must not run, built from dotted names before learner code runs:
    code objects (for the profiler), classes (answers that are or subclass them), C functions."""

    def __init__(self, names: list[str]) -> None:
        self.codes: dict[int, str] = {}
        self.classes: dict[int, str] = {}
        self.cfuncs: dict[int, str] = {}
        self.unresolved: list[str] = []
        self._keep: list[Any] = []
        for name in names:
            try:
                obj = resolve(name)
            except (ImportError, AttributeError):
                self.unresolved.append(name)
                continue
            self._add(name, obj)

    def _add(self, name: str, obj: Any) -> None:
        self._keep.append(obj)
        if isinstance(obj, types.ModuleType):
            for value in list(vars(obj).values()):
                if getattr(value, "__module__", None) == obj.__name__ and (
                    isinstance(value, type) or callable(value)
                ):
                    self._add(name, value)
            return
        if isinstance(obj, type):
            self.classes.setdefault(id(obj), name)
            try:
                owner = inspect.getfile(obj)
            except (TypeError, OSError):
                owner = None
            codes = _codes_of(obj, owner)
        elif isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType)):
            self.cfuncs.setdefault(id(obj), name)
            codes = []
        else:
            codes = _codes_of(obj)
        for code in codes:
            self._keep.append(code)
            self.codes.setdefault(id(code), name)

    def hits_of(self, obj: Any) -> set[str]:
        """Names ``obj`` is (an alias), or whose class it is or derives from (no learner code
        runs here: only type slots are read)."""
        hits: set[str] = set()
        cls = obj if isinstance(obj, type) else type(obj)
        try:
            mro = type.__dict__["__mro__"].__get__(cls)
        except (TypeError, AttributeError):
            mro = ()
        hits |= {self.classes[id(c)] for c in mro if id(c) in self.classes}
        code = getattr(_unwrap(obj), "__code__", None) if callable(obj) else None
        if isinstance(code, types.CodeType) and id(code) in self.codes:
            hits.add(self.codes[id(code)])
        if id(obj) in self.cfuncs:
            hits.add(self.cfuncs[id(obj)])
        return hits


# --------------------------------------------------------------------------- notebook shims


class _Grader:
    """Stands in for otter's ``grader`` in the learner's namespace: ``grader.check("q1")`` and
    friends do nothing here (the trusted side runs the checks)."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


_SILENT_LINE_MAGICS = {
    "matplotlib", "config", "load_ext", "reload_ext", "unload_ext", "autoreload", "aimport",
    "precision", "pprint", "xmode", "who", "whos", "who_ls", "pinfo", "pinfo2", "pdoc", "pdef",
    "psource", "pfile", "lsmagic", "magic", "history", "page", "quickref", "doctest_mode",
    "colors", "autocall", "automagic", "alias_magic", "notebook", "time", "timeit",
}  # fmt: skip
_INSTALL_MAGICS = {"pip", "conda", "mamba", "micromamba", "uv"}


class _Shell:
    """What ``get_ipython()`` returns to the learner's cells: magics as Jupyter would run them
    where they matter (``%%time``/``%time`` run their code, ``%%capture`` too), shell commands
    and installs skipped with a note, display-only magics ignored."""

    def __init__(self, server: Server) -> None:
        self._server = server

    def _note(self, text: str) -> None:
        self._server.notes.append(text)

    def run_line_magic(self, name: str, line: str, _stack_depth: int = 1) -> Any:
        if name == "time":
            return self._server._exec_or_eval(line, "<magic>")
        if name in _INSTALL_MAGICS:
            self._note(f"%{name} line skipped (nothing is installed while grading)")
        elif name == "timeit":
            self._note("%timeit line skipped")
        elif name not in _SILENT_LINE_MAGICS:
            self._note(f"%{name} line skipped")
        return None

    def run_cell_magic(self, name: str, line: str, cell: str) -> Any:
        if name in ("time", "capture"):
            return self._server._exec_or_eval(cell, "<magic>", cell=True)
        self._note(f"%%{name} cell skipped")
        return None

    def system(self, cmd: str) -> None:
        self._note("shell command skipped: !" + str(cmd)[:80])

    def getoutput(self, cmd: str, split: bool = True, depth: int = 0) -> list:
        self.system(cmd)
        return []

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


# --------------------------------------------------------------------------- the server


class _PipeTransport:
    """JSON lines over two file descriptors (the sandbox's side)."""

    def __init__(self, fd_in: int, fd_out: int) -> None:
        self.fd_in, self.fd_out = fd_in, fd_out
        self._buffer = b""

    def send(self, msg: dict) -> None:
        data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd_out, view) :]

    def receive(self) -> dict:
        while b"\n" not in self._buffer:
            chunk = os.read(self.fd_in, 1 << 20)
            if not chunk:
                raise EOFError
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)


class Server:
    """The learner's side (see the module docstring).

    Args:
        namespace: where the learner's code lives (the notebook's globals).
        sandboxed: True inside a grading sandbox: every exception of the learner's code is
            reported, time limits use SIGALRM, and the learner's ``print`` output is dropped.
            False in the learner's own kernel (``run_check``): KeyboardInterrupt propagates and
            no signal handler is touched.
    """

    def __init__(self, namespace: dict | None = None, *, sandboxed: bool = False) -> None:
        self.sandboxed = sandboxed
        self.namespace = namespace if namespace is not None else {}
        self.transport: Any = None  # .request(msg) -> reply, for callbacks
        self.notes: list[str] = []
        self.forbidden: dict[str, Forbidden] = {}
        self.hits: set[str] = set()
        self._watch_of: Forbidden | None = None
        self._mirrors: dict[str, Any] = {}  # id -> tensor / generator / module
        self._mirror_ids: dict[int, str] = {}  # id(obj) -> mirror id
        self._snapshots: dict[str, Any] = {}
        self._handles: dict[str, Any] = {}
        self._handle_ids: dict[int, str] = {}
        self._stubs: dict[str, Callable] = {}
        self._stub_ids: dict[int, str] = {}
        self._module_classes: dict[tuple, type] = {}
        self._counter = 0
        self._deadline: float | None = None  # alarm's end while paused in a callback
        self._in_learner = False
        self.last_exception: BaseException | None = None
        self.pid = os.getpid()
        self._serving: list[Any] = []  # seq of the requests being served (nested by callbacks)
        self._watch_fn = self._watch  # one bound method, to recognise it in sys.getprofile()

    # ------------------------------------------------------------------ requests
    def handle(self, msg: dict) -> dict:
        """Serve one request and return its reply (mirrors' changes attached; ``seq`` echoed, so
        that the trusted side can tell a reply from a forgery written by the learner's code)."""
        self._serving.append(msg.get("seq"))
        try:
            reply = self._dispatch(msg)
        finally:
            self._serving.pop()
        reply["seq"] = msg.get("seq")
        return reply

    def _dispatch(self, msg: dict) -> dict:
        op = msg.get("op")
        self._receive_common(msg)
        try:
            if op == "init":
                value = self._encode(self._init(msg))
            elif op == "cell":
                value = self._encode(self._cell(msg))
            elif op == "lookup":
                value = self._learner(msg, lambda: self._lookup(str(msg["name"])))
            elif op == "call":
                value = self._learner(msg, lambda: self._call(msg))
            elif op == "getattr":
                value = self._learner(
                    msg, lambda: self._encode(getattr(self._target(msg), str(msg["name"])))
                )
            elif op == "setattr":
                value = self._learner(msg, lambda: self._setattr(msg))
            else:
                raise WireError(f"unknown request {op!r}")
            reply: dict[str, Any] = {"op": "return", "value": value}
        except LearnerRaised as err:
            self.last_exception = err.original
            reply = {"op": "raise", "error": err.info}
        reply["sync"] = self._sync_out()
        if self.hits:
            reply["delegated"] = sorted(self.hits)
            self.hits.clear()
        return reply

    def _receive_common(self, msg: dict) -> None:
        for mid in msg.get("drop") or []:
            obj = self._mirrors.pop(mid, None)
            self._snapshots.pop(mid, None)
            if obj is not None:
                self._mirror_ids.pop(id(obj), None)
            handle = self._handles.pop(mid, None)
            if handle is not None:
                self._handle_ids.pop(id(handle), None)
        for decl in msg.get("new") or []:
            self._declare(decl)
        for mid, state in (msg.get("sync") or {}).items():
            obj = self._mirrors.get(mid)
            if isinstance(obj, torch.Tensor):
                apply_tensor_state(obj, state)
                self._snapshots[mid] = tensor_signature(obj)
            elif isinstance(obj, torch.Generator):
                apply_generator_state(obj, state)
                self._snapshots[mid] = obj.get_state()

    def _init(self, msg: dict) -> dict:
        limits = msg.get("limits") or {}
        if self.sandboxed and limits:
            _apply_limits(limits)
        self.forbidden = {
            str(check): Forbidden([str(n) for n in names])
            for check, names in (msg.get("forbidden") or {}).items()
        }
        unresolved = sorted({n for f in self.forbidden.values() for n in f.unresolved})
        return {"protocol": PROTOCOL, "pid": os.getpid(), "unresolved": unresolved}

    # ------------------------------------------------------------------ the learner's code
    def _learner(self, msg: dict, run: Callable[[], Any]) -> Any:
        """Run ``run`` (learner code and the encoding of what it produced) under the time limit
        and the delegation watch of ``msg["check"]``; the learner's exceptions are reported."""
        watch = self.forbidden.get(str(msg.get("check")))
        timeout = msg.get("timeout")
        self._arm(float(timeout) if timeout else None)
        outer = self._watch_of
        self._watch_of = watch
        installed = False
        if watch is not None and (watch.codes or watch.cfuncs) and sys.getprofile() is None:
            sys.setprofile(self._watch_fn)  # (not over another profiler: a learner's %prun)
            installed = True
        try:
            return run()
        except (WireError, LearnerRaised) as err:
            if isinstance(err, LearnerRaised):
                raise
            raise LearnerRaised(
                {"type": "WireError", "module": "", "message": str(err)[:MAX_ERROR], "where": ""},
                err,
            ) from None
        except BaseException as err:
            if not self.sandboxed and not isinstance(err, (Exception, CellTimeout)):
                raise  # KeyboardInterrupt in the learner's kernel stops the check
            raise LearnerRaised(describe_exception(err), err) from None
        finally:
            if self.sandboxed and os.getpid() != self.pid:
                os._exit(0)  # a process the learner's code forked: it must not answer too
            if installed:
                sys.setprofile(None)
            self._watch_of = outer
            self._disarm()

    def _watch(self, frame: Any, event: str, arg: Any) -> None:
        watch = self._watch_of
        if watch is None:
            return
        if event == "call":
            name = watch.codes.get(id(frame.f_code))
            if name is not None:
                self.hits.add(name)
        elif event == "c_call":
            name = watch.cfuncs.get(id(arg))
            if name is not None:
                self.hits.add(name)

    def _check_answer(self, obj: Any) -> None:
        if self._watch_of is not None:
            self.hits |= self._watch_of.hits_of(obj)

    def _lookup(self, name: str) -> Any:
        if name not in self.namespace:
            return {"$": "missing"}
        value = self.namespace[name]
        self._check_answer(value)
        return self._encode(value)

    def _call(self, msg: dict) -> Any:
        target = self._target(msg)
        args = [self._decode(a) for a in msg.get("args") or []]
        kwargs = {str(k): self._decode(v) for k, v in (msg.get("kwargs") or {}).items()}
        return self._encode(target(*args, **kwargs))

    def _setattr(self, msg: dict) -> None:
        setattr(self._target(msg), str(msg["name"]), self._decode(msg.get("value")))

    def _target(self, msg: dict) -> Any:
        target = msg.get("target")
        if isinstance(target, str) and target in self._handles:
            return self._handles[target]
        raise WireError(f"unknown object {target!r}")

    def _cell(self, msg: dict) -> dict:
        """Run one cell; report its error (the next cell runs anyway, as in Jupyter)."""
        self.notes = []
        name = f"<cell {int(msg.get('index', 0))}>"
        error = None
        try:
            self._learner(msg, lambda: self._exec_or_eval(str(msg["source"]), name, cell=True))
        except LearnerRaised as err:
            self.last_exception = err.original
            error = err.info
        return {"error": error, "notes": self.notes[:20]}

    def _exec_or_eval(self, source: str, name: str, cell: bool = False) -> Any:
        """Execute ``source`` in the learner's namespace; a one-expression line magic
        (``x = %time f()``) returns its value."""
        if not cell:
            try:
                code = compile(source, name, "eval")
            except SyntaxError:
                pass
            else:
                return eval(code, self.namespace)
        exec(compile(source, name, "exec"), self.namespace)
        return None

    # ------------------------------------------------------------------ time limits
    def _arm(self, seconds: float | None) -> None:
        self._in_learner = True
        if self.sandboxed and seconds:
            signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))

    def _disarm(self) -> None:
        self._in_learner = False
        if self.sandboxed:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self._in_learner:
            raise CellTimeout("the call exceeded its time limit")

    # ------------------------------------------------------------------ callbacks
    def _stub(self, cid: str, name: str) -> Callable:
        if cid in self._stubs:
            return self._stubs[cid]
        server = self

        def callback(*args: Any, **kwargs: Any) -> Any:
            return server._callback(cid, args, kwargs)

        callback.__name__ = callback.__qualname__ = name or "callback"
        self._stubs[cid] = callback
        self._stub_ids[id(callback)] = cid
        return callback

    def _callback(self, cid: str, args: tuple, kwargs: dict) -> Any:
        """The learner's code called a function of the probe: run it on the trusted side."""
        if self.transport is None:
            raise RuntimeError("no trusted side to call back")
        msg = {
            "op": "callback",
            "id": cid,
            "args": [self._encode(a) for a in args],
            "kwargs": {str(k): self._encode(v) for k, v in kwargs.items()},
        }
        msg["sync"] = self._sync_out()
        msg["seq"] = self._serving[-1] if self._serving else None
        left = signal.setitimer(signal.ITIMER_REAL, 0)[0] if self.sandboxed else 0.0
        watch, suspended = self._watch_of, sys.getprofile() is self._watch_fn
        self._watch_of, self._in_learner = None, False
        if suspended:  # the check's own code runs now, possibly in this very process
            sys.setprofile(None)
        try:
            reply = self.transport.request(msg)
        finally:
            self._watch_of, self._in_learner = watch, True
            if suspended:
                sys.setprofile(self._watch_fn)
            if self.sandboxed and left > 0:
                signal.setitimer(signal.ITIMER_REAL, left)
        self._receive_common(reply)
        if reply.get("op") == "raise":
            info = reply.get("error") or {}
            raise RuntimeError(f"the check's function {cid} raised {format_error(info)}")
        return self._decode(reply.get("value"))

    # ------------------------------------------------------------------ mirrors
    def _declare(self, decl: dict) -> None:
        mid, kind = str(decl["id"]), decl.get("kind")
        if kind == "tensor":
            t = decode_tensor(decl["state"]["t"]).clone()
            if decl.get("param"):
                t = torch.nn.Parameter(t, requires_grad=bool(decl["state"].get("rg")))
            elif decl["state"].get("rg") and (t.is_floating_point() or t.is_complex()):
                t.requires_grad_(True)
            grad = decl["state"].get("grad")
            if grad is not None:
                t.grad = decode_tensor(grad).clone()
            obj: Any = t
            self._snapshots[mid] = tensor_signature(t)
        elif kind == "generator":
            obj = torch.Generator()
            apply_generator_state(obj, decl["state"])
            self._snapshots[mid] = obj.get_state()
        elif kind == "module":
            obj = self._build_module(decl["spec"])
        else:
            raise WireError(f"unknown mirror kind {kind!r}")
        self._mirrors[mid] = obj
        self._mirror_ids[id(obj)] = mid

    def _build_module(self, spec: dict) -> torch.nn.Module:
        """A module with the structure, parameters, buffers and plain attributes of the probe's
        module, as an instance of its torch.nn class (or of a stand-in subclass of the nearest
        torch.nn base, with the same name, when its class is not torch's)."""
        module_name, _, qualname = str(spec["base"]).partition(":")
        if not (module_name == "torch" or module_name.startswith("torch.")):
            raise WireError(f"module class {spec['base']!r} is not torch's")
        base: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            base = getattr(base, part)
        cls = base
        if not spec.get("exact"):
            key = (str(spec.get("name")), base)
            if key not in self._module_classes:
                name = str(spec.get("name") or base.__name__)
                self._module_classes[key] = type(name, (base,), {"__module__": "__grader__"})
            cls = self._module_classes[key]
        m = cls.__new__(cls)
        torch.nn.Module.__init__(m)
        for key, value in (spec.get("attrs") or {}).items():
            m.__dict__[str(key)] = self._decode(value)
        m.training = bool(spec.get("training", True))
        for name, ref in (spec.get("parameters") or {}).items():
            m._parameters[str(name)] = self._mirrors[ref] if ref is not None else None
        for name, ref in (spec.get("buffers") or {}).items():
            m._buffers[str(name)] = self._mirrors[ref] if ref is not None else None
        m._non_persistent_buffers_set = set(spec.get("non_persistent") or [])
        for name, ref in (spec.get("modules") or {}).items():
            m._modules[str(name)] = self._mirrors[ref] if ref is not None else None
        return m

    def _sync_out(self) -> dict:
        """The state of every mirror the learner's code changed since the last exchange."""
        out = {}
        for mid, obj in self._mirrors.items():
            if isinstance(obj, torch.Tensor):
                sig = tensor_signature(obj)
                if not signatures_equal(sig, self._snapshots[mid]):
                    out[mid] = tensor_state(obj)
                    self._snapshots[mid] = sig
            elif isinstance(obj, torch.Generator):
                state = obj.get_state()
                if not torch.equal(state, self._snapshots[mid]):
                    out[mid] = generator_state(obj)
                    self._snapshots[mid] = state
        return out

    # ------------------------------------------------------------------ values
    def _decode(self, v: Any, depth: int = 0) -> Any:
        """A value sent by the trusted side (trusted: only well-formed data arrives)."""
        if depth > MAX_DEPTH:
            raise WireError("value nested too deeply")
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, list):
            return [self._decode(x, depth + 1) for x in v]
        tag = v.get("$")
        d = depth + 1
        if tag == "tuple":
            return tuple(self._decode(x, d) for x in v["v"])
        if tag == "dict":
            return {self._decode(k, d): self._decode(x, d) for k, x in v["v"]}
        if tag in ("set", "frozenset"):
            items = (self._decode(x, d) for x in v["v"])
            return set(items) if tag == "set" else frozenset(items)
        if tag == "iter":
            return iter([self._decode(x, d) for x in v["v"]])
        if tag == "mirror":
            return self._mirrors[v["id"]]
        if tag == "handle":
            return self._handles[v["id"]]
        if tag == "callback":
            return self._stub(str(v["id"]), str(v.get("name") or "callback"))
        if tag == "tensor":
            t = decode_tensor(v["v"]).clone()
            if v.get("rg") and (t.is_floating_point() or t.is_complex()):
                t.requires_grad_(True)
            return t
        return _decode_simple(tag, v)

    def _encode(self, x: Any, depth: int = 0) -> Any:
        """What the learner's code produced, as plain data (see the module docstring)."""
        if depth > MAX_DEPTH:
            raise WireError("a value nested too deeply")
        t = type(x)
        if x is None or t is bool or t is str or t is int:
            return x
        if t is float:
            return x
        d = depth + 1
        if np is not None and isinstance(x, np.generic):
            if x.dtype.kind not in "biufc":
                return self._handle(x)
            return {"$": "npscalar", "dtype": x.dtype.str, "v": _plain_number(x.item())}
        if np is not None and isinstance(x, np.ndarray):
            return {"$": "ndarray", "v": encode_ndarray(x)}
        if isinstance(x, torch.Tensor):
            value = {
                "$": "tensor",
                "v": encode_tensor(x),
                "rg": bool(x.requires_grad),
                "param": isinstance(x, torch.nn.Parameter),
            }
            mid = self._mirror_ids.get(id(x))
            if mid is not None and self._mirrors.get(mid) is x:
                return {"$": "mirror", "id": mid, "alt": value}  # alt: if dropped meanwhile
            return value
        if isinstance(x, (torch.nn.Module, torch.Generator)):
            mid = self._mirror_ids.get(id(x))
            if mid is not None and self._mirrors.get(mid) is x:
                return {"$": "mirror", "id": mid, "alt": self._handle(x)}
            return self._handle(x)
        if isinstance(x, torch.Size):
            return {"$": "size", "v": [int(n) for n in x]}
        if t is torch.dtype:
            return {"$": "dtype", "v": str(x).removeprefix("torch.")}
        if t is torch.device:
            return {"$": "device", "v": str(x)}
        if isinstance(x, bool):
            return bool(x)
        if isinstance(x, int):
            return int(x)
        if isinstance(x, float):
            return float(x)
        if isinstance(x, str):
            return str.__str__(x)
        if isinstance(x, complex):
            return {"$": "complex", "v": [x.real, x.imag]}
        if isinstance(x, (bytes, bytearray)):
            return {"$": "bytes", "v": base64.b64encode(bytes(x)).decode("ascii")}
        if x is Ellipsis:
            return {"$": "ellipsis"}
        if isinstance(x, tuple):
            return {"$": "tuple", "v": [self._encode(y, d) for y in tuple.__iter__(x)]}
        if isinstance(x, list):
            return [self._encode(y, d) for y in list.__iter__(x)]
        if isinstance(x, dict):
            return {
                "$": "dict",
                "v": [[self._encode(k, d), self._encode(v, d)] for k, v in dict.items(x)],
            }
        if isinstance(x, (set, frozenset)):
            tag = "frozenset" if isinstance(x, frozenset) else "set"
            return {"$": tag, "v": [self._encode(y, d) for y in x]}
        cid = self._stub_ids.get(id(x))
        if cid is not None and self._stubs.get(cid) is x:
            return {"$": "callback", "id": cid}
        if isinstance(x, (types.GeneratorType, map, filter, zip, enumerate, reversed, range)) or (
            type(x).__name__ in _VIEWS and type(x).__module__ == "builtins"
        ):  # model.parameters() and friends: their items, once (as Python would iterate them)
            items = []
            for y in x:
                if len(items) >= MAX_ITEMS:
                    raise WireError(f"an iterator of more than {MAX_ITEMS} items")
                items.append(self._encode(y, d))
            return {"$": "iter", "v": items}
        return self._handle(x)

    def _handle(self, x: Any) -> dict:
        self._check_answer(x)
        hid = self._handle_ids.get(id(x))
        if hid is None or self._handles.get(hid) is not x:
            self._counter += 1
            hid = f"h{self._counter}"
            self._handles[hid] = x
            self._handle_ids[id(x)] = hid
        cls = type(x)
        try:
            name = type.__dict__["__name__"].__get__(cls)
        except (TypeError, AttributeError):
            name = "object"
        return {"$": "handle", "id": hid, "type": str(name)[:80], "callable": callable(x)}


def _plain_number(v: Any) -> Any:
    if isinstance(v, complex):
        return [v.real, v.imag]
    return v


def _decode_simple(tag: Any, v: dict) -> Any:
    """Values whose meaning does not depend on either side's objects."""
    if tag == "size":
        return torch.Size(int(n) for n in v["v"])
    if tag == "dtype":
        return DTYPES[v["v"]]
    if tag == "device":
        return torch.device(str(v["v"]))
    if tag == "complex":
        return complex(float(v["v"][0]), float(v["v"][1]))
    if tag == "bytes":
        return base64.b64decode(v["v"], validate=True)
    if tag == "ellipsis":
        return Ellipsis
    if tag == "ndarray":
        return decode_ndarray(v["v"])
    if tag == "npscalar":
        if np is None:
            raise WireError("numpy is not available")
        dtype = np.dtype(v["dtype"])
        if dtype.kind not in "biufc":
            raise WireError("malformed numpy scalar")
        value = v["v"]
        if dtype.kind == "c":
            value = complex(float(value[0]), float(value[1]))
        return dtype.type(value)
    raise WireError(f"unknown value tag {tag!r}")


# --------------------------------------------------------------------------- in the sandbox


def _apply_limits(limits: dict) -> None:
    """Process limits of the sandbox (on top of its cgroup, where there is one). Set from
    inside the sandbox's user namespace, so the process count is this job's alone."""
    pairs = {
        "address_space_mb": (resource.RLIMIT_AS, 2**20),
        "processes": (resource.RLIMIT_NPROC, 1),
        "file_size_mb": (resource.RLIMIT_FSIZE, 2**20),
        "open_files": (resource.RLIMIT_NOFILE, 1),
        "cpu_s": (resource.RLIMIT_CPU, 1),
    }
    for key, (which, scale) in pairs.items():
        if limits.get(key):
            value = int(limits[key]) * scale
            resource.setrlimit(which, (value, value + (1 if key == "cpu_s" else 0)))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main() -> None:
    """Entry point inside the sandbox: requests on fd 0, replies on fd 1 (both moved out of the
    way first, so the learner's ``print`` cannot mix into the channel)."""
    fd_in, fd_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), write_through=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", buffering=0), write_through=True)
    torch.set_num_threads(1)
    main_module = types.ModuleType("__main__")
    main_module.__dict__.update(
        {
            "__builtins__": builtins,
            "display": lambda *args, **kwargs: None,
            "grader": _Grader(),
        }
    )
    sys.modules["__main__"] = main_module
    server = Server(main_module.__dict__, sandboxed=True)
    shell = _Shell(server)
    main_module.__dict__["get_ipython"] = lambda: shell
    signal.signal(signal.SIGALRM, server._on_alarm)
    transport = _PipeTransport(fd_in, fd_out)

    class _Callbacks:
        @staticmethod
        def request(msg: dict) -> dict:
            transport.send(msg)
            while True:
                reply = transport.receive()
                if reply.get("op") in _REPLIES:
                    return reply
                transport.send(_serve_one(server, reply))

    server.transport = _Callbacks
    transport.send({"op": "ready", "pid": os.getpid(), "time": time.time()})
    while True:
        try:
            msg = transport.receive()
        except EOFError:
            os._exit(0)
        if msg.get("op") == "end":
            os._exit(0)
        transport.send(_serve_one(server, msg))


def _serve_one(server: Server, msg: dict) -> dict:
    try:
        return server.handle(msg)
    except WireError as err:  # a malformed request: say so, keep serving
        return {"op": "raise", "error": {"type": "WireError", "message": str(err), "where": ""}}


if __name__ == "__main__":
    main()
