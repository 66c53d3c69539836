r"""The trusted side of a check: probes drive the learner's code through stand-ins.

A check's ``probe(answer, case)`` runs here, in the trusted process, with ``answer`` replaced by
a stand-in (:class:`RemoteObject`) for the learner's object, which lives in another process (the
grading sandbox) or behind an in-process loopback (the learner's own ``grader.check``). Each
call on a stand-in is one request to the learner's side (:mod:`.serve`); fresh inputs go out
one call at a time and plain data comes back. What a probe may do with ``answer`` is written
down in :mod:`optlib.course.checks._core`.

Nothing that comes back is executed or unpickled: replies are JSON, decoded into numbers,
strings, containers, fresh tensors and arrays, the very tensors/modules/generators the probe
passed in (updated in place), or stand-ins for the learner's other objects. Malformed replies,
timeouts and a vanished learner process raise :class:`SandboxFailure`, a ``BaseException`` that
no probe can swallow; an exception of the learner's code raises :class:`AnswerError` (a subclass
of the same built-in exception type where there is one), which a probe may catch like the
original.
"""

from __future__ import annotations

import base64
import builtins
import json
import os
import selectors
import time
import types
import weakref
from collections.abc import Callable
from typing import Any

import torch

from . import serve
from .serve import (
    MAX_DEPTH,
    WireError,
    apply_generator_state,
    apply_tensor_state,
    decode_ndarray,
    decode_tensor,
    encode_ndarray,
    encode_tensor,
    format_error,
    generator_state,
    signatures_equal,
    tensor_signature,
    tensor_state,
)

__all__ = [
    "MISSING",
    "AnswerError",
    "Connection",
    "LocalAnswer",
    "LoopbackTransport",
    "PipeTransport",
    "RemoteCallable",
    "RemoteObject",
    "SandboxFailure",
    "run_probe",
]

MAX_REPLY_BYTES = 64 * 2**20
MAX_ERROR = 400
GRACE_S = 2.0  # beyond a call's own limit, for the learner's side to report its timeout


class SandboxFailure(BaseException):
    """The learner's process timed out, died, exceeded a limit or sent something malformed:
    the question ends (a BaseException, so ``except Exception`` in a probe cannot hide it)."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class AnswerError(Exception):
    """The learner's code raised; ``description`` says what and where (plain text)."""

    def __init__(self, info: dict) -> None:
        self.info = info
        self.description = format_error(info)
        super().__init__(self.description)


_ERROR_TYPES: dict[str, type] = {}


def _answer_error(info: dict) -> AnswerError:
    """An :class:`AnswerError` that is also an instance of the learner's built-in exception
    type (``except TypeError`` in a probe behaves as if the learner's code ran in-process)."""
    name = str(info.get("type", ""))
    base = getattr(builtins, name, None)
    if (
        info.get("module") == "builtins"
        and isinstance(base, type)
        and issubclass(base, Exception)
        and not issubclass(base, AnswerError)
    ):
        if name not in _ERROR_TYPES:
            _ERROR_TYPES[name] = type(f"Answer{name}", (AnswerError, base), {})
        try:
            return _ERROR_TYPES[name](info)
        except TypeError:  # an exception type with a peculiar constructor
            pass
    return AnswerError(info)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()  # what lookup returns for a name the learner never defined


# --------------------------------------------------------------------------- stand-ins


class RemoteObject:
    """A stand-in for an object of the learner's that is not plain data. Reading an attribute
    asks the learner's side (a method comes back as a callable stand-in); setting one sends the
    value. ``type(x).__name__`` is the learner's type name. Nothing else (iteration, indexing,
    arithmetic, ``isinstance`` against the learner's classes) is available."""

    __slots__ = ("_conn", "_id", "__weakref__")

    def __init__(self, conn: Connection, hid: str) -> None:
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_id", hid)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._conn.getattr(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._conn.setattr(self, name, value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} (the learner's object {self._id})>"

    def __bool__(self) -> bool:
        return True


