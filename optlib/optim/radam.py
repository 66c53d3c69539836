r"""RAdam: Adam whose adaptive step is switched on only once its variance is tractable (ch. 5).

Same arguments, defaults and results as :class:`torch.optim.RAdam`.

.. math::

   m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1)\, g_t, \qquad
   v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
   \rho_\infty &= \frac{2}{1-\beta_2} - 1, \qquad
   \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t}
       &&\text{length of the approximated SMA} \\
   r_t &= \sqrt{\frac{(\rho_t-4)(\rho_t-2)\,\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\,\rho_t}}
       &&\text{variance rectification} \\
   \theta_t &\leftarrow \theta_{t-1} - \frac{\eta}{1-\beta_1^t}\, m_t \cdot
       \begin{cases} r_t\, \dfrac{\sqrt{1-\beta_2^t}}{\sqrt{v_t} + \epsilon} & \rho_t > 5 \\
                     1 & \text{otherwise (SGD with momentum)} \end{cases}

While :math:`\rho_t \le 5` (the first few steps: the variance of the adaptive step is
intractable) RAdam takes plain bias-corrected momentum steps; afterwards the Adam step, shrunk by
:math:`r_t \to 1`. Unlike Adam, :math:`\epsilon` is added to :math:`\sqrt{v_t}` *before* the bias
correction. Weight decay is an L2 penalty, or AdamW-style with ``decoupled_weight_decay``.
Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from ._base import Optimizer, new_step_counter, scalar
from ._fused import KeepsDispatch, check_fused, fused_step, use_foreach
from ._fused_updates import RADAM_UPDATE
from ._moments import (
    add_l2,
    advance_steps,
    decay_weights_,
    real_views,
    rms_denominator,
    update_first_moment_,
    update_second_moment_,
    zeros_like,
)
from ._validate import check_betas, check_nonnegative


def radam_rectification(beta2: float, t: int | Tensor) -> float | Tensor | None:
    r"""The rectification :math:`r_t`, or ``None`` while :math:`\rho_t \le 5`.

    Under torch.compile ``t`` is a 0-d tensor, and so is the result: NaN while
    :math:`\rho_t \le 5` (a branch on the step's value would break the graph)."""
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
    if isinstance(rho_t, Tensor):
        r = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)).sqrt()
        return torch.where(rho_t > 5, r, torch.nan)
    if rho_t <= 5:
        return None
    return ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5


def radam_update(
    theta: Tensor,
    g: Tensor,
    m: Tensor,
    v: Tensor,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    decoupled: bool = False,
) -> None:
    r"""One RAdam step on one tensor, in place.

    .. math::
       \theta_t = \theta_{t-1} - \frac{\eta}{1-\beta_1^t}\, m_t \cdot
       \begin{cases} r_t \sqrt{1-\beta_2^t} / (\sqrt{v_t} + \epsilon) & \rho_t > 5 \\
       1 & \text{otherwise} \end{cases}
    """
    if decoupled:
        decay_weights_(theta, lr, weight_decay)
    else:
        g = add_l2(g, theta, weight_decay)
    update_first_moment_(m, g, beta1)
    update_second_moment_(v, g, beta2)
    c1, c2 = 1 - beta1**step, 1 - beta2**step
    r = radam_rectification(beta2, step)
    if isinstance(r, Tensor):  # under torch.compile: both cases, selected by the step
        scale = torch.where(r.isnan(), 1.0, r * c2**0.5 / rms_denominator(v, eps))
        theta.add_(m * scale, alpha=-lr / c1)
    elif r is None:
        theta.add_(m, alpha=-lr / c1)
    else:
        theta.addcdiv_(m, rms_denominator(v, eps), value=-lr * r * c2**0.5 / c1)


