r"""What the linear solvers share: the operator, the argument checks and the recorder.

A linear system :math:`Ax = b` is given by ``A``, either a dense square tensor or a callable
``v -> A @ v`` (a *matvec*: the solvers only ever multiply by :math:`A`, which is why they scale
to matrices that are never stored, such as Hessians reached through Hessian-vector products).
Every solver stops when the relative residual :math:`\|b - Ax_k\| / \|b\|` falls to ``tol`` or
after ``max_iter`` iterations, and returns a :class:`~optlib.linalg.results.SolveResult`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..optim._validate import check_positive, check_positive_int
from .results import DIVERGENCE_FACTOR, SolveResult

MatVec = Callable[[Tensor], Tensor]
Operator = Tensor | MatVec

# --- argument handling shared by the solvers -----------------------------------------------


def check_rhs(b: object) -> Tensor:
    """``b`` as a 1-D floating-point tensor."""
    if not isinstance(b, Tensor):
        raise ValueError(f"Invalid b: expected a 1-D torch.Tensor, got {type(b).__name__}")
    if b.ndim != 1 or not b.is_floating_point():
        raise ValueError(
            f"Invalid b: expected a 1-D floating-point tensor, got {b.dtype} {b.shape}"
        )
    return b


def as_matvec(A: object, b: Tensor) -> MatVec:
    r"""``A`` as the map :math:`v \mapsto Av`, after checking its shape against ``b``."""
    if isinstance(A, Tensor):
        n = b.numel()
        if A.ndim != 2 or A.shape != (n, n):
            raise ValueError(
                f"Invalid A: expected a square ({n}, {n}) matrix, got {tuple(A.shape)}"
            )
        return lambda v: A @ v
    if callable(A):
        return A  # type: ignore[return-value]
    raise ValueError(f"Invalid A: expected a square tensor or a callable matvec, got {A!r}")


def check_preconditioner(name: str, M_inv: object) -> MatVec:
    r"""The preconditioner :math:`r \mapsto M^{-1}r`: a callable, a square matrix, or a 1-D
    tensor holding the diagonal of :math:`M^{-1}`."""
    if isinstance(M_inv, Tensor):
        if M_inv.ndim == 1:
            return lambda r: M_inv * r
        if M_inv.ndim == 2 and M_inv.shape[0] == M_inv.shape[1]:
            return lambda r: M_inv @ r
        raise ValueError(f"Invalid {name}: expected a 1-D diagonal or a square matrix")
    if callable(M_inv):
        return M_inv  # type: ignore[return-value]
    raise ValueError(f"Invalid {name}: expected a callable, a diagonal or a matrix, got {M_inv!r}")


def initial_guess(x0: Tensor | None, b: Tensor) -> Tensor:
    """``x0`` (copied) or zeros shaped like ``b``."""
    if x0 is None:
        return torch.zeros_like(b)
    if not isinstance(x0, Tensor) or x0.shape != b.shape:
        raise ValueError(f"Invalid x0: expected a tensor of shape {tuple(b.shape)}")
    return x0.detach().to(b.dtype).clone()


def check_tol_and_max_iter(
    tol: float, max_iter: int | None, default: int | None = None
) -> tuple[float, int]:
    """``tol > 0`` and ``max_iter >= 1`` (``None`` means ``default``)."""
    if max_iter is None and default is not None:
        max_iter = default
    return check_positive("tol", tol), check_positive_int("max_iter", max_iter)


class Recorder:
    """Collects residual norms (and optionally iterates) and decides when to stop."""

    def __init__(self, b: Tensor, tol: float, keep_iterates: bool) -> None:
        self.b_norm = float(torch.linalg.vector_norm(b))
        self.threshold = tol * self.b_norm
        self.residual_norms: list[float] = []
        self.iterates: list[Tensor] | None = [] if keep_iterates else None
        self.reason = "max_iter"

    def record(self, r_norm: float | Tensor, x: Tensor | None) -> bool:
        """Store one iteration; return ``True`` when the solver should stop."""
        r_norm = float(r_norm)
        self.residual_norms.append(r_norm)
        if self.iterates is not None and x is not None:
            self.iterates.append(x.detach().clone())
        self.reason = "max_iter"
        if r_norm <= self.threshold:
            self.reason = "converged"
        elif not math.isfinite(r_norm) or r_norm > DIVERGENCE_FACTOR * self.residual_norms[0]:
            self.reason = "diverged"
        return self.reason != "max_iter"

    def replace_last(self, r_norm: float | Tensor) -> bool:
        """Overwrite the last norm (a recurrence's estimate, by the true residual norm)."""
        self.residual_norms.pop()
        x_last = self.iterates.pop() if self.iterates else None
        return self.record(r_norm, x_last)

    def result(self, x: Tensor, method: str) -> SolveResult:
        return SolveResult(
            x=x,
            residual_norms=self.residual_norms,
            iterations=len(self.residual_norms) - 1,
            converged=self.reason == "converged",
            reason=self.reason,
            method=method,
            b_norm=self.b_norm,
            iterates=self.iterates,
        )


def check_seed(seed: object) -> int:
    """A seed for ``torch.Generator().manual_seed``: a non-negative int."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Invalid seed: {seed!r}; expected an int >= 0")
    return seed


def norm(v: Tensor) -> float:
    return float(torch.linalg.vector_norm(v))
