r"""LAMB: Adam's direction with a layer-wise trust ratio (chapter 11).

You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes",
ICLR 2020 (arXiv:1904.00962). Same update, options and defaults as timm's ``timm/optim/lamb.py``
(huggingface/pytorch-image-models), the NVIDIA FusedLAMB ("NVLAMB") variant.

Once per step, over *all* parameters of *all* groups (global gradient-norm clipping):

.. math::

   s = \max\!\Big(\frac{\lVert (g^{(1)}, g^{(2)}, \dots) \rVert}{\texttt{max\_grad\_norm}},\ 1\Big),
   \qquad g \leftarrow g / s

then for each parameter tensor, with the group's step :math:`t`:

.. math::

   m_t &= \beta_1 m_{t-1} + \beta_3\, g
       &&(\beta_3 = 1-\beta_1 \text{, or } 1 \text{ without grad\_averaging}) \\
   v_t &= \beta_2 v_{t-1} + (1-\beta_2)\, g\odot g \\
   u &= \frac{m_t / c_1}{\sqrt{v_t / c_2} + \epsilon}
       &&(c_i = 1-\beta_i^t \text{, or } 1 \text{ without bias\_correction}) \\
   u &\leftarrow u + \lambda\,\theta_{t-1} &&\text{(weight decay, added to the direction)} \\
   u &\leftarrow \frac{\lVert\theta_{t-1}\rVert}{\lVert u\rVert}\, u
       &&\text{(trust ratio, when } \lambda \ne 0 \text{ or always\_adapt; 1 if a norm is 0;}
         \text{ capped at 1 with trust\_clip)} \\
   \theta_t &= \theta_{t-1} - \eta\, u

Where the trust ratio applies (and is not capped), every layer so moves by exactly
:math:`\eta\lVert\theta\rVert` per step, a relative step :math:`\eta`, whatever the scale of
its Adam direction. The step counter :math:`t` belongs to the param group
(as in timm) and advances on every ``step()`` call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from ._base import Optimizer, scalar
from ._moments import real_views
from ._validate import check_betas, check_nonnegative, check_positive


def lamb_trust_ratio(theta: Tensor, u: Tensor, *, trust_clip: bool) -> Tensor:
    r""":math:`\lVert\theta\rVert / \lVert u\rVert` (1 where either norm is zero; at most 1 with
    ``trust_clip``), as a 0-d tensor."""
    w_norm = theta.norm(2)
    u_norm = u.norm(2)
    r = w_norm / u_norm
    r = torch.where((w_norm > 0) & (u_norm > 0), r, torch.ones_like(r))
    return r.clamp(max=1.0) if trust_clip else r


def global_clip_divisor(grads: list[Tensor], max_grad_norm: float) -> Tensor:
    r""":math:`s = \max(\lVert g\rVert_{\text{all}} / \texttt{max\_grad\_norm},\ 1)`: dividing
    every gradient by it caps their joint norm at ``max_grad_norm``."""
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    return (norm / max_grad_norm).clamp(min=1.0)


def lamb_update(
    theta: Tensor,
    g: Tensor,
    m: Tensor,
    v: Tensor,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    grad_averaging: bool,
    c1: float,
    c2: float,
    eps: float,
    weight_decay: float,
    trust_clip: bool,
    always_adapt: bool,
    clip_divisor: Tensor | None,
) -> None:
    r"""One LAMB step on one tensor, in place (``theta``, ``m``, ``v``; ``g`` is not modified).

    ``c1``, ``c2`` are the bias corrections; ``clip_divisor`` is :math:`s` (``None``: no clip).
    """
    if clip_divisor is not None:
        g = g / clip_divisor
    if grad_averaging:
        m.lerp_(g, 1 - beta1)
    else:
        m.mul_(beta1).add_(g)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    u = (m / c1).div_((v.sqrt() / c2**0.5).add_(eps))
    if weight_decay != 0:
        u.add_(theta, alpha=weight_decay)
    if weight_decay != 0 or always_adapt:
        u.mul_(lamb_trust_ratio(theta, u, trust_clip=trust_clip))
    theta.add_(u, alpha=-lr)


class LAMB(Optimizer):
    r"""Layer-wise Adaptive Moments for Batch training, as in timm's ``Lamb``.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\eta \ge 0` (the relative step of each adapted layer).
        bias_correction: divide the moments by :math:`1-\beta_i^t`.
        betas: :math:`(\beta_1, \beta_2)`, each in :math:`[0, 1)`.
        eps: :math:`\epsilon > 0`, added after the square root.
        weight_decay: :math:`\lambda \ge 0`, added to the direction; also switches the trust
            ratio on.
        grad_averaging: use :math:`(1-\beta_1) g` (else :math:`g`) in the first moment.
        max_grad_norm: global gradient-norm clip (> 0), or ``None`` for none. Like timm, the
            value given to the constructor applies to all groups.
        trust_clip: cap the trust ratio at 1 (LAMBC).
        always_adapt: apply the trust ratio even where :math:`\lambda = 0`.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 1e-3,
        bias_correction: bool = True,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        grad_averaging: bool = True,
        max_grad_norm: float | None = 1.0,
        trust_clip: bool = False,
        always_adapt: bool = False,
    ) -> None:
        check_nonnegative("lr", lr)
        check_betas(betas)
        check_positive("eps", eps)
        check_nonnegative("weight_decay", weight_decay)
        if max_grad_norm is not None:
            check_positive("max_grad_norm", max_grad_norm)
        defaults = dict(
            lr=lr,
            bias_correction=bias_correction,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            grad_averaging=grad_averaging,
            max_grad_norm=max_grad_norm,
            trust_clip=trust_clip,
            always_adapt=always_adapt,
        )
        super().__init__(params, defaults)

    def _clip_divisor(self) -> Tensor | None:
        max_grad_norm = self.defaults["max_grad_norm"]
        grads = [g for group in self.param_groups for g in self._params_and_grads(group)[1]]
        if max_grad_norm is None or not grads:
            return None
        return global_clip_divisor(grads, max_grad_norm)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step; ``closure`` re-evaluates the loss and returns it."""
        loss = self._evaluate(closure)
        s = self._clip_divisor()
        for group in self.param_groups:
            group["step"] = t = group.get("step", 0) + 1
            params, grads = self._params_and_grads(group)
            beta1, beta2 = group["betas"]
            corrected = group["bias_correction"]
            hyper = dict(
                lr=scalar(group["lr"]),
                beta1=beta1,
                beta2=beta2,
                grad_averaging=group["grad_averaging"],
                c1=1 - beta1**t if corrected else 1.0,
                c2=1 - beta2**t if corrected else 1.0,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                trust_clip=group["trust_clip"],
                always_adapt=group["always_adapt"],
                clip_divisor=s,
            )
            for p in params:
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            ms = [self.state[p]["exp_avg"] for p in params]
            vs = [self.state[p]["exp_avg_sq"] for p in params]
            if any(p.is_complex() for p in params):  # pairs of reals, as torch.optim does
                params, grads, ms, vs = real_views(params, grads, ms, vs)
            for p, g, m, v in zip(params, grads, ms, vs):
                lamb_update(p, g, m, v, **hyper)
        return loss