def radam_update_foreach(
    thetas: list[Tensor],
    gs: list[Tensor],
    ms: list[Tensor],
    vs: list[Tensor],
    *,
    steps: list[int],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    decoupled: bool = False,
) -> None:
    """:func:`radam_update` on many tensors at once through ``torch._foreach_*`` kernels.

    Tensors whose step counts fall on either side of the threshold are updated in two lists.
    Under torch.compile (0-d tensor step counts) it runs :func:`radam_update` on each tensor,
    which selects the two cases with ``torch.where`` instead of branching on the step.
    """
    if steps and isinstance(steps[0], Tensor):
        hyper = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                     decoupled=decoupled)  # fmt: skip
        for theta, g, m, v, t in zip(thetas, gs, ms, vs, steps):
            radam_update(theta, g, m, v, step=t, **hyper)
        return
    if decoupled:
        decay_weights_(thetas, lr, weight_decay)
    else:
        gs = add_l2(gs, thetas, weight_decay)
    update_first_moment_(ms, gs, beta1)
    update_second_moment_(vs, gs, beta2)
    rs = [radam_rectification(beta2, t) for t in steps]
    early = [i for i, r in enumerate(rs) if r is None]  # rho_t <= 5: momentum steps
    if early:
        sizes = [-lr / (1 - beta1 ** steps[i]) for i in early]
        torch._foreach_add_(_pick(thetas, early), torch._foreach_mul(_pick(ms, early), sizes))
    late = [i for i, r in enumerate(rs) if r is not None]
    if late:
        sizes = [
            -lr * rs[i] * (1 - beta2 ** steps[i]) ** 0.5 / (1 - beta1 ** steps[i]) for i in late
        ]
        d = rms_denominator(_pick(vs, late), eps)
        torch._foreach_addcdiv_(_pick(thetas, late), _pick(ms, late), d, sizes)


def _pick(xs: list[Tensor], idx: list[int]) -> list[Tensor]:
    return xs if len(idx) == len(xs) else [xs[i] for i in idx]


class RAdam(KeepsDispatch, Optimizer):
    r"""RAdam (Liu et al., 2020); drop-in :class:`torch.optim.RAdam`.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\eta \ge 0`.
        betas: :math:`(\beta_1, \beta_2)`, each in :math:`[0, 1)`.
        eps: :math:`\epsilon \ge 0`, added to :math:`\sqrt{v_t}`.
        weight_decay: :math:`\lambda \ge 0`; L2 penalty, or decoupled decay (below).
        decoupled_weight_decay: AdamW-style decay :math:`\theta \leftarrow (1-\eta\lambda)\theta`.
        foreach: use the multi-tensor path (``None``: as torch picks, foreach on CUDA and the
            per-tensor loop on the CPU).
        maximize: ascend instead of descend.
        capturable, differentiable: torch's switches; rejected when set.
        fused: optlib's fused path, one compiled kernel over flat buffers
            (:mod:`optlib.optim._fused`); falls back to foreach, with a warning, without a
            compiler. optlib's addition.

    State per parameter (torch's keys): ``step`` (0-d tensor), ``exp_avg`` (:math:`m`) and
    ``exp_avg_sq`` (:math:`v`).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
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
        self._reject_unsupported(capturable=capturable, differentiable=differentiable)
        check_fused(fused, foreach)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            foreach=foreach,
            capturable=False,
            decoupled_weight_decay=decoupled_weight_decay,
            differentiable=False,
            fused=fused,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            group.setdefault("decoupled_weight_decay", False)

    def _state(self, p: Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = new_step_counter()
            state["exp_avg"] = zeros_like(p)
            state["exp_avg_sq"] = zeros_like(p)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step; ``closure`` re-evaluates the loss and returns it."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            if group.get("fused") and fused_step(self, group, RADAM_UPDATE):
                continue
            params, grads = self._params_and_grads(group)
            if not params:
                continue
            states = [self._state(p) for p in params]
            steps = advance_steps([s["step"] for s in states])
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
                decoupled=group["decoupled_weight_decay"],
            )
            if use_foreach(group, params):
                radam_update_foreach(params, grads, ms, vs, steps=steps, **hyper)
                continue
            for i, p in enumerate(params):
                radam_update(p, grads[i], ms[i], vs[i], step=steps[i], **hyper)
        return loss
