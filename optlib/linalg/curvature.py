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
  :math:`\operatorname{diag}(H) = \mathbb E[u \odot Hu]` for Rademacher (or Gaussian) :math:`u`
  (Hutchinson, 1989; Bekas, Kokiopoulou & Saad, 2007), whose exact variance
  :func:`hutchinson_variance` gives from :math:`H`.

For the cross-entropy of a model's logits :math:`z` the Hessian splits into the Gauss-Newton
matrix :math:`G = J^\top (\operatorname{diag} p - pp^\top) J` (positive semi-definite; the
matrix Sophia's Gauss-Newton-Bartlett estimator targets) and a term weighted by the residuals
:math:`p - y` (Schraudolph, 2002; Martens, 2020). :func:`gauss_newton` and
:func:`gauss_newton_diag` compute :math:`G` exactly for small models from the Jacobian of the
logits; :func:`empirical_fisher_diag` the mean of squared per-example gradients, which Adam's
second moment estimates (up to the batch size and the mean gradient), for comparison.

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
    "finite_difference_hvp",
    "exact_hessian",
    "exact_hessian_diag",
    "EigenResult",
    "top_hessian_eigenvalue",
    "hutchinson_diag",
    "hutchinson_samples",
    "hutchinson_variance",
    "gauss_newton",
    "gauss_newton_diag",
    "empirical_fisher_diag",
]

DISTRIBUTIONS = ("rademacher", "gaussian")

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


def finite_difference_hvp(
    loss: Callable[[], Tensor],
    params: Sequence[Tensor],
    v: Tensor | Sequence[Tensor],
    h: float,
    *,
    central: bool = True,
):
    r"""The Hessian-vector product by differences of gradients, for comparison with :func:`hvp`:

    .. math::
        Hv \approx \frac{\nabla L(\theta + hv) - \nabla L(\theta - hv)}{2h}
        \quad\text{(central; error } O(h^2)\text{)}, \qquad
        \frac{\nabla L(\theta + hv) - \nabla L(\theta)}{h}
        \quad\text{(forward; } O(h)\text{)},

    plus a rounding error of order :math:`\epsilon_{\text{mach}}\|\nabla L\|/h` that grows as
    :math:`h` shrinks. ``loss`` is a closure (re-evaluated at the shifted parameters);
    ``params`` are shifted in place and restored exactly (copied back) afterwards. ``v`` as in
    :func:`hvp`.
    """
    params = _check_params(params)
    if not callable(loss) or isinstance(loss, Tensor):
        raise ValueError("Invalid loss: expected a closure that re-evaluates the loss")
    if not h > 0:
        raise ValueError(f"Invalid h: {h!r}; allowed range is (0, inf)")
    v_list, flat = _as_list(v, params)
    saved = [p.detach().clone() for p in params]

    def gradient_at(scale: float) -> list[Tensor]:
        with torch.no_grad():
            for p, p0, d in zip(params, saved, v_list):
                p.copy_(p0 + scale * d)
        grads = torch.autograd.grad(_loss(loss), params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]

    try:
        plus = gradient_at(h)
        minus = gradient_at(-h) if central else gradient_at(0.0)
    finally:
        with torch.no_grad():
            for p, p0 in zip(params, saved):
                p.copy_(p0)
    width = 2 * h if central else h
    Hv = [(a - b) / width for a, b in zip(plus, minus)]
    return flatten(Hv) if flat else Hv


def _hvps_batched(grads: list[Tensor], params: list[Tensor], V: Tensor) -> Tensor:
    r"""The products :math:`H v_k` for the rows :math:`v_k` of ``V`` (``k × N``), as the rows of
    a ``k × N`` tensor: one double backward vectorised over the rows
    (``is_grads_batched``), the same arithmetic as :func:`_hvp_from_gradient` row by row."""
    live = [i for i, g in enumerate(grads) if g.requires_grad]
    if not live:  # the gradient does not depend on the parameters: H = 0
        return torch.zeros_like(V)
    sizes = [p.numel() for p in params]
    rows = [piece.reshape(len(V), *p.shape) for piece, p in zip(V.split(sizes, dim=1), params)]
    products = torch.autograd.grad(
        [grads[i] for i in live],
        params,
        grad_outputs=[rows[i] for i in live],
        retain_graph=True,
        allow_unused=True,
        is_grads_batched=True,
    )
    return torch.cat(
        [
            torch.zeros(len(V), p.numel(), dtype=V.dtype, device=V.device)
            if Hv is None
            else Hv.detach().reshape(len(V), -1)
            for p, Hv in zip(params, products)
        ],
        dim=1,
    )


