r"""Curvature of a neural network's loss, through Hessian-vector products.

The Hessian :math:`H = \nabla^2_\theta L(\theta)` of a network with :math:`N` parameters has
:math:`N^2` entries, too many to form; but the product :math:`Hv` costs about two backward
passes (Pearlmutter, 1994), by differentiating the scalar :math:`\langle\nabla_\theta L, v\rangle`
once more ("double backward"):

.. math::
    Hv = \nabla_\theta \big\langle \nabla_\theta L(\theta),\ v \big\rangle .

From products alone we get

* the top eigenvalue (the *sharpness* of chapter 2) by power iteration
  :math:`v \leftarrow Hv/\|Hv\|`, :math:`\lambda \approx v^\top H v` (Golub & Van Loan, 2013,
  §8.2.1);
* the diagonal (Sophia's and AdaHessian's preconditioner, chapter 9) by Hutchinson's estimator
  :math:`\operatorname{diag}(H) = \mathbb E[u \odot Hu]` for Rademacher :math:`u`
  (Hutchinson, 1989; Bekas, Kokiopoulou & Saad, 2007).

``loss`` is either a scalar tensor that still has its autograd graph, or a zero-argument
callable returning one (re-evaluated on each call); ``params`` is a list of tensors with
``requires_grad=True`` (e.g. ``list(model.parameters())``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .._seed import derive_seed
from ..optim._validate import check_nonnegative, check_positive_int
from ._common import check_seed

__all__ = [
    "flatten",
    "unflatten",
    "hvp",
    "exact_hessian",
    "exact_hessian_diag",
    "EigenResult",
    "top_hessian_eigenvalue",
    "hutchinson_diag",
]

LossLike = Tensor | Callable[[], Tensor]


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate a list of tensors into one 1-D vector (in order, row-major)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("Invalid tensors: the list is empty")
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Split a 1-D ``vector`` into tensors shaped like ``like`` (the inverse of :func:`flatten`)."""
    like = list(like)
    sizes = [t.numel() for t in like]
    if vector.ndim != 1 or vector.numel() != sum(sizes):
        raise ValueError(f"Invalid vector: expected a 1-D tensor with {sum(sizes)} entries")
    return [piece.view_as(t) for piece, t in zip(vector.split(sizes), like)]


def _check_params(params: Sequence[Tensor]) -> list[Tensor]:
    params = list(params)
    if not params or not all(isinstance(p, Tensor) and p.requires_grad for p in params):
        raise ValueError("Invalid params: expected a non-empty list of tensors requiring grad")
    return params


def _loss(loss: LossLike) -> Tensor:
    """The loss tensor (calling ``loss`` if it is a closure)."""
    if isinstance(loss, Tensor):
        value = loss
    elif callable(loss):
        value = loss()
    else:
        raise ValueError(f"Invalid loss: expected a scalar tensor or a callable, got {loss!r}")
    if not isinstance(value, Tensor) or value.numel() != 1 or not value.requires_grad:
        raise ValueError("Invalid loss: expected a scalar tensor with an autograd graph")
    return value


def _gradient_with_graph(loss: Tensor, params: list[Tensor]) -> list[Tensor]:
    r""":math:`\nabla_\theta L` with its own graph, ready to be differentiated again."""
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _hvp_from_gradient(grads: list[Tensor], params: list[Tensor], v: list[Tensor]) -> list[Tensor]:
    r""":math:`Hv = \nabla_\theta\langle g, v\rangle`, keeping the graph of ``g`` for reuse."""
    live = [i for i, g in enumerate(grads) if g.requires_grad]
    if not live:  # the gradient does not depend on the parameters: H = 0
        return [torch.zeros_like(p) for p in params]
    products = torch.autograd.grad(
        [grads[i] for i in live],
        params,
        grad_outputs=[v[i] for i in live],
        retain_graph=True,
        allow_unused=True,
    )
    return [torch.zeros_like(p) if Hv is None else Hv.detach() for p, Hv in zip(params, products)]


def _as_list(v: Tensor | Sequence[Tensor], params: list[Tensor]) -> tuple[list[Tensor], bool]:
    """``v`` as a list shaped like ``params``, and whether it came as one flat vector."""
    if isinstance(v, Tensor):
        return unflatten(v, params), True
    v = list(v)
    if len(v) != len(params) or any(a.shape != p.shape for a, p in zip(v, params)):
        raise ValueError("Invalid v: expected a flat vector or tensors shaped like params")
    return v, False


def hvp(loss: LossLike, params: Sequence[Tensor], v: Tensor | Sequence[Tensor]):
    r"""The Hessian-vector product :math:`Hv` by double backward (Pearlmutter, 1994):

    .. math::
        g = \nabla_\theta L(\theta) \ \text{(with its graph)}, \qquad
        Hv = \nabla_\theta\,(g^\top v).

    ``v`` is a flat vector (the result is flat too) or a list of tensors shaped like
    ``params`` (the result is such a list). Costs about two backward passes, never forms
    :math:`H`.
    """
    params = _check_params(params)
    value = _loss(loss)
    v_list, flat = _as_list(v, params)
    Hv = _hvp_from_gradient(_gradient_with_graph(value, params), params, v_list)
    return flatten(Hv) if flat else Hv


