r"""optlib's fused path (``fused=True``): one compiled element-wise kernel per update.

An optimizer step is memory-bound: every parameter, gradient and state element is read and
written once, and the arithmetic in between is free. The single-tensor path launches several
kernels per tensor (one per line of the math), the ``foreach`` path several kernels per *line*,
each of which still walks memory once: Adam moves its 28 bytes per parameter about five times.
The fused path moves them once:

* **flat buffers**: the parameters of a param group that share a dtype and device become views
  of one flat buffer (``p.data`` is re-pointed at its slice, so modules see the same tensors);
  each state tensor (``exp_avg``, ...) lives in a flat buffer laid out the same way, and the
  0-d step counters in a small flat buffer of their own. ``state_dict`` still holds one tensor per
  parameter, in torch's keys and shapes, so checkpoints move freely between the single-tensor,
  foreach and fused paths (and torch.optim).
* **gradients** are used in place when they are already views of the group's flat gradient
  buffer; otherwise they are gathered into it with one multi-tensor copy and ``p.grad`` is
  re-pointed at its slice, so gradients that persist between steps (accumulation with
  ``zero_grad(set_to_none=False)``) are never copied again. With fresh gradients every step
  (``set_to_none=True``, torch's default) the gather costs 8 bytes per float32 parameter.
* **one kernel**: the update is a plain element-wise function of the flat buffers and a small
  tensor of per-step scalars (bias corrections, step sizes), compiled once by
  :func:`torch.compile` (C++ on CPU, Triton on GPU) with dynamic sizes. The scalars are computed
  in Python double precision, exactly as the single-tensor path computes them, and passed as a
  tensor in the dtype ATen computes in (:func:`scalar_dtype`), so nothing is recompiled when the
  learning rate, the betas or the step change.
* **segments**: parameters with equal per-tensor scalars (the same step count, as after any
  uninterrupted run) form one segment; the kernel runs once per segment, so the usual step is
  one kernel call, and parameters without a gradient are skipped, as in torch.

The kernels themselves live in :mod:`._fused_updates`, one per optimizer, each a line-by-line
mirror of that optimizer's single-tensor update (the function the chapters show), which stays
the source of truth; ``tests/test_fused.py`` holds every pair together on every configuration
of the parity tests.

Where :func:`torch.compile` cannot run (no C++ compiler, no Triton, an unsupported Python), the
step falls back to the optimizer's ``foreach`` path, with one :class:`RuntimeWarning` per process
and device type; silently so while ``opt.step`` is itself being compiled (dynamo then traces the
foreach path) and under a Python dispatch mode (which compiled code does not support). Complex
or sparse parameters, and parameters that are not dense in memory, also take the foreach path.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ._base import new_step_counter

Key = tuple  # (counter key, first step): what the scalars of a segment depend on

#: Device types on which the fused path could not compile, with the reason (process-wide).
_unavailable: dict[str, str] = {}
_kernels: dict[tuple, Callable] = {}


# --- choosing a path -------------------------------------------------------------------------


def check_fused(fused: bool | None, foreach: bool | None) -> None:
    """Refuse what torch refuses: ``fused=True`` together with ``foreach=True``."""
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


def use_foreach(group: dict, params: list[Tensor]) -> bool:
    """Whether the (non-fused) step of ``group`` takes the foreach path.

    ``foreach=None`` picks as torch.optim does (``_default_to_fused_or_foreach``): the
    multi-tensor path when every parameter is a plain tensor on a device with foreach kernels
    (CUDA, XPU, ...), the per-tensor loop on the CPU; as torch's Adam does, a tensor learning rate
    keeps the loop. A group with ``fused=True`` lands here only when the fused path declined
    the step, and then takes the foreach path.
    """
    if group.get("fused"):
        return True
    foreach = group.get("foreach")
    if foreach is not None:
        return bool(foreach)
    if torch.jit.is_scripting() or group.get("differentiable"):
        return False
    try:
        from torch.utils._foreach_utils import _get_foreach_kernels_supported_devices

        devices = _get_foreach_kernels_supported_devices()
    except ImportError:  # pragma: no cover - older or newer torch
        devices = ["cuda", "xpu"]
    plain = (Tensor, torch.nn.Parameter)
    if not all(type(p) in plain and p.device.type in devices for p in params):
        return False
    return not isinstance(group.get("lr"), Tensor)


# --- the kernels -------------------------------------------------------------------------------


def compiled_kernel(update: FusedUpdate, flags: tuple) -> Callable:
    """The compiled kernel of ``update`` with the static switches ``flags`` (cached).

    Each (update, flags, thread count) gets its own copy of the kernel's code object, because
    torch.compile caches graphs, and counts recompiles, per code object: dtypes and devices are
    then the only guards that can add a graph.
    """
    threads = torch.get_num_threads()
    key = (update.name, flags, threads)
    kernel = _kernels.get(key)
    if kernel is None:
        fn = update.kernel
        name = f"{update.name}_fused_" + "".join(str(int(f)) for f in flags) + f"_{threads}"
        copy = types.FunctionType(
            fn.__code__.replace(co_name=name), fn.__globals__, name, fn.__defaults__
        )
        copy.__kwdefaults__ = update.flag_values(flags)
        kernel = torch.compile(copy, dynamic=True, fullgraph=True, backend=_inductor(threads))
        _kernels[key] = kernel
    return kernel


def _inductor(threads: int) -> Callable:
    """torch.compile's default backend (inductor), generating a CPU kernel for ``threads``
    OpenMP threads, that also hands the compiled graph to :func:`_ready` (see :class:`_Direct`).
    """

    def backend(graph_module, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        patches = {"cpp.threads": threads, "cpp.simdlen": _simdlen()}
        graph = compile_fx(graph_module, example_inputs, config_patches=patches)

        seen = []

        def first_call(*args):  # how dynamo lays out the graph's arguments, seen once
            if not seen:
                seen.append(True)
                _captured.append((graph, args))
            return graph(*args)

        return first_call

    return backend


_captured: list[tuple[Callable, tuple]] = []


def _simdlen() -> int:
    """The vector width, in bits, that inductor picks on this machine (1: none), named in the
    compile options so that it is part of inductor's on-disk cache key.

    Without it a kernel cached by a process with one ``ATEN_CPU_CAPABILITY`` (AVX-512, say) was
    reused by a process with another (AVX2), and the fused step silently updated half of the
    parameters wrongly (torch 2.13; ``make test``'s perturbed run switches the capability).
    """
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    isa = pick_vec_isa()
    return isa.bit_width() if isa else 1


@dataclass(frozen=True)
class _Direct:
    """The compiled graph of a kernel for one dtype and device, called without torch.compile's
    front end.

    Calling a ``torch.compile``d function first checks its guards (dtypes, devices, strides,
    the global state) in dynamo's frame-evaluation layer. For this kernel the fused path already
    guarantees what they check (one dtype and device per bucket, dense 1-d buffers, ``no_grad``,
    one kernel per thread count), and the layer is the largest part of the step's fixed cost:
    about 50 us per call on a warm cache and 430 us after a forward and backward pass have
    evicted it, against 12 and 170 us for the compiled graph itself (measured on two Xeon
    cores, torch 2.13). So the step calls the graph directly, with the arguments in the order
    dynamo passed them on the first call: ``layout`` names, for each, the kernel argument
    (``s``, ``theta``, ``g``, the state) by position, or ``-1`` for the buffers' length (the
    symbolic size). Where the first call's arguments cannot be mapped so (another torch
    version), there is no direct entry and the step calls the compiled function as usual.
    """

    graph: Callable
    layout: tuple[int, ...]

    @classmethod
    def from_first_call(cls, graph, seen: tuple, ours: list[Tensor], length: int):
        layout = []
        for arg in seen:
            if isinstance(arg, Tensor):
                match = [j for j, t in enumerate(ours) if t is arg]
                if len(match) != 1:
                    return None
                layout.append(match[0])
            elif isinstance(arg, int) and arg == length:
                layout.append(-1)
            else:
                return None
        if sorted(j for j in layout if j >= 0) != list(range(len(ours))):
            return None
        return cls(graph, tuple(layout))

    def __call__(self, s: Tensor, *buffers: Tensor) -> None:
        ours = (s, *buffers)
        length = buffers[0].numel()
        self.graph(*[ours[j] if j >= 0 else length for j in self.layout])


def _kernel_key(update: FusedUpdate, flags: tuple, t: Tensor) -> tuple:
    """What one compiled graph is specific to: the update, its static switches, the dtype and
    device of the buffers (``t``'s), and the thread count."""
    return (update.name, flags, t.dtype, t.device, torch.get_num_threads())


def scalar_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the per-step scalars for parameters of ``dtype``: ATen's ``opmath`` type,
    in which the single-tensor path's ``Scalar`` arguments reach its kernels (float64 for
    float64, float32 for float32, bfloat16 and float16). Double-precision scalars would be
    rounded at every use inside the loop, which made the AdamW kernel 9 % slower."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _give_up(device: torch.device, reason: str) -> None:
    _unavailable[device.type] = reason
    warnings.warn(
        f"optlib: fused=True compiles its update with torch.compile, which is not available on "
        f"{device.type} here ({reason}); using the foreach path instead. A C++ compiler (CPU) "
        "or Triton (GPU) enables the fused path.",
        RuntimeWarning,
        stacklevel=4,
    )


