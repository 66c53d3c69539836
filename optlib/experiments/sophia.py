r"""Sophia against AdamW on the character-level language model, and what Sophia's clip does
(chapter 9).

:func:`lm_race` trains a set of runs ``(lr, seed)`` of one optimizer on the workload suite's
character model (:func:`optlib.problems.workload` ``"char_lm"``), all at once as one stacked
model (:mod:`optlib.experiments.stacked`, one param group per run), with a warm-up and cosine
schedule, and records

* the validation loss every ``eval_every`` steps on a fixed subset of the validation windows,
  and at the end on all of them (nats per character; :func:`~optlib.problems.bits_per_char`
  converts);
* for Sophia, the fraction of coordinates whose step was clipped at every step
  (:class:`ClippedFraction`), i.e. that moved by the full :math:`\eta` instead of a Newton-like
  :math:`\eta\,|m|/(\rho h)`; the reference training script logs one minus this as its
  "win rate".

SophiaG needs two things a plain training loop does not do (Liu et al. 2024, Algorithm 1; the
authors' ``train_sophiag.py``): ``step(bs=B)`` with :math:`B` the number of tokens behind the
Hessian estimate, and every :math:`k` steps, after the step, a Gauss-Newton-Bartlett refresh
(:class:`GNBRefresh`): the mean cross-entropy against labels sampled from the model's own
softmax, on a fresh batch, backpropagated and folded in by ``update_hessian()``.

Every copy sees the mini-batches of its own seed (the same as in
:func:`optlib.experiments.train.run`), and its Hessian batches from a second stream seeded
from it; results are plain JSON data, so a chapter can memoise :func:`lm_race` with
:func:`optlib.course.cache.memoize`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .._seed import derive_seed
from ..optim.sophia import SophiaG, SophiaH, gnb_loss
from ..problems.workloads import workload
from .stacked import ELEMENTWISE, BatchStream, StackedModels, train_stacked

__all__ = [
    "ClippedFraction",
    "GNBRefresh",
    "ValidationCurve",
    "clipped_fraction",
    "lm_race",
    "steps_to_target",
]

HESSIAN_STREAM = 7919  # offsets the seeds of the Hessian batches from the training batches


def _clip_counts(optimizer: SophiaG | SophiaH, group: dict, bs: float | None,
                 copies: int | None) -> tuple[Tensor, int]:  # fmt: skip
    """Clipped coordinates of ``group`` (per copy, along the leading dimension of its views,
    when ``copies`` is given) and the number of coordinates (per copy)."""
    clipped = torch.zeros(copies or 1, dtype=torch.long)
    total = 0
    for p in group["params"]:
        total += p.numel() // (copies or 1)
        state = optimizer.state.get(p)
        if not state:
            continue
        m, h = state["exp_avg"], state["hessian"]
        if bs is None:
            denominator = (group["rho"] * h).clamp_min(group["eps"])
        else:
            denominator = group["rho"] * bs * h + group["eps"]
        mask = m.abs() >= denominator
        clipped += mask.reshape(copies, -1).sum(1) if copies else mask.sum()
    return clipped, total


def clipped_fraction(optimizer: SophiaG | SophiaH, group: dict, bs: float | None) -> float:
    r"""The fraction of the coordinates of ``group`` whose next Sophia step (from the state as
    it is now) is clipped: :math:`|m| \ge \rho B h + \epsilon` for SophiaG (``bs`` :math:`= B`),
    :math:`|m| \ge \max(\rho h, \epsilon)` for SophiaH (``bs=None``). Right after ``step()`` it
    is the fraction of that step. A coordinate without state counts as not clipped."""
    clipped, total = _clip_counts(optimizer, group, bs, None)
    return int(clipped) / total


class ClippedFraction:
    r"""A ``callback`` for :func:`~optlib.experiments.stacked.train_stacked`: after every
    ``every``-th step, :func:`clipped_fraction` of every copy: ``fractions[i, k]`` after step
    ``steps[i]``, NaN once copy :math:`k`'s group has left the optimizer (it diverged).

    ``copies[j]`` is the number of consecutive copies that the views of param group ``j``
    cover along their leading dimension (``StackedModels.views`` with ``stop``); without
    ``copies`` each group holds the views of one copy, without a leading dimension."""

    def __init__(self, optimizer: SophiaG | SophiaH, bs: float | None, *,
                 copies: Sequence[int] | None = None, every: int = 1) -> None:  # fmt: skip
        if every < 1:
            raise ValueError(f"Invalid every: {every}; need every >= 1")
        self.optimizer, self.bs, self.every = optimizer, bs, every
        self.groups = list(optimizer.param_groups)
        if copies is not None and len(copies) != len(self.groups):
            raise ValueError(f"Invalid copies: {len(copies)} counts for {len(self.groups)} groups")
        self.copies = list(copies) if copies is not None else [None] * len(self.groups)
        self.steps: list[int] = []
        self.history: list[list[float]] = []

    def __call__(self, t: int, stacked: StackedModels) -> None:
        if t % self.every:
            return
        live = {id(g) for g in self.optimizer.param_groups}
        row: list[float] = []
        for group, n in zip(self.groups, self.copies):
            if id(group) not in live:
                row += [float("nan")] * (n or 1)
                continue
            clipped, total = _clip_counts(self.optimizer, group, self.bs, n)
            row += (clipped.double() / total).tolist()
        self.steps.append(t)
        self.history.append(row)

    @property
    def fractions(self) -> np.ndarray:
        """Shape ``(len(steps), copies)``."""
        return np.array(self.history)


class GNBRefresh:
    r"""SophiaG's Hessian refresh, a ``callback`` for
    :func:`~optlib.experiments.stacked.train_stacked`: after every ``every``-th step, each
    copy's mean cross-entropy against labels sampled from its own softmax on a fresh batch of
    ``batch_size`` windows of ``X`` (:func:`~optlib.optim.sophia.gnb_loss`), backpropagated,
    then ``update_hessian()``; the gradients are cleared before and after.

    The copies' losses are summed, so each copy's gradient is that of its own mean loss
    :math:`\hat L`: every copy has the same number of rows, so the sum is :math:`K` times the
    mean over all rows, one sampling call for all of them. Copy :math:`k`'s batches come from
    its own stream, seeded from ``seeds[k]`` but not equal to its training batches."""

    def __init__(self, optimizer: SophiaG, X: Tensor, *, every: int = 10, batch_size: int,
                 seeds: Sequence[int]) -> None:  # fmt: skip
        if every < 1:
            raise ValueError(f"Invalid every: {every}; need every >= 1")
        self.optimizer, self.X, self.every = optimizer, X, every
        self.streams = [BatchStream(len(X), batch_size, s + HESSIAN_STREAM) for s in seeds]
        self.generator = torch.Generator().manual_seed(derive_seed(HESSIAN_STREAM + seeds[0]))
        self.refreshes = 0

    def __call__(self, t: int, stacked: StackedModels) -> None:
        if t % self.every:
            return
        idx = torch.stack([s.next() for s in self.streams])
        stacked.zero_grad_()
        logits = stacked(self.X[idx], per_model=True)
        (stacked.n_models * gnb_loss(logits, generator=self.generator)).backward()
        self.optimizer.update_hessian()
        stacked.zero_grad_()
        self.refreshes += 1


class ValidationCurve:
    """A ``callback``: every copy's mean loss on ``X, y`` every ``every`` steps (and before the
    first step, when constructed with the stacked model): ``losses[i, k]`` at ``steps[i]``."""

    def __init__(self, stacked: StackedModels, loss_fn, X: Tensor, y: Tensor, *,
                 every: int) -> None:  # fmt: skip
        if every < 1:
            raise ValueError(f"Invalid every: {every}; need every >= 1")
        self.loss_fn, self.X, self.y, self.every = loss_fn, X, y, every
        self.steps = [0]
        self.history = [stacked.evaluate(loss_fn, X, y)]

    def __call__(self, t: int, stacked: StackedModels) -> None:
        if t % self.every == 0:
            self.steps.append(t)
            self.history.append(stacked.evaluate(self.loss_fn, self.X, self.y))

    @property
    def losses(self) -> np.ndarray:
        return np.array(self.history)


class _Chain:
    def __init__(self, callbacks: Sequence) -> None:
        self.callbacks = [c for c in callbacks if c is not None]

    def __call__(self, t: int, stacked: StackedModels) -> None:
        for callback in self.callbacks:
            callback(t, stacked)


def lm_race(
    optimizer: str,
    runs: Sequence[Sequence[float]],
    *,
    steps: int,
    batch_size: int,
    options: dict | None = None,
    workload_options: dict | None = None,
    warmup: int = 0,
    hessian_every: int = 10,
    eval_every: int = 25,
    eval_examples: int = 64,
    final_examples: int | None = None,
    clip_every: int = 5,
) -> dict:
    r"""Train one copy of the character model per run ``(lr, seed)`` with ``optimizer``
    (``"SophiaG"`` or another optlib optimizer that updates each tensor on its own, e.g.
    ``"AdamW"``, built with ``options``), ``steps`` steps of ``batch_size`` windows, a linear
    warm-up over ``warmup`` steps and a cosine decay to 0 at ``steps``. SophiaG refreshes its
    Hessian estimate every ``hessian_every`` steps on a batch of the same size, and steps with
    ``bs`` = that batch's tokens.

    Runs with the same learning rate share a param group whose views cover their copies (the
    update is element-wise, so each copy still takes its own steps). Returns plain JSON data,
    lists aligned with ``runs``: ``curve_steps`` and ``curve`` (the validation loss in nats on
    ``eval_examples`` evenly spaced validation windows, ``curve[i][k]`` after
    ``curve_steps[i]`` steps), ``final`` (after training, on ``final_examples`` evenly spaced
    validation windows, default all),
    ``diverged``, ``clipped_steps`` and ``clipped`` (SophiaG: the clipped fraction of every
    ``clip_every``-th step, ``clipped[i][k]``; else empty), ``tokens_per_step``, ``refreshes``
    and ``seconds`` (wall time of the whole call).
    """
    import optlib

    start = time.perf_counter()
    if not runs:
        raise ValueError("lm_race needs at least one run")
    work = workload("char_lm", **(workload_options or {}))
    cls = getattr(optlib, optimizer, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ValueError(f"Invalid optimizer: {optimizer!r} is not an optlib optimizer")
    if optimizer not in ELEMENTWISE or optimizer == "SophiaH":
        raise ValueError(f"Invalid optimizer: {optimizer!r}; lm_race trains SophiaG or an "
                         "element-wise optimizer")  # fmt: skip
    runs = [(float(lr), int(seed)) for lr, seed in runs]
    order = sorted(range(len(runs)), key=lambda i: runs[i])  # equal lr side by side
    ordered = [runs[i] for i in order]
    seeds = [seed for _, seed in ordered]
    data = work.data
    tokens = batch_size * data.X_train.shape[1]
    stacked = StackedModels([work.model(seed) for seed in seeds])
    groups, copies, k = [], [], 0
    while k < len(ordered):  # one group per learning rate, its views covering those copies
        stop = k + 1
        while stop < len(ordered) and ordered[stop][0] == ordered[k][0]:
            stop += 1
        groups.append({"params": stacked.views(k, stop), "lr": ordered[k][0]})
        copies.append(stop - k)
        k = stop
    opt = cls(groups, **{"foreach": True, **(options or {})})
    refresh = clipped = None
    if optimizer == "SophiaG":
        refresh = GNBRefresh(opt, data.X_train, every=hessian_every, batch_size=batch_size,
                             seeds=seeds)  # fmt: skip
        clipped = ClippedFraction(opt, tokens, copies=copies, every=clip_every)
    pick = torch.linspace(0, len(data.X_test) - 1, eval_examples).round().long()
    curve = ValidationCurve(stacked, work.loss_fn, data.X_test[pick], data.y_test[pick],
                            every=eval_every)  # fmt: skip
    history = train_stacked(
        stacked, opt, data.X_train, data.y_train, work.loss_fn, steps=steps,
        batch_size=batch_size, seeds=seeds, schedule="cosine", warmup=warmup,
        callback=_Chain([clipped, refresh, curve]),
        step_kwargs={"bs": tokens} if optimizer == "SophiaG" else None,
    )  # fmt: skip
    diverged = ~np.isfinite(history[-1])
    n_final = len(data.X_test) if final_examples is None else min(final_examples, len(data.X_test))
    pick = torch.linspace(0, len(data.X_test) - 1, n_final).round().long()
    final = np.where(diverged, np.nan, stacked.evaluate(work.loss_fn, data.X_test[pick],
                                                        data.y_test[pick]))  # fmt: skip
    back = np.argsort(order)  # results in the order of ``runs``

    def plain(values) -> list[float]:
        return [float(v) for v in values]

    return {
        "runs": [list(r) for r in runs],
        "curve_steps": curve.steps,
        "curve": [plain(np.where(diverged, np.nan, row)[back]) for row in curve.losses],
        "final": plain(final[back]),
        "diverged": [bool(d) for d in diverged[back]],
        "clipped_steps": [] if clipped is None else clipped.steps,
        "clipped": [] if clipped is None else [plain(row[back]) for row in clipped.fractions],
        "tokens_per_step": tokens,
        "refreshes": 0 if refresh is None else refresh.refreshes,
        "seconds": time.perf_counter() - start,
    }


def steps_to_target(steps: Sequence[float], losses: Sequence[float], target: float) -> float:
    """The first step at which a loss curve, linearly interpolated between its evaluations,
    falls to ``target``; ``inf`` if it never does (NaN entries count as not reached)."""
    steps, losses = np.asarray(steps, dtype=float), np.asarray(losses, dtype=float)
    below = np.nonzero(losses <= target)[0]
    if len(below) == 0:
        return float("inf")
    j = int(below[0])
    if j == 0:
        return float(steps[0])
    s0, s1, l0, l1 = steps[j - 1], steps[j], losses[j - 1], losses[j]
    if not np.isfinite(l0):
        return float(s1)
    return float(s0 + (s1 - s0) * (l0 - target) / (l0 - l1))
