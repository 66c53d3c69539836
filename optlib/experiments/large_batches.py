r"""Large-batch training at laptop scale (chapter 11): steps to a target against the batch size,
learning-rate scaling rules read off a sweep, and layer-wise trust ratios.

**Steps to a target.** Shallue et al. (2019, "Measuring the Effects of Data Parallelism on
Neural Network Training") measure, for each batch size :math:`B`, the fewest steps
:math:`S(B)` in which training reaches a target, each :math:`B` at its own tuned learning rate.
:func:`batch_size_sweep` does this on a workload of :func:`optlib.problems.workload`: for each
:math:`B` it trains one copy per (learning rate, seed) at once (a
:class:`~optlib.experiments.stacked.StackedModels`), evaluates every copy's training loss on
fixed examples at steps spaced geometrically (each about 10% after the last), and stops when the
best learning rate's median run (over seeds) has reached the hardest target and the run is
``stop_factor`` times longer than that, so that the rates near the best are measured too.
:func:`steps_table` reads steps-to-target per (batch size, learning rate) as the median over
seeds; :func:`tuned_steps` the best over learning rates; :func:`follow_rule` the steps of a
scaling rule :math:`\eta(B) = \eta_0 (B/B_0)^p` (linear, :math:`p = 1`, Goyal et al. 2017;
square root, :math:`p = 1/2`, for Adam after Malladi et al. 2022) started from the tuned rate
at the smallest batch.

**Optimizers that couple tensors.** LAMB clips the gradient norm over *all* its parameters, so
copies stacked into one LAMB would share that norm. :class:`PerCopy` gives each copy its own
optimizer instance (on views of that copy's tensors), so a stacked run is exactly a set of
separate runs; :func:`per_copy_sweep` trains one copy per (learning rate, seed) that way.

**Trust ratios.** :class:`TrustRatios` records, before every step of :class:`optlib.LARS` or
:class:`optlib.LAMB` (a pre-step hook), the trust ratio each tensor is about to get, computed
by the optimizers' own functions (:func:`optlib.optim.lars.lars_trust_ratio`,
:func:`optlib.optim.lamb.lamb_trust_ratio`; for LAMB the direction comes from
:func:`optlib.optim.lamb.lamb_update` run on copies of the state).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..optim.lamb import LAMB, global_clip_divisor, lamb_trust_ratio, lamb_update
from ..optim.lars import LARS, lars_trust_ratio
from ..problems.workloads import workload
from .sophia import steps_to_target
from .stacked import ELEMENTWISE, StackedModels, train_stacked

__all__ = [
    "PerCopy",
    "TrustRatios",
    "batch_size_sweep",
    "checkpoints",
    "follow_rule",
    "per_copy_sweep",
    "steps_table",
    "trust_ratios",
    "tuned_steps",
]


def checkpoints(max_steps: int, ratio: float = 1.1) -> list[int]:
    r"""Steps :math:`1, 2, \dots` spaced geometrically by about ``ratio`` (every step while the
    spacing is below one step), up to and including ``max_steps``."""
    if max_steps < 1:
        raise ValueError(f"Invalid max_steps: {max_steps}; need max_steps >= 1")
    if ratio <= 1:
        raise ValueError(f"Invalid ratio: {ratio}; need ratio > 1")
    out, t = [], 1.0
    while t < max_steps:
        out.append(int(round(t)))
        t = max(t * ratio, round(t) + 1)
    return sorted(set(out) | {max_steps})


class _Stop(Exception):
    """Raised by a callback to end :func:`~optlib.experiments.stacked.train_stacked` early."""


class _TargetWatch:
    """The callback of :func:`batch_size_sweep` for one batch size: every copy's loss on the
    evaluation examples at the checkpoints, and the stop when the best rate is done."""

    def __init__(self, evaluate, at: list[int], shape: tuple[int, int], target: float,
                 stop_factor: float) -> None:  # fmt: skip
        self.evaluate, self.due, self.shape = evaluate, set(at), shape
        self.target, self.stop_factor = target, stop_factor
        self.steps: list[int] = []
        self.losses: list[list[list[float]]] = []

    def reached(self, target: float) -> list[list[float]]:
        curve = np.array(self.losses)  # (checkpoints, lr, seed)
        return [[steps_to_target(self.steps, curve[:, i, k], target)
                 for k in range(self.shape[1])] for i in range(self.shape[0])]  # fmt: skip

    def __call__(self, t: int, stacked: StackedModels) -> None:
        if t not in self.due:
            return
        loss = self.evaluate(stacked).reshape(self.shape)
        self.steps.append(t)
        self.losses.append(np.where(np.isfinite(loss), loss, np.nan).tolist())
        best = float(np.min(np.median(np.array(self.reached(self.target)), axis=1)))
        if math.isfinite(best) and t >= self.stop_factor * best:
            raise _Stop


def _optimizer(name: str) -> type:
    import optlib

    cls = getattr(optlib, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ValueError(f"Invalid optimizer: {name!r} is not an optlib optimizer")
    return cls


def batch_size_sweep(
    name: str,
    optimizer: str,
    batch_sizes: Sequence[int],
    lrs: Sequence[float],
    seeds: Sequence[int],
    targets: Sequence[float],
    *,
    max_steps: int,
    stop_factor: float = 2.0,
    eval_examples: int | None = 512,
    checkpoint_ratio: float = 1.1,
    warmup: int = 0,
    options: dict | None = None,
    workload_options: dict | None = None,
) -> dict[str, Any]:
    r"""Steps to reach each training-loss target, for every (batch size, learning rate, seed),
    with an element-wise optimizer of optlib (:data:`~optlib.experiments.stacked.ELEMENTWISE`)
    at a constant learning rate after a linear ``warmup`` of that many steps.

    The training loss is measured on ``eval_examples`` evenly spaced training examples (all of
    them with ``None``) at the steps of :func:`checkpoints` (spaced by ``checkpoint_ratio``); a
    run reaches a target at the first checkpoint at or below it (linearly interpolated from the
    one before). For each batch size
    the run stops at ``max_steps``, or once the learning rate with the fewest median steps to the
    lowest target has reached it and the run is ``stop_factor`` times that long. Returns plain
    JSON data: the arguments, and per batch size ``curves[i]`` with ``steps`` (the checkpoints
    evaluated) and ``loss`` (``[checkpoint][lr][seed]``, NaN once a run diverged), ``reached``
    (``[target][lr][seed]``: steps to the target, ``inf`` if not reached before the stop),
    ``diverged`` (``[lr][seed]``: the run had diverged by the stop) and ``seconds``.
    """
    if optimizer not in ELEMENTWISE:
        raise ValueError(f"Invalid optimizer: {optimizer!r}; batch_size_sweep stacks the runs "
                         f"of one learning rate in one view: use one of {ELEMENTWISE}")  # fmt: skip
    if min(len(lrs), len(seeds), len(targets), len(batch_sizes)) == 0:
        raise ValueError("batch_size_sweep needs batch sizes, learning rates, seeds and targets")
    if stop_factor < 1:
        raise ValueError(f"Invalid stop_factor: {stop_factor}; need stop_factor >= 1")
    cls = _optimizer(optimizer)
    work = workload(name, **(workload_options or {}))
    X, y = work.data.X_train, work.data.y_train
    if eval_examples is not None and eval_examples < len(X):
        pick = torch.linspace(0, len(X) - 1, eval_examples).round().long()
        X_eval, y_eval = X[pick], y[pick]
    else:
        X_eval, y_eval = X, y
    lrs, seeds = [float(v) for v in lrs], [int(s) for s in seeds]
    targets = sorted((float(v) for v in targets), reverse=True)
    n_lr, n_seed = len(lrs), len(seeds)
    at = checkpoints(max_steps, checkpoint_ratio)
    out: dict[str, Any] = {
        "name": name, "optimizer": optimizer, "batch_sizes": [int(b) for b in batch_sizes],
        "lrs": lrs, "seeds": seeds, "targets": targets, "warmup": int(warmup), "curves": [],
    }  # fmt: skip
    for B in batch_sizes:
        start = time.perf_counter()
        stacked = StackedModels([work.model(s) for _ in lrs for s in seeds])
        groups = [{"params": stacked.views(i * n_seed, (i + 1) * n_seed), "lr": lr}
                  for i, lr in enumerate(lrs)]  # fmt: skip
        opt = cls(groups, **{"foreach": True, **(options or {})})
        watch = _TargetWatch(lambda st: st.evaluate(work.loss_fn, X_eval, y_eval), at,
                             (n_lr, n_seed), targets[-1], stop_factor)  # fmt: skip
        try:
            train_stacked(stacked, opt, X, y, work.loss_fn, steps=max_steps, batch_size=int(B),
                          seeds=[s for _ in lrs for s in seeds], warmup=warmup,
                          callback=watch)  # fmt: skip
        except _Stop:
            pass
        last = np.array(watch.losses[-1]) if watch.losses else np.full((n_lr, n_seed), np.nan)
        out["curves"].append({"steps": watch.steps, "loss": watch.losses,
                              "reached": [watch.reached(target) for target in targets],
                              "diverged": np.isnan(last).tolist(),
                              "seconds": time.perf_counter() - start})  # fmt: skip
    return out


def steps_table(result: dict[str, Any], target: float) -> np.ndarray:
    """Median steps over seeds to ``target`` (one of the sweep's), ``[batch size, lr]``; ``inf``
    where the median run did not reach it."""
    j = [float(t) for t in result["targets"]].index(float(target))
    return np.array([np.median(np.array(c["reached"][j], dtype=float), axis=1)
                     for c in result["curves"]])  # fmt: skip


def tuned_steps(result: dict[str, Any], target: float) -> tuple[np.ndarray, np.ndarray]:
    """Per batch size, the fewest median steps to ``target`` over the learning rates and the
    learning rate that achieves them (NaN where none reached it)."""
    table = steps_table(result, target)
    lrs = np.array(result["lrs"])
    best = np.min(table, axis=1)
    lr = np.where(np.isfinite(best), lrs[np.argmin(table, axis=1)], np.nan)
    return best, lr


def follow_rule(result: dict[str, Any], target: float, power: float) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    r"""Median steps to ``target`` along the rule :math:`\eta(B) = \eta_0 (B/B_0)^p`, ``power``
    :math:`= p`, from the tuned :math:`\eta_0` at the smallest batch :math:`B_0`: per batch
    size, the steps at the grid's learning rate nearest (in :math:`\log\eta`) to the rule's, and
    that learning rate (NaN beyond the grid by more than half a grid step)."""
    table = steps_table(result, target)
    _, lr = tuned_steps(result, target)
    lrs = np.array(result["lrs"])
    B = np.array(result["batch_sizes"], dtype=float)
    wanted = lr[0] * (B / B[0]) ** power
    logs = np.log(lrs)
    half = 0.5 * np.min(np.diff(np.sort(logs))) if len(lrs) > 1 else np.inf
    steps, used = np.full(len(B), np.inf), np.full(len(B), np.nan)
    for i, w in enumerate(wanted):
        if not np.isfinite(w):
            continue
        j = int(np.argmin(np.abs(logs - np.log(w))))
        if abs(logs[j] - np.log(w)) <= half + 1e-9:
            steps[i], used[i] = table[i, j], lrs[j]
    return steps, used


# --------------------------------------------------------------------------- per-copy optimizers


class PerCopy:
    r"""One optimizer instance per copy of a
    :class:`~optlib.experiments.stacked.StackedModels`, driven as one.

    ``PerCopy(stacked, cls, lrs, **options)`` builds ``cls([{"params": stacked.views(k),
    "lr": lrs[k]}], **options)`` for every copy :math:`k`. ``param_groups`` lists the
    instances' groups (the same dicts), so :func:`~optlib.experiments.stacked.train_stacked`
    can schedule their learning rates and drop the groups of diverged copies; ``step``
    steps every instance whose group is still listed. An optimizer that couples all its
    tensors (LAMB's global gradient clipping) so sees only its own copy's."""

    def __init__(self, stacked: StackedModels, cls: type, lrs: Sequence[float],
                 **options: Any) -> None:  # fmt: skip
        if len(lrs) != stacked.n_models:
            raise ValueError(f"lrs has {len(lrs)} entries for {stacked.n_models} copies")
        self.optimizers = [cls([{"params": stacked.views(k), "lr": float(lr)}], **options)
                           for k, lr in enumerate(lrs)]  # fmt: skip
        self.param_groups = [opt.param_groups[0] for opt in self.optimizers]

    def step(self) -> None:
        live = {id(g) for g in self.param_groups}
        for opt in self.optimizers:
            if id(opt.param_groups[0]) in live:
                opt.step()


@torch.no_grad()
def trust_ratios(optimizer: torch.optim.Optimizer) -> list[list[float]]:
    r"""The trust ratio every tensor of ``optimizer`` (an :class:`optlib.LARS` or
    :class:`optlib.LAMB`) gets at its next step, from the gradients now in ``.grad``, per param
    group; NaN for a tensor without a gradient, 1 where the optimizer does not adapt it
    (:math:`\lambda = 0` and not ``always_adapt``).

    LARS: :math:`\kappa\lVert\theta\rVert/(\lVert g\rVert + \lambda\lVert\theta\rVert +
    \epsilon)` (the raw ratio; with ``trust_clip`` the step uses :math:`\min(r/\eta, 1)`).
    LAMB: :math:`\lVert\theta\rVert / \lVert u\rVert` with :math:`u` the Adam direction plus
    :math:`\lambda\theta`, computed by :func:`optlib.optim.lamb.lamb_update` on copies of the
    parameter and its moments (nothing of the optimizer changes)."""
    if not isinstance(optimizer, (LARS, LAMB)):
        raise ValueError(f"Invalid optimizer: {type(optimizer).__name__}; need optlib.LARS or "
                         "optlib.LAMB")  # fmt: skip
    out = []
    if isinstance(optimizer, LAMB):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        max_norm = optimizer.defaults["max_grad_norm"]
        divisor = global_clip_divisor(grads, max_norm) if max_norm is not None and grads else None
    for group in optimizer.param_groups:
        wd = group["weight_decay"]
        ratios = []
        for p in group["params"]:
            if p.grad is None:
                ratios.append(float("nan"))
                continue
            if wd == 0 and not group["always_adapt"]:
                ratios.append(1.0)
                continue
            if isinstance(optimizer, LARS):
                r = lars_trust_ratio(p, p.grad, trust_coeff=group["trust_coeff"],
                                     weight_decay=wd, eps=group["eps"])  # fmt: skip
            else:
                state = optimizer.state[p]
                m = state["exp_avg"].clone() if state else torch.zeros_like(p)
                v = state["exp_avg_sq"].clone() if state else torch.zeros_like(p)
                t = group.get("step", 0) + 1
                beta1, beta2 = group["betas"]
                corrected = group["bias_correction"]
                theta = p.detach().clone()
                lamb_update(theta, p.grad, m, v, lr=1.0, beta1=beta1, beta2=beta2,
                            grad_averaging=group["grad_averaging"],
                            c1=1 - beta1**t if corrected else 1.0,
                            c2=1 - beta2**t if corrected else 1.0, eps=group["eps"],
                            weight_decay=0.0, trust_clip=False, always_adapt=False,
                            clip_divisor=divisor)  # fmt: skip
                u = (p - theta).add_(p, alpha=wd)  # the Adam direction, plus decay
                r = lamb_trust_ratio(p, u, trust_clip=group["trust_clip"])
            ratios.append(float(r))
        out.append(ratios)
    return out


class TrustRatios:
    r"""Records :func:`trust_ratios` before every step of each optimizer in ``optimizers`` (a
    pre-step hook; e.g. ``PerCopy.optimizers``). ``history`` is ``[step][optimizer]
    [tensor]`` (the tensors of all param groups in order; NaN after an optimizer's last step,
    e.g. for a copy that diverged). ``remove`` detaches the hooks."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        self.per_optimizer: list[list[list[float]]] = [[] for _ in optimizers]
        self._handles = [
            opt.register_step_pre_hook(lambda o, args, kwargs, i=i: self._record(i, o))
            for i, opt in enumerate(optimizers)
        ]

    def _record(self, i: int, optimizer: torch.optim.Optimizer) -> None:
        self.per_optimizer[i].append([r for group in trust_ratios(optimizer) for r in group])

    @property
    def history(self) -> list[list[list[float]]]:
        steps = max((len(h) for h in self.per_optimizer), default=0)
        width = max((len(h[0]) for h in self.per_optimizer if h), default=0)
        blank = [float("nan")] * width
        return [[h[t] if t < len(h) else blank for h in self.per_optimizer]
                for t in range(steps)]  # fmt: skip

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def per_copy_sweep(
    name: str,
    optimizer: str,
    runs: Sequence[Sequence[float]],
    *,
    steps: int,
    batch_size: int,
    schedule: str = "constant",
    warmup: int = 0,
    options: dict | None = None,
    workload_options: dict | None = None,
    record_trust: bool = False,
    average_last: int = 10,
) -> dict[str, Any]:
    r"""Train one copy of workload ``name`` per run ``(lr, seed)``, each with its own instance
    of optlib's ``optimizer`` built with ``options`` (:class:`PerCopy`), ``steps`` steps of
    ``batch_size`` examples under ``schedule`` after a linear ``warmup``
    (:func:`~optlib.experiments.stacked.train_stacked`).

    Returns plain JSON data aligned with ``runs``: ``train_loss`` (the loss on the whole
    training set after training), ``batch_loss`` (the mean batch loss over the last
    ``average_last`` steps), ``test_loss``, ``diverged``; ``curve`` (the batch losses, ``[step]
    [run]``); with ``record_trust`` (LARS, LAMB), ``trust`` (``[step][run][tensor]``, from
    :class:`TrustRatios`) and ``tensors`` (the tensors' names); ``seconds``."""
    start = time.perf_counter()
    cls = _optimizer(optimizer)
    work = workload(name, **(workload_options or {}))
    runs = [(float(lr), int(seed)) for lr, seed in runs]
    if not runs:
        raise ValueError("per_copy_sweep needs at least one run")
    stacked = StackedModels([work.model(seed) for _, seed in runs])
    opt = PerCopy(stacked, cls, [lr for lr, _ in runs], **(options or {}))
    recorder = TrustRatios(opt.optimizers) if record_trust else None
    data = work.data
    history = train_stacked(stacked, opt, data.X_train, data.y_train, work.loss_fn, steps=steps,
                            batch_size=batch_size, seeds=[s for _, s in runs],
                            schedule=schedule, warmup=warmup)  # fmt: skip
    if recorder is not None:
        recorder.remove()
    diverged = ~np.isfinite(history[-1])
    train = np.where(diverged, np.nan, stacked.evaluate(work.loss_fn, data.X_train, data.y_train))
    test = np.where(diverged, np.nan, stacked.evaluate(work.loss_fn, data.X_test, data.y_test))
    tail = history[-min(average_last, steps + 1):]

    def plain(values: Any) -> list:
        return np.asarray(values, dtype=float).tolist()

    out = {
        "runs": [list(r) for r in runs],
        "train_loss": plain(train),
        "batch_loss": plain(np.where(diverged, np.nan, tail.mean(0))),
        "test_loss": plain(test),
        "diverged": [bool(d) for d in diverged],
        "curve": plain(history),
        "seconds": time.perf_counter() - start,
    }
    if recorder is not None:
        out["trust"] = recorder.history
        out["tensors"] = list(stacked.tensors())
    return out