def _ready(update: FusedUpdate, flags: tuple, n_state: int, p: Tensor) -> bool:
    """Compile the kernel for ``p``'s dtype and device on dummies, before the real call touches
    anything, so that a failure can still fall back cleanly."""
    key = _kernel_key(update, flags, p)
    if key in _ready_keys:
        return True
    if p.device.type in _unavailable:
        return False
    if not torch._dynamo.is_dynamo_supported():
        _give_up(p.device, "torch.compile does not support this Python or platform")
        return False
    from torch._dynamo.exc import TorchDynamoException

    # Inductor takes its size hints from these first inputs: with two elements it generated a
    # kernel that never ran in parallel (2 threads were no faster than 1); 65536 elements (256
    # KiB each in float32) give the hint of a real buffer.
    length = 1 << 16
    dummies = [torch.zeros(length, dtype=p.dtype, device=p.device) for _ in range(2 + n_state)]
    scalars = torch.zeros(update.n_scalars, dtype=scalar_dtype(p.dtype), device=p.device)
    _captured.clear()
    try:
        compiled_kernel(update, flags)(scalars, *dummies)
    except (TorchDynamoException, OSError) as error:
        lines = str(error).strip().splitlines()
        _give_up(p.device, (lines[0] if lines else type(error).__name__)[:300])
        return False
    if _captured:
        graph, seen = _captured.pop()
        direct = _Direct.from_first_call(graph, seen, [scalars, *dummies], length)
        if direct is not None:
            _direct[key] = direct
    _captured.clear()
    _ready_keys.add(key)
    return True


