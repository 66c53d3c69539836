r"""LARS: SGD with a layer-wise trust ratio (chapter 11).

You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks", 2017
(arXiv:1708.03888); LARC clipping from NVIDIA apex. Same update, options and defaults as timm's
``timm/optim/lars.py`` (huggingface/pytorch-image-models).

For each parameter tensor (a "layer"), when :math:`\lambda \ne 0` or ``always_adapt``:

.. math::

   r &= \frac{\kappa\,\lVert\theta\rVert}{\lVert g\rVert + \lambda\lVert\theta\rVert + \epsilon}
       &&\text{(trust ratio; } r = 1 \text{ if } \lVert\theta\rVert = 0
         \text{ or } \lVert g\rVert = 0\text{)} \\
   r &\leftarrow \min(r/\eta,\ 1) &&\text{(only with trust\_clip: LARC)} \\
   g &\leftarrow r\,(g + \lambda\,\theta)
       &&\text{(L2 weight decay, then the layer's rescaling)}

then the SGD step with momentum :math:`\mu`, dampening :math:`\tau` and optional Nesterov,
exactly :class:`optlib.SGD`'s (:func:`optlib.optim.sgd.sgd_update`):

.. math::

   b_t = \begin{cases} g & t = 1 \\ \mu b_{t-1} + (1-\tau)\, g & t > 1 \end{cases}, \qquad
   \theta_t = \theta_{t-1} - \eta\,(g + \mu b_t \text{ if nesterov else } b_t)

So every layer moves by about :math:`\eta\kappa\lVert\theta\rVert` per step whatever the scale
of its gradient, which is what lets very large batches (and learning rates) train. Parameters
with :math:`\lambda = 0` (biases, norms, usually in their own group) skip the adaptation unless
``always_adapt``. With ``trust_clip`` the step is :math:`\eta\min(r/\eta, 1)\,g =
\min(r, \eta)\,g`: the trust ratio can lower a layer's rate below :math:`\eta`, never raise it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from ._base import Optimizer, scalar
from ._validate import check_nonnegative, check_positive
from .sgd import sgd_update


def lars_trust_ratio(
    theta: Tensor, g: Tensor, *, trust_coeff: float, weight_decay: float, eps: float
) -> Tensor:
    r""":math:`\kappa\lVert\theta\rVert / (\lVert g\rVert + \lambda\lVert\theta\rVert + \epsilon)`,
    or 1 where either norm is zero (a 0-d tensor)."""
    w_norm = theta.norm(2)
    g_norm = g.norm(2)
    r = trust_coeff * w_norm / (g_norm + w_norm * weight_decay + eps)
    return torch.where((w_norm > 0) & (g_norm > 0), r, torch.ones_like(r))


def lars_update(
    theta: Tensor,
    g: Tensor,
    b: Tensor | None,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    trust_coeff: float,
    eps: float,
    trust_clip: bool,
    always_adapt: bool,
) -> Tensor | None:
    r"""One LARS step on one tensor, in place. Returns the momentum buffer (``None`` without
    momentum). ``g`` itself is not modified."""
    if weight_decay != 0 or always_adapt:
        r = lars_trust_ratio(theta, g, trust_coeff=trust_coeff, weight_decay=weight_decay, eps=eps)
        if trust_clip:
            r = torch.clamp(r / lr, max=1.0)
        g = g.add(theta, alpha=weight_decay).mul_(r)
    return sgd_update(
        theta,
        g,
        b,
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        weight_decay=0.0,
        nesterov=nesterov,
    )


class LARS(Optimizer):
    r"""Layer-wise Adaptive Rate Scaling (with optional LARC clipping), as in timm's ``Lars``.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\eta \ge 0`.
        momentum: momentum :math:`\mu \ge 0`.
        dampening: dampening :math:`\tau \ge 0`.
        weight_decay: L2 weight decay :math:`\lambda \ge 0`; also switches the adaptation on.
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        trust_coeff: trust coefficient :math:`\kappa > 0`.
        eps: :math:`\epsilon \ge 0` in the trust ratio's denominator.
        trust_clip: LARC: cap the effective rate of each layer at :math:`\eta`.
        always_adapt: apply the trust ratio even where :math:`\lambda = 0`.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 1.0,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        trust_coeff: float = 0.001,
        eps: float = 1e-8,
        trust_clip: bool = False,
        always_adapt: bool = False,
    ) -> None:
        check_nonnegative("lr", lr)
        check_nonnegative("momentum", momentum)
        check_nonnegative("dampening", dampening)
        check_nonnegative("weight_decay", weight_decay)
        check_positive("trust_coeff", trust_coeff)
        check_nonnegative("eps", eps)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                "Invalid nesterov: True requires momentum > 0 and dampening == 0 "
                f"(got momentum={momentum!r}, dampening={dampening!r})"
            )
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            trust_coeff=trust_coeff,
            eps=eps,
            trust_clip=trust_clip,
            always_adapt=always_adapt,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step; ``closure`` re-evaluates the loss and returns it."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            params, grads = self._params_and_grads(group)
            hyper = dict(
                lr=scalar(group["lr"]),
                momentum=group["momentum"],
                dampening=group["dampening"],
                weight_decay=group["weight_decay"],
                nesterov=group["nesterov"],
                trust_coeff=group["trust_coeff"],
                eps=group["eps"],
                trust_clip=group["trust_clip"],
                always_adapt=group["always_adapt"],
            )
            for p, g in zip(params, grads):
                b = lars_update(p, g, self.state[p].get("momentum_buffer"), **hyper)
                if b is not None:
                    self.state[p]["momentum_buffer"] = b
        return loss
