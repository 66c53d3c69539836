r"""Shampoo: one Kronecker factor per tensor dimension, inverse roots as the preconditioner
(chapter 10).

Same update rule, defaults and order of operations as the authors' reference implementation,
``DistributedShampoo`` in facebookresearch/optimizers (``distributed_shampoo/`` files
``distributed_shampoo.py``, ``preconditioner/shampoo_preconditioner_list.py`` and
``preconditioner/matrix_functions.py``), with its default root-inverse preconditioner on a single
device. Papers: Gupta, Koren & Singer, "Shampoo:
Preconditioned Stochastic Tensor Optimization", ICML 2018; Anil et al., "Scalable Second Order
Optimization for Deep Learning", 2020 (grafting, blocking, roots every few steps); Shi et al., "A
Distributed Data-Parallel PyTorch Implementation of the Distributed Shampoo Optimizer for Training
Neural Networks At-Scale", 2023.

For a matrix block :math:`W \in \mathbb{R}^{m\times n}` with gradient :math:`G_t` at step
:math:`t = 1, 2, \dots`, learning rate :math:`\eta`, decay :math:`\lambda`:

.. math::

   G &\leftarrow G_t + \lambda W \qquad \text{(L2, only if weight decay is not decoupled)} \\
   L_t &= \beta_2 L_{t-1} + (1-\beta_2)\, G G^\top, \qquad
   R_t = \beta_2 R_{t-1} + (1-\beta_2)\, G^\top G
   \qquad (\beta_2 = 1:\ L_t = L_{t-1} + GG^\top,\ R_t = R_{t-1} + G^\top G) \\
   \bar L &= \bigl(L_t / b_t + \epsilon I\bigr)^{-1/4}, \qquad
   \bar R = \bigl(R_t / b_t + \epsilon I\bigr)^{-1/4}, \qquad b_t = 1 - \beta_2^{\,t}
   \qquad \text{(every } f \text{ steps; } b_t = 1 \text{ if } \beta_2 = 1) \\
   M_t &= \beta_1 M_{t-1} + (1-\beta_1)\, G, \qquad \hat M_t = M_t / (1 - \beta_1^{\,t}) \\
   D &= \bar L\, \hat M_t\, \bar R, \qquad
   D \leftarrow \frac{\lVert P(\hat M_t)\rVert_F}{\lVert D\rVert_F + 10^{-16}}\, D
   \quad \text{(grafting)} \\
   W &\leftarrow W - \eta\,\bigl(D + \lambda W\bigr)
   \qquad \text{(decoupled weight decay, the reference's default)}

:math:`L_0 = R_0 = 0` and the roots start as identities, so before the first root (steps
:math:`t < t_0`, ``start_preconditioning_step``, by default :math:`t_0 = f`) the direction is
:math:`\hat M_t` itself, or the graft's :math:`P(\hat M_t)` when grafting is on. Roots are
recomputed at :math:`t = t_0` and at every :math:`t > t_0` divisible by :math:`f`
(``precondition_frequency``), from the factors that already include :math:`G_t`.

*Grafting* (Agarwal et al., 2020, as used by Anil et al.) keeps Shampoo's direction but takes
each block's step *length* from a diagonal method :math:`P`: ``"sgd"``
(:math:`P(x) = x`), ``"adagrad"`` (:math:`V \mathrel{+}= G\odot G`), ``"rmsprop"``
(:math:`V = \beta V + (1-\beta)G\odot G`) or ``"adam"`` (the same, bias-corrected by
:math:`1-\beta^t`), with :math:`P(x) = x / (\sqrt{V} + \epsilon_g)`.

*Tensors of order* :math:`k` keep one factor per dimension, :math:`F_i = \beta_2 F_i +
(1-\beta_2) G_{(i)}G_{(i)}^\top` (the mode-:math:`i` unfolding), and
:math:`D = \hat M \times_1 \bar F_1 \cdots \times_k \bar F_k` with
:math:`\bar F_i = (F_i/b_t + \epsilon I)^{-1/(2k)}`: :math:`-1/4` for matrices, :math:`-1/2` for
vectors (full-matrix AdaGrad).

*Merging and blocking* (reference defaults): with ``merge_dims=True`` dimensions of size 1 are
dropped and neighbouring dimensions are merged, from the last one backwards, while their
product stays :math:`\le` ``max_preconditioner_dim`` (a 10×32 weight becomes a vector of 320;
a scalar becomes a vector of 1). Every dimension larger than ``max_preconditioner_dim`` is
then cut into blocks of at most that size, each block with its own factors, roots, first
moment and graft (grafting norms are per block).

*Memory* per :math:`m\times n` block: the factors :math:`m^2 + n^2` numbers, the cached
inverse roots :math:`m^2 + n^2` more, plus :math:`mn` for :math:`M` (if :math:`\beta_1 > 0`)
and :math:`mn` for the graft's :math:`V`.

*Precision*: factors live in the parameter's dtype (float32 for bfloat16/float16 parameters);
roots are computed by a symmetric eigendecomposition in float64. If it fails, it is retried on a
shifted matrix, and if that fails too the previous root is kept with a warning (the reference's
``use_protected_eigh``). Not reproduced from the reference: ``beta3``,
``inverse_exponent_override``, ``iterate_averaging_config``, the ``CORRECTED``/``INDEPENDENT``
weight-decay types, the other preconditioner configs and distributed training. The step counter
is kept per parameter (torch's convention) where the reference keeps one per param group: the
same unless some parameters receive no gradient at some steps. ``maximize`` is optlib's addition.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor

from ._base import Optimizer, eager, scalar, scalar_step
from ._matrix import (
    EighError,
    matrix_inverse_roots,
    mode_gram,
    mode_product,
    restore_float32_state,
    state_dtype,
)
from ._validate import (
    check_beta,
    check_choice,
    check_interval,
    check_nonnegative,
    check_positive,
    check_positive_int,
)

GRAFTINGS = (None, "sgd", "adagrad", "rmsprop", "adam")
_GRAFT_BETA2 = {"rmsprop": 0.99, "adam": 0.999}  # the reference's RMSprop/Adam config defaults


def merged_shape(shape: tuple[int, ...], max_dim: int) -> tuple[int, ...]:
    """The reference's ``merge_small_dims``: drop size-1 dimensions, then merge neighbours
    (from the last dimension backwards) while their product is at most ``max_dim``.

    ``(10, 32)`` with ``max_dim=1024`` becomes ``(320,)``; ``(32, 64)`` stays; ``()`` becomes
    ``(1,)``."""
    if 0 in shape:
        return (0,)
    dims = [d for d in reversed(shape) if d != 1] or [1]
    merged = [dims[0]]
    for d in dims[1:]:
        if merged[-1] * d <= max_dim:
            merged[-1] *= d
        else:
            merged.append(d)
    return tuple(reversed(merged))


def block_slices(shape: tuple[int, ...], max_dim: int) -> Iterator[tuple[slice, ...]]:
    """Blocks of at most ``max_dim`` along every dimension, in row-major order (the order of
    the reference's ``multi_dim_split``)."""
    per_dim = [[slice(s, min(s + max_dim, d)) for s in range(0, d, max_dim)] for d in shape]
    return itertools.product(*per_dim)


def update_factors(factors: list[Tensor], G: Tensor, beta2: float) -> None:
    r""":math:`F_i \leftarrow \beta_2 F_i + (1-\beta_2)\,G_{(i)}G_{(i)}^\top` for every
    dimension :math:`i` (plain sums :math:`F_i \mathrel{+}= G_{(i)}G_{(i)}^\top` when
    :math:`\beta_2 = 1`), in place."""
    for i, F in enumerate(factors):
        if beta2 == 1.0:
            F.add_(mode_gram(G, i))
        else:
            # scaled first: torch 2.13's inductor drops alpha in add(x, mm, alpha) (see soap.py)
            F.mul_(beta2).add_(mode_gram(G, i).mul_(1 - beta2))


def update_inverse_roots(blocks: list[tuple[dict, float]], *, epsilon: float) -> None:
    r""":math:`\bar F_i \leftarrow (F_i / b + \epsilon I)^{-1/(2k)}` for every factor of every
    ``(block, b)`` given (a block of order :math:`k`), in place, batched: factors of equal size
    share one eigendecomposition call (:func:`._matrix.matrix_inverse_roots`), which gives the
    roots of one call per factor to rounding. A root whose eigendecomposition fails keeps its
    previous value."""
    jobs = [(F, root, b, len(block["factors"]), i) for block, b in blocks
            for i, (F, root) in enumerate(zip(block["factors"], block["roots"]))]  # fmt: skip
    results = matrix_inverse_roots([F / b for F, _, b, _, _ in jobs],
                                   [2 * k for *_, k, _ in jobs], epsilon)  # fmt: skip
    for (F, root, _, _, i), result in zip(jobs, results):
        if isinstance(result, EighError):
            warnings.warn(
                f"Shampoo: inverse root of factor {i} ({F.shape[0]}x{F.shape[0]}) failed "
                f"({result}); keeping the previous root",
                RuntimeWarning,
                stacklevel=4,
            )
        else:
            root.copy_(result)


def graft_direction(
    M_hat: Tensor, G: Tensor, block: dict, *, grafting: str, t: int, beta2: float, epsilon: float
) -> Tensor:
    r"""The graft's diagonal step :math:`P(\hat M) = \hat M / (\sqrt{V/b} + \epsilon_g)` after
    folding :math:`G` into its accumulator :math:`V` (``"sgd"``: :math:`P(\hat M) = \hat M`).
    Only ``"adam"`` is bias-corrected, :math:`b = 1 - \beta^t`."""
    if grafting == "sgd":
        return M_hat
    V = block.get("v")
    if V is None:
        V = block["v"] = torch.zeros_like(G)
    if grafting == "adagrad":
        V.addcmul_(G, G)
    else:
        V.mul_(beta2).addcmul_(G, G, value=1 - beta2)
    b = 1 - beta2**t if grafting == "adam" else 1.0
    return M_hat / (V / b).sqrt().add_(epsilon)


def shampoo_direction(
    block: dict,
    G: Tensor,
    W: Tensor,
    *,
    t: int,
    beta1: float,
    beta2: float,
    epsilon: float,
    weight_decay: float,
    use_bias_correction: bool,
    decoupled: bool,
    graft_only: bool,
    grafting: str | None,
    graft_beta2: float,
    graft_epsilon: float,
) -> Tensor:
    r"""Shampoo's search direction for one block (the step is :math:`W \leftarrow W - \eta D`).

    ``G`` is the block's gradient (L2 term already added when weight decay is coupled), ``W``
    the block's parameters; ``block`` holds the factors :math:`F_i`, their inverse roots
    :math:`\bar F_i`, the first moment :math:`M` and the graft's :math:`V`. The step has already
    folded :math:`G` into the factors (:func:`update_factors`) and refreshed the roots when due
    (:func:`update_inverse_roots`, batched over every block); this updates :math:`M` and
    :math:`V` in place.
    """
    roots = block["roots"]

    if beta1 != 0:
        M = block.get("m")
        if M is None:
            M = block["m"] = torch.zeros_like(G)
        M.lerp_(G, 1 - beta1)
        M_hat = M / (1 - beta1**t) if use_bias_correction else M
    else:
        M_hat = G

    P = None  # the graft's step; its accumulator takes G every step, like the factors
    if grafting is not None:
        P = graft_direction(
            M_hat, G, block, grafting=grafting, t=t, beta2=graft_beta2, epsilon=graft_epsilon
        )
    if graft_only:
        D = P
    else:
        D = mode_product(M_hat, roots)  # \hat M \times_1 \bar F_1 \cdots \times_k \bar F_k
        if P is not None:
            D = D * (P.norm() / (D.norm() + 1e-16))
    if decoupled and weight_decay != 0:
        D = D + weight_decay * W
    return D


class Shampoo(Optimizer):
    r"""Shampoo (Gupta et al., 2018) as in the reference ``DistributedShampoo`` (Shi et al.,
    2023), on one device.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\eta \ge 0`.
        betas: :math:`(\beta_1, \beta_2)`: :math:`\beta_1 \in [0, 1)` for the first moment
            (0: none), :math:`\beta_2 \in [0, 1]` for the factors (1: plain sums, AdaGrad-like).
        epsilon: :math:`\epsilon > 0` added to every factor before its inverse root.
        weight_decay: :math:`\lambda \ge 0`.
        max_preconditioner_dim: block size :math:`\ge 1` (and the merging threshold).
        precondition_frequency: :math:`f \ge 1`, steps between inverse-root computations.
        start_preconditioning_step: :math:`t_0 \ge f` (``-1``: :math:`t_0 = f`); grafting alone
            is used before it.
        use_bias_correction: divide :math:`M_t` by :math:`1-\beta_1^t` and the factors by
            :math:`1-\beta_2^t`.
        use_decoupled_weight_decay: ``True`` (reference default): AdamW-style
            :math:`D + \lambda W`; ``False``: L2, :math:`G + \lambda W` before everything.
        grafting: ``None``, ``"sgd"``, ``"adagrad"``, ``"rmsprop"`` or ``"adam"``.
        grafting_beta2: :math:`\beta \in (0, 1]` of the RMSprop/Adam graft (``None``: the
            reference's 0.99 for RMSprop, 0.999 for Adam).
        grafting_epsilon: :math:`\epsilon_g > 0` of the graft (reference: 1e-10).
        merge_dims: merge small dimensions first (reference default; ``False`` keeps the
            parameter's own dimensions, the reference's ``target_parameter_dimensionality=inf``).
        maximize: ascend instead of descend.

    ``merge_dims`` and ``max_preconditioner_dim`` fix the state's layout at the first step.

    Complex parameters are refused at construction (ValueError): the factors would need
    Hermitian algebra; ``torch.view_as_real(p)`` optimises the real and imaginary parts instead.
    """

    _complex_params_refused = (
        "its Kronecker factors are real symmetric matrices; optimise torch.view_as_real(p) instead"
    )

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 1e-2,
        betas: tuple[float, float] = (0.9, 1.0),
        epsilon: float = 1e-12,
        weight_decay: float = 0.0,
        max_preconditioner_dim: int = 1024,
        precondition_frequency: int = 1,
        start_preconditioning_step: int = -1,
        use_bias_correction: bool = True,
        use_decoupled_weight_decay: bool = True,
        grafting: str | None = None,
        grafting_beta2: float | None = None,
        grafting_epsilon: float = 1e-10,
        merge_dims: bool = True,
        *,
        maximize: bool = False,
    ) -> None:
        check_nonnegative("lr", lr)
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"Invalid betas: {betas!r}; expected a pair (beta1, beta2)") from None
        check_beta("beta1 (betas[0])", beta1)
        check_interval("beta2 (betas[1])", beta2, 0.0, 1.0, high_open=False)
        check_positive("epsilon", epsilon)
        check_nonnegative("weight_decay", weight_decay)
        check_positive_int("max_preconditioner_dim", max_preconditioner_dim)
        check_positive_int("precondition_frequency", precondition_frequency)
        if start_preconditioning_step != -1:
            if isinstance(start_preconditioning_step, bool) or not isinstance(
                start_preconditioning_step, int
            ):
                raise ValueError(
                    f"Invalid start_preconditioning_step: {start_preconditioning_step!r}; "
                    "allowed values are -1 or integers >= precondition_frequency"
                )
            check_interval(
                "start_preconditioning_step",
                start_preconditioning_step,
                precondition_frequency,
            )
        check_choice("grafting", grafting, GRAFTINGS)
        if grafting_beta2 is not None:
            check_interval(
                "grafting_beta2", grafting_beta2, 0.0, 1.0, low_open=True, high_open=False
            )
        check_positive("grafting_epsilon", grafting_epsilon)
        defaults = dict(
            lr=lr,
            betas=(float(beta1), float(beta2)),
            epsilon=epsilon,
            weight_decay=weight_decay,
            max_preconditioner_dim=max_preconditioner_dim,
            precondition_frequency=precondition_frequency,
            start_preconditioning_step=start_preconditioning_step,
            use_bias_correction=use_bias_correction,
            use_decoupled_weight_decay=use_decoupled_weight_decay,
            grafting=grafting,
            grafting_beta2=grafting_beta2,
            grafting_epsilon=grafting_epsilon,
            merge_dims=merge_dims,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    @staticmethod
    def _view_shape(p: Tensor, group: dict) -> tuple[int, ...]:
        shape = tuple(p.shape)
        if not group["merge_dims"]:
            return shape
        return merged_shape(shape, group["max_preconditioner_dim"])

    def _block_tensors(self, p: Tensor, g: Tensor, group: dict) -> tuple[Tensor, Tensor]:
        """The gradient (with the L2 term when weight decay is coupled) and the parameters, in
        the merged shape and the statistics' dtype."""
        shape, dtype = self._view_shape(p, group), state_dtype(p)
        G = g.reshape(shape).to(dtype)
        W = p.detach().reshape(shape).to(dtype)
        if group["weight_decay"] != 0 and not group["use_decoupled_weight_decay"]:
            G = G + group["weight_decay"] * W
        return G, W

    def _init_state(self, p: Tensor, group: dict) -> None:
        dtype, b = state_dtype(p), group["max_preconditioner_dim"]
        blocks = []
        for sl in block_slices(self._view_shape(p, group), b):
            dims = [s.stop - s.start for s in sl]
            blocks.append(
                {
                    "factors": [torch.zeros(d, d, dtype=dtype, device=p.device) for d in dims],
                    "roots": [torch.eye(d, dtype=dtype, device=p.device) for d in dims],
                }
            )
        self.state[p]["step"] = 0  # a Python int: the refresh test needs no .item() when compiled
        self.state[p]["blocks"] = blocks

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step; ``closure`` re-evaluates the loss and returns it.

        Statistics first, for every block of every parameter: the factors take :math:`G_t`, and
        the roots due at this step are computed together, batched over factors of equal size;
        then the directions. Under torch.compile the root refresh runs eagerly, outside every
        loop and in a ``with`` block rather than under a decorator, so that it splits the
        compiled step in two graphs (a graph break inside a loop, or inside a decorated
        function, would leave one graph per parameter and shape)."""
        with torch.no_grad():
            loss = self._evaluate(closure)
            due = [self._statistics(group) for group in self.param_groups]
            if any(blocks for blocks, _ in due):
                _refresh_roots(due)
            for group in self.param_groups:
                self._directions(group)
        return loss

    def _statistics(self, group: dict) -> tuple[list[tuple[dict, float]], float]:
        r"""Fold :math:`G_t` into the factors of every block of ``group``; returns the blocks
        whose roots are due, with their bias correction :math:`b`, and the group's
        :math:`\epsilon`."""
        params, grads = self._params_and_grads(group)
        beta2 = group["betas"][1]
        f = group["precondition_frequency"]
        t0 = group["start_preconditioning_step"]
        t0 = f if t0 == -1 else t0
        due = []
        for p, g in zip(params, grads):
            if p.numel() == 0:
                continue
            if not self.state[p]:
                self._init_state(p, group)
            t = scalar_step(self.state[p]["step"]) + 1
            G, _ = self._block_tensors(p, g, group)
            slices = block_slices(G.shape, group["max_preconditioner_dim"])
            for sl, block in zip(slices, self.state[p]["blocks"], strict=True):
                update_factors(block["factors"], G[sl], beta2)
                if (t % f == 0 and t > t0) or t == t0:
                    b = 1 - beta2**t if group["use_bias_correction"] and beta2 < 1 else 1.0
                    due.append((block, b))
        return due, group["epsilon"]

    def _directions(self, group: dict) -> None:
        r"""Advance the step counters of ``group`` and update its parameters,
        :math:`W \leftarrow W - \eta D` block by block (:func:`shampoo_direction`)."""
        params, grads = self._params_and_grads(group)
        beta1, beta2 = group["betas"]
        f = group["precondition_frequency"]
        t0 = group["start_preconditioning_step"]
        t0 = f if t0 == -1 else t0
        grafting = group["grafting"]
        graft_beta2 = group["grafting_beta2"]
        hyper = dict(
            beta1=beta1,
            beta2=beta2,
            epsilon=group["epsilon"],
            weight_decay=group["weight_decay"],
            use_bias_correction=group["use_bias_correction"],
            decoupled=group["use_decoupled_weight_decay"],
            grafting=grafting,
            graft_beta2=_GRAFT_BETA2.get(grafting, 1.0) if graft_beta2 is None else graft_beta2,
            graft_epsilon=group["grafting_epsilon"],
        )
        for p, g in zip(params, grads):
            if p.numel() == 0:
                continue
            state = self.state[p]
            state["step"] = t = scalar_step(state["step"]) + 1
            G, W = self._block_tensors(p, g, group)
            shape, dtype = G.shape, G.dtype
            U = torch.empty(shape, dtype=dtype, device=p.device)
            slices = block_slices(shape, group["max_preconditioner_dim"])
            for sl, block in zip(slices, state["blocks"], strict=True):
                U[sl] = shampoo_direction(
                    block,
                    G[sl],
                    W[sl],
                    t=t,
                    graft_only=t < t0 and grafting is not None,
                    **hyper,
                )
            lr = scalar(group["lr"])
            p.sub_(U.reshape(p.shape).to(p.dtype).mul_(lr))  # not add_(alpha=): see soap.py

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's loader, keeping float32 factors of low-precision parameters in float32."""
        super().load_state_dict(state_dict)
        restore_float32_state(self, state_dict)


@eager("inverse roots: float64 eigendecompositions, checked eagerly")
def _refresh_roots(due: list[tuple[list[tuple[dict, float]], float]]) -> None:
    """:func:`update_inverse_roots` for the due blocks of every group (with its epsilon)."""
    for blocks, epsilon in due:
        if blocks:
            update_inverse_roots(blocks, epsilon=epsilon)
