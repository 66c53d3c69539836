"""Step time of every element-wise optimizer, on every path, against the memory floor.

An optimizer step is memory-bound: it reads every parameter, gradient and state element and
writes back the parameter and the state, so it cannot take less than

    floor = bytes per step / bandwidth,   bytes per step = (3 + 2k) x itemsize x parameters

for an update with ``k`` state tensors per parameter (SGD with momentum, Adagrad, RMSprop and
Lion keep one: 20 bytes per float32 parameter; Adam, AdamW, NAdam and RAdam two: 28 bytes).
The bandwidth is measured in the same run, on buffers as large as the step's working set, as
the best of three streaming kernels (``copy_``, an in-place scale, an in-place add; a plain copy
alone pays for its destination's cache lines being read before they are written, which the
in-place optimizer kernels do not, so it would put the floor above what the kernels reach).

For each optimizer (SGD with momentum, Adam, AdamW, Adagrad, RMSprop, NAdam, RAdam, Lion), each
size (``--sizes``, default 1M and 10M float32 parameters in 100 tensors of seeded random sizes,
with fixed random gradients) and each thread count (``--threads``, default 1 and 2), the paths

* ``torch foreach``: ``torch.optim.<name>(foreach=True)`` (Lion: not in torch),
* ``torch fused``: ``torch.optim.<name>(fused=True)`` (SGD, Adam, AdamW, Adagrad),
* ``optlib foreach`` and ``optlib fused`` (optlib's compiled kernel, :mod:`optlib.optim._fused`),

and the three streaming kernels are timed *interleaved*: after ``--warmup`` untimed calls of
each (the fused path compiles in its first), ``--rounds`` rounds call each once, the order
reversed every other round, so drift of a shared machine hits all alike. The optimizers are
built afresh ``--repeats`` times (default 4), each time in an order rotated by one, and the rounds
are split among the builds: on this project's machine a step's time depended on when its
buffers were allocated (at 10M parameters each optimizer built later stepped faster, the fourth
about 10 % faster than the first, whichever library it came from), so one fixed order would
favour the path built last. The table reports
medians, each path's share of the floor, and the ratio of optlib fused to torch fused (to
torch foreach where torch has no fused kernel; to optlib foreach for Lion), PASS when it is at
most ``--target`` (1.0).

``python -m optlib.bench steps [--sizes 1M 10M] [--threads 1 2] [--rounds 20]
[--optimizers Adam AdamW] [--json PATH]``. A progress bar goes to stderr, tables to stdout;
``--model-table`` adds every optimizer's step time relative to AdamW on one model
(:mod:`optlib.bench.model_steps`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TextIO

import torch
from torch import Tensor

import optlib

TARGET = 1.0  # optlib fused may take at most this many times the reference path's step time
REPEATS = 4  # fresh builds of the optimizers per measurement, each in another order
N_TENSORS = 100

#: The element-wise optimizers and the hyperparameters they are timed with (both libraries).
CONFIGS: dict[str, dict] = {
    "SGD": dict(lr=1e-3, momentum=0.9),
    "Adam": dict(lr=1e-3),
    "AdamW": dict(lr=1e-3),
    "Adagrad": dict(lr=1e-2),
    "RMSprop": dict(lr=1e-3),
    "NAdam": dict(lr=1e-3),
    "RAdam": dict(lr=1e-3),
    "Lion": dict(lr=1e-4),
}
TORCH_FUSED = ("SGD", "Adam", "AdamW", "Adagrad")  # torch 2.13 has a fused kernel for these
PATHS = ("torch foreach", "torch fused", "optlib foreach", "optlib fused")
STREAMS = ("copy", "scale", "add")


def available(names: list[str] | None = None) -> list[str]:
    """The optimizers of ``CONFIGS`` (or of ``names``) that optlib exports, in order."""
    names = list(CONFIGS) if names is None else names
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise ValueError(f"no step benchmark for {unknown}; choose from {list(CONFIGS)}")
    return [n for n in names if n in optlib.__all__]


def state_tensors(name: str, **hyper: object) -> int:
    """``k``, the state tensors per parameter that ``name``'s update reads and writes (with
    ``hyper`` over the benchmark's hyperparameters), read from optlib's fused update."""
    opt = getattr(optlib, name)([torch.zeros(1)], **{**CONFIGS[name], **hyper})
    update = _fused_update(name)
    return len(update.state_keys(opt.param_groups[0], opt))


def bytes_per_param(name: str, dtype: torch.dtype = torch.float32, **hyper: object) -> int:
    """Bytes one step moves per parameter: read the parameter, its gradient and ``k`` state
    elements, write the parameter and the state back, :math:`(3 + 2k)` elements."""
    return (3 + 2 * state_tensors(name, **hyper)) * torch.empty((), dtype=dtype).element_size()


def _fused_update(name: str):
    from optlib.optim import _fused_updates as U

    return {
        "SGD": U.SGD_UPDATE,
        "Adam": U.ADAM_UPDATE,
        "AdamW": U.ADAM_UPDATE,
        "Adagrad": U.ADAGRAD_UPDATE,
        "RMSprop": U.RMSPROP_UPDATE,
        "NAdam": U.NADAM_UPDATE,
        "RAdam": U.RADAM_UPDATE,
        "Lion": U.LION_UPDATE,
    }[name]


def path_factories(name: str) -> dict[str, Callable[[list[Tensor]], torch.optim.Optimizer]]:
    """The paths that exist for ``name``, each a function of the parameters."""
    kw = CONFIGS[name]
    paths: dict[str, Callable] = {}
    if hasattr(torch.optim, name):
        paths["torch foreach"] = lambda ps: getattr(torch.optim, name)(ps, foreach=True, **kw)
        if name in TORCH_FUSED:
            paths["torch fused"] = lambda ps: getattr(torch.optim, name)(ps, fused=True, **kw)
    paths["optlib foreach"] = lambda ps: getattr(optlib, name)(ps, foreach=True, **kw)
    paths["optlib fused"] = lambda ps: getattr(optlib, name)(ps, fused=True, **kw)
    return paths


def reference_path(name: str) -> str:
    """What optlib fused is compared with: torch fused, else torch foreach, else optlib's."""
    if name in TORCH_FUSED:
        return "torch fused"
    return "torch foreach" if hasattr(torch.optim, name) else "optlib foreach"


