"""Step time of every optimizer relative to AdamW on one model (CPU), and the cost of the
preconditioner refreshes of Shampoo, SOAP and K-FAC (and Sophia's Hessian refresh).

Each optimizer trains a fresh seeded MLP (64→H→H→10, tanh, float32) on a fixed batch of digits
(scikit-learn's; without scikit-learn, as in a library-only install, a seeded synthetic batch of
the same shape, :func:`digits_batch`: step times do not depend on the pixel values);
after ``warmup`` untimed iterations, ``iterations`` iterations are timed one by one. An iteration
is ``zero_grad``, forward, backward, ``step`` and the optimizer's own extra work (K-FAC's
statistics in its hooks, Sophia's Hessian refresh); ``step()`` is also timed on its own. L-BFGS
runs one iteration per ``step`` (``max_iter=1``), whose closure does the forward and backward.
``Muon`` steps the weight matrices only (biases stay fixed); ``MuonWithAuxAdamW`` the whole
model (biases and the output layer by AdamW).

Refresh steps, by the optimizer's own step counter (iteration ``i`` counts from 0):
Shampoo (with Adam grafting) computes its inverse roots when its step ``i+1`` is a multiple of
``precondition_frequency`` (10 here; its default 1 refreshes every step); SOAP refreshes its
eigenbases when its Adam step ``i`` is a multiple of 10 (its first call is a no-op); K-FAC
updates its factors when ``i`` is a multiple of ``TCov`` and eigendecomposes them when it is a
multiple of ``TInv``; Sophia refreshes the Hessian estimate every 10th iteration.

``python -m optlib.bench steps`` prints these tables after the optlib-vs-torch table;
``python -m optlib.bench.model_steps`` prints them alone.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import optlib
from optlib.optim.muon import muon_param_groups
from optlib.optim.sophia import gnb_loss
from optlib.problems import digits, mlp

Batch = tuple[Tensor, Tensor]
EVERY = 10  # refresh period used for Shampoo, SOAP, K-FAC's TCov and Sophia's Hessian
TINV = 50  # K-FAC's eigendecomposition period


#: Where the benchmark batches come from (``digits_batch``), for the tables' captions.
DIGITS, SYNTHETIC = "scikit-learn digits", "synthetic digits-shaped data (no scikit-learn)"


def data_source() -> str:
    """:data:`DIGITS` when scikit-learn is installed (the ``book`` or ``notebooks`` extra),
    else :data:`SYNTHETIC`."""
    return DIGITS if importlib.util.find_spec("sklearn") is not None else SYNTHETIC


def digits_batch(rows: int, seed: int = 0) -> Batch:
    """The first ``rows`` training images of the digits (64 features, 10 classes), or without
    scikit-learn a seeded standard-normal batch of the same shape with random labels."""
    return _batch(rows, seed, data_source())


@functools.cache
def _batch(rows: int, seed: int, source: str) -> Batch:
    if source == SYNTHETIC:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(rows, 64, generator=g), torch.randint(0, 10, (rows,), generator=g)
    data = digits(seed=seed)
    return data.X_train[:rows], data.y_train[:rows]


def _model(hidden: int) -> nn.Sequential:
    return mlp(64, hidden, 10, depth=2, seed=0)


@dataclass
class Protocol:
    """How one optimizer is built and driven, and which iterations are refreshes."""

    build: Callable[[nn.Module], torch.optim.Optimizer]
    refresh: Callable[[int], str] | None = None  # iteration -> kind of special step, or ""
    closure: bool = False  # step(closure) does the forward and backward itself
    before_backward: Callable | None = None  # (opt, model, logits, i) -> None
    after_step: Callable | None = None  # (opt, model, batch, i) -> None


def _adamw(m):
    return optlib.AdamW(m.parameters(), lr=1e-3)


def _sophiag_after(opt, model, batch, i):
    if i % EVERY == EVERY - 1:
        opt.zero_grad()
        gnb_loss(model(batch[0])).backward()
        opt.update_hessian()


def _sophiah_after(opt, model, batch, i):
    if i % EVERY == EVERY - 1:
        opt.update_hessian(lambda: F.cross_entropy(model(batch[0]), batch[1]))


def _schedule_free(m):
    opt = optlib.AdamWScheduleFree(m.parameters())
    opt.train()
    return opt


def _kfac_refresh(i: int) -> str:
    if i % TINV == 0:
        return f"factors + eigh (TInv={TINV})"
    return f"factors (TCov={EVERY})" if i % EVERY == 0 else ""


PROTOCOLS: dict[str, Protocol] = {
    "LBFGS": Protocol(lambda m: optlib.LBFGS(m.parameters(), lr=0.1, max_iter=1), closure=True),
    "AdamWScheduleFree": Protocol(_schedule_free),
    "SophiaG": Protocol(
        lambda m: optlib.SophiaG(m.parameters()),
        refresh=lambda i: "Hessian (GNB)" if i % EVERY == EVERY - 1 else "",
        after_step=_sophiag_after,
    ),
    "SophiaH": Protocol(
        lambda m: optlib.SophiaH(m.parameters()),
        refresh=lambda i: "Hessian (Hutchinson)" if i % EVERY == EVERY - 1 else "",
        after_step=_sophiah_after,
    ),
    "Shampoo": Protocol(
        lambda m: optlib.Shampoo(m.parameters(), precondition_frequency=EVERY, grafting="adam"),
        refresh=lambda i: "inverse roots" if (i + 1) % EVERY == 0 else "",
    ),
    "SOAP": Protocol(
        lambda m: optlib.SOAP(m.parameters(), precondition_frequency=EVERY),
        refresh=lambda i: "eigenbases" if i > 0 and i % EVERY == 0 else "",
    ),
    "Muon": Protocol(lambda m: optlib.Muon([p for p in m.parameters() if p.ndim >= 2])),
    "MuonWithAuxAdamW": Protocol(lambda m: optlib.MuonWithAuxAdamW(muon_param_groups(m))),
    "KFAC": Protocol(lambda m: optlib.KFAC(m, TCov=EVERY, TInv=TINV), refresh=_kfac_refresh),
}


#: Extra rows, timed after the optimizer they vary. Muon's Newton–Schulz is also timed in float32,
#: because bfloat16 matrix products are slow on CPUs without native bfloat16 units.
VARIANTS: dict[str, dict[str, Protocol]] = {
    "Muon": {
        "Muon (NS float32)": Protocol(
            lambda m: optlib.Muon([p for p in m.parameters() if p.ndim >= 2], ns_dtype=None)
        )
    },
    "MuonWithAuxAdamW": {
        "MuonAux (NS float32)": Protocol(
            lambda m: optlib.MuonWithAuxAdamW(muon_param_groups(m, ns_dtype=None))
        )
    },
}


def protocol(name: str) -> Protocol:
    for variants in VARIANTS.values():
        if name in variants:
            return variants[name]
    if name in PROTOCOLS:
        return PROTOCOLS[name]
    if name == "AdamW":
        return Protocol(_adamw)
    return Protocol(lambda m: getattr(optlib, name)(m.parameters()))


@dataclass
class Timing:
    optimizer: str
    iteration_ms: float  # mean over all timed iterations (refreshes amortised)
    step_ms: float  # median of step() alone
    kinds: dict[str, list[float]] = field(default_factory=dict)  # kind -> iteration times (ms)


def time_optimizer(
    name: str, *, hidden: int = 128, rows: int = 256, warmup: int = 5, iterations: int = 100
) -> Timing:
    """Train ``name``'s optimizer on the benchmark MLP and time each iteration."""
    torch.manual_seed(0)
    batch = digits_batch(rows)
    model = _model(hidden)
    proto = protocol(name)
    opt = proto.build(model)
    X, y = batch
    iteration_times, step_times, kinds = [], [], {}
    for i in range(warmup + iterations):
        t0 = time.perf_counter()
        if proto.closure:

            def closure():
                opt.zero_grad()
                loss = F.cross_entropy(model(X), y)
                loss.backward()
                return loss

            s0 = time.perf_counter()
            opt.step(closure)
            s1 = time.perf_counter()
        else:
            opt.zero_grad()
            logits = model(X)
            F.cross_entropy(logits, y).backward()
            s0 = time.perf_counter()
            opt.step()
            s1 = time.perf_counter()
        if proto.after_step:
            proto.after_step(opt, model, batch, i)
        t1 = time.perf_counter()
        if i >= warmup:
            ms = (t1 - t0) * 1e3
            iteration_times.append(ms)
            step_times.append((s1 - s0) * 1e3)
            kind = (proto.refresh(i) if proto.refresh else "") or "ordinary"
            kinds.setdefault(kind, []).append(ms)
    return Timing(
        optimizer=name,
        iteration_ms=statistics.fmean(iteration_times),
        step_ms=statistics.median(step_times),
        kinds=kinds,
    )