class RemoteCallable(RemoteObject):
    """A stand-in for a function, class or other callable object of the learner's."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._conn.call(self, args, kwargs)


_STAND_IN_TYPES: dict[tuple[str, bool], type] = {}


def _stand_in_type(name: str, is_callable: bool) -> type:
    key = (name, is_callable)
    if key not in _STAND_IN_TYPES:
        base = RemoteCallable if is_callable else RemoteObject
        _STAND_IN_TYPES[key] = type(name or "object", (base,), {"__slots__": ()})
    return _STAND_IN_TYPES[key]


# --------------------------------------------------------------------------- transports


def _roundtrip(msg: dict) -> dict:
    return json.loads(json.dumps(msg, separators=(",", ":")))


class LoopbackTransport:
    """Both sides in one process (the learner's kernel): each message still goes through JSON,
    so a check sees exactly what the grader's sandbox would show it."""

    def __init__(self, server: serve.Server) -> None:
        self.server = server
        self._handler: Callable[[dict], dict] | None = None
        transport = self

        class _ServerSide:
            @staticmethod
            def request(msg: dict) -> dict:
                if transport._handler is None:
                    raise RuntimeError("no trusted side is waiting")
                return _roundtrip(transport._handler(_roundtrip(msg)))

        server.transport = _ServerSide

    def request(self, msg: dict, handler: Callable[[dict], dict], timeout: float | None) -> dict:
        outer, self._handler = self._handler, handler
        try:
            return _roundtrip(self.server.handle(_roundtrip(msg)))
        finally:
            self._handler = outer


class PipeTransport:
    """JSON lines to and from the learner's process, with deadlines on every read and write, a
    bound on a reply's size, and a ``watchdog()`` called while waiting (it raises
    :class:`SandboxFailure` when a limit is exceeded)."""

    def __init__(
        self, fd_write: int, fd_read: int, watchdog: Callable[[], None] | None = None
    ) -> None:
        self.fd_write, self.fd_read = fd_write, fd_read
        os.set_blocking(fd_write, False)
        os.set_blocking(fd_read, False)
        self.watchdog = watchdog
        self._buffer = bytearray()

    def send(self, msg: dict, deadline: float | None) -> None:
        data = memoryview((json.dumps(msg, separators=(",", ":")) + "\n").encode())
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd_write, selectors.EVENT_WRITE)
            while data:
                if not sel.select(self._wait(deadline)):
                    self._tick(deadline)
                    continue
                try:
                    data = data[os.write(self.fd_write, data) :]
                except BlockingIOError:
                    continue
                except (BrokenPipeError, OSError):
                    raise SandboxFailure("crashed", "the learner's process is gone") from None

    def receive(self, deadline: float | None) -> dict:
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd_read, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                if not sel.select(self._wait(deadline)):
                    self._tick(deadline)
                    continue
                try:
                    chunk = os.read(self.fd_read, 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise SandboxFailure("crashed", "the learner's process ended")
                self._buffer += chunk
                if len(self._buffer) > MAX_REPLY_BYTES and b"\n" not in self._buffer:
                    raise SandboxFailure("malformed", "a reply larger than the limit")
        end = self._buffer.index(b"\n")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        if len(line) > MAX_REPLY_BYTES:
            raise SandboxFailure("malformed", "a reply larger than the limit")
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError):
            raise SandboxFailure("malformed", "a reply that is not JSON") from None
        if not isinstance(msg, dict):
            raise SandboxFailure("malformed", "a reply that is not a JSON object")
        return msg

    def request(self, msg: dict, handler: Callable[[dict], dict], timeout: float | None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        self.send(msg, deadline)
        while True:
            reply = self.receive(deadline)
            op = reply.get("op")
            if op in ("return", "raise"):
                return reply
            if op != "callback":
                raise SandboxFailure("malformed", f"an unexpected message ({str(op)[:40]!r})")
            started = time.monotonic()
            answer = handler(reply)
            if deadline is not None:  # the check's own function does not use the learner's time
                deadline += time.monotonic() - started
            self.send(answer, deadline)

    @staticmethod
    def _wait(deadline: float | None) -> float:
        left = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
        return max(left, 0.0)

    def _tick(self, deadline: float | None) -> None:
        if self.watchdog is not None:
            self.watchdog()
        if deadline is not None and time.monotonic() >= deadline:
            raise SandboxFailure("timeout", "the learner's code exceeded its time limit")


# --------------------------------------------------------------------------- the connection


class Connection:
    """One learner process seen from the trusted side: requests, mirrors, stand-ins.

    Args:
        transport: :class:`PipeTransport` or :class:`LoopbackTransport`.
        call_timeout: seconds for each call into the learner's code (None: no limit).
    """

    def __init__(self, transport: Any, call_timeout: float | None = None) -> None:
        self.transport = transport
        self.call_timeout = call_timeout
        self.deadline: float | None = None  # a hard end (the question's), monotonic
        self.check: str | None = None  # whose delegation watch applies to calls
        self.delegated: set[str] = set()
        self._counter = 0
        self._seq = 0
        self._outstanding: list[int] = []
        self._mirror_refs: dict[str, Callable[[], Any]] = {}
        self._mirror_ids: dict[int, str] = {}
        self._snapshots: dict[str, Any] = {}
        self._new: list[dict] = []
        self._drop: list[str] = []
        self._callbacks: dict[str, Callable] = {}
        self._callback_ids: dict[int, str] = {}
        self._stand_ins: dict[str, weakref.ref] = {}

    # ------------------------------------------------------------------ requests
    def request(self, msg: dict, timeout: float | None = None) -> Any:
        """Send ``msg`` (its values already encoded) and return the reply's decoded value."""
        self._seq += 1
        msg["seq"] = self._seq
        msg["new"], self._new = self._new, []
        msg["drop"], self._drop = self._drop, []
        msg["sync"] = self._sync_out()
        if timeout is None and self.call_timeout is not None:
            timeout = self.call_timeout + GRACE_S
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise SandboxFailure("timeout", "the question's time limit was reached")
            timeout = left if timeout is None else min(timeout, left)
        self._outstanding.append(msg["seq"])
        try:
            reply = self.transport.request(msg, self._serve_callback, timeout)
        finally:
            self._outstanding.pop()
        if reply.get("seq") != msg["seq"]:
            raise SandboxFailure("malformed", "a reply that does not answer the request")
        try:
            self._receive(reply)
            if reply.get("op") == "raise":
                info = reply.get("error")
                if not isinstance(info, dict):
                    raise WireError("malformed error")
                raise _answer_error({k: str(v)[:MAX_ERROR] for k, v in info.items()})
            return self._decode(reply.get("value"))
        except WireError as err:
            raise SandboxFailure("malformed", str(err)[:200]) from None

    def _call_msg(self, op: str, **fields: Any) -> dict:
        return {"op": op, "check": self.check, "timeout": self.call_timeout, **fields}

    def init(self, forbidden: dict[str, list[str]], limits: dict | None = None,
             timeout: float = 120.0) -> dict:  # fmt: skip
        """Resolve the delegation table and set the limits, before any learner code runs."""
        value = self.request(
            {"op": "init", "forbidden": forbidden, "limits": limits or {}}, timeout=timeout
        )
        if not isinstance(value, dict):
            raise SandboxFailure("malformed", "a malformed reply to init")
        return value

    def run_cell(self, index: int, source: str, timeout: float | None) -> dict:
        """Run one cell; ``{"error": info or None, "notes": [...]}``."""
        msg = {"op": "cell", "index": index, "source": source, "timeout": timeout}
        value = self.request(msg, None if timeout is None else timeout + GRACE_S)
        if not isinstance(value, dict):
            raise SandboxFailure("malformed", "a malformed reply to a cell")
        error = value.get("error")
        notes = value.get("notes")
        return {
            "error": error if isinstance(error, dict) else None,
            "notes": [str(n)[:200] for n in notes[:20]] if isinstance(notes, list) else [],
        }

    def lookup(self, name: str) -> Any:
        """The learner's object named ``name`` (a stand-in, or plain data), or MISSING."""
        value = self.request(self._call_msg("lookup", name=name))
        return value

    def call(self, target: RemoteObject, args: tuple, kwargs: dict) -> Any:
        msg = self._call_msg(
            "call",
            target=object.__getattribute__(target, "_id"),
            args=[self._encode(a) for a in args],
            kwargs={str(k): self._encode(v) for k, v in kwargs.items()},
        )
        return self.request(msg)

    def getattr(self, target: RemoteObject, name: str) -> Any:
        return self.request(
            self._call_msg("getattr", target=object.__getattribute__(target, "_id"), name=name)
        )

    def setattr(self, target: RemoteObject, name: str, value: Any) -> None:
        msg = self._call_msg(
            "setattr",
            target=object.__getattribute__(target, "_id"),
            name=name,
            value=self._encode(value),
        )
        self.request(msg)

    # ------------------------------------------------------------------ callbacks
    def _serve_callback(self, msg: dict) -> dict:
        """The learner's code called a function the probe passed in: run it here."""
        try:
            if msg.get("op") != "callback":
                raise WireError("unexpected request")
            if not self._outstanding or msg.get("seq") != self._outstanding[-1]:
                raise WireError("a call back that belongs to no request")
            self._receive(msg)
            fn = self._callbacks.get(str(msg.get("id")))
            if fn is None:
                raise WireError("unknown callback")
            args = msg.get("args")
            kwargs = msg.get("kwargs")
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise WireError("malformed callback")
            args = [self._decode(a) for a in args]
            kwargs = {str(k): self._decode(v) for k, v in kwargs.items()}
        except WireError as err:
            raise SandboxFailure("malformed", str(err)[:200]) from None
        try:
            result = fn(*args, **kwargs)
            reply: dict[str, Any] = {"op": "return", "value": self._encode(result, fresh=True)}
        except (SandboxFailure, KeyboardInterrupt):
            raise
        except Exception as err:  # the check's function raised: the learner's code sees it
            reply = {
                "op": "raise",
                "error": {"type": type(err).__name__, "message": str(err)[:MAX_ERROR]},
            }
        reply["new"], self._new = self._new, []
        reply["drop"], self._drop = self._drop, []
        reply["sync"] = self._sync_out()
        return reply

    # ------------------------------------------------------------------ mirrors
    def _mirror(self, obj: Any, kind: str) -> str:
        mid = self._mirror_ids.get(id(obj))
        if mid is not None and self._mirror_refs[mid]() is obj:
            return mid
        self._counter += 1
        mid = f"m{self._counter}"
        decl: dict[str, Any] = {"id": mid, "kind": kind}
        if kind == "tensor":
            decl["state"] = tensor_state(obj)
            decl["param"] = isinstance(obj, torch.nn.Parameter)
            self._snapshots[mid] = tensor_signature(obj)
        elif kind == "generator":
            decl["state"] = generator_state(obj)
            self._snapshots[mid] = obj.get_state()
        else:
            decl["spec"] = self._module_spec(obj)
        self._new.append(decl)
        try:
            ref: Callable[[], Any] = weakref.ref(obj, self._dropper(mid, id(obj)))
        except TypeError:  # not weak-referenceable: keep it for the connection's life
            ref = (lambda o: lambda: o)(obj)
        self._mirror_refs[mid] = ref
        self._mirror_ids[id(obj)] = mid
        return mid

    def _dropper(self, mid: str, key: int) -> Callable:
        def dropped(_ref: Any) -> None:
            self._mirror_refs.pop(mid, None)
            self._snapshots.pop(mid, None)
            if self._mirror_ids.get(key) == mid:
                del self._mirror_ids[key]
            self._drop.append(mid)

        return dropped

    def _module_spec(self, m: torch.nn.Module) -> dict:
        cls = type(m)
        base = next(
            c
            for c in cls.__mro__
            if (c.__module__ == "torch" or c.__module__.startswith("torch."))
            and issubclass(c, torch.nn.Module)
        )
        skip = {"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set", "training"}
        attrs = {}
        for key, value in vars(m).items():
            if key in skip or "hook" in key or key.startswith("_state_dict") or key.startswith(
                "_load_state_dict"
            ):
                continue
            if _is_plain(value):
                attrs[key] = self._encode(value)
        # children first, so that the learner's side builds them before their parents
        modules = {
            name: (self._mirror(child, "module") if child is not None else None)
            for name, child in m._modules.items()
        }
        return {
            "base": f"{base.__module__}:{base.__qualname__}",
            "exact": base is cls,
            "name": cls.__name__,
            "attrs": attrs,
            "training": bool(m.training),
            "parameters": {
                n: (self._mirror(p, "tensor") if p is not None else None)
                for n, p in m._parameters.items()
            },
            "buffers": {
                n: (self._mirror(b, "tensor") if b is not None else None)
                for n, b in m._buffers.items()
            },
            "non_persistent": sorted(m._non_persistent_buffers_set),
            "modules": modules,
        }

    def _sync_out(self) -> dict:
        out = {}
        for mid, ref in list(self._mirror_refs.items()):
            obj = ref()
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

    def _receive(self, msg: dict) -> None:
        """Apply the learner's side's changes to the mirrors, note delegation (validated)."""
        sync = msg.get("sync") or {}
        if not isinstance(sync, dict):
            raise WireError("malformed sync")
        for mid, state in sync.items():
            ref = self._mirror_refs.get(mid)
            obj = ref() if ref is not None else None
            if obj is None:
                continue  # dropped here meanwhile
            if isinstance(obj, torch.Tensor):
                apply_tensor_state(obj, state, MAX_REPLY_BYTES)
                self._snapshots[mid] = tensor_signature(obj)
            elif isinstance(obj, torch.Generator):
                apply_generator_state(obj, state)
                self._snapshots[mid] = obj.get_state()
        delegated = msg.get("delegated")
        if delegated:
            if not isinstance(delegated, list):
                raise WireError("malformed delegation report")
            self.delegated |= {str(n)[:120] for n in delegated[:50]}

    # ------------------------------------------------------------------ values
    def _encode(self, x: Any, depth: int = 0, fresh: bool = False) -> Any:
        """A value the probe sends (see the contract in optlib.course.checks._core); with
        ``fresh``, tensors that are not mirrors yet travel by value (a callback's result)."""
        if depth > MAX_DEPTH:
            raise TypeError("a value nested too deeply to send to the learner's code")
        t = type(x)
        if x is None or t in (bool, int, str):
            return x
        if t is float:
            return x
        d = depth + 1
        if isinstance(x, RemoteObject):
            return {"$": "handle", "id": object.__getattribute__(x, "_id")}
        if serve.np is not None and isinstance(x, serve.np.generic):
            value = x.item()
            if isinstance(value, complex):
                value = [value.real, value.imag]
            return {"$": "npscalar", "dtype": x.dtype.str, "v": value}
        if serve.np is not None and isinstance(x, serve.np.ndarray):
            return {"$": "ndarray", "v": encode_ndarray(x)}
        if isinstance(x, torch.Tensor):
            mid = self._mirror_ids.get(id(x))
            if fresh and (mid is None or self._mirror_refs[mid]() is not x):
                return {"$": "tensor", "v": encode_tensor(x), "rg": bool(x.requires_grad)}
            return {"$": "mirror", "id": self._mirror(x, "tensor")}
        if isinstance(x, torch.Generator):
            if x.device.type != "cpu":
                raise TypeError("only CPU generators can be sent to the learner's code")
            return {"$": "mirror", "id": self._mirror(x, "generator")}
        if isinstance(x, torch.nn.Module):
            return {"$": "mirror", "id": self._mirror(x, "module")}
        if isinstance(x, torch.Size):
            return {"$": "size", "v": list(x)}
        if t is torch.dtype:
            return {"$": "dtype", "v": str(x).removeprefix("torch.")}
        if t is torch.device:
            return {"$": "device", "v": str(x)}
        for plain in (bool, int, float, str):
            if isinstance(x, plain):
                return plain(x)
        if isinstance(x, complex):
            return {"$": "complex", "v": [x.real, x.imag]}
        if isinstance(x, (bytes, bytearray)):
            return {"$": "bytes", "v": base64.b64encode(bytes(x)).decode("ascii")}
        if x is Ellipsis:
            return {"$": "ellipsis"}
        if isinstance(x, tuple):
            return {"$": "tuple", "v": [self._encode(y, d, fresh) for y in x]}
        if isinstance(x, list):
            return [self._encode(y, d, fresh) for y in x]
        if isinstance(x, dict):
            pairs = [[self._encode(k, d, fresh), self._encode(v, d, fresh)] for k, v in x.items()]
            return {"$": "dict", "v": pairs}
        if isinstance(x, (set, frozenset)):
            tag = "frozenset" if isinstance(x, frozenset) else "set"
            return {"$": tag, "v": [self._encode(y, d, fresh) for y in x]}
        if isinstance(x, (types.GeneratorType, map, filter, zip, enumerate, range)):
            return {"$": "iter", "v": [self._encode(y, d, fresh) for y in x]}
        if callable(x):
            cid = self._callback_ids.get(id(x))
            if cid is None or self._callbacks.get(cid) is not x:
                self._counter += 1
                cid = f"c{self._counter}"
                self._callbacks[cid] = x
                self._callback_ids[id(x)] = cid
            return {"$": "callback", "id": cid, "name": getattr(x, "__name__", "callback")}
        raise TypeError(f"a {t.__name__} cannot be sent to the learner's code")

    def _decode(self, v: Any, depth: int = 0) -> Any:
        """A value from the learner's side (untrusted: validated, never executed)."""
        if depth > MAX_DEPTH:
            raise WireError("a value nested too deeply")
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            return v
        if isinstance(v, float):
            return v
        d = depth + 1
        if isinstance(v, list):
            return [self._decode(x, d) for x in v]
        if not isinstance(v, dict):
            raise WireError("malformed value")
        tag = v.get("$")
        items = v.get("v")
        if tag in ("tuple", "set", "frozenset", "iter"):
            if not isinstance(items, list):
                raise WireError("malformed container")
            decoded = [self._decode(x, d) for x in items]
            if tag == "tuple":
                return tuple(decoded)
            if tag == "iter":  # a generator of the learner's: its items, iterable once
                return iter(decoded)
            try:
                return set(decoded) if tag == "set" else frozenset(decoded)
            except TypeError:
                raise WireError("a set of unhashable values") from None
        if tag == "dict":
            if not isinstance(items, list) or not all(
                isinstance(p, list) and len(p) == 2 for p in items
            ):
                raise WireError("malformed dict")
            try:
                return {self._decode(k, d): self._decode(x, d) for k, x in items}
            except TypeError:
                raise WireError("a dict with unhashable keys") from None
        if tag == "missing":
            return MISSING
        if tag == "mirror":
            ref = self._mirror_refs.get(str(v.get("id")))
            obj = ref() if ref is not None else None
            if obj is None:  # the probe let it go meanwhile: a copy (or stand-in) will do
                alt = v.get("alt")
                if not isinstance(alt, dict) or alt.get("$") not in ("tensor", "handle"):
                    raise WireError("a reference to an unknown object")
                return self._decode(alt, d)
            return obj
        if tag == "handle":
            return self._stand_in(v)
        if tag == "callback":
            fn = self._callbacks.get(str(v.get("id")))
            if fn is None:
                raise WireError("a reference to an unknown function")
            return fn
        if tag == "tensor":
            t = decode_tensor(items, MAX_REPLY_BYTES).clone()
            if v.get("param") is True:
                return torch.nn.Parameter(t, requires_grad=bool(v.get("rg")) and _grad_ok(t))
            if v.get("rg") is True and _grad_ok(t):
                t.requires_grad_(True)
            return t
        if tag == "ndarray":
            return decode_ndarray(items, MAX_REPLY_BYTES)
        if tag in ("size", "dtype", "device", "complex", "bytes", "ellipsis", "npscalar"):
            try:
                return serve._decode_simple(tag, v)
            except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
                raise WireError(f"malformed {tag} ({type(err).__name__})") from None
        raise WireError("malformed value")

    def _stand_in(self, v: dict) -> RemoteObject:
        hid = v.get("id")
        if not isinstance(hid, str) or len(hid) > 40:
            raise WireError("malformed handle")
        ref = self._stand_ins.get(hid)
        existing = ref() if ref is not None else None
        if existing is not None:
            return existing
        name = "".join(c for c in str(v.get("type", "object"))[:80] if c.isprintable())
        proxy = _stand_in_type(name or "object", v.get("callable") is True)(self, hid)
        self._stand_ins[hid] = weakref.ref(proxy, lambda _r, hid=hid: self._forget(hid))
        return proxy

    def _forget(self, hid: str) -> None:
        self._stand_ins.pop(hid, None)
        self._drop.append(hid)


def _grad_ok(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


def _is_plain(value: Any, depth: int = 0) -> bool:
    """Plain module attributes travel with a module (numbers, strings, tuples of them...)."""
    if depth > 4:
        return False
    if value is None or type(value) in (bool, int, float, str, complex, torch.dtype, torch.device):
        return True
    if type(value) in (tuple, list):
        return all(_is_plain(v, depth + 1) for v in value)
    return False


# --------------------------------------------------------------------------- probes


def run_probe(check: Any, answer: Any, case: dict) -> Any:
    """The probe's data for one case, as plain JSON: an exception of the learner's code, or of
    the probe choking on what came back, becomes ``{"error": ...}`` (the check's ``compare``
    turns that into a failure); :class:`SandboxFailure` propagates."""
    try:
        got = check.probe(answer, case)
    except AnswerError as err:
        got = {"error": err.description}
    except SandboxFailure:
        raise
    except Exception as err:
        got = {"error": f"{type(err).__name__}: {err}"[:MAX_ERROR]}
    try:
        return json.loads(json.dumps(got, allow_nan=True))
    except (TypeError, ValueError):
        return {"error": "the check's probe produced data that is not JSON"}


class LocalAnswer:
    """An object of the learner's kernel, seen by a check through the same protocol as in the
    grader's sandbox (``run_check``): a loopback :class:`Connection` to an in-process server.

    Args:
        answer: the learner's object.
        check: the check's name (whose delegation watch applies).
        forbidden: dotted names the answer must not delegate to.
        label: the name the learner gave the object (used in messages).
    """

    def __init__(self, answer: Any, *, check: str, forbidden: list[str], label: str) -> None:
        self.server = serve.Server({label: answer}, sandboxed=False)
        self.connection = Connection(LoopbackTransport(self.server))
        self.connection.init({check: list(forbidden)})
        self.connection.check = check
        self.answer = self.connection.lookup(label)

    @property
    def delegated(self) -> set[str]:
        return self.connection.delegated

    def probe(self, check: Any, case: dict) -> Any:
        self.server.last_exception = None
        return run_probe(check, self.answer, case)

    @property
    def last_exception(self) -> BaseException | None:
        return self.server.last_exception
