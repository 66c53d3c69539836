r"""Baselines and measurements for chapter 4 (AdaGrad and RMSProp).

AdaGrad changes two things at once against SGD with a constant step: its steps *decay* (the
accumulator only grows) and they are *scaled per coordinate*. To tell the two apart, the chapter
compares it with two baselines that have the decay but not the per-coordinate scaling:

* SGD with the schedule :math:`\eta_t = \eta_0/\sqrt t` (:func:`inverse_sqrt_schedule`, for
  :func:`optlib.experiments.train.run`'s ``scheduler``);
* AdaGrad-Norm (:class:`AdagradNorm`), which keeps one accumulator for a whole param group
  instead of one per coordinate.

:func:`effective_lr_profile` measures how large a step an adaptive optimizer would take per unit
of gradient, coordinate by coordinate, from its state, and :func:`fit_sparse` trains the sparse
logistic regression of :func:`optlib.problems.sparse_logistic` and scores what it learned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from ..optim._validate import check_nonnegative
from ..problems.sparse import SparseFeatures
from .train import OptimizerLike, Supervised, run

__all__ = ["AdagradNorm", "inverse_sqrt_schedule", "effective_lr_profile", "fit_sparse"]


class AdagradNorm(torch.optim.Optimizer):
    r"""AdaGrad-Norm: AdaGrad with *one* accumulator per param group (Streeter & McMahan, 2010;
    Ward, Wu & Bottou, "AdaGrad stepsizes: sharp convergence over nonconvex landscapes",
    JMLR 21, 2020).

    .. math::
        b_t^2 = b_{t-1}^2 + \|g_t\|^2, \qquad
        \theta_t = \theta_{t-1} - \eta\, \frac{g_t}{b_t + \epsilon}, \qquad b_0^2 = \tau,

    where :math:`\|g_t\|^2` sums the squared gradients of every parameter of the group. The step
    decays like AdaGrad's, at the pace the gradients set, but every coordinate gets the same
    step size: the scalar baseline that isolates AdaGrad's per-coordinate scaling.

    Args:
        params: parameters or param groups (one accumulator per group).
        lr: :math:`\eta \ge 0`.
        initial_accumulator_value: :math:`\tau = b_0^2 \ge 0`.
        eps: :math:`\epsilon \ge 0`, added to :math:`b_t`.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        defaults = dict(
            lr=check_nonnegative("lr", lr),
            initial_accumulator_value=check_nonnegative(
                "initial_accumulator_value", initial_accumulator_value
            ),
            eps=check_nonnegative("eps", eps),
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            state = self.state[group["params"][0]]  # the group's accumulator lives here
            if "norm_sum" not in state:
                state["norm_sum"] = torch.tensor(
                    group["initial_accumulator_value"], dtype=torch.float64
                )
            for p in params:
                state["norm_sum"] += p.grad.double().square().sum()
            scale = group["lr"] / (math.sqrt(float(state["norm_sum"])) + group["eps"])
            for p in params:
                p.add_(p.grad, alpha=-scale)
        return loss


def inverse_sqrt_schedule(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    r"""The schedule :math:`\eta_t = \eta_0 / \sqrt t` for step :math:`t = 1, 2, \dots`, with
    :math:`\eta_0` the optimizer's ``lr``: the decay that AdaGrad's accumulator produces under
    stationary gradients, without its per-coordinate scaling. Step it after every optimizer step
    (as :func:`optlib.experiments.train.run` does with ``scheduler=``)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1 / math.sqrt(k + 1))


def effective_lr_profile(optimizer: torch.optim.Optimizer) -> Tensor:
    r"""The effective learning rate :math:`\eta/(\sqrt{G_i} + \epsilon)` (AdaGrad, ``sum``) or
    :math:`\eta/(\sqrt{v_i} + \epsilon)` (RMSProp, ``square_avg``) of every coordinate, read from
    the state of an :class:`optlib.Adagrad` or (uncentred) :class:`optlib.RMSprop`: the factor by
    which the next step would multiply each coordinate's gradient, if the accumulator did not
    change. A 1-D float64 tensor over all parameters that have state."""
    out = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            acc = state.get("sum", state.get("square_avg"))
            if acc is None:
                continue
            if state.get("grad_avg") is not None:
                raise ValueError("effective_lr_profile: centred RMSprop is not supported")
            out.append(group["lr"] / (acc.double().sqrt() + group["eps"]).reshape(-1))
    if not out:
        raise ValueError("the optimizer holds no accumulator yet: take a step first")
    return torch.cat(out)


def fit_sparse(
    problem: SparseFeatures,
    optimizer: OptimizerLike,
    steps: int,
    *,
    batch_size: int,
    seed: int = 0,
    scheduler: Callable[[torch.optim.Optimizer], object] | None = None,
) -> dict[str, float | bool]:
    r"""Train a fresh :meth:`~optlib.problems.sparse.SparseFeatures.model` (zero weights) on
    ``problem``'s training set with :func:`optlib.experiments.train.run` (mini-batches of
    ``batch_size`` in a seeded order, ``scheduler`` stepped after every step) and score it:

    * ``train``, ``test``: the mean logistic loss on the whole training and test sets;
    * ``excess_test``: the test loss minus that of the true weights :math:`w^\star` (the best a
      model can do on average);
    * ``rare``, ``frequent``: :math:`\|w - w^\star\| / \|w^\star\|` over the rare and the
      frequent features;
    * ``diverged``: whether the run stopped early.
    """
    model = problem.model()
    supervised = Supervised(model, problem.X_train, problem.y_train, problem.loss_fn)
    hist = run(optimizer, supervised, steps, batch_size=batch_size, seed=seed, scheduler=scheduler)
    w_star = problem.w_star
    with torch.no_grad():
        w = model[0].weight[0]

        def relative_error(mask: Tensor) -> float:
            return float((w - w_star)[mask].norm() / w_star[mask].norm())

        test = float(problem.loss_fn(model(problem.X_test), problem.y_test))
        bayes = float(problem.loss_fn(problem.X_test @ w_star, problem.y_test))
        return {
            "train": float(problem.loss_fn(model(problem.X_train), problem.y_train)),
            "test": test,
            "excess_test": test - bayes,
            "rare": relative_error(problem.rare),
            "frequent": relative_error(~problem.rare),
            "diverged": hist.diverged,
        }
