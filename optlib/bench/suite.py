r"""The optimizer benchmark of chapter 12: a learning-rate sweep per optimizer on the workload
suite, time-to-target and steps-to-target at the tuned learning rate, performance profiles.

``python -m optlib.bench suite`` runs it; ``--size small`` reruns a small slice and compares it
with the committed results (``optlib/bench/results/suite-v1.json``, shipped with the package).

**Protocol** (``PROTOCOL``, stored in the results), in the spirit of AlgoPerf (Dahl et al.,
2023, "external tuning"):

* every optimizer runs with its own defaults except the learning rate :math:`\eta`, which is
  tuned on a log grid of ``GRID_POINTS`` points half a decade apart, centred on the
  optimizer's default (:data:`OPTIMIZERS`); if the best point is at an edge of the grid, the
  grid grows by one point on that side, up to ``GRID_EXTEND`` times;
* every optimizer gets the same budget per workload (steps and batch size), a linear warm-up
  over the first ``WARMUP_FRACTION`` of it and a cosine decay to 0 at its end
  (schedule-free AdamW: no schedule, the same warm-up through its own ``warmup_steps``);
* tuning runs use the seeds ``TUNE_SEEDS``; the tuned :math:`\eta` minimises the median over
  them of the held-out loss at the end of the budget. The reported runs use other seeds,
  ``REPORT_SEEDS``, at the tuned :math:`\eta`, so that the reported numbers are not the ones
  the tuning selected;
* every run is evaluated on the held-out split every twentieth of its budget; a workload's
  target is the best median final held-out loss among the optimizers, relaxed by a relative
  ``tolerance`` (:func:`targets`); a run's steps-to-target is the first step where its
  (linearly interpolated) held-out curve reaches the target, :math:`+\infty` if it never does;
  an optimizer's is the median over the reported seeds;
* time-to-target is steps-to-target times the optimizer's measured time per training step on
  that workload (one model, one thread, forward, backward and optimizer step; interleaved
  rounds, median; :func:`step_times`). The runs themselves train many copies at once
  (:mod:`optlib.experiments.stacked`), so their wall time is not any one run's.

**Reproducing.** The spread of a result is the range (maximum minus minimum) of its final
held-out loss over the reported seeds. ``--size small`` reruns :data:`SMALL_SLICE` (the digits
MLP with a few optimizers, at the tuned :math:`\eta`, on the first seeds of the reported ones)
and checks that each live median lies within the saved median plus or minus that spread
(:func:`compare_slice`); another seed (``OPTLIB_SEED``) or another CPU gives other draws, which
is what the spread allows for.

**Resuming.** The work is cut into units (a workload, an optimizer, a role, some learning
rates) of at most a minute or two; the results file is rewritten after every unit, so an
interrupted run started again with the same output file redoes at most the unit it was in.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._seed import base_seed
from ..experiments.race import race, steps_to_target
from .steps import ProgressBar, interleaved_times, machine

__all__ = [
    "OPTIMIZERS", "PROTOCOL", "SCHEMA", "SMALL_SLICE", "VERSION", "WORKLOADS", "compare_slice",
    "default_results", "load", "performance_profile", "plan_units", "run_slice", "run_suite",
    "step_times", "summary", "targets", "tuning",
]  # fmt: skip

SCHEMA = "optlib-bench-suite"
VERSION = 1
RESULTS = Path(__file__).resolve().parent / "results" / f"suite-v{VERSION}.json"

#: For each workload, the budget in steps, batch size, held-out evaluation every ``eval_every``
#: steps on ``eval_examples`` evenly spaced held-out examples (None: all), and whether each
#: learning rate of a sweep is a unit of its own (the expensive language model).
WORKLOADS: dict[str, dict[str, Any]] = {
    "digits_mlp": {"steps": 1000, "batch_size": 32, "eval_every": 50, "eval_examples": None,
                   "split": False},
    "digits_cnn": {"steps": 600, "batch_size": 32, "eval_every": 30, "eval_examples": None,
                   "split": False},
    "char_lm": {"steps": 300, "batch_size": 16, "eval_every": 15, "eval_examples": 256,
                "split": True},
    "moe": {"steps": 1000, "batch_size": 32, "eval_every": 50, "eval_examples": None,
            "split": False},
}  # fmt: skip

#: For each optimizer, the options other than its own defaults (for SGD, the momentum this benchmark
#: compares) and the centre of its learning-rate grid (its default; SGD has no meaningful one,
#: 0.1 is the usual value with momentum 0.9).
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "SGD": {"options": {"momentum": 0.9}, "centre": 0.1},
    "AdamW": {"options": {}, "centre": 1e-3},
    "Lion": {"options": {}, "centre": 1e-4},
    "Adafactor": {"options": {}, "centre": 1e-2},
    "AdamWScheduleFree": {"options": {}, "centre": 2.5e-3},
    "SOAP": {"options": {}, "centre": 3e-3},
}

GRID_POINTS = 5  # half a decade apart: two decades around the centre
GRID_EXTEND = 2  # at most this many extra points on the side where the best one sits
WARMUP_FRACTION = 0.05
TUNE_SEEDS = (0, 1, 2)
REPORT_SEEDS = (100, 101, 102, 103, 104)
TOLERANCE = 0.05  # a target is the best median final held-out loss, times 1 + this

PROTOCOL: dict[str, Any] = {
    "workloads": WORKLOADS,
    "optimizers": OPTIMIZERS,
    "grid_points": GRID_POINTS,
    "grid_per_decade": 2,
    "grid_extend": GRID_EXTEND,
    "warmup_fraction": WARMUP_FRACTION,
    "schedule": "cosine",
    "tune_seeds": list(TUNE_SEEDS),
    "report_seeds": list(REPORT_SEEDS),
}

#: The slice ``--size small`` reruns: workload, optimizers, seeds (the first reported ones).
SMALL_SLICE: dict[str, Any] = {"workload": "digits_mlp", "optimizers": ["SGD", "AdamW", "Lion"],
                               "seeds": list(REPORT_SEEDS[:3])}  # fmt: skip


# --------------------------------------------------------------------------- the plan


def grid_lr(centre: float, j: int, per_decade: int = 2) -> float:
    r""":math:`\eta_j = \text{centre}\cdot 10^{j/n}`, rounded to 6 significant digits."""
    return float(f"{centre * 10 ** (j / per_decade):.6g}")


def _units_key(workload: str, optimizer: str, role: str, lrs: Sequence[float]) -> str:
    return f"{workload}/{optimizer}/{role}/" + ",".join(f"{lr:.6g}" for lr in lrs)


def _runs_of(results: dict, workload: str, optimizer: str, role: str) -> list[dict]:
    return [r for r in results["runs"] if r["workload"] == workload
            and r["optimizer"] == optimizer and r["role"] == role]  # fmt: skip


def _median_final(values: Sequence[float]) -> float:
    finite = [v if v is not None and math.isfinite(v) else math.inf for v in values]
    return float(np.median(finite)) if finite else math.inf


def tuning(results: dict, workload: str, optimizer: str) -> dict[str, Any]:
    """The tuning sweep of ``optimizer`` on ``workload`` as far as it has run: the learning
    rates (sorted), the median final held-out loss over the tuning seeds at each (``inf`` if
    most diverged), the best learning rate, and whether it sits at an edge of the grid."""
    by_lr: dict[float, list[float]] = {}
    for r in _runs_of(results, workload, optimizer, "tune"):
        by_lr.setdefault(r["lr"], []).append(r["final_loss"])
    lrs = sorted(by_lr)
    medians = [_median_final(by_lr[lr]) for lr in lrs]
    if not lrs or not any(math.isfinite(m) for m in medians):
        return {"lrs": lrs, "median": medians, "best_lr": None, "at_edge": None}
    j = int(np.argmin(medians))
    return {"lrs": lrs, "median": medians, "best_lr": lrs[j],
            "at_edge": "low" if j == 0 else "high" if j == len(lrs) - 1 else None}  # fmt: skip


def plan_units(results: dict, protocol: dict = PROTOCOL) -> list[dict]:
    """The units still to run given what ``results`` holds, in order: first the initial
    tuning grids, then one extra point per grid whose best sits at an edge (while extensions
    are left), then the reported runs at each tuned learning rate. Call again after running
    them: extensions and reported runs depend on the tuning results."""
    done = set(results.get("units", {}))
    todo = []
    n, per, extend = protocol["grid_points"], protocol["grid_per_decade"], protocol["grid_extend"]
    for w, wl in protocol["workloads"].items():
        for o, spec in protocol["optimizers"].items():
            initial = [grid_lr(spec["centre"], j, per) for j in range(-(n // 2), n - n // 2)]
            chunks = [[lr] for lr in initial] if wl["split"] else [initial]
            pending = False
            for lrs in chunks:
                key = _units_key(w, o, "tune", lrs)
                if key not in done:
                    todo.append({"key": key, "workload": w, "optimizer": o, "role": "tune",
                                 "lrs": lrs, "seeds": list(protocol["tune_seeds"])})  # fmt: skip
                    pending = True
            if pending:
                continue
            tuned = tuning(results, w, o)
            if tuned["best_lr"] is None:
                continue  # every run diverged: nothing to report
            lo_j = round(per * math.log10(min(tuned["lrs"]) / spec["centre"]))
            hi_j = round(per * math.log10(max(tuned["lrs"]) / spec["centre"]))
            if tuned["at_edge"] == "low" and lo_j > -(n // 2) - extend:
                lrs = [grid_lr(spec["centre"], lo_j - 1, per)]
            elif tuned["at_edge"] == "high" and hi_j < n - n // 2 - 1 + extend:
                lrs = [grid_lr(spec["centre"], hi_j + 1, per)]
            else:
                lrs = [tuned["best_lr"]]
                key = _units_key(w, o, "report", lrs)
                if key not in done:
                    todo.append({"key": key, "workload": w, "optimizer": o, "role": "report",
                                 "lrs": lrs, "seeds": list(protocol["report_seeds"])})  # fmt: skip
                continue
            todo.append({"key": _units_key(w, o, "tune", lrs), "workload": w, "optimizer": o,
                         "role": "tune", "lrs": lrs,
                         "seeds": list(protocol["tune_seeds"])})  # fmt: skip
    return todo


def _race_unit(unit: dict, protocol: dict) -> dict:
    """Run one unit with :func:`~optlib.experiments.race.race`; return its per-run records."""
    wl = protocol["workloads"][unit["workload"]]
    spec = protocol["optimizers"][unit["optimizer"]]
    warmup = round(protocol["warmup_fraction"] * wl["steps"])
    options = dict(spec["options"])
    schedule = protocol["schedule"]
    if unit["optimizer"] == "AdamWScheduleFree":  # no schedule: its own warm-up
        options["warmup_steps"] = warmup
        schedule, warmup = "constant", 0
    runs = [(lr, seed) for lr in unit["lrs"] for seed in unit["seeds"]]
    out = race(unit["workload"], unit["optimizer"], runs, steps=wl["steps"],
               batch_size=wl["batch_size"], eval_every=wl["eval_every"], options=options,
               schedule=schedule, warmup=warmup, eval_examples=wl["eval_examples"])  # fmt: skip
    records = []
    for k, (lr, seed) in enumerate(runs):
        records.append({
            "workload": unit["workload"], "optimizer": unit["optimizer"], "role": unit["role"],
            "lr": lr, "seed": seed, "unit": unit["key"],
            "curve_steps": out["curve_steps"],
            "loss": [_round(row[k]) for row in out["loss"]],
            "accuracy": [_round(row[k]) for row in out["accuracy"]],
            "final_loss": _round(out["final_loss"][k]),
            "final_accuracy": _round(out["final_accuracy"][k]),
            "diverged": out["diverged"][k],
        })  # fmt: skip
    return {"records": records, "seconds": out["seconds"]}


def _round(v: float) -> float | None:
    """6 significant digits, None for NaN (JSON has no NaN)."""
    return float(f"{v:.6g}") if v is not None and math.isfinite(v) else None


# --------------------------------------------------------------------------- step times


def step_times(workloads: Sequence[str], optimizers: Sequence[str], *,
               protocol: dict = PROTOCOL, rounds: int = 15, block: int = 10,
               seed: int = 0) -> dict[str, dict[str, float]]:  # fmt: skip
    """Milliseconds per training step (forward, backward, optimizer step) of one model of each
    workload with each optimizer at its default learning rate, one thread: each round times a
    block of ``block`` consecutive steps per optimizer (so that a preconditioner's periodic
    refresh is averaged in), the optimizers interleaved; the median over ``rounds`` rounds."""
    from ..experiments.stacked import BatchStream
    from ..problems.workloads import workload as make

    out: dict[str, dict[str, float]] = {}
    for w in workloads:
        work = make(w)
        bs = protocol["workloads"][w]["batch_size"]
        steppers: dict[str, Callable[[], None]] = {}
        for o in optimizers:
            steppers[o] = _stepper(work, o, protocol, bs, seed, BatchStream, block)
        times = interleaved_times(steppers, warmup=1, rounds=rounds)
        out[w] = {o: 1e3 * float(np.median(ts)) / block for o, ts in times.items()}
    return out


def _stepper(work, name: str, protocol: dict, batch_size: int, seed: int, stream_cls,
             block: int) -> Callable[[], None]:  # fmt: skip
    import inspect

    import optlib

    model = work.model(seed)
    cls = getattr(optlib, name)
    spec = protocol["optimizers"][name]
    kwargs = {"lr": spec["centre"], **spec["options"]}
    if "foreach" in inspect.signature(cls).parameters:
        kwargs["foreach"] = True
    opt = cls(model.parameters(), **kwargs)
    if hasattr(opt, "train") and hasattr(opt, "eval"):
        opt.train()
    stream = stream_cls(len(work.data.y_train), batch_size, seed)
    X, y = work.data.X_train, work.data.y_train

    def run_block() -> None:
        for _ in range(block):
            idx = stream.next()
            opt.zero_grad()
            work.loss_fn(model(X[idx]), y[idx]).backward()
            opt.step()

    return run_block


# --------------------------------------------------------------------------- running


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _empty(protocol: dict) -> dict:
    return {
        "schema": SCHEMA, "version": VERSION, "protocol": protocol, "optlib_seed": base_seed(),
        "machine": machine(), "started": _now(), "finished": None, "elapsed_s": 0.0,
        "load_average": {"start": _load(), "end": None}, "units": {}, "runs": [],
        "step_ms": None,
    }  # fmt: skip


def _load() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _write(results: dict, path: Path) -> None:
    """Write atomically: a crash mid-write leaves the previous file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def run_suite(path: Path, *, protocol: dict = PROTOCOL, progress=sys.stderr,
              max_units: int | None = None) -> dict:  # fmt: skip
    """Run (or resume) the whole benchmark into ``path``; ``max_units`` stops after that many
    units (to test resuming). Returns the results."""
    path = Path(path)
    if path.exists():
        results = json.loads(path.read_text(encoding="utf-8"))
        if results.get("schema") != SCHEMA or results.get("version") != VERSION:
            raise ValueError(f"{path} is not a version-{VERSION} suite results file")
        if json.loads(json.dumps(protocol)) != results["protocol"]:
            raise ValueError(f"{path} was run under another protocol: use another --out")
        if results.get("optlib_seed") != base_seed():
            raise ValueError(f"{path} was run under OPTLIB_SEED={results.get('optlib_seed')}")
    else:
        results = _empty(protocol)
    torch.set_num_threads(1)
    n_opt = len(protocol["optimizers"])
    total_guess = len(protocol["workloads"]) * n_opt * 3 + sum(
        n_opt * (protocol["grid_points"] - 1) for wl in protocol["workloads"].values()
        if wl["split"])  # fmt: skip
    tty = progress is not None and getattr(progress, "isatty", lambda: False)()
    bar = ProgressBar(max(total_guess, len(results["units"]) + 1), progress if tty else None)
    bar.done = len(results["units"])
    ran = 0
    while True:
        todo = plan_units(results, protocol)
        if not todo or (max_units is not None and ran >= max_units):
            break
        unit = todo[0]
        label = f"{unit['workload']} {unit['optimizer']} {unit['role']}"
        bar.total = max(bar.total, bar.done + len(todo))
        bar.show(label)
        out = _race_unit(unit, protocol)
        results["runs"] += out["records"]
        results["units"][unit["key"]] = {"seconds": round(out["seconds"], 2), "finished": _now()}
        results["elapsed_s"] = round(results["elapsed_s"] + out["seconds"], 2)
        _write(results, path)
        ran += 1
        bar.step(label)
        if progress is not None and not tty:  # a log file: one line per unit
            progress.write(f"{bar.done}/{bar.total} {label} {unit['lrs']}: "
                           f"{out['seconds']:.0f} s (total {results['elapsed_s']:.0f} s)\n")
            progress.flush()
    if not plan_units(results, protocol) and results["step_ms"] is None:
        if progress is not None:
            progress.write("\nmeasuring the time per step of every optimizer on every workload\n")
        t0 = time.perf_counter()
        names = list(protocol["optimizers"])
        results["step_ms"] = step_times(list(protocol["workloads"]), names, protocol=protocol)
        results["elapsed_s"] = round(results["elapsed_s"] + time.perf_counter() - t0, 2)
        results["finished"] = _now()
        results["load_average"]["end"] = _load()
        results["machine_end"] = machine()
        _write(results, path)
    return results