_ready_keys: set[tuple] = set()
#: The direct entries of the compiled kernels, by (update, flags, dtype, device, threads).
_direct: dict[tuple, _Direct] = {}


# --- flat buffers ------------------------------------------------------------------------------


def _dense(t: Tensor) -> bool:
    """``t`` covers exactly ``numel`` consecutive elements (contiguous in some dimension order)."""
    if t.is_contiguous():
        return True
    expected = 1
    for stride, size in sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _slot(flat: Tensor, offset: int, like: Tensor) -> Tensor:
    """The view of ``flat`` that holds a tensor shaped and strided like ``like``."""
    return flat.as_strided(like.shape, like.stride(), flat.storage_offset() + offset)


@dataclass
class _Bucket:
    """The parameters of one param group with one dtype and device, as views of flat buffers."""

    params: list[Tensor]
    offsets: list[int]
    ends: list[int]
    param_flat: Tensor
    grad_flat: Tensor
    state_keys: tuple[tuple[str, float], ...]
    state_flat: dict[str, Tensor]
    counter_flat: dict[str, Tensor]
    param_ptrs: list[int]
    grad_ptrs: list[int]
    has_state: list[bool]
    last_scalars: tuple = ((), None)  # the last scalars passed, and their tensor

    @property
    def everyone(self) -> list[int]:
        return list(range(len(self.params)))


