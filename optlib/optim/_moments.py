r"""The pieces that the element-wise adaptive methods share (chapters 4–6).

RMSprop, Adam, AdamW, NAdam and RAdam are built from the same few lines; what tells them apart
is which lines they use and where they sit. Each piece here is one line of the math:

.. math::

   m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1)\, g_t
       &&\text{first moment (EMA of the gradient)}: \texttt{update\_first\_moment\_} \\
   v_t &\leftarrow \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2
       &&\text{second moment (EMA of its square)}: \texttt{update\_second\_moment\_} \\
   G_t &\leftarrow G_{t-1} + g_t^2
       &&\text{AdaGrad's running sum}: \texttt{accumulate\_square\_} \\
   d_t &= \sqrt{v_t / c_2} + \epsilon
       &&\text{the denominator, } c_2 = 1-\beta_2^t \text{ or } 1: \texttt{rms\_denominator} \\
   g_t &\leftarrow g_t + \lambda\,\theta_{t-1}
       &&\text{L2 penalty, through the moments}: \texttt{add\_l2} \\
   \theta_{t-1} &\leftarrow (1-\eta\lambda)\,\theta_{t-1}
       &&\text{decoupled decay, outside them}: \texttt{decay\_weights\_}

Every piece takes either one tensor (the readable single-tensor update) or a list of tensors (the
``foreach`` update, one ``torch._foreach_*`` kernel per line), so both paths are the same code.
Scalars that differ per tensor (bias corrections) are then lists of floats.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._base import step_value

Tensors = Tensor | list[Tensor]
Scalars = float | Sequence[float]


def update_first_moment_(m: Tensors, g: Tensors, beta1: float) -> None:
    r""":math:`m \leftarrow \beta_1 m + (1-\beta_1)\, g`, in place (``m`` lerps toward ``g``)."""
    if isinstance(m, Tensor):
        m.lerp_(g, 1 - beta1)
    else:
        torch._foreach_lerp_(m, g, 1 - beta1)


def update_second_moment_(v: Tensors, g: Tensors, beta2: float) -> None:
    r""":math:`v \leftarrow \beta_2 v + (1-\beta_2)\, g \odot g`, in place."""
    if isinstance(v, Tensor):
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    else:
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, g, g, value=1 - beta2)


def accumulate_square_(G: Tensors, g: Tensors) -> None:
    r""":math:`G \leftarrow G + g \odot g`, in place: AdaGrad's sum, which never forgets."""
    if isinstance(G, Tensor):
        G.addcmul_(g, g, value=1)
    else:
        torch._foreach_addcmul_(G, g, g, value=1)


def running_max_(v_max: Tensors, v: Tensors) -> Tensors:
    r""":math:`v^{\max} \leftarrow \max(v^{\max}, v)` in place (AMSGrad); returns ``v_max``."""
    if isinstance(v_max, Tensor):
        torch.maximum(v_max, v, out=v_max)
    else:
        torch._foreach_maximum_(v_max, v)
    return v_max


def rms_denominator(
    v: Tensors, eps: float, c2: Scalars | None = None, *, centre: Tensors | None = None
) -> Tensors:
    r"""The denominator :math:`\sqrt{v / c_2} + \epsilon`, as a new tensor.

    ``c2`` is the second-moment bias correction :math:`1-\beta_2^t` (``None``: no correction);
    with ``centre`` :math:`\bar g` the variance :math:`v - \bar g^2` replaces :math:`v` (centred
    RMSprop). :math:`\epsilon` is added *after* the bias correction, as in Adam's paper.
    """
    if isinstance(v, Tensor):
        d = v.addcmul(centre, centre, value=-1).sqrt_() if centre is not None else v.sqrt()
        if c2 is not None:
            d.div_(c2**0.5)
        return d.add_(eps)
    if centre is not None:
        d = torch._foreach_addcmul(v, centre, centre, value=-1)
        torch._foreach_sqrt_(d)
    else:
        d = torch._foreach_sqrt(v)
    if c2 is not None:
        torch._foreach_div_(d, [c**0.5 for c in c2])
    torch._foreach_add_(d, eps)
    return d