# --------------------------------------------------------------------------- reading


def default_results() -> Path:
    """The committed results file (package data)."""
    return RESULTS


def load(path: Path | str | None = None) -> dict:
    """Read a results file (default: the committed one) and check its schema and version."""
    path = Path(path) if path is not None else RESULTS
    results = json.loads(path.read_text(encoding="utf-8"))
    if results.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a suite results file (schema {results.get('schema')!r})")
    if results.get("version") != VERSION:
        raise ValueError(f"{path}: version {results.get('version')}, this code reads {VERSION}")
    return results


def _reported(results: dict, workload: str, optimizer: str) -> list[dict]:
    return _runs_of(results, workload, optimizer, "report")


def targets(results: dict, tolerance: float = TOLERANCE) -> dict[str, float]:
    r"""Per workload: :math:`(1 + \text{tolerance})` times the best (smallest) median final
    held-out loss of any optimizer's reported runs."""
    if tolerance < 0:
        raise ValueError(f"Invalid tolerance: {tolerance}; need tolerance >= 0")
    out = {}
    for w in results["protocol"]["workloads"]:
        best = min(_median_final([r["final_loss"] for r in _reported(results, w, o)])
                   for o in results["protocol"]["optimizers"])  # fmt: skip
        out[w] = (1 + tolerance) * best
    return out


