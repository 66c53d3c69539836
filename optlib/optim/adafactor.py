r"""Adafactor: adaptive steps with a factored second moment (chapter 8).

Same arguments, defaults, state and results as :class:`torch.optim.Adafactor`.
Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", ICML 2018.

For a matrix gradient :math:`G_t \in \mathbb{R}^{n\times m}` Adafactor keeps only the row means
:math:`R_t \in \mathbb{R}^{n}` and column means :math:`C_t \in \mathbb{R}^{m}` of
:math:`G_t \odot G_t` (memory :math:`n + m` instead of :math:`nm`) and rebuilds a rank-one
estimate of the second moment from them. Vectors keep a full second moment :math:`V_t`.
Tensors of order :math:`> 2` are factored over their last two dimensions.

.. math::

   \hat\beta_{2,t} &= 1 - t^{\tau}
       &&\text{(decay schedule, } \tau = \texttt{beta2\_decay} \le 0\text{)} \\
   \rho_t &= \min(\eta,\ 1/\sqrt{t}),
   \qquad \alpha_t = \max(\epsilon_2,\ \mathrm{RMS}(\theta_{t-1}))\,\rho_t
       &&\text{(relative step size)} \\
   \theta &\leftarrow \theta_{t-1}\,(1 - \eta\lambda)
       &&\text{(decoupled weight decay)} \\
   R_t &= \hat\beta_{2,t} R_{t-1} + (1-\hat\beta_{2,t})\,\mathrm{mean}_{\text{cols}}(G_t\odot G_t),
   \quad
   C_t = \hat\beta_{2,t} C_{t-1} + (1-\hat\beta_{2,t})\,\mathrm{mean}_{\text{rows}}(G_t\odot G_t) \\
   \hat V_t &= \frac{R_t C_t^{\top}}{\max(\mathrm{mean}(R_t),\ \epsilon_1)}
       \quad\text{(matrices)}, \qquad
   \hat V_t = \hat\beta_{2,t} \hat V_{t-1} + (1-\hat\beta_{2,t})\, G_t\odot G_t
       \quad\text{(vectors)} \\
   U_t &= \frac{G_t}{\sqrt{\max(\hat V_t,\ \epsilon_1^2)}},
   \qquad \hat U_t = \frac{U_t}{\max(1,\ \mathrm{RMS}(U_t)/d)}
       &&\text{(update clipping at } d\text{)} \\
   \theta_t &= \theta - \alpha_t\, \hat U_t

As in torch (and unlike the paper): :math:`\eta` caps the relative step size (the paper fixes
0.01) and scales the decoupled weight decay; :math:`\epsilon_1` guards the normaliser and the
square root instead of being added to :math:`G_t\odot G_t`; and means replace sums. With
``eps=(None, ...)``, :math:`\epsilon_1` is the machine epsilon of the group's first parameter.
There is no first moment (the paper's :math:`\beta_1 = 0` setting).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from ._base import (
    Optimizer,
    host_scalar,
    new_step_counter,
    scalar,
    step_value,
)
from ._validate import check_interval, check_nonnegative


def _rms(x: Tensor) -> float | Tensor:
    r"""Root mean square :math:`\lVert x \rVert_2 / \sqrt{\mathrm{numel}(x)}` (a float;
    a 0-d tensor under torch.compile)."""
    return host_scalar(x.norm(2)) / (x.numel() ** 0.5)


def _max(a: float | Tensor, b: float | Tensor) -> float | Tensor:
    """``max(a, b)`` of two floats, or elementwise when one is a (traced) tensor."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return torch.maximum(torch.as_tensor(a), torch.as_tensor(b))
    return max(a, b)


