"""Step time of optlib against torch.optim, then of every optimizer against AdamW.

Table 1 (optlib vs torch.optim): for each element-wise optimizer that both libraries have
(SGD with momentum, Adagrad, RMSprop, Adam, AdamW, NAdam, RAdam; those not yet exported by optlib
are skipped), both built with ``foreach=True`` on the same parameters: ``--sizes`` float32
parameters in total (default 1M and 10M) spread over 100 tensors of random, seeded sizes, with
fixed random gradients, on one intra-op thread unless ``--threads`` says otherwise (with more
threads than free cores, OpenMP's waits swamp the step time on a shared machine). After
``--warmup`` untimed steps of each, ``--rounds`` rounds each time one ``step()`` of torch and
one of optlib, alternating which goes first, so drift of a shared machine hits both alike; the
table reports the medians, their ratio, and PASS when optlib is within ``--target`` (1.25x) of
torch.

Table 2 (every optimizer relative to AdamW on one model, and refresh-step costs) comes from
:mod:`optlib.bench.model_steps`; ``--no-model-table`` skips it.

``python -m optlib.bench steps [--sizes 1M 10M] [--rounds 20] [--optimizers Adam AdamW]
[--json PATH]``. Progress goes to stderr, tables to stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TextIO

import torch
from torch import Tensor

import optlib

TARGET = 1.25  # optlib may take at most this many times torch's step time
N_TENSORS = 100

#: The element-wise optimizers of both libraries, and the hyperparameters they are timed with.
CONFIGS: dict[str, dict] = {
    "SGD": dict(lr=1e-3, momentum=0.9),
    "Adagrad": dict(lr=1e-2),
    "RMSprop": dict(lr=1e-3),
    "Adam": dict(lr=1e-3),
    "AdamW": dict(lr=1e-3),
    "NAdam": dict(lr=1e-3),
    "RAdam": dict(lr=1e-3),
}


def available(names: list[str] | None = None) -> list[str]:
    """The optimizers of ``CONFIGS`` (or of ``names``) that optlib exports now, in order."""
    names = list(CONFIGS) if names is None else names
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise ValueError(f"no step benchmark for {unknown}; choose from {list(CONFIGS)}")
    return [n for n in names if n in optlib.__all__]


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


@dataclass
class Row:
    """One line of table 1 (times in milliseconds, medians over the rounds)."""

    optimizer: str
    size: int
    n_tensors: int
    torch_ms: float
    optlib_ms: float
    ratio: float  # optlib / torch
    passed: bool  # ratio <= target


def compare_with_torch(
    names: list[str],
    sizes: list[int],
    *,
    rounds: int = 20,
    warmup: int = 3,
    n_tensors: int = N_TENSORS,
    target: float = TARGET,
    seed: int = 0,
    progress: TextIO | None = None,
) -> list[Row]:
    """Table 1: optlib's ``step()`` against torch.optim's, both ``foreach=True``; a line per
    measurement goes to ``progress`` (the command line passes stderr)."""
    rows = []
    jobs = [(size, name) for size in sizes for name in names]
    for k, (size, name) in enumerate(jobs, 1):
        base = make_params(size, n_tensors, seed=seed)
        kw = dict(CONFIGS[name], foreach=True)
        opts = {
            "torch": getattr(torch.optim, name)(clone_params(base), **kw),
            "optlib": getattr(optlib, name)(clone_params(base), **kw),
        }
        del base
        times = interleaved_times(
            {impl: opt.step for impl, opt in opts.items()}, warmup=warmup, rounds=rounds
        )
        torch_ms, optlib_ms = (1e3 * statistics.median(times[impl]) for impl in opts)
        ratio = optlib_ms / torch_ms
        rows.append(
            Row(name, size, min(n_tensors, size), torch_ms, optlib_ms, ratio, ratio <= target)
        )
        if progress is not None:
            print(
                f"[{k}/{len(jobs)}] {name} {format_size(size)}: torch {torch_ms:.2f} ms, "
                f"optlib {optlib_ms:.2f} ms ({ratio:.2f}x)",
                file=progress,
                flush=True,
            )
    return rows


def machine() -> dict[str, object]:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }


def format_torch_table(
    rows: list[Row], *, target: float = TARGET, rounds: int | None = None
) -> str:
    """Table 1 as text."""
    m = machine()
    how = f"median of {rounds} interleaved steps" if rounds else "median step"
    lines = [
        f"optlib vs torch.optim step time (foreach=True, float32, {how}; torch {m['torch']}, "
        f"{m['threads']} threads)",
        f"{'optimizer':<10} {'size':>6} {'torch ms':>10} {'optlib ms':>10} {'ratio':>7}  "
        f"target <= {target:g}x",
    ]
    lines.append("-" * len(lines[-1]))
    for r in rows:
        mark = "PASS" if r.passed else "FAIL"
        lines.append(
            f"{r.optimizer:<10} {format_size(r.size):>6} {r.torch_ms:>10.3f} {r.optlib_ms:>10.3f} "
            f"{r.ratio:>6.2f}x  {mark}"
        )
    return "\n".join(lines)


def model_table() -> str | None:
    """Table 2 (every optimizer relative to AdamW on one model), if that module is present."""
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
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument(
        "--optimizers",
        nargs="+",
        choices=list(CONFIGS),
        metavar="NAME",
        help=f"subset of {', '.join(CONFIGS)} (default: all that optlib exports)",
    )
    parser.add_argument("--tensors", type=int, default=N_TENSORS, help="tensors per run (100)")
    parser.add_argument("--target", type=float, default=TARGET, help="PASS threshold (1.25)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: steadiest on a shared CPU; 0: torch's default)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument(
        "--no-model-table", action="store_true", help="skip table 2 (relative to AdamW)"
    )
    parser.add_argument("--strict", action="store_true", help="exit with status 1 if any row FAILs")


def main(args: argparse.Namespace) -> int:
    if args.rounds < 1 or args.warmup < 0 or args.tensors < 1:
        raise SystemExit("--rounds and --tensors must be >= 1, --warmup >= 0")
    names = available(args.optimizers)
    old_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rows = compare_with_torch(
            names,
            args.sizes,
            rounds=args.rounds,
            warmup=args.warmup,
            n_tensors=args.tensors,
            target=args.target,
            progress=sys.stderr,
        )
        print(format_torch_table(rows, target=args.target, rounds=args.rounds), flush=True)
    finally:
        torch.set_num_threads(old_threads)
    second = None if args.no_model_table else model_table()
    if second:
        print()
        print(second)
    if args.json:
        result = {
            "machine": machine(),
            "target": args.target,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "rows": [asdict(r) for r in rows],
            "model_table": second,
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 1 if args.strict and not all(r.passed for r in rows) else 0