def summary(results: dict, tolerance: float = TOLERANCE) -> list[dict[str, Any]]:
    """One row per (workload, optimizer): tuned learning rate (and whether it is at an edge of
    the grid after the extensions), the reported runs' median final held-out loss and accuracy
    and their spread (max - min of the loss), steps-to-target (per seed and the median),
    milliseconds per step, and time-to-target in seconds (``inf`` where the target was
    missed)."""
    goal = targets(results, tolerance)
    rows = []
    for w in results["protocol"]["workloads"]:
        for o in results["protocol"]["optimizers"]:
            runs = _reported(results, w, o)
            finals = [r["final_loss"] if r["final_loss"] is not None else math.inf for r in runs]
            acc = [r["final_accuracy"] if r["final_accuracy"] is not None else 0.0 for r in runs]
            steps = [steps_to_target(r["curve_steps"], [math.nan if v is None else v
                                                        for v in r["loss"]], goal[w])
                     for r in runs]  # fmt: skip
            median_steps = float(np.median(steps)) if steps else math.inf
            ms = (results.get("step_ms") or {}).get(w, {}).get(o)
            seconds = median_steps * ms / 1e3 if ms is not None else math.nan
            rows.append({
                "workload": w, "optimizer": o, "lr": tuning(results, w, o)["best_lr"],
                "at_edge": tuning(results, w, o)["at_edge"],
                "final_loss": _median_final(finals),
                "spread": float(max(finals) - min(finals)) if finals else math.inf,
                "final_accuracy": float(np.median(acc)) if acc else 0.0,
                "steps_each": steps, "steps": median_steps, "ms_per_step": ms,
                "seconds": seconds, "target": goal[w], "seeds": len(runs),
            })  # fmt: skip
    return rows