def _build(optimizer, params: list[Tensor], update: FusedUpdate, keys) -> _Bucket:
    """Move ``params``, and the state they already have, into fresh flat buffers."""
    offsets, ends, total = [], [], 0
    for p in params:
        offsets.append(total)
        total += p.numel()
        ends.append(total)
    kw = dict(dtype=params[0].dtype, device=params[0].device)
    counter_dtype = new_step_counter().dtype
    param_flat = torch.empty(total, **kw)
    views = [_slot(param_flat, o, p) for o, p in zip(offsets, params)]
    torch._foreach_copy_(views, [p.detach() for p in params])
    for p, view in zip(params, views):
        p.data = view
    bucket = _Bucket(
        params=list(params),
        offsets=offsets,
        ends=ends,
        param_flat=param_flat,
        grad_flat=torch.zeros(total, **kw),
        state_keys=keys,
        state_flat={key: torch.full((total,), init, **kw) for key, init in keys},
        counter_flat={  # on the CPU, as torch.optim keeps ``step`` (no device sync to read it)
            key: torch.full((len(params),), init, dtype=counter_dtype)
            for key, init in update.counters
        },
        param_ptrs=[p.data_ptr() for p in params],
        grad_ptrs=[-1] * len(params),
        has_state=[False] * len(params),
    )
    for i, p in enumerate(params):
        state = optimizer.state.get(p)
        if state:  # copy what there is (a missing key starts at its initial value)
            for key, _ in keys:
                if key in state:
                    _slot(bucket.state_flat[key], offsets[i], p).copy_(state[key])
            for key, _ in update.counters:
                if key in state:
                    bucket.counter_flat[key][i] = float(state[key])
            _point_state(optimizer, bucket, update, i)
    return bucket


def _point_state(optimizer, bucket: _Bucket, update: FusedUpdate, i: int) -> None:
    """``state[p][key]`` becomes the view of ``p``'s slot in each flat buffer."""
    p, state = bucket.params[i], optimizer.state[bucket.params[i]]
    for key, _ in bucket.state_keys:
        state[key] = _slot(bucket.state_flat[key], bucket.offsets[i], p)
    for key, _ in update.counters:
        state[key] = bucket.counter_flat[key][i]
    bucket.has_state[i] = True


def _plan_grads(bucket: _Bucket) -> tuple[list[int], list[int]] | None:
    """The parameters that have a gradient, and those whose gradient must be gathered; ``None``
    if one cannot be (see :func:`_foreign_grads`)."""
    try:  # the usual step: every gradient present, and already a view of the flat buffer
        if [p.grad.data_ptr() for p in bucket.params] == bucket.grad_ptrs:
            return bucket.everyone, []
    except (AttributeError, RuntimeError):  # a missing (None) or sparse gradient
        pass
    present = [i for i, p in enumerate(bucket.params) if p.grad is not None]
    foreign = _foreign_grads(bucket, present)
    return None if foreign is None else (present, foreign)


def _foreign_grads(bucket: _Bucket, present: list[int]) -> list[int] | None:
    """The present gradients that are not yet views of the flat gradient buffer; ``None`` if one
    of them cannot be gathered (sparse, another shape or device)."""
    foreign = []
    for i in present:
        p = bucket.params[i]
        g = p.grad
        if g.data_ptr() == bucket.grad_ptrs[i]:
            continue
        if g.is_sparse or g.shape != p.shape or g.device != p.device:
            return None
        foreign.append(i)
    return foreign


def _gather_grads(bucket: _Bucket, foreign: list[int]) -> None:
    """Copy the ``foreign`` gradients into the flat gradient buffer (one multi-tensor copy) and
    re-point ``p.grad`` at its slice, unless something else owns the gradient's memory (a view of
    another buffer, such as DDP's gradient buckets, stays where it is and is copied each step)."""
    if not foreign:
        return
    params = [bucket.params[i] for i in foreign]
    grads = [p.grad for p in params]
    views = [_slot(bucket.grad_flat, bucket.offsets[i], p) for i, p in zip(foreign, params)]
    torch._foreach_copy_(views, grads)
    for i, p, g, view in zip(foreign, params, grads, views):
        if g._base is None and g.dtype == p.dtype and not g.requires_grad:
            p.grad = view
            bucket.grad_ptrs[i] = view.data_ptr()


