r"""AdaGrad: a step size per coordinate, from the history of its gradients (chapter 4).

Same arguments, defaults and results as :class:`torch.optim.Adagrad` (dense gradients).

.. math::

   g_t &\leftarrow g_t + \lambda\,\theta_{t-1}
       &&\text{(L2 weight decay } \lambda\text{)} \\
   G_t &\leftarrow G_{t-1} + g_t^2, \qquad G_0 = \tau
       &&\text{(initial\_accumulator\_value } \tau\text{)} \\
   \eta_t &= \eta / (1 + (t-1)\,\delta)
       &&\text{(lr\_decay } \delta\text{)} \\
   \theta_t &\leftarrow \theta_{t-1} - \eta_t\, g_t / (\sqrt{G_t} + \epsilon)

:math:`G_t` (torch's ``sum``) only grows, so a coordinate that has seen large gradients takes
small steps for ever after: good for rare, informative features, fatal for long non-convex
training (the step freezes). Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online
Learning and Stochastic Optimization", JMLR 12, 2011 (the diagonal version).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from ._base import Optimizer, new_step_counter, scalar
from ._moments import accumulate_square_, add_l2, advance_steps, real_views, rms_denominator
from ._validate import check_nonnegative


def adagrad_update(
    theta: Tensor,
    g: Tensor,
    G: Tensor,
    *,
    step: int,
    lr: float,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    eps: float = 1e-10,
) -> None:
    r"""One AdaGrad step on one tensor, in place.

    .. math::
       G_t = G_{t-1} + g_t^2,\qquad
       \theta_t = \theta_{t-1} - \frac{\eta}{1+(t-1)\delta}\,\frac{g_t}{\sqrt{G_t} + \epsilon}
    """
    g = add_l2(g, theta, weight_decay)
    accumulate_square_(G, g)
    lr_t = lr / (1 + (step - 1) * lr_decay)
    theta.addcdiv_(g, rms_denominator(G, eps), value=-lr_t)


def adagrad_update_foreach(
    thetas: list[Tensor],
    gs: list[Tensor],
    Gs: list[Tensor],
    *,
    steps: list[int],
    lr: float,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    eps: float = 1e-10,
) -> None:
    """:func:`adagrad_update` on many tensors at once through ``torch._foreach_*`` kernels."""
    gs = add_l2(gs, thetas, weight_decay)
    accumulate_square_(Gs, gs)
    step_sizes = [-lr / (1 + (t - 1) * lr_decay) for t in steps]
    torch._foreach_addcdiv_(thetas, gs, rms_denominator(Gs, eps), step_sizes)


class Adagrad(Optimizer):
    r"""AdaGrad (Duchi et al., 2011); drop-in :class:`torch.optim.Adagrad`.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\eta \ge 0`.
        lr_decay: :math:`\delta \ge 0`; step :math:`t` uses :math:`\eta / (1 + (t-1)\delta)`.
        weight_decay: L2 penalty :math:`\lambda \ge 0`, added to the gradient.
        initial_accumulator_value: :math:`G_0 = \tau \ge 0`. As in torch, the constructor's
            value starts the accumulator of *every* parameter (a per-group value is ignored).
        eps: :math:`\epsilon \ge 0`, added to :math:`\sqrt{G_t}`.
        foreach: use the multi-tensor path.
        maximize: ascend instead of descend.
        differentiable, fused: torch's switches for autograd through the step and fused
            kernels; rejected when set.

    State per parameter (torch's keys, created at construction as torch does): ``step``
    (0-d tensor) and ``sum`` (:math:`G`).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_nonnegative("lr", lr)
        check_nonnegative("lr_decay", lr_decay)
        check_nonnegative("weight_decay", weight_decay)
        check_nonnegative("initial_accumulator_value", initial_accumulator_value)
        check_nonnegative("eps", eps)
        self._reject_unsupported(differentiable=differentiable, fused=fused)
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            foreach=foreach,
            maximize=maximize,
            differentiable=False,
            fused=None,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._state(p)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)

    def _state(self, p: Tensor) -> dict:
        state = self.state[p]
        if not state:
            tau = self.defaults["initial_accumulator_value"]
            state["step"] = new_step_counter()
            state["sum"] = torch.full_like(
                p, complex(tau, tau) if p.is_complex() else tau, memory_format=torch.preserve_format
            )
        return state

    def share_memory(self) -> None:
        """Move the accumulators to shared memory (for Hogwild-style multiprocess training)."""
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["sum"].share_memory_()

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step; ``closure`` re-evaluates the loss and returns it."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            params, grads = self._params_and_grads(group)
            if not params:
                continue
            states = [self._state(p) for p in params]
            steps = advance_steps([s["step"] for s in states])
            Gs = [s["sum"] for s in states]
            if any(p.is_complex() for p in params):
                params, grads, Gs = real_views(params, grads, Gs)
            hyper = dict(
                lr=scalar(group["lr"]),
                lr_decay=group["lr_decay"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
            )
            if group["foreach"]:
                adagrad_update_foreach(params, grads, Gs, steps=steps, **hyper)
                continue
            for p, g, G, t in zip(params, grads, Gs, steps):
                adagrad_update(p, g, G, step=t, **hyper)
        return loss