def add_l2(g: Tensors, theta: Tensors, weight_decay: float) -> Tensors:
    r""":math:`g + \lambda\theta` (a new tensor): an L2 penalty, which then flows through the
    moments and is rescaled by the denominator like any other gradient."""
    if weight_decay == 0:
        return g
    if isinstance(g, Tensor):
        return g.add(theta, alpha=weight_decay)
    return torch._foreach_add(g, theta, alpha=weight_decay)


def decay_weights_(theta: Tensors, lr: float, weight_decay: float) -> None:
    r""":math:`\theta \leftarrow (1-\eta\lambda)\,\theta`, in place: decoupled weight decay
    (Loshchilov & Hutter, 2019), applied outside the moments so every weight shrinks at the same
    relative rate."""
    if weight_decay == 0:
        return
    if isinstance(theta, Tensor):
        theta.mul_(1 - lr * weight_decay)
    else:
        torch._foreach_mul_(theta, 1 - lr * weight_decay)


# --- bookkeeping shared by the optimizer classes -------------------------------------------

_ONE = torch.tensor(1.0)


def advance_steps(steps: list[Tensor]) -> list[int] | list[Tensor]:
    """Add one to each 0-d step counter (in place, one kernel) and return the new values as ints
    (under torch.compile, the counters themselves: ``_base.step_value``).

    The counters stay tensors, as torch.optim stores them, so state dicts are interchangeable.
    """
    torch._foreach_add_(steps, _ONE, alpha=1.0)
    return [step_value(t) for t in steps]


def real_views(*tensor_lists: list[Tensor]) -> tuple[list[Tensor], ...]:
    """Complex tensors as real views (..., 2), so each real and imaginary part is treated as its
    own coordinate, as torch.optim does. Real tensors pass through unchanged."""
    return tuple(
        [torch.view_as_real(t) if t.is_complex() else t for t in ts] for ts in tensor_lists
    )


def zeros_like(p: Tensor) -> Tensor:
    """A zero state buffer shaped, typed and laid out like ``p``."""
    return torch.zeros_like(p, memory_format=torch.preserve_format)


def sign_(c: Tensors) -> Tensors:
    r""":math:`\operatorname{sign}(c)` in place, except that a non-finite entry becomes NaN.

    ``torch.sign`` maps NaN to 0, so a sign method (Lion, Sophia's clipped step) would stop
    moving a coordinate whose momentum has become NaN, for ever and silently; an infinite
    momentum would push it by the full step in one direction for ever. NaN instead shows in the
    parameters and the loss at once, as with torch.optim's Adam. Returns ``c``."""
    if isinstance(c, Tensor):
        nonfinite = c - c  # 0 where c is finite, NaN where it is NaN or infinite
        return c.sign_().add_(nonfinite)
    nonfinite = torch._foreach_sub(c, c)
    torch._foreach_sign_(c)
    torch._foreach_add_(c, nonfinite)
    return c


def addcdiv_scalars_(
    thetas: list[Tensor],
    numerators: list[Tensor],
    denominators: list[Tensor],
    scalars: list[float] | list[Tensor],
) -> None:
    r""":math:`\theta_i \leftarrow \theta_i + s_i\, n_i / d_i` for every tensor (one
    ``torch._foreach_addcdiv_``). Under torch.compile the per-tensor :math:`s_i` are 0-d tensors
    (step counters stay tensors, ``_base.step_value``), which the op's scalar-list overload
    does not take: they then divide the denominators first, :math:`n_i / (d_i / s_i)`."""
    if scalars and isinstance(scalars[0], Tensor):
        torch._foreach_addcdiv_(thetas, numerators, torch._foreach_div(denominators, scalars))
    else:
        torch._foreach_addcdiv_(thetas, numerators, denominators, scalars)
