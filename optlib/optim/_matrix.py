r"""Linear algebra shared by the matrix preconditioners (:mod:`.shampoo`, :mod:`.soap`).

Both methods keep one Kronecker factor per tensor dimension. For a gradient :math:`G` of order
:math:`k` and a dimension :math:`i`, the *mode-i Gram matrix* contracts every other dimension,

.. math::

   G_{(i)} G_{(i)}^\top, \qquad G_{(i)} \in \mathbb{R}^{d_i \times \prod_{j \ne i} d_j}
   \text{ the mode-}i\text{ unfolding of } G,

which for a matrix is :math:`GG^\top` (:math:`i=0`) and :math:`G^\top G` (:math:`i=1`), and a
*mode product* multiplies dimension :math:`i` of a tensor by a matrix :math:`M_i`:
:math:`G \times_0 M_0 \times_1 M_1 = M_0^\top G M_1` for a matrix.

Eigendecompositions run in float64 whatever the parameters' dtype (:func:`symmetric_eigh`). When
LAPACK fails to converge, they are retried on the shifted matrix :math:`A + \delta I` (same
eigenvectors, eigenvalues shifted back by :math:`\delta`); if that fails too,
:class:`EighError` is raised and the caller keeps its previous root or basis, as the reference
Shampoo does (Shi et al., 2023, ``use_protected_eigh``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class EighError(RuntimeError):
    """A symmetric eigendecomposition failed even after the shifted retry."""


def mode_gram(G: Tensor, i: int) -> Tensor:
    r"""The mode-:math:`i` Gram matrix :math:`G_{(i)} G_{(i)}^\top` (a :math:`d_i\times d_i`
    matrix), contracting every dimension of ``G`` except ``i``.

    For a vector it is the outer product :math:`gg^\top`."""
    others = [j for j in range(G.dim()) if j != i]
    return torch.tensordot(G, G, dims=(others, others))


def mode_product(
    x: Tensor, matrices: Sequence[Tensor | None], *, transpose: bool = False
) -> Tensor:
    r""":math:`x \times_0 M_0 \times_1 M_1 \cdots` (or with every :math:`M_i^\top` when
    ``transpose``): dimension :math:`i` of ``x`` is contracted with the *rows* of :math:`M_i`.

    ``None`` leaves its dimension alone. Each contraction consumes the leading dimension and
    appends the new one at the end, so after a full pass the dimensions are back in order.
    For a matrix, ``mode_product(G, [A, B]) = A^T G B``.
    """
    for M in matrices:
        if M is None:
            x = x.movedim(0, -1)
        else:
            x = torch.tensordot(x, M, dims=([0], [1 if transpose else 0]))
    return x


def symmetric_eigh(A: Tensor) -> tuple[Tensor, Tensor]:
    r"""Eigenvalues (ascending) and orthonormal eigenvectors of the symmetric matrix ``A``, in
    float64.

    If ``torch.linalg.eigh`` fails, it is retried on :math:`A + \delta I` with
    :math:`\delta = 10^{-8}\,\max(\operatorname{tr}(A)/n, 1)`: the eigenvectors are the same and
    the eigenvalues are shifted back by :math:`\delta`. Raises :class:`EighError` if ``A`` is
    not finite or the retry fails too.
    """
    A = A.to(torch.float64)
    if not torch.isfinite(A).all():
        raise EighError("matrix has non-finite entries (NaN/inf gradients?)")
    try:
        return torch.linalg.eigh(A)
    except RuntimeError:  # torch.linalg.LinAlgError is a RuntimeError
        n = A.shape[0]
        delta = 1e-8 * max(float(A.diagonal().sum()) / max(n, 1), 1.0)
        eye = torch.eye(n, dtype=A.dtype, device=A.device)
        try:
            lam, Q = torch.linalg.eigh(A + delta * eye)
        except RuntimeError as error:
            raise EighError(f"eigh failed twice: {error}") from error
        return lam - delta, Q


def matrix_inverse_root(A: Tensor, r: float, epsilon: float) -> Tensor:
    r""":math:`(A + \epsilon I)^{-1/r}` of a symmetric positive semi-definite ``A``, by
    eigendecomposition in float64, returned in ``A``'s dtype.

    As in the reference (``matrix_functions.py``, perturbation before computation): with
    :math:`A + \epsilon I = Q\Lambda Q^\top`, eigenvalues below :math:`\epsilon` (rounding can
    push a zero eigenvalue slightly below) are lifted by the common shift
    :math:`\max(\epsilon - \lambda_{\min}, 0)`, and

    .. math:: (A + \epsilon I)^{-1/r} = Q\,\Lambda^{-1/r} Q^\top.

    Raises :class:`EighError` when the eigendecomposition fails.
    """
    n = A.shape[0]
    ridge = A.to(torch.float64) + epsilon * torch.eye(n, dtype=torch.float64, device=A.device)
    lam, Q = symmetric_eigh(ridge)
    lam = lam + max(epsilon - float(lam.min()), 0.0)
    return ((Q * lam.pow(-1.0 / r)) @ Q.T).to(A.dtype)


def _batches(matrices: Sequence[Tensor | None], key) -> dict[tuple, list[int]]:
    """Indices of the matrices grouped by ``key(matrix)`` (``None`` entries left out)."""
    batches: dict[tuple, list[int]] = {}
    for i, A in enumerate(matrices):
        if A is not None:
            batches.setdefault(key(i, A), []).append(i)
    return batches


def symmetric_eighs(matrices: Sequence[Tensor]) -> list[tuple[Tensor, Tensor] | EighError]:
    r""":func:`symmetric_eigh` of many matrices, batched: those of equal size and device share one
    call of ``torch.linalg.eigh`` on their stack, which runs the same LAPACK routine on each, so
    the result is :func:`symmetric_eigh`'s (bit for bit on this project's CPU). A matrix that is
    not finite gets an :class:`EighError` in its place; if the batched call fails, its matrices
    are decomposed one at a time, with the shifted retry."""
    out: list = [None] * len(matrices)
    for members in _batches(matrices, lambda i, A: (A.shape[0], A.device)).values():
        stack = torch.stack([matrices[i] for i in members]).to(torch.float64)
        finite = torch.isfinite(stack).flatten(1).all(1).tolist()
        if not all(finite):
            for i, ok in zip(members, finite):
                if not ok:
                    out[i] = EighError("matrix has non-finite entries (NaN/inf gradients?)")
            members = [i for i, ok in zip(members, finite) if ok]
            if not members:
                continue
            stack = torch.stack([matrices[i] for i in members]).to(torch.float64)
        try:
            lam, Q = torch.linalg.eigh(stack)
        except RuntimeError:  # one of them failed: each on its own, with the shifted retry
            for i in members:
                try:
                    out[i] = symmetric_eigh(matrices[i])
                except EighError as error:
                    out[i] = error
            continue
        for i, lam_i, Q_i in zip(members, lam, Q):
            out[i] = (lam_i, Q_i)
    return out


def matrix_inverse_roots(
    matrices: Sequence[Tensor], rs: Sequence[float], epsilon: float
) -> list[Tensor | EighError]:
    r""":func:`matrix_inverse_root` of many matrices, :math:`(A_i + \epsilon I)^{-1/r_i}`, with
    the eigendecompositions batched over matrices of equal size (:func:`symmetric_eighs`): the
    same roots, with one decomposition call per size instead of one per matrix (a preconditioner
    cut into many equal blocks pays the call overheads once per size). A matrix whose
    decomposition fails, or that is not finite, gets an :class:`EighError` in its place.
    """
    ridges = [
        A.to(torch.float64) + epsilon * torch.eye(A.shape[0], dtype=torch.float64, device=A.device)
        for A in matrices
    ]
    out: list[Tensor | EighError] = []
    for A, r, result in zip(matrices, rs, symmetric_eighs(ridges), strict=True):
        if isinstance(result, EighError):
            out.append(result)
            continue
        lam, Q = result
        lam = lam + max(epsilon - float(lam.min()), 0.0)
        out.append(((Q * lam.pow(-1.0 / r)) @ Q.T).to(A.dtype))
    return out


def qr_bases(matrices: Sequence[Tensor]) -> list[Tensor]:
    r"""The :math:`Q` of ``torch.linalg.qr`` of each matrix, batched over matrices of equal shape,
    dtype and device (the same LAPACK routine on each: the same :math:`Q` as one call each)."""
    out: list = [None] * len(matrices)
    key = lambda i, A: (tuple(A.shape), A.dtype, A.device)  # noqa: E731
    for members in _batches(matrices, key).values():
        Q = torch.linalg.qr(torch.stack([matrices[i] for i in members])).Q
        for i, Q_i in zip(members, Q):
            out[i] = Q_i
    return out


def state_dtype(param: Tensor) -> torch.dtype:
    """Optimizer statistics are kept in at least float32 (bfloat16/float16 parameters get
    float32 factors: a Gram matrix in 8 mantissa bits is noise)."""
    return torch.promote_types(param.dtype, torch.float32)


def restore_float32_state(optimizer: torch.optim.Optimizer, state_dict: dict) -> None:
    """Undo torch's cast of the loaded state to the parameters' dtype where optlib keeps
    float32 state for low-precision parameters (:func:`state_dtype`).

    ``torch.optim.Optimizer.load_state_dict`` casts every floating state tensor (except
    ``step``) to its parameter's dtype; for a bfloat16 parameter that would round the float32
    Kronecker factors. This copies the saved values back, so a resumed run is bit-identical.
    """
    saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def as_float32(value, device, key=None):
        if isinstance(value, Tensor):
            if key == "step" or not value.is_floating_point():
                return value.to(device=device, copy=True)
            return value.to(dtype=torch.float32, device=device, copy=True)
        if isinstance(value, dict):
            return {k: as_float32(v, device, k) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(as_float32(v, device) for v in value)
        return value

    for i, p in zip(saved_ids, params):
        if state_dtype(p) != p.dtype and i in state_dict["state"]:
            optimizer.state[p] = as_float32(state_dict["state"][i], p.device)
