r"""Lion: the sign of an interpolated momentum (chapter 8).

Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023 (arXiv:2302.06675).
Same update, order of operations and defaults as the authors' ``lion_pytorch.py``
(google/automl, ``lion/``).

.. math::

   \theta &\leftarrow (1 - \eta\lambda)\,\theta_{t-1}
       &&\text{(decoupled weight decay)} \\
   c_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t
       &&\text{(interpolate momentum and gradient)} \\
   \theta_t &= \theta - \eta\,\operatorname{sign}(c_t)
       &&\text{(every coordinate moves by exactly } \eta\text{, or 0)} \\
   m_t &= \beta_2 m_{t-1} + (1-\beta_2)\, g_t
       &&\text{(momentum, updated after the step)}

with :math:`m_0 = 0`, so the first step is :math:`-\eta\,\operatorname{sign}(g_1)`.
Two different decays: :math:`\beta_1` (0.9) mixes the fresh gradient into the step,
:math:`\beta_2` (0.99) gives the buffer its long memory. The state is one buffer per parameter
(``exp_avg``, the reference's name), half of Adam's. Because the update has unit size per
coordinate, Lion wants a learning rate 3–10× smaller than AdamW's and a weight decay 3–10×
larger, so that :math:`\eta\lambda` stays comparable.

**Non-finite gradients.** ``torch.sign`` maps NaN to 0, so a literal port freezes a coordinate
for ever after one NaN gradient: the momentum stays NaN, the step stays 0, and nothing says so.
Here a non-finite :math:`c_t` (a NaN or infinite gradient, or a momentum that has become one)
makes the parameter NaN (:func:`._moments.sign_`), which is what torch.optim's Adam, AdamW and
SGD do with the same gradient (their :math:`m/\sqrt v` or step is non-finite): the loss turns NaN
at once, and ``torch.amp.GradScaler`` (which skips the step on an inf gradient) works as with
torch's optimizers. The reference has no such case: this is optlib's choice.

**Complex parameters** are optimised as pairs of reals (``torch.view_as_real``), as torch.optim
does for its optimizers: the real and imaginary parts each move by :math:`\pm\eta`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from ._base import Optimizer, scalar
from ._fused import KeepsDispatch, check_fused, fused_step, use_foreach
from ._fused_updates import LION_UPDATE
from ._moments import real_views, sign_
from ._validate import check_betas, check_nonnegative


def lion_update(
    theta: Tensor,
    g: Tensor,
    m: Tensor,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
) -> None:
    r"""One Lion step on one tensor, in place (``theta`` and the momentum ``m``)."""
    theta.mul_(1 - lr * weight_decay)
    c = m.mul(beta1).add_(g, alpha=1 - beta1)
    theta.add_(sign_(c), alpha=-lr)
    m.mul_(beta2).add_(g, alpha=1 - beta2)


def lion_update_foreach(
    thetas: list[Tensor],
    gs: list[Tensor],
    ms: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
) -> None:
    """The same step on many tensors at once through ``torch._foreach_*`` kernels."""
    torch._foreach_mul_(thetas, 1 - lr * weight_decay)
    cs = torch._foreach_mul(ms, beta1)
    torch._foreach_add_(cs, gs, alpha=1 - beta1)
    sign_(cs)  # NaN where c is not finite
    torch._foreach_add_(thetas, cs, alpha=-lr)
    torch._foreach_mul_(ms, beta2)
    torch._foreach_add_(ms, gs, alpha=1 - beta2)


class Lion(KeepsDispatch, Optimizer):
    r"""Lion (EvoLved Sign Momentum), as in google/automl's ``lion_pytorch.py``.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\eta \ge 0` (the size of every coordinate's step).
        betas: :math:`(\beta_1, \beta_2)`, each in :math:`[0, 1)`: the interpolation used for the
            step, and the momentum decay.
        weight_decay: decoupled weight decay :math:`\lambda \ge 0` (multiplied by ``lr``).
        maximize: ascend instead of descend (not in the reference; off by default).
        foreach: use the multi-tensor path (``None``: as torch picks, foreach on CUDA and the
            per-tensor loop on the CPU).
        fused: optlib's fused path, one compiled kernel over flat buffers
            (:mod:`optlib.optim._fused`); falls back to foreach, with a warning, without a
            compiler.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_nonnegative("lr", lr)
        check_betas(betas)
        check_nonnegative("weight_decay", weight_decay)
        check_fused(fused, foreach)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            weight_decay=weight_decay,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step; ``closure`` re-evaluates the loss and returns it."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            if group.get("fused") and fused_step(self, group, LION_UPDATE):
                continue
            params, grads = self._params_and_grads(group)
            if not params:
                continue
            ms = []
            for p in params:
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                ms.append(state["exp_avg"])
            if any(p.is_complex() for p in params):
                params, grads, ms = real_views(params, grads, ms)
            beta1, beta2 = group["betas"]
            hyper = dict(
                lr=scalar(group["lr"]),
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
            )
            if use_foreach(group, params):
                lion_update_foreach(params, grads, ms, **hyper)
            else:
                for p, g, m in zip(params, grads, ms):
                    lion_update(p, g, m, **hyper)
        return loss