def build_orders(paths: list[str], repeats: int) -> list[list[str]]:
    """The order in which each of ``repeats`` builds creates the paths' optimizers: rotated by
    one each time, so that every path is built first, second, ... equally often when
    ``repeats`` is a multiple of their number."""
    return [paths[r % len(paths) :] + paths[: r % len(paths)] for r in range(repeats)]


# --- parameters ------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``"10M"`` -> 10_000_000; also ``k`` and plain integers."""
    scale = {"k": 10**3, "K": 10**3, "m": 10**6, "M": 10**6}
    try:
        value = float(text[:-1]) * scale[text[-1]] if text[-1] in scale else float(text)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"invalid size {text!r}") from None
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: an integer >= 1")
    return int(value)


def format_size(n: int) -> str:
    for unit, scale in (("M", 10**6), ("k", 10**3)):
        if n >= scale and n % (scale // 10) == 0:
            return f"{n / scale:g}{unit}"
    return str(n)


def tensor_sizes(total: int, n_tensors: int = N_TENSORS, *, seed: int = 0) -> list[int]:
    """``n_tensors`` random positive sizes summing to ``total`` (seeded; they differ by up to
    about 50x, like the weights and biases of a network)."""
    n_tensors = min(n_tensors, total)
    g = torch.Generator().manual_seed(seed)
    weights = torch.exp(4.0 * torch.rand(n_tensors, generator=g, dtype=torch.float64))
    sizes = [1 + int(w) for w in (weights / weights.sum() * (total - n_tensors)).floor()]
    sizes[0] += total - sum(sizes)
    return sizes


def make_params(total: int, n_tensors: int = N_TENSORS, *, seed: int = 0) -> list[Tensor]:
    """float32 parameters of ``tensor_sizes`` sizes, each with a fixed random gradient."""
    g = torch.Generator().manual_seed(seed)
    params = []
    for n in tensor_sizes(total, n_tensors, seed=seed):
        p = torch.randn(n, generator=g).requires_grad_()
        p.grad = torch.randn(n, generator=g)
        params.append(p)
    return params


def clone_params(params: list[Tensor]) -> list[Tensor]:
    out = []
    for p in params:
        q = p.detach().clone().requires_grad_()
        q.grad = p.grad.clone()
        out.append(q)
    return out


# --- timing ------------------------------------------------------------------------------------


def interleaved_times(
    steps: dict[str, Callable[[], object]], *, warmup: int, rounds: int
) -> dict[str, list[float]]:
    """Seconds per call of each function in ``steps``, measured round-robin: ``warmup``
    untimed calls of each, then ``rounds`` rounds calling each once, the order reversed every
    other round so neither always runs first."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def stream_kernels(n_bytes: int, dtype: torch.dtype = torch.float32) -> dict[str, tuple]:
    """Streaming kernels on a working set of ``n_bytes``, as ``{name: (call, bytes moved)}``:
    ``copy`` (``dst.copy_(src)``, each half the set), ``scale`` (``x.mul_(c)`` in place on all
    of it) and ``add`` (``x.add_(y)`` in place, each half the set)."""
    item = torch.empty((), dtype=dtype).element_size()
    half = max(n_bytes // (2 * item), 1)
    src, dst = torch.randn(half, dtype=dtype), torch.empty(half, dtype=dtype)
    whole = torch.randn(2 * half, dtype=dtype)
    factor = 1.0 + 2.0**-20  # stays finite over thousands of calls
    return {
        "copy": (lambda: dst.copy_(src), 2 * half * item),
        "scale": (lambda: whole.mul_(factor), 4 * half * item),
        "add": (lambda: dst.add_(src), 3 * half * item),
    }


@dataclass
class Traffic:
    """What one call asked the dispatcher to do: ``ops`` operations that move data (views are
    not counted) and the bytes they read and write, every tensor operand counted once per
    operation (an in-place operand as read and written, a new result as written). It is the
    traffic of the code as written, before any cache helps: an upper bound for the real one."""

    ops: int
    kernels: int  # the operations on tensors of more than one element (not step counters)
    bytes_read: int
    bytes_written: int

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written


def traffic(call: Callable[[], object]) -> Traffic:
    """Count the operations and bytes of ``call()`` under a dispatch mode (:class:`Traffic`).

    optlib's fused path runs compiled code, which no dispatch mode can see: under one it takes
    the foreach path, so count it from its kernel's operands instead (:func:`bytes_per_param`).
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    def nbytes(value: object) -> int:
        leaves = tree_flatten(value)[0]
        return sum(t.numel() * t.element_size() for t in leaves if isinstance(t, Tensor))

    class Counter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops = self.kernels = self.read = self.written = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            schema = func._schema
            returns = schema.returns
            if returns and all(r.alias_info is not None and not r.alias_info.is_write
                               for r in returns):  # fmt: skip
                return out  # a view: nothing moves
            self.ops += 1
            values = list(args) + [kwargs.get(a.name) for a in schema.arguments[len(args) :]]
            big = False
            for arg, value in zip(schema.arguments, values):
                leaves = tree_flatten(value)[0]
                big = big or any(isinstance(t, Tensor) and t.numel() > 1 for t in leaves)
                n = nbytes(value)
                self.read += n
                if arg.alias_info is not None and arg.alias_info.is_write:
                    self.written += n
            if any(r.alias_info is None for r in returns):
                self.written += nbytes(out)
            self.kernels += big
            return out

    with Counter() as counter:
        call()
    return Traffic(counter.ops, counter.kernels, counter.read, counter.written)


@dataclass
class Row:
    """One optimizer at one size and thread count (times in milliseconds, medians)."""

    optimizer: str
    size: int
    threads: int
    n_tensors: int
    bytes_per_param: int
    bandwidth_gbs: float  # best streaming kernel, GB/s
    floor_ms: float  # bytes per step / bandwidth
    times_ms: dict[str, float]  # path -> median step time
    shares: dict[str, float]  # path -> floor / time
    reference: str  # the path optlib fused is compared with
    ratio: float  # optlib fused / reference
    passed: bool
    stream_gbs: dict[str, float] = field(default_factory=dict)


def time_builds(
    factories: dict[str, Callable[[list[Tensor]], torch.optim.Optimizer]],
    params: list[Tensor],
    stream_bytes: int,
    *,
    warmup: int,
    rounds: int,
    repeats: int = REPEATS,
) -> tuple[dict[str, list[float]], dict[str, torch.optim.Optimizer], dict[str, tuple]]:
    """Step times of the optimizers ``factories`` build on copies of ``params``, and of the
    streaming kernels on ``stream_bytes``, interleaved (:func:`interleaved_times`), in
    ``repeats`` builds whose orders :func:`build_orders` rotates, the ``rounds`` split among
    them. Returns the seconds of every call (``"stream copy"`` etc. for the kernels), pooled
    over the builds; the optimizers of the last build (each has taken ``warmup`` plus its share
    of the rounds in steps); and the last build's streaming kernels (:func:`stream_kernels`)."""
    times: dict[str, list[float]] = {}
    opts: dict = {}
    for order in build_orders(list(factories), repeats):
        opts = calls = streams = {}  # the last build's buffers go before the next is made
        opts = {path: factories[path](clone_params(params)) for path in order}
        streams = stream_kernels(stream_bytes)
        calls = {path: opts[path].step for path in factories}
        calls.update({f"stream {s}": fn for s, (fn, _) in streams.items()})
        each = interleaved_times(calls, warmup=warmup, rounds=-(-rounds // repeats))
        for call, t in each.items():
            times.setdefault(call, []).extend(t)
    return times, {path: opts[path] for path in factories}, streams


def measure(
    name: str,
    size: int,
    *,
    threads: int,
    rounds: int = 20,
    warmup: int = 3,
    repeats: int = REPEATS,
    n_tensors: int = N_TENSORS,
    target: float = TARGET,
    seed: int = 0,
) -> Row:
    """Time every path of ``name`` and the streaming kernels, interleaved, in ``repeats``
    builds of the optimizers, each in another order (see the module)."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        base = make_params(size, n_tensors, seed=seed)
        factories = path_factories(name)
        per_param = bytes_per_param(name)
        k = state_tensors(name)
        item = 4
        times, _, streams = time_builds(
            factories, base, (2 + k) * item * size, warmup=warmup, rounds=rounds, repeats=repeats
        )
        del base
    finally:
        torch.set_num_threads(old_threads)
    med = {path: statistics.median(t) for path, t in times.items()}
    stream_gbs = {s: nbytes / med[f"stream {s}"] / 1e9 for s, (_, nbytes) in streams.items()}
    bandwidth = max(stream_gbs.values())
    floor = per_param * size / (bandwidth * 1e9)
    times_ms = {path: 1e3 * med[path] for path in factories}
    reference = reference_path(name)
    ratio = times_ms["optlib fused"] / times_ms[reference]
    return Row(
        optimizer=name,
        size=size,
        threads=threads,
        n_tensors=min(n_tensors, size),
        bytes_per_param=per_param,
        bandwidth_gbs=bandwidth,
        floor_ms=1e3 * floor,
        times_ms=times_ms,
        shares={path: 1e3 * floor / t for path, t in times_ms.items()},
        reference=reference,
        ratio=ratio,
        passed=ratio <= target,
        stream_gbs=stream_gbs,
    )


class ProgressBar:
    """One self-overwriting line on ``stream``: a bar, the job and the time left."""

    def __init__(self, total: int, stream: TextIO | None) -> None:
        self.total, self.stream, self.start, self.done = total, stream, time.perf_counter(), 0

    def show(self, label: str) -> None:
        if self.stream is None:
            return
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        eta = f", ~{left:.0f} s left" if self.done else ""
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {label:<28}"
            f" ({elapsed:.0f} s{eta})"
        )
        self.stream.flush()

    def step(self, label: str) -> None:
        self.done += 1
        self.show(label)
        if self.done == self.total and self.stream is not None:
            self.stream.write("\n")
            self.stream.flush()


def run_benchmark(
    names: list[str],
    sizes: list[int],
    threads: list[int],
    *,
    rounds: int = 20,
    warmup: int = 3,
    repeats: int = REPEATS,
    n_tensors: int = N_TENSORS,
    target: float = TARGET,
    seed: int = 0,
    progress: TextIO | None = None,
) -> list[Row]:
    """Every (thread count, size, optimizer), in that order."""
    jobs = [(t, size, name) for t in threads for size in sizes for name in names]
    bar = ProgressBar(len(jobs), progress)
    rows = []
    for t, size, name in jobs:
        bar.show(f"{name} {format_size(size)} {t}T")
        rows.append(
            measure(
                name,
                size,
                threads=t,
                rounds=rounds,
                warmup=warmup,
                repeats=repeats,
                n_tensors=n_tensors,
                target=target,
                seed=seed,
            )  # fmt: skip
        )
        bar.step(f"{name} {format_size(size)} {t}T")
    return rows


def machine() -> dict[str, object]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "load_average": list(load) if load else None,
    }


def format_table(
    rows: list[Row], *, rounds: int | None = None, target: float = TARGET, repeats: int = 1
) -> str:
    """One block per (thread count, size): each path's median and share of the floor."""
    m = machine()
    how = f"median of {rounds} interleaved rounds" if rounds else "medians"
    if rounds and repeats > 1:
        how += f" in {repeats} builds"
    lines = [
        f"Step time vs the memory floor (float32, {how}; torch {m['torch']}, "
        f"{m['cpu']} {m['capability']}; ms and share of the floor)"
    ]
    blocks: dict[tuple[int, int], list[Row]] = {}
    for r in rows:
        blocks.setdefault((r.threads, r.size), []).append(r)
    for (t, size), block in blocks.items():
        bw = statistics.median(r.bandwidth_gbs for r in block)
        lines += [
            "",
            f"{format_size(size)} parameters in {block[0].n_tensors} tensors, {t} thread(s); "
            f"streaming bandwidth {bw:.1f} GB/s",
        ]
        head = f"{'optimizer':<9} {'B/p':>3} {'floor':>7}"
        head += "".join(f" {p:>17}" for p in PATHS)
        head += f"  {'fused/ref':>9} {'ref':<14}"
        lines += [head, "-" * len(head)]
        for r in block:
            cells = []
            for p in PATHS:
                if p in r.times_ms:
                    cells.append(f" {r.times_ms[p]:>9.3f} ({100 * r.shares[p]:>3.0f}%)")
                else:
                    cells.append(f" {'-':>17}")
            mark = "PASS" if r.passed else "FAIL"
            lines.append(
                f"{r.optimizer:<9} {r.bytes_per_param:>3} {r.floor_ms:>7.3f}"
                + "".join(cells)
                + f"  {r.ratio:>8.2f}x {r.reference:<14} {mark}"
            )
    lines.append("")
    lines.append(
        f"PASS: optlib fused / ref <= {target:g} (ref: torch fused where torch has one, else "
        "torch foreach; Lion: optlib foreach)"
    )
    return "\n".join(lines)


def model_table() -> str | None:
    """Every optimizer relative to AdamW on one model, if that module is present."""
    try:
        from optlib.bench import model_steps
    except ImportError:
        return None
    return model_steps.model_step_tables()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=parse_size,
        default=[10**6, 10**7],
        metavar="N",
        help="total parameters per run, e.g. 1M 10M (default)",
    )
    parser.add_argument(
        "--threads",
        nargs="+",
        type=int,
        default=[1, 2],
        metavar="T",
        help="torch intra-op thread counts (default 1 2)",
    )
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=REPEATS,
        help=f"fresh builds of the optimizers, each in another order; the rounds are split among "
        f"them (default {REPEATS})",
    )
    parser.add_argument(
        "--optimizers",
        nargs="+",
        choices=list(CONFIGS),
        metavar="NAME",
        help=f"subset of {', '.join(CONFIGS)} (default: all)",
    )
    parser.add_argument("--tensors", type=int, default=N_TENSORS, help="tensors per run (100)")
    parser.add_argument("--target", type=float, default=TARGET, help="PASS threshold (1.0)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument(
        "--model-table", action="store_true", help="also time every optimizer relative to AdamW"
    )
    parser.add_argument("--no-model-table", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--strict", action="store_true", help="exit with status 1 if any row FAILs")


def main(args: argparse.Namespace) -> int:
    counts = (args.rounds, args.warmup, args.repeats, args.tensors, min(args.threads))
    if min(counts) < 1:
        raise SystemExit("--rounds, --warmup, --repeats, --tensors and --threads must be >= 1")
    names = available(args.optimizers)
    started = machine()
    rows = run_benchmark(
        names,
        args.sizes,
        args.threads,
        rounds=args.rounds,
        warmup=args.warmup,
        repeats=args.repeats,
        n_tensors=args.tensors,
        target=args.target,
        progress=sys.stderr,
    )
    table = format_table(rows, rounds=args.rounds, target=args.target, repeats=args.repeats)
    print(table, flush=True)
    second = model_table() if args.model_table else None
    if second:
        print()
        print(second)
    if args.json:
        result = {
            "machine": started,
            "machine_after": machine(),
            "target": args.target,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "rows": [asdict(r) for r in rows],
            "model_table": second,
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 1 if args.strict and not all(r.passed for r in rows) else 0
