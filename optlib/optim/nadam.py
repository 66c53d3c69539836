r"""NAdam: Adam with a Nesterov look-ahead on the first moment (chapter 5).

Same arguments, defaults and results as :class:`torch.optim.NAdam`.

.. math::

   \beta_{1,t} &= \beta_1\,\big(1 - \tfrac12\, 0.96^{\,t\psi}\big)
       &&\text{momentum schedule (momentum\_decay } \psi\text{)} \\
   \Pi_t &= \textstyle\prod_{i=1}^{t} \beta_{1,i}
       &&\text{(torch's } \texttt{mu\_product}\text{)} \\
   m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1)\, g_t, \qquad
   v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
   \theta_t &\leftarrow \theta_{t-1} - \eta\,
       \frac{\frac{1-\beta_{1,t}}{1-\Pi_t}\, g_t
             + \frac{\beta_{1,t+1}}{1-\Pi_t\,\beta_{1,t+1}}\, m_t}
            {\sqrt{v_t / (1-\beta_2^t)} + \epsilon}

The numerator mixes the current gradient with the *next* step's momentum: Nesterov's look-ahead,
applied to Adam's bias-corrected first moment. Weight decay is an L2 penalty on :math:`g_t`, or,
with ``decoupled_weight_decay``, AdamW-style :math:`\theta \leftarrow (1-\eta\lambda)\theta`.
Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from ._base import Optimizer, host_scalar, new_step_counter, scalar
from ._fused import KeepsDispatch, check_fused, fused_step, use_foreach
from ._fused_updates import NADAM_UPDATE
from ._moments import (
    add_l2,
    addcdiv_scalars_,
    advance_steps,
    decay_weights_,
    real_views,
    rms_denominator,
    update_first_moment_,
    update_second_moment_,
    zeros_like,
)
from ._validate import check_betas, check_nonnegative


def nadam_beta1(beta1: float, momentum_decay: float, t: int) -> float:
    r"""Dozat's momentum schedule :math:`\beta_{1,t} = \beta_1(1 - \frac12 0.96^{t\psi})`."""
    return beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))


def nadam_update(
    theta: Tensor,
    g: Tensor,
    m: Tensor,
    v: Tensor,
    beta1_prod: Tensor,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled: bool = False,
) -> None:
    r"""One NAdam step on one tensor, in place.

    .. math::
       \theta_t = \theta_{t-1} - \eta\,
       \frac{\frac{1-\beta_{1,t}}{1-\Pi_t} g_t + \frac{\beta_{1,t+1}}{1-\Pi_{t+1}} m_t}
            {\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

    ``beta1_prod`` is :math:`\Pi_{t-1}`, a 0-d tensor multiplied in place by
    :math:`\beta_{1,t}` (it is torch's ``mu_product`` state, kept in its dtype).
    """
    if decoupled:
        decay_weights_(theta, lr, weight_decay)
    else:
        g = add_l2(g, theta, weight_decay)
    beta1_t = nadam_beta1(beta1, momentum_decay, step)
    beta1_next = nadam_beta1(beta1, momentum_decay, step + 1)
    prod = host_scalar(beta1_prod.mul_(beta1_t))  # a float (under compile, a tensor)
    update_first_moment_(m, g, beta1)
    update_second_moment_(v, g, beta2)
    d = rms_denominator(v, eps, 1 - beta2**step)
    theta.addcdiv_(g, d, value=-lr * (1 - beta1_t) / (1 - prod))
    theta.addcdiv_(m, d, value=-lr * beta1_next / (1 - prod * beta1_next))


