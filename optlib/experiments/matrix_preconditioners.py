r"""What chapter 10 measures about matrix preconditioners: gradients of one layer along a
training run, the staleness of Shampoo's roots, SOAP's equivalence, and Muon in stacked races.

* :func:`layer_gradients` trains a workload with AdamW (float64) and records the gradient of
  every parameter at every step: the input of the comparisons of
  :mod:`optlib.linalg.kronecker` (full-matrix AdaGrad, Shampoo, K-FAC).
* :func:`stale_direction_error`: Shampoo refreshes its roots
  :math:`\bar L = L^{-1/4}, \bar R = R^{-1/4}` every :math:`f` steps and uses them in between.
  Along one sequence of gradients, the direction with roots :math:`a` steps old,
  :math:`D_{t,a} = \bar L_{t-a}\,G_t\,\bar R_{t-a}`, is compared with the fresh one
  :math:`D_{t,0}`: :math:`\lVert D_{t,a} - D_{t,0}\rVert_F / \lVert D_{t,0}\rVert_F`.
* :func:`soap_equivalence`: Vyas et al. (2024, Claim 1) show that Shampoo with exponent
  :math:`1/2`, :math:`L^{-1/2} G R^{-1/2}`, is Adafactor run in the eigenbasis of :math:`L` and
  :math:`R` (up to one scalar): with :math:`L = Q_L\Lambda Q_L^\top`,
  :math:`R = Q_R M Q_R^\top` and :math:`G' = Q_L^\top G Q_R`, the row sums of
  :math:`\sum G'\odot G'` are the eigenvalues :math:`\lambda_i`, the column sums :math:`\mu_j`,
  so Adafactor's estimate is :math:`\lambda_i\mu_j / \sum_k\lambda_k` and its step
  :math:`G'_{ij}\sqrt{\sum_k\lambda_k/(\lambda_i\mu_j)}` rotated back is
  :math:`\sqrt{\operatorname{tr}L}\;L^{-1/2}GR^{-1/2}`. SOAP keeps Adam's full second moment in
  that basis instead of the rank-one estimate.
* :class:`MuonSplit` runs :class:`~optlib.MuonWithAuxAdamW` on runs given as plain param groups
  (one per run, as :func:`optlib.experiments.race.race` and the stacked sweeps build them): in
  every group the hidden matrices go to Muon with the group's learning rate, the rest to AdamW
  (:func:`hidden_positions` says which, as :func:`~optlib.optim.muon.muon_param_groups` splits).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..optim._matrix import matrix_inverse_roots
from ..optim.adam import AdamW
from ..optim.muon import MuonWithAuxAdamW, muon_param_groups
from ..problems.workloads import workload
from .memory_light import rank_one
from .stacked import BatchStream

__all__ = [
    "MuonSplit",
    "hidden_positions",
    "layer_gradients",
    "soap_equivalence",
    "stale_direction_error",
]


def layer_gradients(
    name: str,
    *,
    steps: int,
    lr: float = 3e-3,
    batch_size: int = 32,
    seed: int = 0,
    workload_options: dict | None = None,
) -> dict[str, Tensor]:
    r"""Train workload ``name`` (in float64) with AdamW for ``steps`` steps of ``batch_size``
    examples (the mini-batches of ``seed``, as :func:`optlib.experiments.train.run` draws them)
    and return every parameter's gradient at every step, ``{name: (steps, *shape)}``."""
    work = workload(name, dtype=torch.float64, **(workload_options or {}))
    model = work.model(seed)
    opt = AdamW(model.parameters(), lr=lr)
    batches = BatchStream(len(work.data.y_train), batch_size, seed)
    record: dict[str, list[Tensor]] = {n: [] for n, _ in model.named_parameters()}
    for _ in range(steps):
        idx = batches.next()
        opt.zero_grad()
        work.loss_fn(model(work.data.X_train[idx]), work.data.y_train[idx]).backward()
        for n, p in model.named_parameters():
            record[n].append(p.grad.detach().clone())
        opt.step()
    return {n: torch.stack(gs) for n, gs in record.items()}


def stale_direction_error(
    grads: Tensor, ages: Sequence[int], *, epsilon: float, beta2: float = 1.0
) -> np.ndarray:
    r"""``error[i, t-1]``: the relative error :math:`\lVert D_{t,a} - D_{t,0}\rVert_F /
    \lVert D_{t,0}\rVert_F` of Shampoo's direction for the gradient :math:`G_t` of ``grads``
    (``(T, m, n)``) when its roots are :math:`a` = ``ages[i]`` steps old (NaN for
    :math:`t \le a`). Factors as :class:`optlib.Shampoo` keeps them (plain sums for
    :math:`\beta_2 = 1`, else exponential averages divided by :math:`1-\beta_2^t`), roots
    :math:`(F + \epsilon I)^{-1/4}` by :func:`~optlib.optim._matrix.matrix_inverse_roots`."""
    G = grads.double()
    T = len(G)
    if G.ndim != 3:
        raise ValueError("grads: expected (steps, m, n)")
    L = torch.zeros(G.shape[1], G.shape[1], dtype=torch.float64)
    R = torch.zeros(G.shape[2], G.shape[2], dtype=torch.float64)
    factors_L, factors_R = [], []
    for t in range(1, T + 1):
        g = G[t - 1]
        if beta2 == 1.0:
            L, R = L + g @ g.T, R + g.T @ g
            b = 1.0
        else:
            L = beta2 * L + (1 - beta2) * g @ g.T
            R = beta2 * R + (1 - beta2) * g.T @ g
            b = 1 - beta2**t
        factors_L.append(L / b)
        factors_R.append(R / b)
    roots = matrix_inverse_roots(factors_L + factors_R, [4] * (2 * T), epsilon)
    root_L, root_R = roots[:T], roots[T:]
    error = np.full((len(ages), T), np.nan)
    for t in range(1, T + 1):
        fresh = root_L[t - 1] @ G[t - 1] @ root_R[t - 1]
        for i, a in enumerate(ages):
            if t - a >= 1:
                stale = root_L[t - a - 1] @ G[t - 1] @ root_R[t - a - 1]
                error[i, t - 1] = float((stale - fresh).norm() / fresh.norm())
    return error