def exact_hessian(loss: LossLike, params: Sequence[Tensor], *, chunk: int = 256) -> Tensor:
    r"""The full :math:`N\times N` Hessian over the flattened ``params``, one row per
    coordinate: the Hessian-vector products with the unit vectors :math:`e_i`, ``chunk`` of
    them per vectorised double backward. Only for small models: it is the reference the
    estimators are checked against."""
    params = _check_params(params)
    chunk = check_positive_int("chunk", chunk)
    value = _loss(loss)
    grads = _gradient_with_graph(value, params)
    N = sum(p.numel() for p in params)
    eye = torch.eye(N, dtype=params[0].dtype, device=params[0].device)
    return torch.cat([_hvps_batched(grads, params, eye[i : i + chunk]) for i in range(0, N, chunk)])


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


def _probe(p: Tensor, gen: torch.Generator, distribution: str) -> Tensor:
    """One probe shaped like ``p``: independent ±1 (Rademacher) or standard normal entries."""
    if distribution == "rademacher":
        u = torch.randint(0, 2, p.shape, generator=gen) * 2 - 1
    else:
        u = torch.randn(p.shape, generator=gen, dtype=torch.float64)
    return u.to(p.dtype).to(p.device)


def _check_distribution(distribution: str) -> str:
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"Invalid distribution: {distribution!r}; allowed are {', '.join(DISTRIBUTIONS)}"
        )
    return distribution


def _hutchinson_terms(
    loss: LossLike, params: Sequence[Tensor], n_samples: int, seed: int, distribution: str
):
    r"""The parameters and a generator of the single-probe estimates :math:`u_s \odot Hu_s`,
    one list shaped like ``params`` per probe (one gradient graph for all of them)."""
    params = _check_params(params)
    n_samples = check_positive_int("n_samples", n_samples)
    distribution = _check_distribution(distribution)
    value = _loss(loss)
    grads = _gradient_with_graph(value, params)
    gen = torch.Generator().manual_seed(derive_seed(check_seed(seed)))

    def terms():
        for _ in range(n_samples):
            u = [_probe(p, gen, distribution) for p in params]
            Hu = _hvp_from_gradient(grads, params, u)
            yield [u_i * Hu_i for u_i, Hu_i in zip(u, Hu)]

    return params, terms()


def hutchinson_diag(
    loss: LossLike,
    params: Sequence[Tensor],
    n_samples: int = 100,
    seed: int = 0,
    *,
    distribution: str = "rademacher",
) -> list[Tensor]:
    r"""Hutchinson's estimate of the Hessian diagonal, shaped like ``params``:

    .. math::
        \widehat{\operatorname{diag}(H)} = \frac1S \sum_{s=1}^{S} u_s \odot H u_s,
        \qquad u_s \in \{-1, +1\}^N \text{ i.i.d. uniform (Rademacher)}.

    Unbiased because :math:`\mathbb E[u_i (Hu)_i] = \sum_j H_{ij}\mathbb E[u_iu_j] = H_{ii}`;
    the variance of one sample's entry :math:`i` is :math:`\sum_{j\ne i} H_{ij}^2`, so the error
    shrinks like :math:`1/\sqrt S`. Exact in one sample when :math:`H` is diagonal.
    ``distribution="gaussian"`` draws :math:`u_s \sim \mathcal N(0, I)` instead: still
    unbiased, with :math:`2H_{ii}^2` more variance per sample (:func:`hutchinson_variance`).
    Hutchinson (1989); Bekas, Kokiopoulou & Saad (2007); Yao et al. (2021, AdaHessian).
    """
    params, terms = _hutchinson_terms(loss, params, n_samples, seed, distribution)
    total = [torch.zeros_like(p) for p in params]
    for term in terms:
        for acc, t in zip(total, term):
            acc.add_(t)
    return [(acc / n_samples).detach() for acc in total]


