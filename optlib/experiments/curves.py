r"""Mini-batch training measured the way chapter 2 compares runs: against examples processed.

:func:`run_curve` trains a classifier on a :class:`~optlib.problems.Dataset` with any
:class:`torch.optim.Optimizer` (a learning-rate scheduler optionally stepped after every step),
one shuffled epoch after another, each cut into :math:`\lfloor N/B \rfloor` disjoint batches of
:math:`B` examples (:func:`optlib.experiments.stochastic.epoch_batches`; ``batch_size=None`` is
full-batch gradient descent). Each step

.. math::
    \theta_t = \theta_{t-1} - \eta_t\, g_{\mathcal B_t}(\theta_{t-1})
    \quad\text{(for SGD; any optimizer's rule otherwise)}

processes :math:`B` examples, so after :math:`t` steps the run has used :math:`tB` of them.
At regular intervals it evaluates the *full* training loss :math:`f(\theta_t)` and the test
loss and accuracy, and returns a :class:`Curve`. Plotting curves of different batch sizes
against examples processed compares them at equal computational work in gradient evaluations
(Bottou, Curtis & Nocedal, 2018, §3.3).

Unlike :func:`optlib.experiments.train.run`, which records every step of small problems, this loop
only evaluates at checkpoints, and steps a scheduler; it is lean enough for thousands of small
steps.

A float32 training run is one draw: its end point moves with the seed (initial weights, batch
order) and with the CPU's rounding. Claims about runs are therefore made on several seeds
(:func:`sweep_seeds`, :func:`seed_median`), and learning-rate grids are built from the measured
stability limit :math:`2/\lambda_0` (:func:`stable_lr_grid`), so that no grid point sits on the
edge where rounding decides between a catapult and a divergence.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from .._seed import derive_seed
from ..optim._validate import check_nonnegative, check_positive, check_positive_int
from ..problems import Dataset
from .stochastic import epoch_batches

__all__ = [
    "Curve",
    "run_curve",
    "evaluate",
    "SeedSweep",
    "sweep_seeds",
    "seed_median",
    "stable_lr_grid",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Curve:
    r"""What :func:`run_curve` measured. Index ``k`` is the ``k``-th evaluation (``k = 0``: the
    start).

    Attributes:
        batch_size: :math:`B` (the training-set size :math:`N` for full batch).
        n: the training-set size :math:`N`.
        steps: optimizer steps taken at each evaluation.
        examples: training examples processed at each evaluation (steps times :math:`B`).
        train_loss: the full training loss :math:`f(\theta_t)` at each evaluation.
        test_loss, test_accuracy: on the held-out set, at each evaluation.
        time: seconds spent training (evaluations excluded) at each evaluation.
        lr: the learning rate of the first param group used at every step.
        diverged: the run stopped because the loss became non-finite or exploded.
    """

    label: str = ""
    batch_size: int = 0
    n: int = 0
    steps: list[int] = field(default_factory=list)
    examples: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    diverged: bool = False

    @property
    def epochs(self) -> np.ndarray:
        """Examples processed at each evaluation, in passes over the training set."""
        return np.asarray(self.examples, dtype=np.float64) / self.n

    @property
    def final_train_loss(self) -> float:
        return self.train_loss[-1]

    @property
    def final_test_accuracy(self) -> float:
        return self.test_accuracy[-1]

    @property
    def final_score(self) -> float:
        """The final training loss, or ``inf`` for a run that diverged: what a sweep ranks."""
        return math.inf if self.diverged else self.train_loss[-1]

    def loss_at(self, examples: float) -> float:
        """The training loss at the last evaluation that had used at most ``examples``."""
        k = int(np.searchsorted(np.asarray(self.examples), examples, side="right")) - 1
        if k < 0:
            raise ValueError(f"no evaluation at or before {examples} examples")
        return self.train_loss[k]


@torch.no_grad()
def evaluate(model: nn.Module, X: Tensor, y: Tensor, loss_fn: LossFn) -> tuple[float, float]:
    """``(loss, accuracy)`` of a classifier on ``(X, y)``, without building a graph."""
    logits = model(X)
    accuracy = (logits.argmax(1) == y).to(torch.float64).mean()
    return float(loss_fn(logits, y)), float(accuracy)


OptimizerLike = torch.optim.Optimizer | Callable[[list[Tensor]], torch.optim.Optimizer]


def run_curve(
    optimizer: OptimizerLike,
    model: nn.Module,
    data: Dataset,
    *,
    batch_size: int | None,
    epochs: float,
    scheduler: Callable[[torch.optim.Optimizer], object] | None = None,
    evals_per_epoch: float = 1,
    loss_fn: LossFn = nn.functional.cross_entropy,
    seed: int = 0,
    stop_below: float | None = None,
    divergence_factor: float = 10.0,
    l2: float = 0.0,
    label: str = "",
) -> Curve:
    r"""Train ``model`` in place for ``epochs`` passes over ``data.X_train`` and return its
    :class:`Curve` (see the module docstring).

    Args:
        optimizer: an optimizer over ``model``'s parameters, or a factory ``params -> optimizer``.
        batch_size: :math:`B`; ``None`` (or :math:`B \ge N`) takes full-batch steps.
        epochs: training length in examples processed, in units of :math:`N`:
            ``round(epochs * N / B)`` steps, so that runs with different batch sizes process the
            same number of examples (an epoch of batches drops the last ``N mod B`` examples).
        scheduler: a factory ``optimizer -> scheduler`` (e.g. a ``torch.optim.lr_scheduler``);
            its ``step()`` is called after every optimizer step.
        evals_per_epoch: evaluations of the full training loss per epoch (at most one per step);
            a fraction below 1 evaluates every ``1/evals_per_epoch`` epochs (for long
            full-batch runs).
        seed: seeds the batch order.
        stop_below: stop at the first evaluation whose training loss is below this value.
        divergence_factor: stop (``diverged``) when the training loss is not finite or exceeds
            this factor times its starting value.
        l2: adds :math:`\tfrac{\lambda}{2}\|\theta\|^2` (:math:`\lambda` = ``l2``, over the
            trainable parameters) to the loss of every batch and to the recorded training and
            test losses: the objective is then :math:`f(\theta) = \frac1N\sum_i \ell_i(\theta)
            + \tfrac{\lambda}{2}\|\theta\|^2`, and the mini-batch gradient stays unbiased.
    """
    X, y = data.X_train, data.y_train
    n = len(y)
    B = n if batch_size is None else min(check_positive_int("batch_size", batch_size), n)
    check_positive("epochs", epochs)
    l2 = check_nonnegative("l2", l2)
    per_epoch = n // B
    total = max(1, round(epochs * n / B))  # equal examples for every B, whatever drop_last drops
    if isinstance(evals_per_epoch, int):
        every = max(1, per_epoch // check_positive_int("evals_per_epoch", evals_per_epoch))
    else:
        every = max(1, round(per_epoch / check_positive("evals_per_epoch", evals_per_epoch)))
    params = [p for p in model.parameters() if p.requires_grad]

    def objective(logits: Tensor, target: Tensor) -> Tensor:
        loss = loss_fn(logits, target)
        if l2 == 0.0:
            return loss
        return loss + 0.5 * l2 * sum(p.pow(2).sum() for p in params)

    opt = optimizer if isinstance(optimizer, torch.optim.Optimizer) else optimizer(params)
    sched = scheduler(opt) if scheduler is not None else None
    gen = torch.Generator().manual_seed(derive_seed(seed))
    curve = Curve(label=label, batch_size=B, n=n)

    clock = {"train": 0.0, "since": time.perf_counter()}

    def record(step: int) -> bool:
        """Evaluate at ``step``; False when the run must stop (diverged or below target)."""
        clock["train"] += time.perf_counter() - clock["since"]
        curve.time.append(clock["train"])
        train_loss, _ = evaluate(model, X, y, objective)
        test_loss, test_acc = evaluate(model, data.X_test, data.y_test, objective)
        curve.steps.append(step)
        curve.examples.append(step * B)
        curve.train_loss.append(train_loss)
        curve.test_loss.append(test_loss)
        curve.test_accuracy.append(test_acc)
        start = curve.train_loss[0]
        clock["since"] = time.perf_counter()
        if not math.isfinite(train_loss) or train_loss > divergence_factor * start:
            curve.diverged = True
            return False
        return stop_below is None or train_loss >= stop_below

    if not record(0):
        return curve
    step = 0
    while step < total:
        batches = [None] if B == n else epoch_batches(n, B, generator=gen)
        for idx in batches:
            Xb, yb = (X, y) if idx is None else (X[idx], y[idx])
            opt.zero_grad()
            loss = objective(model(Xb), yb)
            loss.backward()
            curve.lr.append(float(opt.param_groups[0]["lr"]))
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            if not math.isfinite(loss.item()):
                curve.diverged = True
                return curve
            if (step % every == 0 or step == total) and not record(step):
                return curve
            if step == total:
                break
    return curve


# --------------------------------------------------------------------------- several seeds


def stable_lr_grid(
    sharpness: float, n: int, *, top: float = math.sqrt(2), factor: float = 2.0
) -> list[float]:
    r"""``n`` learning rates below the stability limit :math:`2/\lambda` of a loss with
    sharpness :math:`\lambda` (its top Hessian eigenvalue), ascending:

    .. math::
        \eta_k = \frac{\mathrm{top}}{\lambda}\, \mathrm{factor}^{-k}, \qquad
        k = n - 1, \dots, 1, 0,

    so the largest has :math:`\eta\lambda = \mathrm{top}` (:math:`\sqrt 2` by default): a grid
    chosen from the theory of chapter 1, whose top stays clear of the edge :math:`\eta\lambda
    = 2`, where float rounding decides the fate of a run.
    """
    check_positive("sharpness", sharpness)
    n = check_positive_int("n", n)
    if not 0 < top < 2:
        raise ValueError(f"Invalid top: {top!r}; allowed range is (0, 2), below the limit")
    if not (factor > 1 and math.isfinite(factor)):
        raise ValueError(f"Invalid factor: {factor!r}; allowed range is (1, inf)")
    return [top / sharpness * factor ** (-k) for k in range(n - 1, -1, -1)]


@dataclass
class SeedSweep:
    """What :func:`sweep_seeds` ran: one :class:`Curve` per learning rate and seed."""

    lrs: list[float]
    seeds: list[int]
    curves: dict[tuple[float, int], Curve]

    def runs(self, lr: float) -> list[Curve]:
        """The curves of learning rate ``lr``, one per seed."""
        return [self.curves[lr, s] for s in self.seeds]

    def finals(self, lr: float) -> np.ndarray:
        """The final training loss of each seed at ``lr`` (``inf`` where the run diverged)."""
        return np.array([c.final_score for c in self.runs(lr)])

    @property
    def median_final(self) -> np.ndarray:
        """The median over seeds of the final training loss, for each learning rate."""
        return np.array([float(np.median(self.finals(lr))) for lr in self.lrs])

    @property
    def best_lr(self) -> float:
        r""":math:`\eta^\star`: the learning rate with the smallest median final loss (the
        smaller one on ties)."""
        med = self.median_final
        if not np.isfinite(med).any():
            raise ValueError("every learning rate diverged in most seeds: lower the grid")
        return float(self.lrs[int(np.argmin(med))])


def sweep_seeds(
    run: Callable[[float, int], Curve], lrs: list[float] | np.ndarray, seeds: list[int]
) -> SeedSweep:
    r"""Run ``run(lr, seed)`` (which returns a :class:`Curve`) for every learning rate and seed.

    Seeds vary outermost, so that a drift of the machine's speed touches every learning rate
    alike (the curves' ``time`` stays comparable). Choose :math:`\eta` with
    :attr:`SeedSweep.best_lr`, by the median over seeds: a single float32 run is one draw.
    """
    lrs = [float(lr) for lr in lrs]
    seeds = [int(s) for s in seeds]
    if not lrs or not seeds:
        raise ValueError("Invalid lrs, seeds: both must be non-empty")
    curves = {(lr, s): run(lr, s) for s in seeds for lr in lrs}
    return SeedSweep(lrs, seeds, curves)


def seed_median(curves: list[Curve], examples: np.ndarray | list[float]) -> np.ndarray:
    r"""The median over ``curves`` of the training loss after ``examples`` examples processed:
    each curve interpolated log-linearly between its evaluations. A curve that stopped earlier
    (diverged, or reached a target) counts as ``inf`` after its last evaluation if it diverged,
    and as its last value otherwise."""
    if not curves:
        raise ValueError("Invalid curves: need at least one")
    at = np.asarray(examples, dtype=np.float64)
    rows = []
    for c in curves:
        ex = np.asarray(c.examples, dtype=np.float64)
        loss = np.asarray(c.train_loss, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            row = np.exp(np.interp(at, ex, np.log(loss)))
        if c.diverged:
            row[at > ex[-1]] = math.inf
            row[~np.isfinite(row)] = math.inf
        rows.append(row)
    return np.median(np.stack(rows), axis=0)
