r"""Adam, AMSGrad and AdamW (chapters 5 and 6).

Same arguments, defaults and results as :class:`torch.optim.Adam` and :class:`torch.optim.AdamW`,
plus ``bias_correction`` (chapter 5's experiment: ``False`` uses the raw moments).

.. math::

   g_t &\leftarrow g_t + \lambda\theta_{t-1}
       &&\text{Adam's L2 penalty (} \lambda \text{, weight\_decay)} \\
   \theta_{t-1} &\leftarrow (1-\eta\lambda)\,\theta_{t-1}
       &&\text{or AdamW's decoupled decay, instead} \\
   m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
   v_t &\leftarrow \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
   v_t &\leftarrow \max(v_{t-1}^{\max}, v_t)
       &&\text{AMSGrad only (kept as } v^{\max}\text{)} \\
   \hat m_t &= m_t / (1-\beta_1^t), \qquad \hat v_t = v_t / (1-\beta_2^t)
       &&\text{bias correction (or } \hat m_t = m_t,\ \hat v_t = v_t\text{)} \\
   \theta_t &\leftarrow \theta_{t-1} - \eta\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)

Adam: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015. AMSGrad: Reddi, Kale &
Kumar, "On the Convergence of Adam and Beyond", ICLR 2018. AdamW: Loshchilov & Hutter, "Decoupled
Weight Decay Regularization", ICLR 2019. Adam and AdamW differ in *one line*: where
:math:`\lambda\theta` enters (see :func:`adam_update`, ``decoupled``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from ._base import Optimizer, new_step_counter, scalar
from ._fused import KeepsDispatch, check_fused, fused_step, use_foreach
from ._fused_updates import ADAM_UPDATE
from ._moments import (
    add_l2,
    addcdiv_scalars_,
    advance_steps,
    decay_weights_,
    real_views,
    rms_denominator,
    running_max_,
    update_first_moment_,
    update_second_moment_,
    zeros_like,
)
from ._validate import check_betas, check_nonnegative


def adam_update(
    theta: Tensor,
    g: Tensor,
    m: Tensor,
    v: Tensor,
    v_max: Tensor | None = None,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    decoupled: bool = False,
    bias_correction: bool = True,
    amsgrad: bool = False,
) -> None:
    r"""One Adam (``decoupled=True``: AdamW) step on one tensor, in place.

    .. math::
       m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\quad
       \theta_t = \theta_{t-1} - \frac{\eta}{1-\beta_1^t}\,
                  \frac{m_t}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

    ``step`` is :math:`t` (1 on the first call); ``v_max`` is AMSGrad's running maximum
    (needed when ``amsgrad``); ``bias_correction=False`` drops both :math:`1-\beta^t` factors.
    """
    if decoupled:
        decay_weights_(theta, lr, weight_decay)  # AdamW: decay outside the moments
    else:
        g = add_l2(g, theta, weight_decay)  # Adam + L2: the penalty goes through m and v
    update_first_moment_(m, g, beta1)
    update_second_moment_(v, g, beta2)
    if amsgrad:
        v = running_max_(v_max, v)
    c1, c2 = (1 - beta1**step, 1 - beta2**step) if bias_correction else (1.0, None)
    theta.addcdiv_(m, rms_denominator(v, eps, c2), value=-lr / c1)


def adam_update_foreach(
    thetas: list[Tensor],
    gs: list[Tensor],
    ms: list[Tensor],
    vs: list[Tensor],
    v_maxs: list[Tensor] | None = None,
    *,
    steps: list[int],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    decoupled: bool = False,
    bias_correction: bool = True,
    amsgrad: bool = False,
) -> None:
    """:func:`adam_update` on many tensors at once, one ``torch._foreach_*`` kernel per line."""
    if decoupled:
        decay_weights_(thetas, lr, weight_decay)
    else:
        gs = add_l2(gs, thetas, weight_decay)
    update_first_moment_(ms, gs, beta1)
    update_second_moment_(vs, gs, beta2)
    if amsgrad:
        vs = running_max_(v_maxs, vs)
    if bias_correction:
        c2 = [1 - beta2**t for t in steps]
        step_sizes = [-lr / (1 - beta1**t) for t in steps]
        addcdiv_scalars_(thetas, ms, rms_denominator(vs, eps, c2), step_sizes)
    else:
        torch._foreach_addcdiv_(thetas, ms, rms_denominator(vs, eps), value=-lr)


class Adam(KeepsDispatch, Optimizer):
    r"""Adam (Kingma & Ba, 2015), with AMSGrad; drop-in :class:`torch.optim.Adam`.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\eta \ge 0`.
        betas: :math:`(\beta_1, \beta_2)`, each in :math:`[0, 1)`.
        eps: :math:`\epsilon \ge 0`, added to :math:`\sqrt{\hat v_t}`.
        weight_decay: :math:`\lambda \ge 0`; an L2 penalty, or decoupled decay when
            ``decoupled_weight_decay`` (that is AdamW).
        amsgrad: use AMSGrad's running maximum of :math:`v_t` (Reddi et al., 2018).
        foreach: use the multi-tensor path (``None``: as torch picks, foreach on CUDA and the
            per-tensor loop on the CPU).
        maximize: ascend instead of descend.
        capturable, differentiable: torch's switches for CUDA graphs and autograd through the
            step; rejected when set.
        fused: optlib's fused path, one compiled kernel over flat buffers
            (:mod:`optlib.optim._fused`); falls back to foreach, with a warning, without a
            compiler.
        decoupled_weight_decay: AdamW's decay :math:`\theta \leftarrow (1-\eta\lambda)\theta`.
        bias_correction: optlib's addition (chapter 5). ``True`` (default) is Adam;
            ``False`` steps with the raw moments, :math:`\eta\, m_t / (\sqrt{v_t} + \epsilon)`,
            so early steps are too small by :math:`1-\beta_1^t` and mis-scaled by
            :math:`\sqrt{1-\beta_2^t}`.

    State per parameter (torch's keys): ``step`` (0-d tensor), ``exp_avg`` (:math:`m`),
    ``exp_avg_sq`` (:math:`v`), and ``max_exp_avg_sq`` (:math:`v^{\max}`) with AMSGrad.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        bias_correction: bool = True,
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
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=foreach,
            capturable=False,
            differentiable=False,
            fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
            bias_correction=bias_correction,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("fused", None)
            group.setdefault("decoupled_weight_decay", False)
            group.setdefault("bias_correction", True)

    def _state(self, p: Tensor, amsgrad: bool) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = new_step_counter()
            state["exp_avg"] = zeros_like(p)
            state["exp_avg_sq"] = zeros_like(p)
        if amsgrad and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = zeros_like(p)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step; ``closure`` re-evaluates the loss and returns it."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            if group.get("fused") and fused_step(self, group, ADAM_UPDATE):
                continue
            params, grads = self._params_and_grads(group)
            if not params:
                continue
            amsgrad = group["amsgrad"]
            states = [self._state(p, amsgrad) for p in params]
            steps = advance_steps([s["step"] for s in states])
            ms = [s["exp_avg"] for s in states]
            vs = [s["exp_avg_sq"] for s in states]
            v_maxs = [s["max_exp_avg_sq"] for s in states] if amsgrad else []
            if any(p.is_complex() for p in params):
                params, grads, ms, vs, v_maxs = real_views(params, grads, ms, vs, v_maxs)
            beta1, beta2 = group["betas"]
            hyper = dict(
                lr=scalar(group["lr"]),
                beta1=scalar(beta1),
                beta2=scalar(beta2),
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                decoupled=group["decoupled_weight_decay"],
                bias_correction=group["bias_correction"],
                amsgrad=amsgrad,
            )
            if use_foreach(group, params):
                adam_update_foreach(params, grads, ms, vs, v_maxs, steps=steps, **hyper)
                continue
            for i, p in enumerate(params):
                v_max = v_maxs[i] if amsgrad else None
                adam_update(p, grads[i], ms[i], vs[i], v_max, step=steps[i], **hyper)
        return loss


class AdamW(Adam):
    r"""AdamW (Loshchilov & Hutter, 2019); drop-in :class:`torch.optim.AdamW`.

    Exactly :class:`Adam` with ``decoupled_weight_decay=True``: the decay
    :math:`\theta \leftarrow (1-\eta\lambda)\theta` is applied to the weights directly instead of
    being added to the gradient, so it is not divided by :math:`\sqrt{\hat v_t}`. The default
    ``weight_decay`` is ``1e-2``, as in torch. Arguments as for :class:`Adam`.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        bias_correction: bool = True,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
            bias_correction=bias_correction,
        )

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True  # as torch: loaded state is always AdamW