def hutchinson_samples(
    loss: LossLike,
    params: Sequence[Tensor],
    n_samples: int = 100,
    seed: int = 0,
    *,
    distribution: str = "rademacher",
) -> Tensor:
    r"""The single-probe estimates :math:`u_s \odot Hu_s` of :func:`hutchinson_diag` (same
    probes for the same ``seed`` and ``distribution``), flattened: an ``S × N`` tensor whose
    row mean is :func:`hutchinson_diag`'s estimate, and whose rows show the estimator's
    spread."""
    _, terms = _hutchinson_terms(loss, params, n_samples, seed, distribution)
    return torch.stack([flatten(term).detach() for term in terms])


def hutchinson_variance(H: Tensor, distribution: str = "rademacher") -> Tensor:
    r"""The exact variance of one Hutchinson sample's entries, from a symmetric :math:`H`:

    .. math::
        \operatorname{Var}[u_i (Hu)_i] = \sum_{j\ne i} H_{ij}^2 \ \text{(Rademacher)}, \qquad
        \sum_{j\ne i} H_{ij}^2 + 2H_{ii}^2 \ \text{(Gaussian)}.

    With :math:`u_i(Hu)_i = H_{ii}u_i^2 + \sum_{j\ne i} H_{ij}u_iu_j`: the cross terms are
    uncorrelated with mean 0 and variance :math:`H_{ij}^2`; :math:`u_i^2` is exactly 1 for a
    Rademacher entry and has variance 2 for a Gaussian one. An average of :math:`S` samples has
    :math:`1/S` of this variance.
    """
    distribution = _check_distribution(distribution)
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"Invalid H: expected a square matrix, got shape {tuple(H.shape)}")
    diag_sq = H.diagonal() ** 2
    off = (H**2).sum(1) - diag_sq
    return off + 2 * diag_sq if distribution == "gaussian" else off


# --- Gauss-Newton --------------------------------------------------------------------------


def _logit_jacobian(logits: Tensor, params: list[Tensor], chunk: int) -> Tensor:
    r"""The Jacobian of the flattened logits with respect to the flattened ``params``,
    ``(R·C) × N``, by vector-Jacobian products with unit vectors, ``chunk`` rows at a time."""
    z = logits.reshape(-1)
    N = sum(p.numel() for p in params)
    eye = torch.eye(z.numel(), dtype=z.dtype, device=z.device)
    rows = []
    for i in range(0, z.numel(), chunk):
        block = torch.autograd.grad(
            z, params, grad_outputs=eye[i : i + chunk], retain_graph=True, allow_unused=True,
            is_grads_batched=True,
        )  # fmt: skip
        rows.append(
            torch.cat(
                [
                    torch.zeros(len(eye[i : i + chunk]), p.numel(), dtype=z.dtype)
                    if b is None
                    else b.reshape(len(eye[i : i + chunk]), -1)
                    for p, b in zip(params, block)
                ],
                dim=1,
            )
        )
    J = torch.cat(rows)
    assert J.shape == (z.numel(), N)
    return J.detach()


def _check_logits(logits: Tensor) -> Tensor:
    if not isinstance(logits, Tensor) or logits.ndim < 1 or not logits.requires_grad:
        raise ValueError("Invalid logits: expected a tensor with an autograd graph")
    return logits


def _gauss_newton_pieces(
    logits: Tensor, params: Sequence[Tensor], chunk: int
) -> tuple[Tensor, Tensor]:
    r""":math:`J` as ``R × C × N`` and the softmax :math:`p` as ``R × C`` (detached)."""
    params = _check_params(params)
    logits = _check_logits(logits)
    chunk = check_positive_int("chunk", chunk)
    C = logits.shape[-1]
    J = _logit_jacobian(logits, params, chunk)
    p = torch.softmax(logits.detach().reshape(-1, C), dim=-1)
    return J.reshape(-1, C, J.shape[-1]), p