def exact_hessian(loss: LossLike, params: Sequence[Tensor]) -> Tensor:
    r"""The full :math:`N\times N` Hessian over the flattened ``params``, one row per
    coordinate (:math:`N` Hessian-vector products with the unit vectors :math:`e_i`). Only
    for small models: it is the reference the estimators are checked against."""
    params = _check_params(params)
    value = _loss(loss)
    grads = _gradient_with_graph(value, params)
    N = sum(p.numel() for p in params)
    rows = []
    for i in range(N):
        e_i = torch.zeros(N, dtype=params[0].dtype, device=params[0].device)
        e_i[i] = 1.0
        rows.append(flatten(_hvp_from_gradient(grads, params, unflatten(e_i, params))))
    return torch.stack(rows)


def exact_hessian_diag(loss: LossLike, params: Sequence[Tensor]) -> list[Tensor]:
    r"""The exact diagonal :math:`H_{ii}`, shaped like ``params`` (from :func:`exact_hessian`)."""
    params = _check_params(params)
    return [d.clone() for d in unflatten(exact_hessian(loss, params).diagonal(), params)]


@dataclass
class EigenResult:
    r"""The outcome of :func:`top_hessian_eigenvalue`.

    Attributes:
        eigenvalue: the final Rayleigh quotient :math:`v_k^\top H v_k`.
        history: the Rayleigh quotient at every iteration.
        eigenvector: the final unit vector :math:`v_k`, shaped like ``params``.
        iterations: the number of Hessian-vector products.
        converged: whether the relative change fell below ``tol``.
    """

    eigenvalue: float
    history: list[float]
    eigenvector: list[Tensor]
    iterations: int
    converged: bool


def _dot(a: list[Tensor], b: list[Tensor]) -> Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))  # type: ignore[return-value]


def _normalized(v: list[Tensor]) -> list[Tensor]:
    scale = _dot(v, v).sqrt()
    return [x / scale for x in v]


def top_hessian_eigenvalue(
    loss: LossLike,
    params: Sequence[Tensor],
    iters: int = 100,
    seed: int = 0,
    *,
    tol: float = 1e-6,
) -> EigenResult:
    r"""The dominant eigenvalue of the Hessian by power iteration on Hessian-vector products:

    .. math::
        v_0 \sim \mathcal N(0, I)/\|\cdot\|, \qquad
        \lambda_k = v_k^\top H v_k, \qquad v_{k+1} = Hv_k / \|Hv_k\| .

    It converges to the eigenvalue of largest *magnitude* (at rate
    :math:`|\lambda_2/\lambda_1|`), which near a minimum is the largest one, the sharpness
    :math:`\lambda_{\max}`; stops after ``iters`` products or when
    :math:`|\lambda_k - \lambda_{k-1}| \le \mathrm{tol}\,|\lambda_k|` (``tol=0`` runs them
    all). Golub & Van Loan (2013), §8.2.1; used for sharpness by Keskar et al. (2017) and
    Cohen et al. (2021).
    """
    params = _check_params(params)
    iters = check_positive_int("iters", iters)
    tol = check_nonnegative("tol", tol)
    value = _loss(loss)
    grads = _gradient_with_graph(value, params)
    gen = torch.Generator().manual_seed(derive_seed(check_seed(seed)))
    v = _normalized(
        [torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in params]
    )
    history: list[float] = []
    converged = False
    for _ in range(iters):
        Hv = _hvp_from_gradient(grads, params, v)
        history.append(float(_dot(v, Hv)))
        if float(_dot(Hv, Hv)) == 0.0:  # v is in the null space: H v = 0
            break
        v = _normalized(Hv)
        if len(history) > 1 and abs(history[-1] - history[-2]) <= tol * abs(history[-1]):
            converged = True
            break
    return EigenResult(
        eigenvalue=history[-1],
        history=history,
        eigenvector=[x.detach() for x in v],
        iterations=len(history),
        converged=converged,
    )


def hutchinson_diag(
    loss: LossLike, params: Sequence[Tensor], n_samples: int = 100, seed: int = 0
) -> list[Tensor]:
    r"""Hutchinson's estimate of the Hessian diagonal, shaped like ``params``:

    .. math::
        \widehat{\operatorname{diag}(H)} = \frac1S \sum_{s=1}^{S} u_s \odot H u_s,
        \qquad u_s \in \{-1, +1\}^N \text{ i.i.d. uniform (Rademacher)}.

    Unbiased because :math:`\mathbb E[u_i (Hu)_i] = \sum_j H_{ij}\mathbb E[u_iu_j] = H_{ii}`;
    the variance of one sample's entry :math:`i` is :math:`\sum_{j\ne i} H_{ij}^2`, so the error
    shrinks like :math:`1/\sqrt S`. Exact in one sample when :math:`H` is diagonal.
    Hutchinson (1989); Bekas, Kokiopoulou & Saad (2007); Yao et al. (2021, AdaHessian).
    """
    params = _check_params(params)
    n_samples = check_positive_int("n_samples", n_samples)
    value = _loss(loss)
    grads = _gradient_with_graph(value, params)
    gen = torch.Generator().manual_seed(derive_seed(check_seed(seed)))
    total = [torch.zeros_like(p) for p in params]
    for _ in range(n_samples):
        u = [
            (torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p.dtype).to(p.device)
            for p in params
        ]
        Hu = _hvp_from_gradient(grads, params, u)
        for acc, u_i, Hu_i in zip(total, u, Hu):
            acc.add_(u_i * Hu_i)
    return [(acc / n_samples).detach() for acc in total]
