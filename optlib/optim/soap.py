r"""SOAP: Adam in the eigenbasis of Shampoo's preconditioner (chapter 10).

Same update rule, defaults and order of operations as the authors' reference implementation,
``SOAP`` in nikhilvyas/SOAP (``soap.py``). Vyas, Morwani, Zhao, Kwun, Shapira, Brandfonbrener,
Janson & Kakade, "SOAP: Improving and Stabilizing Shampoo using Adam", 2024 (arXiv:2409.11321).

For a matrix :math:`W` with gradient :math:`G_t`, SOAP keeps Shampoo's factors
:math:`L, R` (exponential averages with rate :math:`\beta_s`, ``shampoo_beta``, by default
:math:`\beta_2`), their eigenbases :math:`Q_L, Q_R`, and Adam's moments :math:`m, v` *in that
basis*. Step :math:`t = 1, 2, \dots` counts the Adam updates:

.. math::

   G' &= Q_L^\top G_t\, Q_R &&\text{(rotate into the eigenbasis)} \\
   m &\leftarrow \beta_1 m + (1-\beta_1)\, G', \qquad
   v \leftarrow \beta_2 v + (1-\beta_2)\, G'\odot G' \\
   N &= Q_L \,\frac{m}{\sqrt{v} + \epsilon}\, Q_R^\top
   &&\text{(rotate back)} \\
   W &\leftarrow W - \eta\,\frac{\sqrt{1-\beta_2^{\,t}}}{1-\beta_1^{\,t}}\, N,
   \qquad W \leftarrow W - \eta\lambda\, W
   &&\text{(decoupled decay, after the step)} \\
   L &\leftarrow \beta_s L + (1-\beta_s)\, G_t G_t^\top, \qquad
   R \leftarrow \beta_s R + (1-\beta_s)\, G_t^\top G_t \\
   Q_L &\leftarrow \operatorname{qr}(L\, Q_L),\quad Q_R \leftarrow \operatorname{qr}(R\, Q_R)
   &&\text{(every } f \text{ steps)}

*The first call is a no-op for the parameters*: it only folds :math:`G_1` into :math:`L, R` and
sets :math:`Q_L, Q_R` to their eigenvectors (``eigh``, largest eigenvalue first), "so that we
never use the current gradients in the projection". The factors are updated *after* the step, so
:math:`G_t` is always rotated by a basis built from earlier gradients.

*The basis refresh* (every ``precondition_frequency`` Adam steps, :math:`t \bmod f = 0`) is one
step of power iteration followed by QR: the columns of :math:`Q` are first sorted by the
estimated eigenvalues :math:`\operatorname{diag}(Q^\top L Q)`, largest first, and :math:`v` is
permuted along that dimension with them; :math:`m` is rotated back with the old basis and into
the new one.

*Tensors of any order* keep one factor per dimension (the mode-:math:`i` Gram matrices); a
dimension larger than ``max_precond_dim`` gets no factor (identity basis). Vectors are
preconditioned only with ``precondition_1d=True``, so by default they get plain Adam.
``merge_dims=True`` reshapes a tensor first, merging neighbouring dimensions (from the first)
while their product stays :math:`\le` ``max_precond_dim``; with ``data_format="channels_last"``
a 4-D tensor is permuted ``(0, 3, 1, 2)`` before merging. ``normalize_grads`` rescales
:math:`N` to unit RMS; ``correct_bias=False`` drops the bias correction.

*Precision*: statistics live in the parameter's dtype (float32 for bfloat16/float16
parameters); the eigendecomposition and the power-iteration/QR refresh run in float64 (the
reference runs them in float32, and retries ``eigh`` in float64 only when float32 fails). If
``eigh`` fails even on the shifted retry (:func:`._matrix.symmetric_eigh`), the initial basis is
the identity, and a refresh on a non-finite factor keeps the previous basis, with a warning.
The reference adds :math:`10^{-30} I` before ``eigh``; in float64 that changes nothing (and
``eigh`` of the zero matrix is already the identity), so it is left out. Also different from the
reference, without changing any result: :math:`m` is rotated back and forth only when the basis
changes (the reference does it every step, an identity up to rounding); ``shampoo_beta`` and
``precondition_frequency`` are read from the param group at every step (the reference freezes
them in the state at the first step); ``maximize`` is optlib's addition.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from ._base import Optimizer, eager, scalar, scalar_step
from ._matrix import (
    EighError,
    mode_gram,
    mode_product,
    qr_bases,
    restore_float32_state,
    state_dtype,
    symmetric_eighs,
)
from ._validate import (
    check_betas,
    check_choice,
    check_interval,
    check_nonnegative,
    check_positive_int,
)

DATA_FORMATS = ("channels_first", "channels_last")


def soap_merged_shape(shape: tuple[int, ...], max_dim: int) -> tuple[int, ...]:
    """The reference's ``SOAP.merge_dims`` shape: merge dimensions from the first one while
    their product stays at most ``max_dim``; a dimension larger than ``max_dim`` stays alone.

    ``(4, 8, 3, 3)`` with ``max_dim=100`` becomes ``(96, 3)``; ``()`` becomes ``(1,)``."""
    merged: list[int] = []
    current = 1
    for d in shape:
        if current * d > max_dim:
            if current > 1:
                merged.append(current)
                current = d
            else:
                merged.append(d)
                current = 1
        else:
            current *= d
    if current > 1 or not merged:
        merged.append(current)
    return tuple(merged)


class _View:
    """The reshaping SOAP applies before its factors: ``merge_dims`` (and ``data_format``)."""

    def __init__(self, shape: torch.Size, merge: bool, max_dim: int, data_format: str) -> None:
        self.shape = tuple(shape)
        self.active = merge and len(shape) != 1  # the reference never merges vectors
        self.permute = self.active and data_format == "channels_last" and len(shape) == 4
        permuted = tuple(shape[i] for i in (0, 3, 1, 2)) if self.permute else self.shape
        self.permuted_shape = permuted
        self.view_shape = soap_merged_shape(permuted, max_dim) if self.active else self.shape

    def to(self, x: Tensor) -> Tensor:
        if not self.active:
            return x
        return (x.permute(0, 3, 1, 2) if self.permute else x).reshape(self.view_shape)

    def back(self, y: Tensor) -> Tensor:
        if not self.active:
            return y
        y = y.reshape(self.permuted_shape)
        return y.permute(0, 2, 3, 1) if self.permute else y


def preconditioned_dims(
    shape: tuple[int, ...], view_shape: tuple[int, ...], *, max_dim: int, precondition_1d: bool
) -> list[bool]:
    """Which dimensions of the (viewed) tensor get a factor: those of size at most ``max_dim``;
    a vector only with ``precondition_1d``."""
    if len(shape) == 1:
        return [precondition_1d and shape[0] <= max_dim]
    return [d <= max_dim for d in view_shape]


def update_factors(factors: list[Tensor | None], G: Tensor, shampoo_beta: float) -> None:
    r""":math:`F_i \leftarrow \beta_s F_i + (1-\beta_s)\, G_{(i)}G_{(i)}^\top` (a ``lerp``) for
    every preconditioned dimension :math:`i`, in place."""
    for i, F in enumerate(factors):
        if F is not None:
            F.lerp_(mode_gram(G, i), 1 - shampoo_beta)


def eigenbases(factors: list[Tensor | None]) -> list[Tensor | None]:
    r"""The initial bases: eigenvectors of every factor, largest eigenvalue first (``eigh`` in
    float64, batched over factors of equal size: :func:`._matrix.symmetric_eighs`, the same
    vectors as one call each). The identity, with a warning, if the eigendecomposition fails."""
    results = iter(symmetric_eighs([F for F in factors if F is not None]))
    bases: list[Tensor | None] = []
    for F in factors:
        if F is None:
            bases.append(None)
            continue
        result = next(results)
        if isinstance(result, EighError):
            warnings.warn(
                f"SOAP: eigh of a {F.shape[0]}x{F.shape[0]} factor failed ({result}); "
                "starting from the identity basis",
                RuntimeWarning,
                stacklevel=4,
            )
            bases.append(torch.eye(F.shape[0], dtype=F.dtype, device=F.device))
        else:
            bases.append(result[1].flip(1).to(F.dtype))
    return bases


def refreshed_bases(
    factors: list[Tensor | None], bases: list[Tensor | None], v: Tensor
) -> tuple[list[Tensor | None], Tensor]:
    r"""One power-iteration step and a QR per factor, :math:`Q \leftarrow
    \operatorname{qr}(F Q)`, after sorting the columns of :math:`Q` by the estimated
    eigenvalues :math:`\operatorname{diag}(Q^\top F Q)` (largest first). ``v`` (in the viewed
    shape) is permuted along each dimension like the columns; returns the new bases and ``v``.
    (:func:`soap_refresh_many` runs this for many tensors with the QRs batched.)"""
    plan, v = _refresh_plan(factors, bases, v)
    return _apply_plan(plan, qr_bases([x.matrix for x in plan if isinstance(x, _QR)])), v


@dataclass
class _QR:
    """In a refresh plan: the matrix :math:`F Q` whose QR gives a new basis, of ``dtype``."""

    matrix: Tensor
    dtype: torch.dtype


def _refresh_plan(
    factors: list[Tensor | None], bases: list[Tensor | None], v: Tensor
) -> tuple[list, Tensor]:
    r""":func:`refreshed_bases` up to the QRs: per factor the kept basis (or ``None``), or the
    matrix :math:`F Q_{:, \text{order}}` to factorise (a :class:`_QR`), and ``v`` permuted."""
    new_bases: list = []
    for i, (F, Q) in enumerate(zip(factors, bases)):
        if F is None or Q is None:
            new_bases.append(Q)
            continue
        if not torch.isfinite(F).all():
            warnings.warn(
                "SOAP: non-finite factor (NaN/inf gradients?); keeping the previous basis",
                RuntimeWarning,
                stacklevel=4,
            )
            new_bases.append(Q)
            continue
        F64, Q64 = F.to(torch.float64), Q.to(torch.float64)
        order = torch.argsort((Q64.T @ F64 @ Q64).diagonal(), descending=True)
        v = v.index_select(i, order)
        new_bases.append(_QR(F64 @ Q64[:, order], F.dtype))
    return new_bases, v


def _apply_plan(plan: list, qs: list[Tensor]) -> list[Tensor | None]:
    """The bases of a refresh plan, given the :math:`Q` of its :class:`_QR` entries in order."""
    qs_left = iter(qs)
    return [next(qs_left).to(x.dtype) if isinstance(x, _QR) else x for x in plan]


def soap_update(
    theta: Tensor,
    g: Tensor,
    state: dict,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    shampoo_beta: float,
    eps: float,
    weight_decay: float,
    precondition_frequency: int,
    view: _View,
    dims: list[bool],
    normalize_grads: bool,
    correct_bias: bool,
) -> bool:
    r"""One SOAP step on one tensor, in place (see the module docstring for the rule), up to
    the bases: returns whether :func:`soap_refresh` is due (after the first call, and every
    ``precondition_frequency`` Adam steps), which the caller runs once every tensor has stepped.

    ``state`` holds the Adam step count ``step`` (a Python int: under torch.compile the refresh
    test ``t % f == 0`` then needs no ``.item()``), the moments ``m`` and ``v`` (in the
    eigenbasis, stored in the parameter's shape), the ``factors`` and their bases ``Q``
    (``None`` for a dimension without a factor). A fresh ``state`` gets the no-op first step.
    """
    dtype = state_dtype(theta)
    G = g.to(dtype)
    if "factors" not in state:  # the first step only gathers statistics
        state["step"] = 0
        state["m"] = torch.zeros_like(G)
        state["v"] = torch.zeros_like(G)
        # F = lerp(0, G_(i) G_(i)^T, 1 - beta_s), written as the product it is: torch 2.13's
        # inductor miscompiles a lerp from freshly made zeros into a matrix product (it drops
        # the weight, as in the step below)
        G_view = view.to(G)
        state["factors"] = [
            mode_gram(G_view, i).mul_(1 - shampoo_beta) if keep else None
            for i, keep in enumerate(dims)
        ]
        return True  # the bases come from these factors

    m, v, factors, Q = state["m"], state["v"], state["factors"], state["Q"]
    G_rot = view.back(mode_product(view.to(G), Q))  # G' = Q_L^T G Q_R
    state["step"] = t = scalar_step(state["step"]) + 1
    m.mul_(beta1).add_(G_rot.mul(1 - beta1))  # no alpha= on a product: see the step below
    v.mul_(beta2).add_(G_rot.square(), alpha=1 - beta2)
    step_size = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) if correct_bias else lr
    N = view.back(mode_product(view.to(m / (v.sqrt() + eps)), Q, transpose=True))
    if normalize_grads:
        N = N / (1e-30 + N.square().mean().sqrt())
    # not theta.add_(N, alpha=-step_size): torch 2.13's inductor folds add(x, mm, alpha) into
    # addmm and drops alpha (pytorch/pytorch#167313), a 1/step_size times larger compiled step
    theta.sub_(N.to(theta.dtype).mul_(step_size))
    if weight_decay > 0:
        theta.add_(theta, alpha=-lr * weight_decay)

    # Statistics for the next step: the factors take G_t only now.
    update_factors(factors, view.to(G), shampoo_beta)
    return t % precondition_frequency == 0


def soap_refresh(state: dict, view: _View) -> None:
    r"""Build or refresh the bases of one tensor's ``state`` (in place): after the first step,
    the eigenvectors of the factors (:func:`eigenbases`); later, one power-iteration step and QR
    (:func:`refreshed_bases`), with :math:`v` permuted and :math:`m` rotated from the old basis
    into the new one."""
    soap_refresh_many([(state, view)])


def soap_refresh_many(due: list[tuple[dict, _View]]) -> None:
    r""":func:`soap_refresh` for many tensors at once, with the decompositions batched over
    factors of equal size: one ``eigh`` call per size for every first basis
    (:func:`eigenbases`), one ``qr`` call per size for every refresh
    (:func:`._matrix.qr_bases`). LAPACK runs the same routine on each matrix of a batch, so the
    bases are those of one call per factor."""
    first = [state for state, _ in due if "Q" not in state]
    bases = iter(eigenbases([F for state in first for F in state["factors"]]))
    for state in first:
        state["Q"] = [next(bases) for _ in state["factors"]]
    plans = []
    for state, view in due:
        if any(state is s for s in first):
            continue
        m_original = view.back(mode_product(view.to(state["m"]), state["Q"], transpose=True))
        plan, v_view = _refresh_plan(state["factors"], state["Q"], view.to(state["v"]))
        plans.append((state, view, m_original, plan, v_view))
    qs = iter(qr_bases([x.matrix for *_, plan, _ in plans for x in plan if isinstance(x, _QR)]))
    for state, view, m_original, plan, v_view in plans:
        Q = _apply_plan(plan, [next(qs) for x in plan if isinstance(x, _QR)])
        state["Q"] = Q
        state["v"] = view.back(v_view).contiguous()
        state["m"] = view.back(mode_product(view.to(m_original), Q)).contiguous()


@eager("basis refreshes: float64 eigh/QR and finiteness checks, eager")
def _refresh_all(due: list[tuple[dict, _View]]) -> None:
    """:func:`soap_refresh_many` for every tensor that is due; under torch.compile it runs
    eagerly, one graph break per refresh step, so the per-step update stays one compiled graph."""
    soap_refresh_many(due)


class SOAP(Optimizer):
    r"""SOAP (Vyas et al., 2024) as in the reference ``soap.py``.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\eta \ge 0`.
        betas: Adam's :math:`(\beta_1, \beta_2)`, each in :math:`[0, 1)`.
        shampoo_beta: :math:`\beta_s \in [0, 1)` for the factors; negative (default -1): use
            :math:`\beta_2`.
        eps: Adam's :math:`\epsilon \ge 0`, added to :math:`\sqrt{v}`.
        weight_decay: decoupled decay :math:`\lambda \ge 0`, applied after the step.
        precondition_frequency: :math:`f \ge 1` Adam steps between basis refreshes.
        max_precond_dim: dimensions larger than this (:math:`\ge 1`) get no factor.
        merge_dims: merge small dimensions before building factors.
        precondition_1d: give vectors a factor too (default: plain Adam for vectors).
        normalize_grads: rescale each update to unit RMS.
        data_format: ``"channels_first"`` or ``"channels_last"`` (4-D tensors, with
            ``merge_dims``).
        correct_bias: Adam's bias correction.
        maximize: ascend instead of descend.

    ``merge_dims``, ``max_precond_dim``, ``precondition_1d`` and ``data_format`` fix the
    state's layout at the first step.

    Complex parameters are refused at construction (ValueError): the factors would need
    Hermitian algebra; ``torch.view_as_real(p)`` optimises the real and imaginary parts instead.
    """

    _complex_params_refused = (
        "its eigenbases are real orthogonal matrices; optimise torch.view_as_real(p) instead"
    )

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 3e-3,
        betas: tuple[float, float] = (0.95, 0.95),
        shampoo_beta: float = -1,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        precondition_frequency: int = 10,
        max_precond_dim: int = 10000,
        merge_dims: bool = False,
        precondition_1d: bool = False,
        normalize_grads: bool = False,
        data_format: str = "channels_first",
        correct_bias: bool = True,
        *,
        maximize: bool = False,
    ) -> None:
        check_nonnegative("lr", lr)
        beta1, beta2 = check_betas(betas)
        check_interval("shampoo_beta", shampoo_beta, -math.inf, 1.0)
        check_nonnegative("eps", eps)
        check_nonnegative("weight_decay", weight_decay)
        check_positive_int("precondition_frequency", precondition_frequency)
        check_positive_int("max_precond_dim", max_precond_dim)
        check_choice("data_format", data_format, DATA_FORMATS)
        defaults = dict(
            lr=lr,
            betas=(beta1, beta2),
            shampoo_beta=shampoo_beta,
            eps=eps,
            weight_decay=weight_decay,
            precondition_frequency=precondition_frequency,
            max_precond_dim=max_precond_dim,
            merge_dims=merge_dims,
            precondition_1d=precondition_1d,
            normalize_grads=normalize_grads,
            data_format=data_format,
            correct_bias=correct_bias,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step (the first one only initialises the bases); ``closure`` re-evaluates
        the loss and returns it."""
        # ``with`` rather than the decorator: under torch.compile a graph break in this frame
        # (the eager refresh) then splits it in two graphs instead of one graph per parameter
        with torch.no_grad():
            loss = self._evaluate(closure)
            due = self._update()
            if due:
                _refresh_all(due)
        return loss

    def _update(self) -> list[tuple[dict, _View]]:
        """Every tensor's :func:`soap_update`; returns the tensors whose bases are due. (A method
        of its own, free of graph breaks: under torch.compile it is one graph, whatever the
        number of parameter shapes, while the refreshes run eagerly.)"""
        due = []
        for group in self.param_groups:
            params, grads = self._params_and_grads(group)
            beta1, beta2 = group["betas"]
            shampoo_beta = group["shampoo_beta"]
            max_dim = group["max_precond_dim"]
            for p, g in zip(params, grads):
                if p.numel() == 0:
                    continue
                view = _View(p.shape, group["merge_dims"], max_dim, group["data_format"])
                dims = preconditioned_dims(
                    view.shape,
                    view.view_shape,
                    max_dim=max_dim,
                    precondition_1d=group["precondition_1d"],
                )
                refresh = soap_update(
                    p,
                    g,
                    self.state[p],
                    lr=scalar(group["lr"]),
                    beta1=beta1,
                    beta2=beta2,
                    shampoo_beta=shampoo_beta if shampoo_beta >= 0 else beta2,
                    eps=group["eps"],
                    weight_decay=group["weight_decay"],
                    precondition_frequency=group["precondition_frequency"],
                    view=view,
                    dims=dims,
                    normalize_grads=group["normalize_grads"],
                    correct_bias=group["correct_bias"],
                )
                if refresh:
                    due.append((self.state[p], view))
        return due

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's loader, keeping float32 statistics of low-precision parameters in float32."""
        super().load_state_dict(state_dict)
        restore_float32_state(self, state_dict)