def performance_profile(times: dict[str, Sequence[float]], taus: Sequence[float],
                        ) -> dict[str, np.ndarray]:  # fmt: skip
    r"""Dolan & Moré (2002): for solvers :math:`s` with times :math:`t_{p,s}` on problems
    :math:`p` (``times[s][p]``, ``inf`` for a failure), the ratios
    :math:`r_{p,s} = t_{p,s} / \min_{s'} t_{p,s'}` and the profile
    :math:`\rho_s(\tau) = |\{p : r_{p,s} \le \tau\}| / n_p` at every ``tau``. A problem no
    solver solves counts as failed for all."""
    names = list(times)
    T = np.array([[float(v) for v in times[s]] for s in names], dtype=float)
    if T.ndim != 2 or T.shape[1] == 0:
        raise ValueError("times must hold one time per problem for every solver")
    if np.isnan(T).any() or (T <= 0).any():
        raise ValueError("times must be positive numbers (inf for a failure)")
    best = T.min(axis=0)
    with np.errstate(invalid="ignore"):
        R = np.where(np.isfinite(best), T / best, np.inf)
    taus = np.asarray(taus, dtype=float)
    return {s: (R[i][None, :] <= taus[:, None]).mean(axis=1) for i, s in enumerate(names)}


# --------------------------------------------------------------------------- the small slice


