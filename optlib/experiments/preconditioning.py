r"""Diagonal preconditioning on a network: the digits MLP with badly scaled input features, once in
the features' own basis and once in a rotated basis (chapter 7).

The features are :math:`x_j s_j` with scales :math:`s_j = \text{scale}^{u_j}` spread over a factor
``scale`` (:func:`~optlib.linalg.spectra.diagonal_scales`), so the first layer's curvature along
input :math:`j` grows like :math:`s_j^2`: the problem is badly scaled the way
:func:`~optlib.linalg.spectra.badly_scaled_spd` is. The *rotated* copy of a model sees the same
features through a fixed orthogonal matrix :math:`Q` (a buffer, not trained) in front of its
first layer, and starts from the first-layer weights :math:`W_0 Q^\top`. It computes exactly the
same function as the unrotated copy, and gradient descent keeps it that way (the gradient with
respect to :math:`W Q^\top` is the gradient with respect to :math:`W` times :math:`Q^\top`): SGD
takes the same steps in both bases, to rounding. A per-coordinate method does not: Adam's
diagonal preconditioner acts on the coordinates of :math:`W` in one basis and of :math:`WQ^\top`
in the other, and only the first is the basis in which the curvature is diagonal-dominated.

:func:`rotated_features_sweep` trains both copies for every (learning rate, seed) at once with
:mod:`optlib.experiments.stacked` (one param group per learning rate) and returns plain JSON
data, so a chapter can memoise it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..linalg.spectra import diagonal_scales, random_orthogonal
from ..problems.digits import digits, mlp
from .stacked import StackedModels, train_stacked

__all__ = ["FixedRotation", "rotated_features_sweep"]

BASES = ("scaled", "rotated")


class FixedRotation(nn.Module):
    r"""The fixed linear map :math:`x \mapsto Rx` (``R`` a buffer: never trained)."""

    def __init__(self, R: Tensor) -> None:
        super().__init__()
        self.register_buffer("R", R)

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.R.T


def _model(n_in: int, n_hidden: int, n_out: int, R: Tensor, seed: int, dtype) -> nn.Sequential:
    """``mlp(seed)`` behind the fixed map ``R``, its first layer started at ``W_0 R^T`` so that
    the composite computes ``mlp(seed)``'s function."""
    net = mlp(n_in, n_hidden, n_out, seed=seed, dtype=dtype)
    with torch.no_grad():
        net[0].weight.copy_(net[0].weight @ R.T)
    return nn.Sequential(FixedRotation(R), *net)


def rotated_features_sweep(
    optimizer: str,
    lrs: Sequence[float],
    seeds: Sequence[int],
    *,
    scale: float = 30.0,
    steps: int = 200,
    batch_size: int = 32,
    n_hidden: int = 32,
    window: int = 50,
    every: int = 10,
    data_seed: int = 0,
    scale_seed: int = 11,
    rotation_seed: int = 5,
    dtype: str = "float32",
) -> dict:
    r"""Train the digits MLP on badly scaled features in both bases (module docstring) with
    ``getattr(optlib, optimizer)(groups, lr=lr)`` for every learning rate and seed.

    Returns plain JSON data, nested as ``[lr][basis][seed]`` with ``basis`` in
    ``("scaled", "rotated")``: ``window_loss``, the mean training batch loss over the last
    ``window`` steps; ``test_loss``, the loss on the held-out split after training; ``curves``,
    the mean batch loss over each block of ``every`` steps (ending at ``curve_steps``), NaN after
    a divergence. Copies
    with the same seed see the same mini-batches in both bases. ``dtype`` is ``"float32"`` or
    ``"float64"`` (a string: the arguments stay JSON data for
    :func:`optlib.course.cache.memoize`).
    """
    import optlib

    if not lrs or not seeds:
        raise ValueError("Invalid lrs, seeds: give at least one of each")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"Invalid dtype: {dtype!r}; allowed are 'float32', 'float64'")
    dtype = getattr(torch, dtype)
    start = time.perf_counter()
    data = digits(seed=data_seed, dtype=dtype)
    n_in, n_out = data.n_features, data.n_classes
    s = diagonal_scales(n_in, scale, scale_seed, dtype=dtype)
    rotations = {"scaled": torch.eye(n_in, dtype=dtype),
                 "rotated": random_orthogonal(n_in, rotation_seed, dtype=dtype)}  # fmt: skip
    runs = [(lr, basis, seed) for lr in lrs for basis in BASES for seed in seeds]
    stacked = StackedModels(
        [_model(n_in, n_hidden, n_out, rotations[basis], seed, dtype) for _, basis, seed in runs]
    )
    per_lr = len(BASES) * len(seeds)
    groups = [
        {"params": stacked.views(i * per_lr, (i + 1) * per_lr), "lr": float(lr)}
        for i, lr in enumerate(lrs)
    ]
    opt = getattr(optlib, optimizer)(groups, lr=float(lrs[0]), foreach=True)
    loss_fn = nn.functional.cross_entropy
    history = train_stacked(
        stacked, opt, data.X_train * s, data.y_train, loss_fn, steps=steps,
        batch_size=batch_size, seeds=[seed for *_, seed in runs],
    )  # fmt: skip
    test = stacked.evaluate(loss_fn, data.X_test * s, data.y_test)
    test = np.where(np.isfinite(history[-1]), test, np.nan)
    shape = (len(lrs), len(BASES), len(seeds))
    blocks = steps // every  # mean batch loss over steps (j-1)·every+1 .. j·every
    curves = history[1 : blocks * every + 1].reshape(blocks, every, -1).mean(axis=1)

    def nested(values: np.ndarray) -> list:
        return np.asarray(values, dtype=float).reshape(*shape, *values.shape[1:]).tolist()

    return {
        "optimizer": optimizer,
        "lrs": [float(lr) for lr in lrs],
        "bases": list(BASES),
        "seeds": [int(seed) for seed in seeds],
        "scale": float(scale),
        "window_loss": nested(np.mean(history[-window:], axis=0)),
        "test_loss": nested(test),
        "curve_steps": [every * (j + 1) for j in range(blocks)],
        "curves": nested(curves.T),
        "seconds": time.perf_counter() - start,
    }
