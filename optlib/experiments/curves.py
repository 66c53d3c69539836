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

__all__ = ["Curve", "run_curve", "evaluate"]

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Curve:
    """What :func:`run_curve` measured. Index ``k`` is the ``k``-th evaluation (``k = 0``: the
    start).

    Attributes:
        batch_size: :math:`B` (the training-set size :math:`N` for full batch).
        n: the training-set size :math:`N`.
        steps: optimizer steps taken at each evaluation.
        examples: training examples processed at each evaluation (steps times :math:`B`).
        train_loss: the full training loss :math:`f(\\theta_t)` at each evaluation.
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
    evals_per_epoch: int = 1,
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
        evals_per_epoch: evaluations of the full training loss per epoch (at most one per step).
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
    evals_per_epoch = check_positive_int("evals_per_epoch", evals_per_epoch)
    per_epoch = n // B
    total = max(1, round(epochs * n / B))  # equal examples for every B, whatever drop_last drops
    every = max(1, per_epoch // evals_per_epoch)
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