def optimizer_names() -> list[str]:
    return [
        n
        for n in optlib.__all__
        if isinstance(getattr(optlib, n), type)
        and issubclass(getattr(optlib, n), torch.optim.Optimizer)
    ]


def run(
    names: list[str] | None = None,
    *,
    hidden: int = 128,
    warmup: int = 5,
    iterations: int = 100,
    threads: int | None = 1,
) -> list[Timing]:
    """Time every optimizer (AdamW first, the reference). ``threads`` pins torch's intra-op
    threads for the run (restored afterwards): one thread gives steadier numbers on a shared
    CPU."""
    names = optimizer_names() if names is None else list(names)
    names = ["AdamW"] + [n for n in names if n != "AdamW"]
    names = [v for n in names for v in (n, *VARIANTS.get(n, {}))]
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return [
            time_optimizer(n, hidden=hidden, warmup=warmup, iterations=iterations) for n in names
        ]
    finally:
        torch.set_num_threads(old_threads)


def format_tables(timings: list[Timing], *, hidden: int = 128) -> str:
    """The relative step-time table and the refresh-cost table."""
    ref = next(t for t in timings if t.optimizer == "AdamW")
    n_params = sum(p.numel() for p in _model(hidden).parameters())
    lines = [
        f"Step time relative to AdamW: MLP 64-{hidden}-{hidden}-10 ({n_params} parameters), "
        f"batch of 256 ({data_source()}), CPU",
        f"{'optimizer':<22} {'iteration ms':>12} {'x AdamW':>8} {'step() ms':>10} {'x AdamW':>8}",
    ]
    lines.append("-" * len(lines[-1]))
    for t in timings:
        lines.append(
            f"{t.optimizer:<22} {t.iteration_ms:>12.3f} {t.iteration_ms / ref.iteration_ms:>8.2f} "
            f"{t.step_ms:>10.3f} {t.step_ms / ref.step_ms:>8.2f}"
        )
    lines += [
        "",
        "Refresh steps vs ordinary steps (median iteration ms; iteration = forward + backward "
        "+ step + refresh)",
        f"{'optimizer':<10} {'refresh':<26} {'count':>5} {'ordinary ms':>12} {'refresh ms':>11} "
        f"{'ratio':>7}",
    ]
    lines.append("-" * len(lines[-1]))
    for t in timings:
        if len(t.kinds) < 2 or "ordinary" not in t.kinds:
            continue
        ordinary = statistics.median(t.kinds["ordinary"])
        for kind, times in t.kinds.items():
            if kind == "ordinary":
                continue
            special = statistics.median(times)
            lines.append(
                f"{t.optimizer:<10} {kind:<26} {len(times):>5} {ordinary:>12.3f} "
                f"{special:>11.3f} {special / ordinary:>7.2f}"
            )
    return "\n".join(lines)


def model_step_tables(
    *, hidden: int = 128, warmup: int = 5, iterations: int = 100, names: list[str] | None = None
) -> str:
    """Run and format both tables (what ``python -m optlib.bench steps`` prints second)."""
    timings = run(names, hidden=hidden, warmup=warmup, iterations=iterations)
    return format_tables(timings, hidden=hidden)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hidden", type=int, default=128, help="MLP width (default 128)")
    parser.add_argument("--iterations", type=int, default=100, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    parser.add_argument("--only", nargs="*", help="time only these optimizers (and AdamW)")


def main(args: argparse.Namespace) -> int:
    print(
        model_step_tables(
            hidden=args.hidden, warmup=args.warmup, iterations=args.iterations, names=args.only
        )
    )
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(
        prog="python -m optlib.bench.model_steps", description=__doc__
    )
    add_arguments(_parser)
    raise SystemExit(main(_parser.parse_args()))
