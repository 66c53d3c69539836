r"""Learning-rate sweeps: one seeded run per learning rate, and the best of them.

A learning rate :math:`\eta` is only good or bad for a given problem, optimizer and budget, so
an honest comparison of optimizers tunes it for each (chapter 5's "Adam needs no tuning" trap,
chapter 12's benchmark). :func:`lr_sweep` runs the same problem from the same start (same seed,
same initial weights) for ``steps`` steps at every :math:`\eta` of a grid, with
:func:`optlib.experiments.train.run`, and records the final loss

.. math::

   F(\eta) = f(\theta_T(\eta)) \quad (\text{or the mean of the last } k \text{ recorded losses}),
   \qquad \eta^\star = \operatorname*{arg\,min}_{\eta \in \text{grid}} F(\eta),

with :math:`F(\eta) = +\infty` for a run that diverged. :func:`lr_grid` builds log-spaced grids
that contain the exact decades, so that :math:`\eta^\star` reads as a round number.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..experiments.train import History, Supervised, run
from ..problems.landscapes import Landscape

__all__ = ["Sweep", "lr_grid", "lr_sweep"]

Problem = Landscape | Supervised
OptimizerFactory = Callable[[list[Tensor], float], torch.optim.Optimizer]


def lr_grid(lo: float, hi: float, per_decade: int = 2) -> np.ndarray:
    r"""The learning rates :math:`10^{k/n}` (``n = per_decade``) with ``lo <= 10**(k/n) <= hi``.

    ``lr_grid(1e-3, 1, 2)`` is ``[1e-3, 3.16e-3, 1e-2, ..., 1]``: the decades themselves are
    always on the grid (computed as exact powers of ten).
    """
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise ValueError(f"Invalid range: lo={lo!r}, hi={hi!r}; need 0 < lo <= hi < inf")
    if not (isinstance(per_decade, int) and per_decade >= 1):
        raise ValueError(f"Invalid per_decade: {per_decade!r}; need an integer >= 1")
    k_lo = math.ceil(per_decade * math.log10(lo) - 1e-9)
    k_hi = math.floor(per_decade * math.log10(hi) + 1e-9)
    return np.array([10.0 ** (k / per_decade) for k in range(k_lo, k_hi + 1)])


@dataclass
class Sweep:
    """What :func:`lr_sweep` measured: one final loss per learning rate (``inf``: diverged)."""

    label: str
    lrs: np.ndarray
    final_loss: np.ndarray
    diverged: np.ndarray
    histories: list[History] = field(default_factory=list)

    @property
    def best_index(self) -> int:
        """Index of the smallest final loss (the first one on ties)."""
        finite = np.isfinite(self.final_loss)
        if not finite.any():
            raise ValueError(f"every run of sweep {self.label!r} diverged: lower the grid")
        return int(np.argmin(np.where(finite, self.final_loss, np.inf)))

    @property
    def best_lr(self) -> float:
        r""":math:`\eta^\star`, the grid's learning rate with the smallest final loss."""
        return float(self.lrs[self.best_index])

    @property
    def best_loss(self) -> float:
        return float(self.final_loss[self.best_index])

    @property
    def at_edge(self) -> bool:
        """Whether the best learning rate is the first or last grid point (then widen the grid)."""
        return self.best_index in (0, len(self.lrs) - 1)

    def largest_stable_lr(self) -> float | None:
        """The largest learning rate on the grid whose run did not diverge (``None``: none)."""
        ok = self.lrs[~self.diverged]
        return float(ok.max()) if len(ok) else None


def _fresh(problem: Problem | Callable[[], Problem]) -> Problem:
    if isinstance(problem, Landscape):
        return problem  # run() resets a landscape (and its noise) itself
    if isinstance(problem, Supervised):
        return copy.deepcopy(problem)  # same initial weights for every learning rate
    made = problem()
    if not isinstance(made, (Landscape, Supervised)):
        raise TypeError(f"the problem factory returned {type(made).__name__}, not a problem")
    return made


def lr_sweep(
    optimizer: OptimizerFactory,
    problem: Problem | Callable[[], Problem],
    lrs: Sequence[float],
    steps: int,
    *,
    x0: Sequence[float] | Tensor | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    average_last: int = 1,
    label: str = "",
    keep_histories: bool = False,
    divergence_factor: float = 1e6,
) -> Sweep:
    r"""Run ``optimizer(params, lr)`` on ``problem`` for ``steps`` steps at every ``lr``.

    Args:
        optimizer: ``(params, lr) -> optimizer``, e.g. ``lambda p, lr: optlib.Adam(p, lr=lr)``.
        problem: a landscape, a :class:`~optlib.experiments.train.Supervised` problem (deep-copied
            for each run, so every run starts from the same weights and the original is left
            untouched),
            or a function that builds a fresh problem.
        lrs: the learning rates, each :math:`> 0` (see :func:`lr_grid`).
        steps: steps per run.
        x0, batch_size, seed, divergence_factor: passed to :func:`optlib.experiments.train.run`
            (the same seed for every run: same batches, same noise).
        average_last: the final loss is the mean of the last ``average_last`` recorded losses
            (useful with mini-batches, whose single last loss is noisy).
        label: a name for the sweep.
        keep_histories: keep every run's :class:`~optlib.experiments.train.History`.
    """
    lrs = np.asarray(lrs, dtype=np.float64).reshape(-1)
    if len(lrs) == 0 or not np.all(np.isfinite(lrs) & (lrs > 0)):
        raise ValueError(f"Invalid lrs: {lrs.tolist()!r}; need a non-empty list of lr > 0")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"Invalid steps: {steps!r}; need an integer >= 1")
    if not (isinstance(average_last, int) and 1 <= average_last <= steps + 1):
        raise ValueError(f"Invalid average_last: {average_last!r}; need 1 <= it <= steps + 1")
    finals, diverged, histories = [], [], []
    for lr in lrs:
        hist = run(
            lambda params, lr=float(lr): optimizer(params, lr),
            _fresh(problem),
            steps,
            x0=x0,
            batch_size=batch_size,
            seed=seed,
            label=f"{label}, η={lr:.3g}" if label else f"η={lr:.3g}",
            divergence_factor=divergence_factor,
            progress=False,
        )
        tail = np.asarray(hist.loss[-average_last:], dtype=np.float64)
        bad = hist.diverged or not np.all(np.isfinite(tail))
        finals.append(math.inf if bad else float(tail.mean()))
        diverged.append(bad)
        if keep_histories:
            histories.append(hist)
    return Sweep(label, lrs, np.array(finals), np.array(diverged, dtype=bool), histories)