def gauss_newton(logits: Tensor, params: Sequence[Tensor], *, chunk: int = 256) -> Tensor:
    r"""The exact Gauss-Newton matrix of the mean cross-entropy over the rows of ``logits``
    (the classes in the last dimension; any labels: :math:`G` does not depend on them):

    .. math::
        G = \frac1R \sum_{r=1}^{R} J_r^\top \big(\operatorname{diag} p_r - p_r p_r^\top\big) J_r,
        \qquad J_r = \frac{\partial z_r}{\partial \theta},\ p_r = \operatorname{softmax}(z_r),

    an ``N × N`` matrix over the flattened ``params``, positive semi-definite. It is the Hessian
    with the residual term :math:`\frac1R\sum_r\sum_c (p_{rc} - y_{rc})\nabla^2 z_{rc}` left
    out, and the expectation of :math:`B\,\hat g\hat g^\top` for gradients :math:`\hat g` on
    labels sampled from :math:`p` (Sophia's GNB estimator). From the full Jacobian of the
    logits (``chunk`` vector-Jacobian products at a time): only for small models.
    Schraudolph (2002); Martens (2020), §8.
    """
    J, p = _gauss_newton_pieces(logits, params, chunk)
    R = J.shape[0]
    A = (p.sqrt().unsqueeze(-1) * J).reshape(-1, J.shape[-1])  # rows sqrt(p_rc) J_rc
    b = torch.einsum("rc,rcn->rn", p, J)  # J_r^T p_r
    return (A.T @ A - b.T @ b) / R


def gauss_newton_diag(
    logits: Tensor, params: Sequence[Tensor], *, chunk: int = 256
) -> list[Tensor]:
    r"""The exact diagonal of :func:`gauss_newton`, shaped like ``params``, without forming
    :math:`G`: :math:`G_{ii} = \frac1R\sum_r \big(\sum_c p_{rc} J_{rc,i}^2 -
    (\sum_c p_{rc} J_{rc,i})^2\big)`, the variance of :math:`J_{rc,i}` over :math:`c \sim p_r`,
    never negative."""
    params = _check_params(params)
    J, p = _gauss_newton_pieces(logits, params, chunk)
    mean = torch.einsum("rc,rcn->rn", p, J)
    diag = (torch.einsum("rc,rcn->n", p, J**2) - (mean**2).sum(0)) / J.shape[0]
    return [d.clone() for d in unflatten(diag.clamp_min(0), params)]


def empirical_fisher_diag(
    losses: Tensor, params: Sequence[Tensor], *, chunk: int = 256
) -> list[Tensor]:
    r"""The diagonal of the empirical Fisher matrix, shaped like ``params``: the mean over the
    examples of the squared per-example gradient, :math:`F_{ii} = \frac1R\sum_r
    (\partial\ell_r/\partial\theta_i)^2`, from the vector ``losses`` of per-example losses
    (with their graph; e.g. ``cross_entropy(..., reduction="none")``).

    This is what Adam's second moment estimates on mini-batches of :math:`B` examples drawn at
    random: :math:`B\,\mathbb E[g_B\odot g_B] = F + (B-1)\,\nabla L\odot\nabla L` (with
    replacement). It uses the data's labels, not labels sampled from the model, so it is neither
    the Fisher nor the Gauss-Newton matrix, away from a perfect fit (Kunstner, Hennig & Balles,
    2019).
    """
    params = _check_params(params)
    if not isinstance(losses, Tensor) or losses.ndim != 1 or not losses.requires_grad:
        raise ValueError("Invalid losses: expected a 1-D tensor of per-example losses with a graph")
    chunk = check_positive_int("chunk", chunk)
    G = _logit_jacobian(losses, params, chunk)  # rows: per-example gradients
    return [d.clone() for d in unflatten((G**2).mean(0), params)]