def soap_equivalence(grads: Tensor) -> dict[str, Tensor | float]:
    r"""Shampoo with exponent 1/2 against Adafactor in Shampoo's eigenbasis, after the
    gradients ``grads`` (``(T, m, n)``, plain sums as in the idealised setting of Vyas et al.),
    for the last gradient :math:`G_T` (see the module docstring):

    ``shampoo_half`` :math:`= L^{-1/2} G_T R^{-1/2}`; ``adafactor_rotated``: Adafactor's step
    :math:`G'/\sqrt{\hat V'}` in the eigenbasis (:func:`~optlib.experiments.memory_light.rank_one`
    of :math:`V' = \sum G'\odot G'`), rotated back; ``scale`` :math:`= \sqrt{\operatorname{tr}L}`;
    ``adam_rotated``: the same with the full :math:`V'` (SOAP's choice, without its moments'
    decay); ``rank_one_error``: :math:`\lVert V' - \hat V'\rVert_F/\lVert V'\rVert_F` in the
    eigenbasis, and ``rank_one_error_plain`` the same in the original coordinates (Adafactor's).
    The factors must be non-singular (enough gradients)."""
    G = grads.double()
    L = torch.einsum("tij,tkj->ik", G, G)
    R = torch.einsum("tij,tik->jk", G, G)
    QL = torch.linalg.eigh(L).eigenvectors
    QR = torch.linalg.eigh(R).eigenvectors
    rotated = QL.T @ G @ QR  # G'_s for every s
    V = (rotated**2).sum(0)
    V_hat = rank_one(V)
    V_plain = (G**2).sum(0)
    inv_half = matrix_inverse_roots([L, R], [2, 2], 0.0)
    last = rotated[-1]
    return {
        "shampoo_half": inv_half[0] @ G[-1] @ inv_half[1],
        "adafactor_rotated": QL @ (last / V_hat.sqrt()) @ QR.T,
        "adam_rotated": QL @ (last / V.sqrt()) @ QR.T,
        "scale": float(torch.trace(L).sqrt()),
        "rank_one_error": float((V - V_hat).norm() / V.norm()),
        "rank_one_error_plain": float((V_plain - rank_one(V_plain)).norm() / V_plain.norm()),
    }


def hidden_positions(model: nn.Module) -> list[int]:
    """Positions, in ``model.parameters()`` order, of the tensors that
    :func:`~optlib.optim.muon.muon_param_groups` gives to Muon (the hidden matrices)."""
    muon = {id(p) for g in muon_param_groups(model) if g["use_muon"] for p in g["params"]}
    return [i for i, p in enumerate(model.parameters()) if id(p) in muon]


class MuonSplit(MuonWithAuxAdamW):
    r""":class:`~optlib.MuonWithAuxAdamW` built from plain param groups, one per run
    (``{"params": [...], "lr": η}`` with the tensors in ``model.parameters()`` order): the
    tensors at the positions ``hidden`` take Muon's step with the run's :math:`\eta`, the others
    AdamW's with ``adamw_lr`` and ``adamw_betas``. ``muon_options`` (``momentum``,
    ``ns_dtype``…) go to every Muon group. Each run thus becomes two groups that share its
    tensors out, which :func:`~optlib.experiments.stacked.train_stacked` accepts."""

    def __init__(
        self,
        params: Sequence[dict],
        *,
        hidden: Sequence[int],
        adamw_lr: float,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        **muon_options: object,
    ) -> None:
        hidden = set(hidden)
        groups = []
        for group in params:
            if not isinstance(group, dict):
                raise ValueError("MuonSplit takes param groups (dicts with 'params' and 'lr')")
            tensors = list(group["params"])
            if not hidden <= set(range(len(tensors))):
                raise ValueError(f"hidden positions {sorted(hidden)} outside the group's "
                                 f"{len(tensors)} tensors")  # fmt: skip
            lr = group.get("lr", 0.02)
            groups.append(dict(params=[tensors[i] for i in sorted(hidden)], use_muon=True,
                               lr=lr, **muon_options))  # fmt: skip
            rest = [p for i, p in enumerate(tensors) if i not in hidden]
            if rest:
                groups.append(dict(params=rest, use_muon=False, lr=adamw_lr, betas=adamw_betas))
        super().__init__(groups)
