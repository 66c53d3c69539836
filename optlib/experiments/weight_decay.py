r"""Weight decay as its own step, and what an L2 penalty becomes inside Adam (chapter 6).

*Decoupled* weight decay shrinks the weights directly, before the optimizer's own step:

.. math::

   \theta \leftarrow (1 - \eta\lambda)\,\theta, \qquad \text{then the optimizer's step on }
   \nabla f(\theta).

For plain SGD this is the same as adding the L2 penalty :math:`\tfrac{\lambda}{2}\|\theta\|^2` to
the loss. For Adam it is not: the penalty's gradient :math:`\lambda\theta` goes through the
moments and is divided by :math:`\sqrt{\hat v_t} + \epsilon`, so coordinate :math:`i` decays by
the *effective* rate

.. math::

   \eta\,\lambda \,/\, (\sqrt{\hat v_{t,i}} + \epsilon)

per step, small where the gradients are large or noisy. Loshchilov & Hutter, "Decoupled Weight
Decay Regularization", ICLR 2019.

:func:`decay_` applies the decoupled step to any optimizer's parameters, and :class:`Decoupled`
wraps an optimizer so that every ``step`` does it first: ``Decoupled(SGD(...), λ)`` is SGDW and
``Decoupled(Adam(...), λ)`` is AdamW, one line placed before an unchanged step.
:func:`effective_decay` reads the per-coordinate rate off an Adam or AdamW optimizer's state.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..optim._moments import decay_weights_
from ..optim._validate import check_nonnegative

__all__ = ["Decoupled", "decay_", "effective_decay"]


@torch.no_grad()
def decay_(optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
    r"""Shrink every parameter of ``optimizer`` in place, :math:`\theta \leftarrow
    (1-\eta\lambda)\,\theta` with each group's learning rate :math:`\eta` and
    :math:`\lambda` = ``weight_decay``. Call it after ``backward()`` and before
    ``optimizer.step()``: the gradient was taken at the undecayed point, as in AdamW.

    Parameters without a gradient are left alone, as the optimizers skip them.
    """
    weight_decay = check_nonnegative("weight_decay", weight_decay)
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if params:
            decay_weights_(params, float(group["lr"]), weight_decay)


class Decoupled:
    r"""``optimizer`` with decoupled weight decay in front of every step.

    ``step(closure)`` evaluates ``closure`` (the gradient is taken at the current, undecayed
    :math:`\theta`), applies :func:`decay_` with ``weight_decay``, then takes the wrapped
    optimizer's step. ``zero_grad``, ``param_groups``, ``state`` and the state dict are the
    wrapped optimizer's, so schedulers that change ``lr`` change the decay too.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
        self.optimizer = optimizer
        self.weight_decay = check_nonnegative("weight_decay", weight_decay)

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    @property
    def state(self) -> dict:
        return self.optimizer.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict)

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        decay_(self.optimizer, self.weight_decay)
        self.optimizer.step()
        return loss


@torch.no_grad()
def effective_decay(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    r"""Per-coordinate decay rate that each group's ``weight_decay`` :math:`\lambda` applies per
    step, one tensor per parameter (in ``param_groups`` order; parameters without state are
    skipped).

    For Adam's L2 penalty it is :math:`\eta\lambda/(\sqrt{\hat v_t}+\epsilon)`, with
    :math:`\hat v_t = v_t/(1-\beta_2^t)` the optimizer's bias-corrected second moment (without
    bias correction, :math:`v_t`); for AdamW's decoupled decay it is :math:`\eta\lambda` for
    every coordinate. Works with :class:`optlib.Adam`/:class:`optlib.AdamW` and the
    ``torch.optim`` classes, which keep the same state.
    """
    out = []
    for group in optimizer.param_groups:
        lr, lam, eps = float(group["lr"]), float(group["weight_decay"]), float(group["eps"])
        beta2 = float(group["betas"][1])
        decoupled = group.get("decoupled_weight_decay", False) or isinstance(
            optimizer, torch.optim.AdamW
        )
        for p in group["params"]:
            state = optimizer.state.get(p)
            if not state or "exp_avg_sq" not in state:
                continue
            if decoupled:
                out.append(torch.full_like(p, lr * lam))
                continue
            t = int(state["step"])
            v = (
                state.get("max_exp_avg_sq", state["exp_avg_sq"])
                if group.get("amsgrad")
                else (state["exp_avg_sq"])
            )
            c2 = 1 - beta2**t if group.get("bias_correction", True) else 1.0
            out.append(lr * lam / ((v / c2).sqrt() + eps))
    return out