def run_slice(results: dict | None = None, slice_: dict = SMALL_SLICE) -> dict[str, Any]:
    """Rerun the small slice (:data:`SMALL_SLICE`) of the committed protocol live: each of its
    optimizers at the tuned learning rate of ``results`` (default: the committed ones) on the
    slice's seeds. Returns ``{optimizer: {"lr", "final_loss": [...], "seconds"}}``."""
    results = load() if results is None else results
    protocol = results["protocol"]
    w = slice_["workload"]
    out = {}
    for o in slice_["optimizers"]:
        lr = tuning(results, w, o)["best_lr"]
        unit = {"key": _units_key(w, o, "slice", [lr]), "workload": w, "optimizer": o,
                "role": "slice", "lrs": [lr], "seeds": list(slice_["seeds"])}  # fmt: skip
        ran = _race_unit(unit, protocol)
        out[o] = {"lr": lr, "seconds": ran["seconds"],
                  "final_loss": [r["final_loss"] for r in ran["records"]]}  # fmt: skip
    return out


def compare_slice(live: dict[str, Any], results: dict | None = None,
                  workload: str = SMALL_SLICE["workload"]) -> list[dict[str, Any]]:  # fmt: skip
    """Each live optimizer's median final held-out loss against the saved reported runs: the
    saved median, their spread (max - min over the reported seeds) and whether the live median
    lies within saved median ± spread."""
    results = load() if results is None else results
    rows = []
    for o, got in live.items():
        saved = [r["final_loss"] for r in _reported(results, workload, o)]
        saved = [v if v is not None else math.inf for v in saved]
        med, spread = _median_final(saved), float(max(saved) - min(saved))
        live_med = _median_final(got["final_loss"])
        rows.append({"optimizer": o, "live": live_med, "saved": med, "spread": spread,
                     "within": bool(abs(live_med - med) <= spread)})  # fmt: skip
    return rows