# --- the step ----------------------------------------------------------------------------------


def fused_step(optimizer: torch.optim.Optimizer, group: dict, update: FusedUpdate) -> bool:
    """Take ``group``'s step on the fused path. Returns ``False``, having changed nothing, when
    the group must take the foreach path instead (see the module docstring)."""
    if torch.compiler.is_compiling() or torch.jit.is_scripting() or _dispatch_mode_active():
        return False
    if not group["params"]:
        return True
    flags = update.flags(group)
    keys = update.state_keys(group, optimizer)
    buckets = _buckets(optimizer, group, update, keys)
    if buckets is None:
        return False
    plans = []
    for bucket in buckets:
        if not _ready(update, flags, len(keys), bucket.params[0]):
            return False
        plan = _plan_grads(bucket)
        if plan is None:
            return False
        plans.append((bucket, *plan))
    for bucket, present, foreign in plans:
        if present:
            _step_bucket(optimizer, group, update, flags, bucket, present, foreign)
    return True


def _dispatch_mode_active() -> bool:
    """A Python dispatch mode (a FLOP or traffic counter, a debugging mode) is active: compiled
    code cannot run under one, and the foreach path shows it every operation."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    return _get_current_dispatch_mode() is not None


def _supported(p: Tensor) -> bool:
    return p.is_floating_point() and not p.is_sparse and _dense(p)


def _buckets(optimizer, group: dict, update: FusedUpdate, keys) -> list[_Bucket] | None:
    """The group's buckets, rebuilt when its parameters, their storage, the optimizer's state
    (``load_state_dict`` replaces it) or the set of state keys changed; ``None`` if a parameter
    cannot take the fused path."""
    cache = optimizer.__dict__.setdefault("_optlib_fused", {})
    params = group["params"]
    entry = cache.get(id(group))
    if (
        entry is not None
        and entry["group"] is group
        and entry["state"] is optimizer.state
        and entry["ids"] == list(map(id, params))
        and all(b.state_keys == keys for b in entry["buckets"])
        and all(b.param_ptrs == [p.data_ptr() for p in b.params] for b in entry["buckets"])
    ):
        return entry["buckets"]
    if not all(_supported(p) for p in params):
        return None
    kinds: dict[tuple, list[Tensor]] = {}
    for p in params:
        kinds.setdefault((p.device, p.dtype), []).append(p)
    buckets = [_build(optimizer, ps, update, keys) for ps in kinds.values()]
    cache[id(group)] = dict(
        group=group, state=optimizer.state, ids=list(map(id, params)), buckets=buckets
    )
    return buckets


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs ``[i, j)`` of the sorted ``indices``."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _step_bucket(optimizer, group, update, flags, bucket: _Bucket, present, foreign) -> None:
    fresh = [] if all(bucket.has_state) else [i for i in present if not bucket.has_state[i]]
    for i in fresh:  # a parameter's first step: its state starts at the initial values
        a, b = bucket.offsets[i], bucket.ends[i]
        for key, init in bucket.state_keys:
            bucket.state_flat[key][a:b].fill_(init)
        for key, init in update.counters:
            bucket.counter_flat[key][i] = init
        _point_state(optimizer, bucket, update, i)
    _gather_grads(bucket, foreign)
    n = len(bucket.params)
    everyone = len(present) == n
    keys = update.advance(bucket.counter_flat, [(0, n)] if everyone else _runs(present), group)
    first = set(fresh) if update.uses_fresh else set()
    segments: list[list] = []  # [first index, end index, (counter key, first step)]
    if everyone and not first and (keys is None or keys.count(keys[0]) == n):
        segments.append([0, n, (keys[0] if keys is not None else None, False)])
    for i in present if not segments else ():
        key = (keys[i] if keys is not None else None, i in first)
        if segments and segments[-1][1] == i and segments[-1][2] == key:
            segments[-1][1] = i + 1
        else:
            segments.append([i, i + 1, key])
    flat = bucket.param_flat
    dtype = scalar_dtype(flat.dtype)
    compiled = _direct.get(_kernel_key(update, flags, flat))
    if compiled is None:
        compiled = compiled_kernel(update, flags)
    buffers = [flat, bucket.grad_flat] + [bucket.state_flat[k] for k, _ in bucket.state_keys]
    for i, j, key in segments:
        a, b = bucket.offsets[i], bucket.ends[j - 1]
        if b == a:
            continue
        s = _scalars(bucket, update.scalars(group, key), dtype)
        args = buffers if b - a == flat.numel() else [t[a:b] for t in buffers]
        if b - a < 2:  # dynamic shapes specialise sizes 0 and 1: run those uncompiled
            update.kernel(s, *args, **update.flag_values(flags))
        else:
            compiled(s, *args)


def _scalars(bucket: _Bucket, values: list[float], dtype: torch.dtype) -> Tensor:
    """The tensor of a segment's scalars; the last one is reused while they do not change
    (SGD, Adagrad without ``lr_decay``, Lion, RMSprop with constant hyperparameters): one
    allocation, or on a GPU one host-to-device copy, fewer per step."""
    last, s = bucket.last_scalars
    if s is None or last != values:
        s = torch.tensor(values, dtype=dtype, device=bucket.param_flat.device)
        bucket.last_scalars = (values, s)
    return s


# --- what an optimizer tells the fused path ----------------------------------------------------


class FusedUpdate:
    """One optimizer's update on the fused path (the subclasses are in :mod:`._fused_updates`).

    * ``kernel(s, theta, g, *state, **flags)``: the element-wise update, in place, on flat
      buffers; ``s`` holds the per-step scalars in the order :meth:`scalars` returns them;
    * :meth:`state_keys`: the per-element state, as ``(key, initial value)``, in kernel order;
    * ``counters``: per-parameter 0-d counters (torch's ``step``), as ``(key, initial value)``;
    * :meth:`flags`: the static switches, named by ``flag_names`` (one compiled kernel each);
    * :meth:`advance`: move the counters of the parameters that have a gradient and return each
      parameter's key (parameters with equal keys share a kernel call);
    * :meth:`scalars`: the scalars of one such segment, from the group and the key
      ``(counter key, first step)``: the counter key is what :meth:`advance` returned for the
      segment's parameters (the step count, by default), and the flag says whether it is their
      first step (only when ``uses_fresh``).
    """

    name = "update"
    flag_names: tuple[str, ...] = ()
    counters: tuple[tuple[str, float], ...] = (("step", 0.0),)
    n_scalars = 0
    uses_fresh = False

    kernel: Callable

    def flag_values(self, flags: tuple) -> dict[str, bool]:
        return dict(zip(self.flag_names, flags))

    def flags(self, group: dict) -> tuple:
        return ()

    def state_keys(self, group: dict, optimizer) -> tuple[tuple[str, float], ...]:
        raise NotImplementedError

    def advance(self, counters: dict[str, Tensor], runs, group: dict) -> list | None:
        """``step += 1`` for the parameters in ``runs``; the key is the new step (a float)."""
        if "step" not in counters:
            return None
        steps = counters["step"]
        if runs == [(0, len(steps))]:
            steps.add_(1)
        else:
            for i, j in runs:
                steps[i:j].add_(1)
        return steps.tolist()

    def scalars(self, group: dict, key: Key) -> list[float]:
        raise NotImplementedError


class KeepsDispatch:
    """Mixin for the optimizers with a fused path: ``load_state_dict`` keeps the optimizer's own
    ``foreach``/``fused`` switches.

    torch.optim restores every param-group entry from the checkpoint, so loading a foreach
    checkpoint into ``Adam(fused=True)`` silently turns the fused path off (and loading a fused
    one turns it on). Here how an optimizer computes is its constructor's choice, and what a
    checkpoint carries is state and hyperparameters: a run resumes on the path it was built
    with, whichever path wrote the checkpoint.
    """

    def load_state_dict(self, state_dict: dict) -> None:
        switches = [(g.get("foreach"), g.get("fused")) for g in self.param_groups]
        super().load_state_dict(state_dict)  # type: ignore[misc]
        for group, (foreach, fused) in zip(self.param_groups, switches):  # type: ignore[attr-defined]
            group["foreach"], group["fused"] = foreach, fused
