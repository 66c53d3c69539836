r"""AdaGrad: a step size per coordinate, from the history of its gradients (chapter 4).

Same arguments, defaults and results as :class:`torch.optim.Adagrad`, sparse gradients
(``nn.Embedding(sparse=True)``) included: as in torch, only the rows present in the gradient
update their :math:`G` and their parameters (:func:`adagrad_update_sparse`), and weight decay is
refused with them.

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
from ._fused import KeepsDispatch, check_fused, fused_step, use_foreach
from ._fused_updates import ADAGRAD_UPDATE
from ._moments import (
    accumulate_square_,
    add_l2,
    addcdiv_scalars_,
    advance_steps,
    real_views,
    rms_denominator,
)
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


def adagrad_update_sparse(
    theta: Tensor, g: Tensor, G: Tensor, *, step: int, lr: float, lr_decay: float = 0.0,
    weight_decay: float = 0.0, eps: float = 1e-10,
) -> None:  # fmt: skip
    r""":func:`adagrad_update` for a sparse gradient ``g``: the same two lines, on the entries
    that ``g`` holds (duplicates summed first, since the update is not linear in :math:`g`)."""
    if weight_decay != 0:
        raise RuntimeError("weight_decay option is not compatible with sparse gradients")
    g = g.coalesce()
    indices, values = g._indices(), g._values()
    G.add_(torch.sparse_coo_tensor(indices, values.pow(2), g.size()))
    denominator = G.sparse_mask(g)._values().sqrt_().add_(eps)
    lr_t = lr / (1 + (step - 1) * lr_decay)
    theta.add_(torch.sparse_coo_tensor(indices, values / denominator, g.size()), alpha=-lr_t)


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
    if any(g.is_sparse for g in gs):  # dense-only kernels: loop over the tensors, as torch does
        hyper = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps)
        for p, g, G, t in zip(thetas, gs, Gs, steps):
            (adagrad_update_sparse if g.is_sparse else adagrad_update)(p, g, G, step=t, **hyper)
        return
    gs = add_l2(gs, thetas, weight_decay)
    accumulate_square_(Gs, gs)
    step_sizes = [-lr / (1 + (t - 1) * lr_decay) for t in steps]
    addcdiv_scalars_(thetas, gs, rms_denominator(Gs, eps), step_sizes)


class Adagrad(KeepsDispatch, Optimizer):
    r"""AdaGrad (Duchi et al., 2011); drop-in :class:`torch.optim.Adagrad`.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\eta \ge 0`.
        lr_decay: :math:`\delta \ge 0`; step :math:`t` uses :math:`\eta / (1 + (t-1)\delta)`.
        weight_decay: L2 penalty :math:`\lambda \ge 0`, added to the gradient.
        initial_accumulator_value: :math:`G_0 = \tau \ge 0`. As in torch, the constructor's
            value starts the accumulator of *every* parameter (a per-group value is ignored).
        eps: :math:`\epsilon \ge 0`, added to :math:`\sqrt{G_t}`.
        foreach: use the multi-tensor path (``None``: as torch picks, foreach on CUDA and the
            per-tensor loop on the CPU).
        maximize: ascend instead of descend.
        differentiable: torch's switch for autograd through the step; rejected when set.
        fused: optlib's fused path, one compiled kernel over flat buffers
            (:mod:`optlib.optim._fused`); falls back to foreach, with a warning, without a
            compiler.

    State per parameter (torch's keys, created at construction as torch does): ``step``
    (0-d tensor) and ``sum`` (:math:`G`). Sparse gradients are supported, as in torch.
    """

    _sparse_grads_ok = True

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
        self._reject_unsupported(differentiable=differentiable)
        check_fused(fused, foreach)
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            foreach=foreach,
            maximize=maximize,
            differentiable=False,
            fused=fused,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._state(p)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("fused", None)
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
            if group.get("fused") and fused_step(self, group, ADAGRAD_UPDATE):
                continue
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
            if use_foreach(group, params):
                adagrad_update_foreach(params, grads, Gs, steps=steps, **hyper)
                continue
            for p, g, G, t in zip(params, grads, Gs, steps):
                (adagrad_update_sparse if g.is_sparse else adagrad_update)(p, g, G, step=t, **hyper)
        return loss