# --------------------------------------------------------------------------- command line


def format_summary(results: dict, tolerance: float = TOLERANCE) -> str:
    lines = [f"{'workload':11s} {'optimizer':18s} {'lr':>9s} {'loss':>7s} {'spread':>7s} "
             f"{'acc':>6s} {'steps':>7s} {'ms/step':>8s} {'seconds':>8s}"]  # fmt: skip
    for r in summary(results, tolerance):
        lr = "-" if r["lr"] is None else f"{r['lr']:.3g}" + ("*" if r["at_edge"] else "")
        ms = "-" if r["ms_per_step"] is None else f"{r['ms_per_step']:.2f}"
        lines.append(
            f"{r['workload']:11s} {r['optimizer']:18s} {lr:>9s} {r['final_loss']:7.4f} "
            f"{r['spread']:7.4f} {r['final_accuracy']:6.3f} {r['steps']:7.0f} {ms:>8s} "
            f"{r['seconds']:8.2f}"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=["full", "small"], default="full",
                        help="full: the whole benchmark (resumable; about an hour on two busy "
                             "cores); small: rerun a slice and compare with the committed "
                             "results")  # fmt: skip
    parser.add_argument("--out", default=f"suite-v{VERSION}.json",
                        help="results file to write or resume (full size; default %(default)s)")
    parser.add_argument("--results", default=None,
                        help="results to compare against or summarise (default: the committed "
                             "ones)")  # fmt: skip
    parser.add_argument("--summary", action="store_true",
                        help="print the summary table of --results and exit")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help="relative tolerance of the targets (default %(default)s)")


def main(args: argparse.Namespace) -> int:
    if args.summary:
        print(format_summary(load(args.results), args.tolerance))
        return 0
    if args.size == "small":
        results = load(args.results)
        live = run_slice(results)
        rows = compare_slice(live, results)
        print(f"{SMALL_SLICE['workload']}: live median of {len(SMALL_SLICE['seeds'])} seeds "
              "against the saved reported runs (final held-out loss)")  # fmt: skip
        for r in rows:
            print(f"  {r['optimizer']:18s} live {r['live']:.4f}  saved {r['saved']:.4f} "
                  f"± {r['spread']:.4f}  {'ok' if r['within'] else 'OUTSIDE the spread'}")
        return 0 if all(r["within"] for r in rows) else 1
    results = run_suite(Path(args.out))
    print(format_summary(results, args.tolerance))
    return 0
