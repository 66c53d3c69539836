r"""What an iterative solve returns, and how to read it.

Every solver of :mod:`optlib.linalg` returns a :class:`SolveResult` holding the residual-norm
history :math:`\|b - Ax_k\|`, the numbers the chapters plot on a log scale and compare with
the textbook rates; :func:`iterations_to_tolerance` turns such a history into the iteration
count a table reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor

from ..optim._validate import check_positive

__all__ = ["SolveResult", "iterations_to_tolerance", "DIVERGENCE_FACTOR"]

#: A run whose residual grows past this multiple of the initial one is stopped as diverged.
DIVERGENCE_FACTOR = 1e16


@dataclass
class SolveResult:
    r"""The outcome of an iterative solve of :math:`Ax = b`.

    Attributes:
        x: the last iterate :math:`x_k`.
        residual_norms: :math:`\|b - Ax_j\|` for :math:`j = 0, \dots, k` (``iterations + 1``
            values; Krylov methods record the norm their recurrence carries, equal to the true
            residual norm in exact arithmetic).
        iterations: :math:`k`, the number of iterations taken; each costs one product with
            :math:`A` (GMRES adds one per restart cycle to compute the true residual).
        converged: whether :math:`\|b - Ax_k\| \le \mathrm{tol}\,\|b\|` was reached.
        reason: ``"converged"``, ``"max_iter"``, ``"diverged"`` (the residual became
            non-finite or grew by :data:`DIVERGENCE_FACTOR`) or ``"breakdown"`` (the method's
            assumption failed, e.g. :math:`p^\top A p \le 0` in CG: :math:`A` is not SPD).
        method: the solver's name.
        b_norm: :math:`\|b\|`, the scale of the relative residual.
        iterates: :math:`x_0, \dots, x_k` when the solver was asked to keep them, else ``None``.
    """

    x: Tensor
    residual_norms: list[float]
    iterations: int
    converged: bool
    reason: str
    method: str
    b_norm: float
    iterates: list[Tensor] | None = field(default=None, repr=False)

    @property
    def relative_residuals(self) -> list[float]:
        r""":math:`\|b - Ax_j\| / \|b\|` for every recorded iteration."""
        scale = self.b_norm if self.b_norm > 0 else 1.0
        return [r / scale for r in self.residual_norms]


def iterations_to_tolerance(
    history: Sequence[float] | SolveResult, tol: float, *, relative: bool = True
) -> int | None:
    r"""The first iteration :math:`k` with :math:`h_k \le \mathrm{tol}\cdot h_0` (or
    :math:`h_k \le \mathrm{tol}` when ``relative=False``); ``None`` if it is never reached.

    ``history`` is a sequence of norms (residuals, errors, gradient norms) or a
    :class:`SolveResult`, whose ``residual_norms`` are used. The count is what the chapters
    compare between methods, e.g. CG with and without a preconditioner.
    """
    tol = check_positive("tol", tol)
    values = history.residual_norms if isinstance(history, SolveResult) else list(history)
    if len(values) == 0:
        raise ValueError("Invalid history: it is empty")
    threshold = tol * float(values[0]) if relative else tol
    for k, h in enumerate(values):
        if float(h) <= threshold:
            return k
    return None
