r"""Schedule-free AdamW: no learning-rate schedule, an average instead (chapter 12).

Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less Scheduled", NeurIPS 2024
(arXiv:2405.15682). Same update, order of operations, defaults and state names as
``schedulefree/adamw_schedulefree.py`` (facebookresearch/schedule_free, the current version:
bias correction inside the denominator, ``train_mode`` off until ``train()``).

Three sequences. :math:`z` takes plain (Adam-scaled) gradient steps; :math:`x` is a weighted
average of the :math:`z`'s (the point to evaluate); the gradient is taken at :math:`y`, an
interpolation of the two:

.. math::

   y_t &= (1-\beta_1)\, z_t + \beta_1\, x_t
       &&\text{(where the gradient } g_t \text{ is evaluated)} \\
   v_t &= \beta_2 v_{t-1} + (1-\beta_2)\, g_t\odot g_t, \qquad
   u_t = \frac{g_t}{\sqrt{v_t / (1-\beta_2^{t})} + \epsilon} + \lambda\, y_t
       &&\text{(Adam scaling; weight decay at } y\text{)} \\
   z_{t+1} &= z_t - \gamma_t\, u_t \\
   x_{t+1} &= (1 - c_{t+1})\, x_t + c_{t+1}\, z_{t+1}, \qquad
   c_{t+1} = \frac{w_t}{\sum_{i\le t} w_i}, \quad
   w_t = t^{\,r}\, \big(\max_{i\le t}\gamma_i\big)^{p}

with :math:`\gamma_t = \eta\,\min(1, t/T_{\text{warmup}})` (``warmup_steps``), :math:`r` the
polynomial weighting power and :math:`p` the ``weight_lr_power``; :math:`z_1 = x_1 = y_1 =`
the initial parameters and :math:`v_0 = 0`. With :math:`r = 0` and no warm-up :math:`x` is the
plain running mean of the :math:`z`'s (:math:`c_{t+1} = 1/t`), and the first step sets
:math:`c = 1`, so afterwards :math:`x = y = z`.

Only :math:`y` (in the parameters, during training) and :math:`z` (state ``z``) are stored;
:math:`x` is recovered from them. Eliminating :math:`x` gives the in-place update of :math:`y`:

.. math::

   y_{t+1} = (1-c_{t+1})\, y_t + c_{t+1}\, z_t + \gamma_t\big(\beta_1 (1-c_{t+1}) - 1\big)\, u_t

``eval()`` swaps the parameters to :math:`x = (y - (1-\beta_1) z)/\beta_1` (a lerp toward
:math:`z` with weight :math:`1 - 1/\beta_1`), ``train()`` back to :math:`y`. Call
``opt.train()`` before training and ``opt.eval()`` before evaluating or saving a model;
``step()`` outside train mode is an error. (Batch-norm statistics computed at :math:`y` are
not those of :math:`x`; the reference recomputes them, which is outside an optimizer's job.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from ._base import Optimizer, eager, scalar
from ._moments import real_views
from ._validate import check_beta, check_interval, check_nonnegative, check_positive


def schedule_free_weight(
    k: int, lr: float, lr_max: float, weight_sum: float, *, r: float, weight_lr_power: float
) -> tuple[float, float, float]:
    r"""The averaging coefficient of step :math:`t = k+1` given the scheduled rate ``lr``:
    returns :math:`(c_{t+1},\ \max_i \gamma_i,\ \sum_i w_i)`; :math:`c = 0` while the weights sum
    to zero (a zero learning rate)."""
    lr_max = max(lr, lr_max)
    weight = (k + 1) ** r * lr_max**weight_lr_power
    weight_sum = weight_sum + weight
    c = weight / weight_sum if weight_sum != 0 else 0.0
    return c, lr_max, weight_sum


def schedulefree_adamw_update(
    y: Tensor,
    g: Tensor,
    z: Tensor,
    v: Tensor,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    c2: float,
    c: float,
    eps: float,
    weight_decay: float,
) -> None:
    r"""One schedule-free AdamW step on one tensor, in place (``y``, ``z``, ``v``).

    ``lr`` is the scheduled :math:`\gamma_t`, ``c2`` :math:`= 1-\beta_2^t`, ``c`` the averaging
    coefficient :math:`c_{t+1}`. ``g`` is not modified.
    """
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    u = g / v.div(c2).sqrt_().add_(eps)
    if weight_decay != 0:
        u.add_(y, alpha=weight_decay)
    y.lerp_(z, c)
    y.add_(u, alpha=lr * (beta1 * (1 - c) - 1))
    z.sub_(u, alpha=lr)


def schedulefree_adamw_update_foreach(
    ys: list[Tensor],
    gs: list[Tensor],
    zs: list[Tensor],
    vs: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    c2: float,
    c: float,
    eps: float,
    weight_decay: float,
) -> None:
    """The same step on many tensors at once through ``torch._foreach_*`` kernels."""
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, gs, gs, value=1 - beta2)
    denominators = torch._foreach_div(vs, c2)
    torch._foreach_sqrt_(denominators)
    torch._foreach_add_(denominators, eps)
    us = torch._foreach_div(gs, denominators)
    if weight_decay != 0:
        torch._foreach_add_(us, ys, alpha=weight_decay)
    torch._foreach_lerp_(ys, zs, c)
    torch._foreach_add_(ys, us, alpha=lr * (beta1 * (1 - c) - 1))
    torch._foreach_sub_(zs, us, alpha=lr)


def _check_nonnegative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Invalid {name}: {value!r}; allowed values are integers >= 0")
    return value


class AdamWScheduleFree(Optimizer):
    r"""Schedule-free AdamW, as in facebookresearch/schedule_free's ``AdamWScheduleFree``.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\eta \ge 0` (constant: no scheduler needed).
        betas: :math:`(\beta_1, \beta_2)`: :math:`\beta_1 \in (0, 1)` places :math:`y` between
            :math:`z` and :math:`x` (0 would make :math:`x` unrecoverable), :math:`\beta_2 \in
            [0, 1)` the second-moment decay.
        eps: :math:`\epsilon > 0`, added after the square root.
        weight_decay: :math:`\lambda \ge 0`, added to the scaled gradient at :math:`y`.
        warmup_steps: linear warm-up length :math:`T_{\text{warmup}}` (integer :math:`\ge 0`).
        r: polynomial weighting power :math:`r \ge 0` of the average.
        weight_lr_power: :math:`p \ge 0`: weights :math:`\propto \gamma_{\max}^p`, so warm-up
            iterates count less.
        foreach: use the multi-tensor path.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        foreach: bool | None = None,
    ) -> None:
        check_nonnegative("lr", lr)
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"Invalid betas: {betas!r}; expected a tuple (beta1, beta2)") from None
        check_interval("beta1 (betas[0])", beta1, 0.0, 1.0, low_open=True)
        check_beta("beta2 (betas[1])", beta2)
        check_positive("eps", eps)
        check_nonnegative("weight_decay", weight_decay)
        _check_nonnegative_int("warmup_steps", warmup_steps)
        check_nonnegative("r", r)
        check_nonnegative("weight_lr_power", weight_lr_power)
        defaults = dict(
            lr=lr,
            betas=(beta1, beta2),
            eps=eps,
            r=r,
            k=0,
            warmup_steps=warmup_steps,
            train_mode=False,
            weight_sum=0.0,
            lr_max=-1.0,
            scheduled_lr=0.0,
            weight_lr_power=weight_lr_power,
            weight_decay=weight_decay,
            foreach=foreach,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def eval(self) -> None:
        r"""Set the parameters to :math:`x` (for evaluation and checkpoints)."""
        for group in self.param_groups:
            if group["train_mode"]:
                beta1 = group["betas"][0]
                for p in group["params"]:
                    if "z" in self.state[p]:
                        p.lerp_(self.state[p]["z"], 1 - 1 / beta1)
                group["train_mode"] = False

    @torch.no_grad()
    def train(self) -> None:
        r"""Set the parameters to :math:`y` (where gradients are taken)."""
        for group in self.param_groups:
            if not group["train_mode"]:
                beta1 = group["betas"][0]
                for p in group["params"]:
                    if "z" in self.state[p]:
                        p.lerp_(self.state[p]["z"], 1 - beta1)
                group["train_mode"] = True

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step (train mode only); ``closure`` re-evaluates the loss and returns it."""
        if not all(group["train_mode"] for group in self.param_groups):
            raise RuntimeError(
                "AdamWScheduleFree.step() called outside train mode: call optimizer.train() "
                "before training steps and optimizer.eval() before evaluation"
            )
        loss = self._evaluate(closure)
        schedules = _advance_schedules(self.param_groups)
        for group, (lr, c, c2) in zip(self.param_groups, schedules):
            beta1, beta2 = group["betas"]
            params, grads = self._params_and_grads(group)
            for p in params:
                state = self.state[p]
                if "z" not in state:
                    state["z"] = p.detach().clone(memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            zs = [self.state[p]["z"] for p in params]
            vs = [self.state[p]["exp_avg_sq"] for p in params]
            if any(p.is_complex() for p in params):  # pairs of reals, as torch.optim does
                params, grads, zs, vs = real_views(params, grads, zs, vs)
            hyper = dict(
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                c2=c2,
                c=c,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
            )
            if params and group["foreach"]:
                schedulefree_adamw_update_foreach(params, grads, zs, vs, **hyper)
            else:
                for y, g, z, v in zip(params, grads, zs, vs):
                    schedulefree_adamw_update(y, g, z, v, **hyper)
        return loss


@eager("the schedule's Python floats change every step")
def _advance_schedules(groups: list[dict]) -> list[tuple[float, float, float]]:
    """:func:`_advance_schedule` for every group. Under torch.compile this runs eagerly: the
    floats then enter the compiled update as inputs, not as constants that would recompile it
    at every step."""
    return [_advance_schedule(group) for group in groups]


def _advance_schedule(group: dict) -> tuple[float, float, float]:
    r"""Advance ``group``'s schedule by one step (``k``, ``lr_max``, ``weight_sum``,
    ``scheduled_lr``, Python numbers in the group as in the reference) and return the step's
    :math:`\gamma_t`, :math:`c_{t+1}` and :math:`1-\beta_2^t`."""
    k = group["k"]
    warmup = group["warmup_steps"]
    lr = scalar(group["lr"]) * ((k + 1) / warmup if k < warmup else 1.0)
    c, group["lr_max"], group["weight_sum"] = schedule_free_weight(
        k,
        lr,
        group["lr_max"],
        group["weight_sum"],
        r=group["r"],
        weight_lr_power=group["weight_lr_power"],
    )
    group["scheduled_lr"] = lr
    group["k"] = k + 1
    return lr, c, 1 - group["betas"][1] ** (k + 1)
