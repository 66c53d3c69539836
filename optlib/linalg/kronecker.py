r"""Kronecker-factored preconditioners next to the full matrices they approximate (chapter 10).

For a weight matrix :math:`W \in \mathbb{R}^{m\times n}` every vector here is the row-major
flattening :math:`\operatorname{vec}(G)_{in + j} = G_{ij}` (``G.reshape(-1)``), for which

.. math::

   \operatorname{vec}(A\,G\,B) = (A \otimes B^\top)\operatorname{vec}(G),
   \qquad \operatorname{vec}(s\,a^\top) = s \otimes a .

*Full-matrix AdaGrad* (Duchi et al., 2011) preconditions with the :math:`mn\times mn` matrix
:math:`H_t = \sum_{s\le t} g_s g_s^\top` (:math:`g_s = \operatorname{vec}G_s`) and steps along
:math:`(H_t + \epsilon I)^{-1/2} g_t` (:func:`full_matrix_adagrad_direction`). *Shampoo*
(Gupta, Koren & Singer, 2018) keeps :math:`L_t = \sum G_sG_s^\top` (:math:`m\times m`) and
:math:`R_t = \sum G_s^\top G_s` (:math:`n\times n`) and steps along
:math:`L_t^{-1/4} G_t R_t^{-1/4} = (L_t^{-1/4}\otimes R_t^{-1/4})\,g_t`
(:func:`shampoo_kronecker_direction`); their Lemma 8 bounds the full matrix by the Kronecker
product, :math:`H_t \preceq r\, L_t^{1/2}\otimes R_t^{1/2}` when every :math:`G_s` has rank at
most :math:`r` (:func:`kronecker_bound_gap`), which is why the exponents are :math:`-1/4`: each
factor carries the squared gradient once, their product twice.

*K-FAC* (Martens & Grosse, 2015) approximates the Fisher block of a linear layer,
:math:`F = \mathbb{E}[(s s^\top)\otimes(a a^\top)]` over examples (:math:`a` the layer's input
with a 1 for the bias, :math:`s` the gradient of the log-likelihood with respect to its output,
labels drawn from the model), by :math:`G \otimes A` with :math:`G = \mathbb{E}[ss^\top]`,
:math:`A = \mathbb{E}[aa^\top]` (:func:`linear_layer_fisher`).

*Muon* (Jordan et al., 2024) replaces a matrix :math:`G = U\Sigma V^\top` by approximately
:math:`UV^\top`, the steepest-descent direction under the spectral norm (Bernstein & Newhouse,
2024; :func:`spectral_steepest_descent`); its Newton–Schulz iteration acts on each singular value
separately, which :func:`newton_schulz_map` computes without a matrix.

Everything is computed in float64; matrix powers go through
:func:`optlib.optim._matrix.matrix_inverse_root`, the routine :class:`optlib.Shampoo` uses.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..optim._matrix import matrix_inverse_root, symmetric_eigh
from ..optim.muon import NS_COEFFICIENTS

__all__ = [
    "damped_solves",
    "full_matrix_adagrad_direction",
    "gradient_second_moment",
    "kronecker_bound_gap",
    "kfac_order",
    "kronecker_factors",
    "linear_layer_fisher",
    "newton_schulz_map",
    "psd_power",
    "shampoo_kronecker_direction",
    "spectral_steepest_descent",
]


def psd_power(A: Tensor, power: float, epsilon: float = 0.0) -> Tensor:
    r""":math:`(A + \epsilon I)^{p}` of a symmetric positive semi-definite ``A`` (float64), by
    eigendecomposition, eigenvalues lifted as in :func:`~optlib.optim._matrix.matrix_inverse_root`
    (a negative power needs :math:`\epsilon > 0` where ``A`` is singular)."""
    if power == 0:
        raise ValueError("Invalid power: 0; the result would be the identity")
    return matrix_inverse_root(A.double(), -1.0 / power, epsilon)


def _stack(grads: Sequence[Tensor] | Tensor) -> Tensor:
    G = torch.stack(list(grads)) if not isinstance(grads, Tensor) else grads
    if G.ndim != 3 or len(G) == 0:
        raise ValueError("grads: expected a non-empty sequence of matrices (t, m, n)")
    return G.double()


def gradient_second_moment(grads: Sequence[Tensor] | Tensor) -> Tensor:
    r""":math:`H_t = \sum_s \operatorname{vec}(G_s)\operatorname{vec}(G_s)^\top`, an
    :math:`mn\times mn` matrix, from the matrices :math:`G_1, \dots, G_t` (``(t, m, n)``)."""
    g = _stack(grads).flatten(1)
    return g.T @ g


def kronecker_factors(
    grads: Sequence[Tensor] | Tensor, beta2: float = 1.0
) -> tuple[Tensor, Tensor]:
    r"""Shampoo's factors after the gradients :math:`G_1, \dots, G_t`:
    :math:`L = \sum_s G_sG_s^\top`, :math:`R = \sum_s G_s^\top G_s` (``beta2 = 1``), or the
    exponential averages :math:`L \leftarrow \beta_2 L + (1-\beta_2) GG^\top` from zero."""
    G = _stack(grads)
    if beta2 == 1.0:
        return torch.einsum("tij,tkj->ik", G, G), torch.einsum("tij,tik->jk", G, G)
    w = (1 - beta2) * beta2 ** torch.arange(len(G) - 1, -1, -1, dtype=torch.float64)
    return torch.einsum("t,tij,tkj->ik", w, G, G), torch.einsum("t,tij,tik->jk", w, G, G)


def full_matrix_adagrad_direction(grads: Sequence[Tensor] | Tensor, epsilon: float) -> Tensor:
    r""":math:`(H_t + \epsilon I)^{-1/2}\operatorname{vec}(G_t)` reshaped as :math:`G_t`: the
    direction of full-matrix AdaGrad after the gradients :math:`G_1, \dots, G_t`."""
    G = _stack(grads)
    root = psd_power(gradient_second_moment(G), -0.5, epsilon)
    return (root @ G[-1].reshape(-1)).reshape(G[-1].shape)


def shampoo_kronecker_direction(
    grads: Sequence[Tensor] | Tensor, epsilon: float, exponent: float = 0.25
) -> Tensor:
    r""":math:`(L+\epsilon I)^{-e}\, G_t\, (R+\epsilon I)^{-e}` with Shampoo's summed factors
    (:func:`kronecker_factors`), :math:`e = 1/4` for Shampoo (``exponent``; :math:`1/2` is the
    variant SOAP's authors relate to Adafactor)."""
    G = _stack(grads)
    L, R = kronecker_factors(G)
    return psd_power(L, -exponent, epsilon) @ G[-1] @ psd_power(R, -exponent, epsilon)


def kronecker_bound_gap(grads: Sequence[Tensor] | Tensor, rank: int | None = None) -> float:
    r"""The smallest eigenvalue of :math:`r\,L^{1/2}\otimes R^{1/2} - H` divided by the largest
    eigenvalue of :math:`H` (Gupta et al.'s Lemma 8: never negative, up to rounding, when every
    :math:`G_s` has rank at most :math:`r`; ``rank`` defaults to the largest numerical rank of
    the gradients)."""
    G = _stack(grads)
    if rank is None:
        rank = int(max(torch.linalg.matrix_rank(g) for g in G))
    L, R = kronecker_factors(G)
    H = gradient_second_moment(G)
    gap = rank * torch.kron(psd_power(L, 0.5), psd_power(R, 0.5)) - H
    gap = (gap + gap.T) / 2
    return float(torch.linalg.eigvalsh(gap)[0] / torch.linalg.eigvalsh(H)[-1])


def linear_layer_fisher(
    model: nn.Sequential, index: int, X: Tensor, y: Tensor | None = None
) -> dict[str, Tensor]:
    r"""The exact Fisher block of the ``nn.Linear`` layer ``model[index]`` (weight and bias) for
    the mean cross-entropy over the inputs ``X``, and its K-FAC factors, in float64.

    Returns ``F`` (:math:`d_\text{out}(d_\text{in}+1)` square, ordered as K-FAC's matrix
    :math:`[W\ b]` flattened row by row), ``G`` (:math:`d_\text{out}` square) and ``A``
    (:math:`d_\text{in}+1` square):

    .. math::

       F = \frac1N\sum_x \mathbb{E}_{c\sim p(\cdot|x)}\big[(s s^\top)\otimes(a a^\top)\big],
       \quad G = \frac1N\sum_x \mathbb{E}_c[s s^\top], \quad A = \frac1N\sum_x a a^\top,

    with :math:`s = \nabla_z(-\log p(c|x))` at the layer's output :math:`z` and
    :math:`a = (x_\text{layer}, 1)`. :math:`\mathbb{E}_c[ss^\top] =
    J^\top(\operatorname{diag}p - pp^\top)J` with :math:`J` the Jacobian of the logits with
    respect to :math:`z`, so ``F`` is the layer's block of the Gauss-Newton matrix
    (:func:`.curvature.gauss_newton`, in the order :func:`kfac_order`). With labels ``y`` the
    *empirical* versions are returned instead: :math:`c = y` for every :math:`x` (the statistics
    a K-FAC fed with the training loss gathers).
    """
    if not isinstance(model[index], nn.Linear) or model[index].bias is None:
        raise ValueError(f"model[{index}] must be an nn.Linear with a bias")
    model = copy.deepcopy(model).double().requires_grad_(False)
    layer, rest = model[index], model[index + 1 :]
    with torch.no_grad():
        a_in = model[:index](X.double())
        z = layer(a_in)
        p = torch.softmax(rest(z), dim=-1)
    a = torch.cat([a_in, torch.ones(len(a_in), 1, dtype=torch.float64)], 1)
    A = a.T @ a / len(a)
    J = torch.func.vmap(torch.func.jacrev(rest))(z)  # (N, C, d_out): logits by layer outputs
    if y is None:
        middle = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        S = J.transpose(1, 2) @ middle @ J  # E_c[s s^T] per example, (N, d_out, d_out)
    else:
        s = ((p - nn.functional.one_hot(y, p.shape[-1]).double())[:, None, :] @ J)[:, 0]
        S = s[:, :, None] * s[:, None, :]
    d_out, d_a = S.shape[-1], A.shape[0]
    F = torch.einsum("nij,nkl->ikjl", S, a[:, :, None] * a[:, None, :]) / len(a)
    return {"F": F.reshape(d_out * d_a, d_out * d_a), "G": S.mean(0), "A": A}


def kfac_order(d_out: int, d_in: int) -> Tensor:
    """Indices that reorder ``[W.flatten(), b]`` (the order of ``[layer.weight, layer.bias]``)
    into K-FAC's ``[W b]`` flattened row by row."""
    order = []
    for i in range(d_out):
        order += [i * d_in + j for j in range(d_in)] + [d_out * d_in + i]
    return torch.tensor(order)


def damped_solves(F: Tensor, g: Tensor, dampings: Sequence[float]) -> list[Tensor]:
    r""":math:`(F + \gamma I)^{-1} g` for every damping :math:`\gamma` (one eigendecomposition of
    the symmetric positive semi-definite :math:`F`)."""
    lam, Q = symmetric_eigh(F)
    lam = lam.clamp_min(0)
    coef = Q.T @ g.double().reshape(-1)
    return [(Q @ (coef / (lam + gamma))).reshape(g.shape) for gamma in dampings]


def newton_schulz_map(
    sigma: Sequence[float] | Tensor,
    steps: int = 5,
    *,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = 1e-7,
) -> Tensor:
    r"""Where Newton–Schulz sends the singular values :math:`\sigma_i` of a matrix: first
    :math:`x_i = \sigma_i / (\lVert\sigma\rVert_2 + \epsilon)` (the Frobenius norm is
    :math:`\lVert\sigma\rVert_2`), then ``steps`` times :math:`x \leftarrow ax + bx^3 + cx^5`.

    Each iteration :math:`X \leftarrow aX + (bXX^\top + c(XX^\top)^2)X` keeps :math:`U` and
    :math:`V` of :math:`X = U\Sigma V^\top` and maps :math:`\Sigma` through the polynomial, so
    the singular values of :func:`optlib.optim.muon.newton_schulz5`'s result (computed in float64)
    are these numbers."""
    x = torch.as_tensor(sigma, dtype=torch.float64).clone()
    if x.ndim != 1:
        raise ValueError("sigma: expected a list of singular values")
    if (x < 0).any() or not torch.isfinite(x).all():
        raise ValueError("sigma: singular values are finite and non-negative")
    a, b, c = coefficients
    x = x / (x.norm() + eps)
    for _ in range(steps):
        x = a * x + b * x**3 + c * x**5
    return x


def spectral_steepest_descent(G: Tensor, rtol: float = 1e-12) -> Tensor:
    r"""The unit step of steepest ascent under the spectral norm,
    :math:`\arg\max_{\lVert\Delta\rVert_2 \le 1}\langle G, \Delta\rangle = UV^\top` over the
    singular values of :math:`G = U\Sigma V^\top` above ``rtol`` times the largest (the value of
    the maximum is the nuclear norm :math:`\sum_i\sigma_i`); Muon steps along
    :math:`-UV^\top`."""
    U, S, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    keep = S > rtol * S[0]
    return U[:, keep] @ Vh[keep]