def nadam_update_foreach(
    thetas: list[Tensor],
    gs: list[Tensor],
    ms: list[Tensor],
    vs: list[Tensor],
    beta1_prods: list[Tensor],
    *,
    steps: list[int],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled: bool = False,
) -> None:
    """:func:`nadam_update` on many tensors at once through ``torch._foreach_*`` kernels."""
    if decoupled:
        decay_weights_(thetas, lr, weight_decay)
    else:
        gs = add_l2(gs, thetas, weight_decay)
    beta1_ts = [nadam_beta1(beta1, momentum_decay, t) for t in steps]
    beta1_nexts = [nadam_beta1(beta1, momentum_decay, t + 1) for t in steps]
    torch._foreach_mul_(beta1_prods, beta1_ts)
    prods = [host_scalar(p) for p in beta1_prods]
    update_first_moment_(ms, gs, beta1)
    update_second_moment_(vs, gs, beta2)
    d = rms_denominator(vs, eps, [1 - beta2**t for t in steps])
    g_sizes = [-lr * (1 - b) / (1 - p) for b, p in zip(beta1_ts, prods)]
    m_sizes = [-lr * b / (1 - p * b) for b, p in zip(beta1_nexts, prods)]
    addcdiv_scalars_(thetas, gs, d, g_sizes)
    addcdiv_scalars_(thetas, ms, d, m_sizes)


class NAdam(KeepsDispatch, Optimizer):
    r"""NAdam (Dozat, 2016); drop-in :class:`torch.optim.NAdam`.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\eta \ge 0`.
        betas: :math:`(\beta_1, \beta_2)`, each in :math:`[0, 1)`.
        eps: :math:`\epsilon \ge 0`.
        weight_decay: :math:`\lambda \ge 0`; L2 penalty, or decoupled decay (below).
        momentum_decay: :math:`\psi \ge 0` of the momentum schedule.
        decoupled_weight_decay: AdamW-style decay :math:`\theta \leftarrow (1-\eta\lambda)\theta`.
        foreach: use the multi-tensor path (``None``: as torch picks, foreach on CUDA and the
            per-tensor loop on the CPU).
        maximize: ascend instead of descend.
        capturable, differentiable: torch's switches; rejected when set.
        fused: optlib's fused path, one compiled kernel over flat buffers
            (:mod:`optlib.optim._fused`); falls back to foreach, with a warning, without a
            compiler. optlib's addition.

    State per parameter (torch's keys): ``step`` and ``mu_product`` (0-d tensors),
    ``exp_avg`` (:math:`m`) and ``exp_avg_sq`` (:math:`v`).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_nonnegative("lr", lr)
        check_betas(betas)
        check_nonnegative("eps", eps)
        check_nonnegative("weight_decay", weight_decay)
        check_nonnegative("momentum_decay", momentum_decay)
        self._reject_unsupported(capturable=capturable, differentiable=differentiable)
        check_fused(fused, foreach)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            foreach=foreach,
            capturable=False,
            differentiable=False,
            fused=fused,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("decoupled_weight_decay", False)
        # torch's load_state_dict casts every state tensor but ``step`` to the parameter's dtype;
        # keep ``mu_product`` in its own dtype, so a resumed run is bit-identical.
        dtype = new_step_counter().dtype
        for p_state in self.state.values():
            if "mu_product" in p_state:
                p_state["mu_product"] = p_state["mu_product"].to(dtype)

    def _state(self, p: Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = new_step_counter()
            state["mu_product"] = new_step_counter().add_(1)  # empty product: 1
            state["exp_avg"] = zeros_like(p)
            state["exp_avg_sq"] = zeros_like(p)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step; ``closure`` re-evaluates the loss and returns it."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            if group.get("fused") and fused_step(self, group, NADAM_UPDATE):
                continue
            params, grads = self._params_and_grads(group)
            if not params:
                continue
            states = [self._state(p) for p in params]
            steps = advance_steps([s["step"] for s in states])
            prods = [s["mu_product"] for s in states]
            ms = [s["exp_avg"] for s in states]
            vs = [s["exp_avg_sq"] for s in states]
            if any(p.is_complex() for p in params):
                params, grads, ms, vs = real_views(params, grads, ms, vs)
            beta1, beta2 = group["betas"]
            hyper = dict(
                lr=scalar(group["lr"]),
                beta1=scalar(beta1),
                beta2=scalar(beta2),
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                momentum_decay=group["momentum_decay"],
                decoupled=group["decoupled_weight_decay"],
            )
            if use_foreach(group, params):
                nadam_update_foreach(params, grads, ms, vs, prods, steps=steps, **hyper)
                continue
            for i, p in enumerate(params):
                nadam_update(p, grads[i], ms[i], vs[i], prods[i], step=steps[i], **hyper)
        return loss
