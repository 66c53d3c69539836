r"""Stochastic gradient descent, with heavy-ball or Nesterov momentum (chapters 1–3).

Same arguments, defaults and results as :class:`torch.optim.SGD`.

.. math::

   g_t &\leftarrow \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1}
       &&\text{(L2 weight decay } \lambda\text{)} \\
   b_t &\leftarrow \begin{cases} g_t & t = 1 \\ \beta\, b_{t-1} + (1-\tau)\, g_t & t > 1 \end{cases}
       &&\text{(momentum } \beta\text{, dampening } \tau\text{)} \\
   d_t &\leftarrow \begin{cases} g_t + \beta\, b_t & \text{nesterov} \\ b_t & \text{otherwise}
       \end{cases} \\
   \theta_t &\leftarrow \theta_{t-1} - \eta\, d_t

Sparse gradients (``nn.Embedding(sparse=True)``) are handled as torch does: the same lines run
on the sparse tensor (the momentum buffer then is sparse too), and the multi-tensor path falls
back to the per-tensor loop, since ``torch._foreach_*`` kernels are dense-only.

With :math:`\beta = 0` this is plain gradient descent, :math:`\theta_t = \theta_{t-1} - \eta g_t`
(Cauchy, 1847). Momentum is Polyak's heavy ball (1964) in the convention of Sutskever et al.
(2013), with torch's first step :math:`b_1 = g_1` (no dampening on the first step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from ._base import Optimizer, scalar
from ._fused import KeepsDispatch, check_fused, fused_step, use_foreach
from ._fused_updates import SGD_UPDATE
from ._validate import check_nonnegative


def sgd_update(
    theta: Tensor,
    g: Tensor,
    b: Tensor | None,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
) -> Tensor | None:
    r"""One SGD step on one tensor, in place. Returns the momentum buffer :math:`b_t`
    (``None`` when ``momentum == 0``)."""
    if weight_decay != 0:
        g = g.add(theta, alpha=weight_decay)
    if momentum != 0:
        if b is None:
            b = g.detach().clone()
        else:
            b.mul_(momentum).add_(g, alpha=1 - dampening)
        d = g.add(b, alpha=momentum) if nesterov else b
    else:
        d = g
    theta.add_(d, alpha=-lr)
    return b


def sgd_update_foreach(
    thetas: list[Tensor],
    gs: list[Tensor],
    bs: list[Tensor | None],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
) -> list[Tensor | None]:
    """The same step on many tensors at once through ``torch._foreach_*`` kernels."""
    if any(g.is_sparse for g in gs):  # dense-only kernels: loop over the tensors, as torch does
        hyper = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                     nesterov=nesterov)  # fmt: skip
        return [sgd_update(p, g, b, **hyper) for p, g, b in zip(thetas, gs, bs)]
    if weight_decay != 0:
        gs = torch._foreach_add(gs, thetas, alpha=weight_decay)
    if momentum != 0:
        fresh = [i for i, b in enumerate(bs) if b is None]
        old = [i for i, b in enumerate(bs) if b is not None]
        bs = list(bs)
        for i in fresh:
            bs[i] = gs[i].detach().clone()
        if old:
            old_bs = [bs[i] for i in old]
            torch._foreach_mul_(old_bs, momentum)
            torch._foreach_add_(old_bs, [gs[i] for i in old], alpha=1 - dampening)
        ds = torch._foreach_add(gs, bs, alpha=momentum) if nesterov else bs
    else:
        ds = gs
    torch._foreach_add_(thetas, ds, alpha=-lr)
    return bs


class SGD(KeepsDispatch, Optimizer):
    r"""Stochastic gradient descent (optionally with momentum); drop-in :class:`torch.optim.SGD`.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\eta \ge 0`.
        momentum: momentum :math:`\beta \ge 0`.
        dampening: dampening :math:`\tau \ge 0` of the gradient in the momentum buffer.
        weight_decay: L2 penalty :math:`\lambda \ge 0`, added to the gradient.
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        maximize: ascend instead of descend.
        foreach: use the multi-tensor path (``None``: as torch picks, foreach on CUDA and the
            per-tensor loop on the CPU).
        fused: optlib's fused path, one compiled kernel over flat buffers
            (:mod:`optlib.optim._fused`); falls back to foreach, with a warning, without a
            compiler.

    Sparse gradients are supported, as in torch (see the module docstring).
    """

    _sparse_grads_ok = True

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_nonnegative("lr", lr)
        check_nonnegative("momentum", momentum)
        check_nonnegative("dampening", dampening)
        check_nonnegative("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                "Invalid nesterov: True requires momentum > 0 and dampening == 0 "
                f"(got momentum={momentum!r}, dampening={dampening!r})"
            )
        self._reject_unsupported(differentiable=differentiable)
        check_fused(fused, foreach)
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            differentiable=False,
            fused=fused,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("fused", None)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step; ``closure`` re-evaluates the loss and returns it."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            if group.get("fused") and fused_step(self, group, SGD_UPDATE):
                continue
            params, grads = self._params_and_grads(group)
            if not params:
                continue
            bs = [self.state[p].get("momentum_buffer") for p in params]
            hyper = dict(
                lr=scalar(group["lr"]),
                momentum=group["momentum"],
                dampening=group["dampening"],
                weight_decay=group["weight_decay"],
                nesterov=group["nesterov"],
            )
            if use_foreach(group, params):
                bs = sgd_update_foreach(params, grads, bs, **hyper)
            else:
                bs = [sgd_update(p, g, b, **hyper) for p, g, b in zip(params, grads, bs)]
            if group["momentum"] != 0:
                for p, b in zip(params, bs):
                    self.state[p]["momentum_buffer"] = b
        return loss
