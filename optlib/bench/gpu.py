"""The optimizer step on a GPU: every path against the copy-bandwidth floor, as JSON.

``python -m optlib.bench gpu`` times one optimizer's ``step()`` (AdamW unless ``--optimizer``
says otherwise) on ``--params`` float32 parameters (default 100M) in ``--tensors`` tensors
(default 200, of seeded random sizes), with fixed random gradients, on the first CUDA device:

* ``torch for-loop``: ``torch.optim.<name>(foreach=False)``, one small kernel per line per tensor;
* ``torch foreach``: ``foreach=True``, one multi-tensor kernel per line;
* ``torch fused``: ``fused=True`` (where torch has a fused kernel);
* ``torch compiled``: ``torch.compile`` of the foreach step (inductor fuses the lines);
* ``optlib fused``: ``fused=True``, optlib's flat buffers and one compiled (Triton) kernel;

and three streaming kernels (copy, in-place scale, in-place add) on a working set as large as
the step's, whose best bandwidth gives the floor: bytes per step / bandwidth (28 bytes per
float32 parameter for AdamW). Calls are interleaved, the order reversed every other round,
each timed between two ``torch.cuda.synchronize()``; medians are reported with each path's
share of the floor, and written to ``--json`` (default ``gpu-steps.json``) with the device's
name, torch and CUDA versions.

Without a CUDA device the command refuses to run unless ``--dry-run`` is given: the dry run
takes the same code path on the CPU with small defaults (200k parameters in 20 tensors, one
thread), so that the script is tested where no GPU is (``tests/test_bench_gpu.py``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor

import optlib
from optlib.bench.steps import (
    CONFIGS,
    ProgressBar,
    bytes_per_param,
    format_size,
    parse_size,
    state_tensors,
    tensor_sizes,
)

PATHS = ("torch for-loop", "torch foreach", "torch fused", "torch compiled", "optlib fused")


def make_params(total: int, n_tensors: int, device: torch.device, *, seed: int = 0) -> list[Tensor]:
    """float32 parameters of :func:`~optlib.bench.steps.tensor_sizes` sizes on ``device``, each
    with a fixed random gradient."""
    g = torch.Generator(device=device).manual_seed(seed)
    params = []
    for n in tensor_sizes(total, n_tensors, seed=seed):
        p = torch.randn(n, generator=g, device=device).requires_grad_()
        p.grad = torch.randn(n, generator=g, device=device)
        params.append(p)
    return params


def clone(params: list[Tensor]) -> list[Tensor]:
    out = []
    for p in params:
        q = p.detach().clone().requires_grad_()
        q.grad = p.grad.clone()
        out.append(q)
    return out


def path_steps(name: str, params: list[Tensor], paths: tuple[str, ...]) -> dict[str, Callable]:
    """A ``step`` for each path that exists for ``name`` (each on its own copy of ``params``)."""
    kw = CONFIGS[name]
    ref = getattr(torch.optim, name, None)
    steps: dict[str, Callable] = {}
    for path in paths:
        if path.startswith("torch") and ref is None:
            continue
        if path == "torch for-loop":
            steps[path] = ref(clone(params), foreach=False, **kw).step
        elif path == "torch foreach":
            steps[path] = ref(clone(params), foreach=True, **kw).step
        elif path == "torch fused":
            try:
                opt = ref(clone(params), fused=True, **kw)
            except (TypeError, RuntimeError):  # no fused kernel for this optimizer / device
                continue
            steps[path] = opt.step
        elif path == "torch compiled":
            opt = ref(clone(params), foreach=True, **kw)
            steps[path] = torch.compile(opt.step)
        elif path == "optlib fused":
            steps[path] = getattr(optlib, name)(clone(params), fused=True, **kw).step
        else:
            raise ValueError(f"unknown path {path!r}; choose from {PATHS}")
    return steps


def stream_kernels(n_bytes: int, device: torch.device) -> dict[str, tuple[Callable, int]]:
    """``copy``, in-place ``scale`` and in-place ``add`` on a working set of ``n_bytes``, as
    ``{name: (call, bytes moved)}`` (float32)."""
    half = max(n_bytes // 8, 1)
    src = torch.randn(half, device=device)
    dst = torch.empty(half, device=device)
    whole = torch.randn(2 * half, device=device)
    factor = 1.0 + 2.0**-20
    return {
        "copy": (lambda: dst.copy_(src), 8 * half),
        "scale": (lambda: whole.mul_(factor), 16 * half),
        "add": (lambda: dst.add_(src), 12 * half),
    }


def timed_rounds(
    calls: dict[str, Callable], *, warmup: int, rounds: int, sync: Callable[[], None],
    progress: ProgressBar | None = None,
) -> dict[str, list[float]]:  # fmt: skip
    """Interleaved rounds (order reversed every other round), each call between two syncs."""
    for _ in range(warmup):
        for call in calls.values():
            call()
        sync()
        if progress is not None:
            progress.step("warm-up")
    times: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            sync()
            t0 = time.perf_counter()
            calls[name]()
            sync()
            times[name].append(time.perf_counter() - t0)
        if progress is not None:
            progress.step(f"round {r + 1}")
    return times


def device_info(device: torch.device) -> dict[str, object]:
    info: dict[str, object] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            name=props.name,
            memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            triton=_triton_version(),
        )
    else:
        info.update(
            name=platform.processor() or platform.machine(), threads=torch.get_num_threads()
        )
    return info


def _triton_version() -> str | None:
    try:
        import triton

        return triton.__version__
    except ImportError:
        return None


def run(
    name: str = "AdamW",
    total: int = 10**8,
    n_tensors: int = 200,
    *,
    device: torch.device,
    rounds: int = 20,
    warmup: int = 3,
    paths: tuple[str, ...] = PATHS,
    progress=None,
) -> dict:
    """Time every path of ``name`` on ``device``; the result as a JSON-ready dict."""
    if device.type == "cuda":

        def sync() -> None:
            torch.cuda.synchronize(device)

    else:

        def sync() -> None:
            pass

    params = make_params(total, n_tensors, device)
    steps = path_steps(name, params, paths)
    del params
    k = state_tensors(name)
    streams = stream_kernels((2 + k) * 4 * total, device)
    calls = dict(steps)
    calls.update({f"stream {s}": fn for s, (fn, _) in streams.items()})
    bar = ProgressBar(warmup + rounds, progress)
    times = timed_rounds(calls, warmup=warmup, rounds=rounds, sync=sync, progress=bar)
    med = {path: statistics.median(t) for path, t in times.items()}
    stream_gbs = {s: nbytes / med[f"stream {s}"] / 1e9 for s, (_, nbytes) in streams.items()}
    bandwidth = max(stream_gbs.values())
    per_param = bytes_per_param(name)
    floor_ms = 1e3 * per_param * total / (bandwidth * 1e9)
    rows = {
        path: dict(ms=1e3 * med[path], share_of_floor=floor_ms / (1e3 * med[path]))
        for path in steps
    }
    return dict(
        optimizer=name,
        params=total,
        tensors=min(n_tensors, total),
        bytes_per_param=per_param,
        rounds=rounds,
        warmup=warmup,
        machine=device_info(device),
        stream_gbs=stream_gbs,
        bandwidth_gbs=bandwidth,
        floor_ms=floor_ms,
        paths=rows,
    )


def format_result(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"{result['optimizer']} step, {format_size(result['params'])} float32 parameters in "
        f"{result['tensors']} tensors on {m.get('name')} ({m['device']}), torch {m['torch']}; "
        f"median of {result['rounds']} interleaved rounds",
        f"bandwidth {result['bandwidth_gbs']:.1f} GB/s (best of copy/scale/add), "
        f"{result['bytes_per_param']} bytes per parameter: floor {result['floor_ms']:.3f} ms",
        f"{'path':<16} {'ms':>10} {'share of floor':>15}",
    ]
    for path, row in result["paths"].items():
        lines.append(f"{path:<16} {row['ms']:>10.3f} {100 * row['share_of_floor']:>14.0f}%")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--optimizer", default="AdamW", choices=list(CONFIGS))
    parser.add_argument(
        "--params", type=parse_size, default=None, help="total parameters (100M; dry run 200k)"
    )
    parser.add_argument("--tensors", type=int, default=None, help="tensors (200; dry run 20)")
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (3)")
    parser.add_argument(
        "--paths", nargs="+", choices=list(PATHS), default=list(PATHS), metavar="PATH",
        help="which paths to time (default: all)",
    )  # fmt: skip
    parser.add_argument("--json", metavar="PATH", default="gpu-steps.json", help="result file")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="no GPU needed: the same code on the CPU, small sizes, one thread",
    )


def main(args: argparse.Namespace) -> int:
    if args.dry_run:
        device = torch.device("cpu")
        total = args.params or 200_000
        n_tensors = args.tensors or 20
    else:
        if not torch.cuda.is_available():
            print(
                "python -m optlib.bench gpu needs a CUDA device (none found); "
                "--dry-run runs the same code on the CPU",
                file=sys.stderr,
            )
            return 2
        device = torch.device("cuda")
        total = args.params or 10**8
        n_tensors = args.tensors or 200
    if args.rounds < 1 or args.warmup < 1 or n_tensors < 1:
        raise SystemExit("--rounds, --warmup and --tensors must be >= 1")
    threads = torch.get_num_threads()
    if args.dry_run:
        torch.set_num_threads(1)
    try:
        result = run(
            args.optimizer,
            total,
            n_tensors,
            device=device,
            rounds=args.rounds,
            warmup=args.warmup,
            paths=tuple(args.paths),
            progress=sys.stderr,
        )
    finally:
        torch.set_num_threads(threads)
    result["dry_run"] = bool(args.dry_run)
    print(format_result(result))
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"written to {args.json}")
    return 0
