r"""RMSprop: AdaGrad that forgets, optionally centred and with momentum (chapter 4).

Same arguments, defaults and results as :class:`torch.optim.RMSprop`.

.. math::

   g_t &\leftarrow g_t + \lambda\,\theta_{t-1}
       &&\text{(L2 weight decay } \lambda\text{)} \\
   v_t &\leftarrow \alpha\, v_{t-1} + (1-\alpha)\, g_t^2
       &&\text{(smoothing constant } \alpha\text{)} \\
   \bar g_t &\leftarrow \alpha\, \bar g_{t-1} + (1-\alpha)\, g_t,\quad
       d_t = \sqrt{v_t - \bar g_t^2} + \epsilon
       &&\text{centred, or } d_t = \sqrt{v_t} + \epsilon \\
   b_t &\leftarrow \beta\, b_{t-1} + g_t / d_t,\quad \theta_t \leftarrow \theta_{t-1} - \eta\, b_t
       &&\text{with momentum } \beta > 0 \text{, or} \\
   \theta_t &\leftarrow \theta_{t-1} - \eta\, g_t / d_t

The second moment is an exponential moving average instead of AdaGrad's sum, so old gradients
are forgotten and the step does not freeze. Tieleman & Hinton, Lecture 6.5 of "Neural Networks
for Machine Learning" (Coursera, 2012); the centred variant is from Graves, "Generating Sequences
With Recurrent Neural Networks", arXiv:1308.0850, 2013. No bias correction: :math:`v_0 = 0`
makes the first steps larger than :math:`\eta` (Adam fixes this).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from ._base import Optimizer, new_step_counter, scalar
from ._fused import KeepsDispatch, check_fused, fused_step, use_foreach
from ._fused_updates import RMSPROP_UPDATE
from ._moments import (
    add_l2,
    advance_steps,
    real_views,
    rms_denominator,
    update_first_moment_,
    update_second_moment_,
    zeros_like,
)
from ._validate import check_interval, check_nonnegative


def rmsprop_update(
    theta: Tensor,
    g: Tensor,
    v: Tensor,
    g_bar: Tensor | None = None,
    b: Tensor | None = None,
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
) -> None:
    r"""One RMSprop step on one tensor, in place.

    .. math::
       v_t = \alpha v_{t-1} + (1-\alpha) g_t^2,\qquad
       \theta_t = \theta_{t-1} - \eta\, \frac{g_t}{\sqrt{v_t} + \epsilon}

    ``g_bar`` (:math:`\bar g`, needed when ``centered``) is the running mean of the gradient,
    and ``b`` (needed when ``momentum > 0``) the momentum buffer.
    """
    g = add_l2(g, theta, weight_decay)
    update_second_moment_(v, g, alpha)
    if centered:
        update_first_moment_(g_bar, g, alpha)
    d = rms_denominator(v, eps, centre=g_bar if centered else None)
    if momentum > 0:
        b.mul_(momentum).addcdiv_(g, d)
        theta.add_(b, alpha=-lr)
    else:
        theta.addcdiv_(g, d, value=-lr)


def rmsprop_update_foreach(
    thetas: list[Tensor],
    gs: list[Tensor],
    vs: list[Tensor],
    g_bars: list[Tensor] | None = None,
    bs: list[Tensor] | None = None,
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
) -> None:
    """:func:`rmsprop_update` on many tensors at once through ``torch._foreach_*`` kernels."""
    gs = add_l2(gs, thetas, weight_decay)
    update_second_moment_(vs, gs, alpha)
    if centered:
        update_first_moment_(g_bars, gs, alpha)
    d = rms_denominator(vs, eps, centre=g_bars if centered else None)
    if momentum > 0:
        torch._foreach_mul_(bs, momentum)
        torch._foreach_addcdiv_(bs, gs, d)
        torch._foreach_add_(thetas, bs, alpha=-lr)
    else:
        torch._foreach_addcdiv_(thetas, gs, d, value=-lr)


class RMSprop(KeepsDispatch, Optimizer):
    r"""RMSprop (Tieleman & Hinton, 2012; centred: Graves, 2013); drop-in
    :class:`torch.optim.RMSprop`.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\eta \ge 0`.
        alpha: smoothing constant :math:`\alpha \in [0, 1]` of the averages (torch accepts any
            :math:`\alpha \ge 0`; above 1 the "average" diverges, so optlib refuses it).
        eps: :math:`\epsilon \ge 0`, added to the root.
        weight_decay: L2 penalty :math:`\lambda \ge 0`, added to the gradient.
        momentum: :math:`\beta \ge 0`, heavy-ball momentum on the scaled step.
        centered: divide by the root of the variance :math:`v - \bar g^2` instead of :math:`v`.
        capturable, foreach, maximize, differentiable: as in torch (positional, as there);
            ``capturable`` and ``differentiable`` are rejected when set; ``foreach=None`` picks as
            torch does (foreach on CUDA, the per-tensor loop on the CPU).
        fused: optlib's fused path, one compiled kernel over flat buffers
            (:mod:`optlib.optim._fused`); falls back to foreach, with a warning, without a
            compiler. Keyword-only, optlib's addition.

    State per parameter (torch's keys): ``step`` (0-d tensor), ``square_avg`` (:math:`v`),
    ``momentum_buffer`` (:math:`b`, with momentum) and ``grad_avg`` (:math:`\bar g`, centred).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        fused: bool | None = None,
    ) -> None:
        check_nonnegative("lr", lr)
        check_interval("alpha", alpha, 0.0, 1.0, high_open=False)
        check_nonnegative("eps", eps)
        check_nonnegative("weight_decay", weight_decay)
        check_nonnegative("momentum", momentum)
        self._reject_unsupported(capturable=capturable, differentiable=differentiable)
        check_fused(fused, foreach)
        defaults = dict(
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
            capturable=False,
            foreach=foreach,
            maximize=maximize,
            differentiable=False,
            fused=fused,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("momentum", 0)
            group.setdefault("centered", False)
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)

    def _state(self, p: Tensor, group: dict) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = new_step_counter()
            state["square_avg"] = zeros_like(p)
        if group["momentum"] > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = zeros_like(p)
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = zeros_like(p)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step; ``closure`` re-evaluates the loss and returns it."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            if group.get("fused") and fused_step(self, group, RMSPROP_UPDATE):
                continue
            params, grads = self._params_and_grads(group)
            if not params:
                continue
            states = [self._state(p, group) for p in params]
            advance_steps([s["step"] for s in states])  # kept for torch's state; unused
            vs = [s["square_avg"] for s in states]
            g_bars = [s["grad_avg"] for s in states] if group["centered"] else []
            bs = [s["momentum_buffer"] for s in states] if group["momentum"] > 0 else []
            if any(p.is_complex() for p in params):
                params, grads, vs, g_bars, bs = real_views(params, grads, vs, g_bars, bs)
            hyper = dict(
                lr=scalar(group["lr"]),
                alpha=group["alpha"],
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                momentum=group["momentum"],
                centered=group["centered"],
            )
            if use_foreach(group, params):
                rmsprop_update_foreach(params, grads, vs, g_bars, bs, **hyper)
                continue
            for i, p in enumerate(params):
                g_bar = g_bars[i] if g_bars else None
                b = bs[i] if bs else None
                rmsprop_update(p, grads[i], vs[i], g_bar, b, **hyper)
        return loss
