r"""Switching from Adam to SGD during training: SWATS (chapter 12).

Keskar & Socher, "Improving Generalization Performance by Switching from Adam to SGD", 2017
(arXiv:1712.07628), Algorithm 1. Each param group starts with Adam. After every Adam step
:math:`p_k = \theta_k - \theta_{k-1}` (Adam's step, measured), SWATS asks which SGD learning
rate :math:`\gamma_k` would give a step whose projection on :math:`p_k` is :math:`p_k` itself,

.. math::

   \gamma_k = \frac{p_k^\top p_k}{-p_k^\top g_k}, \qquad
   \lambda_k = \beta_2\lambda_{k-1} + (1-\beta_2)\gamma_k, \qquad
   \Lambda_k = \frac{\lambda_k}{1-\beta_2^k},

(the projection, its exponential average and that average's bias correction, with Adam's
:math:`\beta_2`; :math:`p` and :math:`g` are the group's vectors of all its parameters), and
switches the group to SGD with momentum :math:`\beta_1` once :math:`k > 1`,
:math:`\Lambda_k > 0` and :math:`|\Lambda_k - \gamma_k| < \varepsilon` (the paper's
:math:`\varepsilon = 10^{-9}`; ``relative=True`` reads it relative to :math:`\Lambda_k`). The SGD
phase is the paper's :math:`v_k = \beta_1 v_{k-1} + g_k`, :math:`\theta_k = \theta_{k-1} -
(1-\beta_1)\Lambda\, v_k`: torch's SGD with momentum :math:`\beta_1`, no dampening, learning
rate :math:`(1-\beta_1)\Lambda`.

:class:`AdamThenSGD` runs both phases with :class:`optlib.Adam` and :class:`optlib.SGD` (one of
each per param group), so its updates are theirs. Per group, ``switch`` chooses the rule:
``"swats"`` (the criterion above), an integer :math:`T` (switch after :math:`T` Adam steps, with
the learning rate :math:`\Lambda_T`; ``0``: SGD from the start), or ``None`` (Adam throughout);
``sgd_lr`` replaces :math:`(1-\beta_1)\Lambda` by a given learning rate. A scheduler (or
:func:`~optlib.experiments.stacked.train_stacked`'s schedule) that changes a group's ``lr``
scales both phases by the same factor. ``switched_at`` and ``sgd_lr`` of every group say what
happened; the state lives in the inner optimizers (no ``state_dict`` of its own).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from ..optim.adam import Adam
from ..optim.sgd import SGD

__all__ = ["AdamThenSGD", "projected_sgd_lr"]


def projected_sgd_lr(p: Tensor, g: Tensor) -> float:
    r""":math:`\gamma = p^\top p / (-p^\top g)` for a step ``p`` taken against gradient ``g``
    (flat tensors); NaN when :math:`p^\top g = 0`."""
    pg = float(torch.dot(p.double(), g.double()))
    return float(torch.dot(p.double(), p.double())) / -pg if pg != 0 else math.nan


class AdamThenSGD(torch.optim.Optimizer):
    r"""Adam, then SGD with momentum, per param group (see the module docstring).

    Args:
        params: parameters or param groups.
        lr: Adam's learning rate :math:`\eta > 0`.
        betas: Adam's :math:`(\beta_1, \beta_2)`; :math:`\beta_1` is also the SGD phase's
            momentum, :math:`\beta_2` the averaging rate of :math:`\Lambda`.
        eps: Adam's :math:`\epsilon`.
        switch: ``"swats"``, a step count :math:`T \ge 0`, or ``None``.
        tol: the criterion's :math:`\varepsilon > 0`.
        relative: compare :math:`|\Lambda_k - \gamma_k|` with :math:`\varepsilon\Lambda_k`.
        sgd_lr: the SGD phase's learning rate (default :math:`(1-\beta_1)\Lambda`).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, *,
                 switch: str | int | None = "swats", tol: float = 1e-9, relative: bool = False,
                 sgd_lr: float | None = None) -> None:  # fmt: skip
        if not lr > 0:
            raise ValueError(f"Invalid lr: {lr}; need lr > 0")
        if not (switch is None or switch == "swats" or (isinstance(switch, int)
                                                        and not isinstance(switch, bool)
                                                        and switch >= 0)):  # fmt: skip
            raise ValueError(f"Invalid switch: {switch!r}; allowed are 'swats', an integer >= 0 "
                             "or None")  # fmt: skip
        if not tol > 0:
            raise ValueError(f"Invalid tol: {tol}; need tol > 0")
        if sgd_lr is not None and not sgd_lr > 0:
            raise ValueError(f"Invalid sgd_lr: {sgd_lr}; need sgd_lr > 0 or None")
        defaults = dict(lr=lr, betas=betas, eps=eps, switch=switch, tol=tol, relative=relative,
                        sgd_lr=sgd_lr)  # fmt: skip
        super().__init__(params, defaults)
        for group in self.param_groups:
            self._prepare(group)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        if hasattr(self, "_inner"):
            self._prepare(self.param_groups[-1])

    def _prepare(self, group: dict) -> None:
        if not hasattr(self, "_inner"):
            self._inner: dict[int, dict] = {}
        beta1, _ = group["betas"]
        group.setdefault("initial_lr", group["lr"])
        group.update(k=0, lam=0.0, Lambda=math.nan, switched_at=None, phase="adam")
        self._inner[id(group)] = {
            "adam": Adam(group["params"], lr=group["lr"], betas=group["betas"], eps=group["eps"],
                         foreach=True),
            "sgd": None,
        }
        if group["switch"] == 0:
            self._to_sgd(group, group["sgd_lr"] or (1 - beta1) * group["lr"])

    def _to_sgd(self, group: dict, lr: float) -> None:
        beta1, _ = group["betas"]
        group.update(phase="sgd", switched_at=group["k"], sgd_lr=lr)
        self._inner[id(group)]["sgd"] = SGD(group["params"], lr=lr, momentum=beta1, foreach=True)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            inner = self._inner[id(group)]
            scale = group["lr"] / group["initial_lr"]
            if group["phase"] == "sgd":
                sgd = inner["sgd"]
                sgd.param_groups[0]["lr"] = group["sgd_lr"] * scale
                sgd.step()
                continue
            params = [p for p in group["params"] if p.grad is not None]
            before = torch.cat([p.detach().reshape(-1) for p in params])
            grad = torch.cat([p.grad.detach().reshape(-1) for p in params])
            adam = inner["adam"]
            adam.param_groups[0]["lr"] = group["lr"]
            adam.step()
            group["k"] += 1
            k = group["k"]
            step = torch.cat([p.detach().reshape(-1) for p in params]) - before
            gamma = projected_sgd_lr(step, grad) / scale  # in units of the unscheduled lr
            _, beta2 = group["betas"]
            if math.isfinite(gamma):
                group["lam"] = beta2 * group["lam"] + (1 - beta2) * gamma
            Lambda = group["lam"] / (1 - beta2**k)
            group["Lambda"] = Lambda
            switch = group["switch"]
            if switch == "swats":
                gap = abs(Lambda - gamma) if math.isfinite(gamma) else math.inf
                bound = group["tol"] * (abs(Lambda) if group["relative"] else 1.0)
                if k > 1 and Lambda > 0 and gap < bound:
                    self._to_sgd(group, group["sgd_lr"] or (1 - group["betas"][0]) * Lambda)
            elif isinstance(switch, int) and k >= switch:
                lr = group["sgd_lr"] or (1 - group["betas"][0]) * max(Lambda, 0.0)
                if lr > 0:
                    self._to_sgd(group, lr)
        return loss