def _min(a: float | Tensor, b: float | Tensor) -> float | Tensor:
    """``min(a, b)``, likewise."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return torch.minimum(torch.as_tensor(a), torch.as_tensor(b))
    return min(a, b)


def _mean_square(g: Tensor, dim: int) -> Tensor:
    """``(g * g).mean(dim, keepdim=True)`` without materialising the full-size ``g * g``."""
    return torch.norm(g, dim=dim, keepdim=True).square_().div_(g.size(dim))


def adafactor_update(
    theta: Tensor,
    g: Tensor,
    R: Tensor | None,
    C: Tensor | None,
    V: Tensor | None,
    *,
    t: int | Tensor,
    lr: float,
    beta2_decay: float,
    eps1: float,
    eps2: float,
    d: float,
    weight_decay: float,
) -> None:
    r"""One Adafactor step on one tensor, in place (``t`` is the new step number, from 1).

    ``R`` (shape ``[..., n, 1]``) and ``C`` (shape ``[..., 1, m]``) are the row and column
    statistics of a tensor with 2 or more dimensions; ``V`` is the full second moment of a
    vector or scalar. Exactly one of ``(R, C)`` and ``V`` is given.
    """
    one_minus_beta2 = t**beta2_decay  # 1 - \hat\beta_{2,t}
    rho = _min(lr, 1 / t**0.5)
    alpha = _max(eps2, _rms(theta)) * rho
    if weight_decay != 0:
        theta.mul_(1 - lr * weight_decay)

    if g.dim() > 1:
        assert R is not None and C is not None, "R and C are needed for a tensor of order >= 2"
        R.lerp_(_mean_square(g, dim=-1), one_minus_beta2)
        C.lerp_(_mean_square(g, dim=-2), one_minus_beta2)
        V_hat = (R @ C).div_(R.mean(dim=-2, keepdim=True).clamp_(min=eps1))  # rank-one rebuild
    else:
        assert V is not None, "V is needed for a vector or scalar"
        V.lerp_(g * g, one_minus_beta2)
        V_hat = V.clone()

    U = V_hat.clamp_(min=eps1 * eps1).rsqrt_().mul_(g)
    clip = _max(1.0, host_scalar(U.norm(2)) / (U.numel() ** 0.5 * d))  # max(1, RMS(U) / d)
    theta.add_(U, alpha=-alpha / clip)


class Adafactor(Optimizer):
    r"""Adafactor (Shazeer & Stern, 2018); drop-in :class:`torch.optim.Adafactor`.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\eta \ge 0`: the cap of the relative step size
            :math:`\rho_t` and the scale of the decoupled weight decay.
        beta2_decay: :math:`\tau \le 0`; the second-moment decay is
            :math:`\hat\beta_{2,t} = 1 - t^{\tau}`.
        eps: :math:`(\epsilon_1, \epsilon_2)`; :math:`\epsilon_1 \ge 0` guards the
            second-moment estimate (``None``: machine epsilon of the parameters' dtype),
            :math:`\epsilon_2 \ge 0` is the smallest parameter scale used in :math:`\alpha_t`.
        d: update-clipping threshold :math:`d \ge 1` on :math:`\mathrm{RMS}(U_t)`.
        weight_decay: decoupled weight decay :math:`\lambda \ge 0`.
        foreach: accepted for compatibility; Adafactor is not element-wise (row and column
            reductions, one norm per tensor), so optlib always runs the single-tensor update.
        maximize: ascend instead of descend.

    State per parameter (same keys as torch): ``step``; ``row_var`` (:math:`R`) and
    ``col_var`` (:math:`C`) for tensors of order :math:`\ge 2`, else ``variance``
    (:math:`\hat V`).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        check_nonnegative("lr", lr)
        check_interval("beta2_decay", beta2_decay, -float("inf"), 0.0, high_open=False)
        try:
            eps1, eps2 = eps
        except (TypeError, ValueError):
            raise ValueError(f"Invalid eps: {eps!r}; expected a pair (eps1, eps2)") from None
        if eps1 is not None:
            check_nonnegative("eps1 (eps[0])", eps1)
        check_nonnegative("eps2 (eps[1])", eps2)
        check_interval("d", d, 1.0)
        check_nonnegative("weight_decay", weight_decay)
        defaults = dict(
            lr=lr,
            beta2_decay=beta2_decay,
            eps=eps,
            d=d,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)

    def _state_for(self, p: Tensor) -> dict:
        """The state of ``p``, created on first use (factored for order >= 2)."""
        state = self.state[p]
        if len(state) == 0:
            state["step"] = new_step_counter()
            if p.dim() > 1:
                state["row_var"] = p.new_zeros((*p.shape[:-1], 1))
                state["col_var"] = p.new_zeros((*p.shape[:-2], 1, p.shape[-1]))
            else:
                state["variance"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step; ``closure`` re-evaluates the loss and returns it."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            params, grads = self._params_and_grads(group)
            if not params:
                continue
            eps1, eps2 = group["eps"]
            if eps1 is None:  # as torch: the first parameter's dtype decides
                eps1 = torch.finfo(params[0].dtype).eps
            if any(torch.is_complex(p) for p in params):
                raise RuntimeError("Adafactor does not support complex parameters")
            for p, g in zip(params, grads):
                state = self._state_for(p)
                state["step"] += 1
                adafactor_update(
                    p,
                    g,
                    state.get("row_var"),
                    state.get("col_var"),
                    state.get("variance"),
                    t=step_value(state["step"]),
                    lr=scalar(group["lr"]),
                    beta2_decay=group["beta2_decay"],
                    eps1=eps1,
                    eps2=eps2,
                    d=group["d"],
                    weight_decay=group["weight_decay"],
                )
        return loss
