r"""The gradient noise scale and the critical batch size (chapter 11).

McCandlish, Kaplan, Amodei et al., "An Empirical Model of Large-Batch Training", 2018
(arXiv:1812.06162). A mini-batch gradient :math:`G_B` (the mean of :math:`B` per-example
gradients drawn independently) has

.. math::

   \mathbb E\,\lVert G_B\rVert^2 = \lVert G\rVert^2 + \frac{\operatorname{tr}\Sigma}{B},
   \qquad B_{\rm simple} = \frac{\operatorname{tr}\Sigma}{\lVert G\rVert^2},

with :math:`G` the full gradient and :math:`\Sigma` the covariance of one example's gradient
(its trace is the spread :math:`\sigma^2` of chapter 2). :math:`B_{\rm simple}` is the *simple
noise scale*: the batch size at which the noise equals the signal. Two batch sizes
:math:`b < B` give two equations for the two unknowns (McCandlish et al., appendix A.1):

.. math::

   \widehat{\lVert G\rVert^2} = \frac{B\,\lVert G_B\rVert^2 - b\,\lVert G_b\rVert^2}{B - b},
   \qquad
   \widehat{\operatorname{tr}\Sigma} = \frac{\lVert G_b\rVert^2 - \lVert G_B\rVert^2}
   {1/b - 1/B},

each unbiased when the squared norms are averages over independent batches; their ratio is the
estimate of :math:`B_{\rm simple}` (consistent, not unbiased). In data-parallel training the two
sizes come for free: :math:`b` is one worker's batch, :math:`B` the all-reduced one.

Batches drawn *without* replacement from :math:`N` examples have
:math:`\mathbb E\lVert G_B\rVert^2 = \lVert G\rVert^2 + \frac{\sigma^2}{B}\frac{N-B}{N-1}`
(chapter 2): still linear in :math:`1/B`, with slope :math:`\sigma^2 N/(N-1)` and intercept
:math:`\lVert G\rVert^2 - \sigma^2/(N-1)`; ``population=N`` solves these instead.

McCandlish et al. model the steps :math:`S` and examples :math:`E = BS` that training needs to
reach a given loss as :math:`S = S_{\min}(1 + B_{\rm crit}/B)` and
:math:`E = E_{\min}(1 + B/B_{\rm crit})`, with the *critical batch size*
:math:`B_{\rm crit} = E_{\min}/S_{\min}`, predicted to be about :math:`B_{\rm noise}` at that
loss: :func:`fit_critical_batch` fits the model to measured steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .._seed import derive_seed
from ..problems.workloads import workload
from .stacked import StackedModels, train_stacked
from .stochastic import gradient_spread, per_example_gradients, sample_minibatch_gradients

__all__ = [
    "NoiseScale",
    "batch_gradient_sq_norms",
    "estimate_noise_scale",
    "exact_noise_scale",
    "fit_critical_batch",
    "noise_scale_from_norms",
    "noise_scale_during_training",
    "stacked_per_example_gradients",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class NoiseScale:
    r"""The signal :math:`\lVert G\rVert^2` and the noise :math:`\operatorname{tr}\Sigma` of a
    gradient, estimated or exact; :attr:`b_simple` is their ratio."""

    signal: float
    noise: float

    @property
    def b_simple(self) -> float:
        r""":math:`B_{\rm simple} = \operatorname{tr}\Sigma / \lVert G\rVert^2` (``inf`` where
        the signal is not positive, as an estimate of it can be)."""
        return self.noise / self.signal if self.signal > 0 else float("inf")

    def as_dict(self) -> dict[str, float]:
        return {"signal": self.signal, "noise": self.noise, "b_simple": self.b_simple}


def _mean(values: float | Sequence[float] | np.ndarray) -> float:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("Invalid squared norms: none given")
    return float(array.mean())


def noise_scale_from_norms(
    sq_small: float | Sequence[float] | np.ndarray,
    b_small: int,
    sq_big: float | Sequence[float] | np.ndarray,
    b_big: int,
    *,
    population: int | None = None,
) -> NoiseScale:
    r"""Signal and noise from squared gradient norms at two batch sizes (the module docstring's
    two equations): ``sq_small`` holds :math:`\lVert G_b\rVert^2` of batches of ``b_small``
    examples (one number, or many whose mean is used), ``sq_big`` the same for ``b_big``.

    ``population``: the batches were drawn without replacement from this many examples (the
    finite-population form); ``None``: drawn independently (with replacement, or from a
    population much larger than the batch)."""
    b_small, b_big = int(b_small), int(b_big)
    if not 1 <= b_small < b_big:
        raise ValueError(f"Invalid batch sizes: need 1 <= b_small < b_big, got {b_small}, {b_big}")
    if population is not None and not b_big <= int(population):
        raise ValueError(f"Invalid population: {population}; need population >= b_big = {b_big}")
    small, big = _mean(sq_small), _mean(sq_big)
    slope = (small - big) / (1 / b_small - 1 / b_big)  # the coefficient of 1/B
    intercept = big - slope / b_big
    if population is None:
        return NoiseScale(signal=intercept, noise=slope)
    n = int(population)
    if n == 1:
        return NoiseScale(signal=big, noise=0.0)
    return NoiseScale(signal=intercept + slope / n, noise=slope * (n - 1) / n)


def _flat_grads(grads: dict[str, Tensor], n: int) -> Tensor:
    return torch.cat([g.reshape(n, -1) for g in grads.values()], dim=1)


def batch_gradient_sq_norms(
    model: nn.Module,
    loss_fn: LossFn,
    X: Tensor,
    y: Tensor,
    batch_size: int,
    n_batches: int,
    *,
    seed: int = 0,
    replace: bool = False,
    chunk: int | None = None,
) -> np.ndarray:
    r""":math:`\lVert G_B\rVert^2` of ``n_batches`` independent mini-batch gradients of the
    mean loss ``loss_fn(model(X[idx]), y[idx])`` at the model's current weights, as float64.

    Each batch is a uniformly random subset of ``batch_size`` examples (``replace=True``:
    independent uniform draws), seeded by ``seed`` (moved by ``OPTLIB_SEED``). Computed in one
    vectorised pass per ``chunk`` batches (:func:`torch.func.vmap` of :func:`torch.func.grad`;
    ``None``: as many at once as drawing subsets allows, about :math:`2^{22}/N`)."""
    from torch.func import functional_call, grad, vmap

    n = len(X)
    if len(y) != n:
        raise ValueError(f"Invalid X, y: they disagree in length, {n} != {len(y)}")
    if batch_size < 1 or (not replace and batch_size > n):
        raise ValueError(f"Invalid batch_size: {batch_size}; need 1 <= batch_size <= {n}")
    if n_batches < 1:
        raise ValueError(f"Invalid n_batches: {n_batches}; need n_batches >= 1")
    g = torch.Generator().manual_seed(derive_seed(seed))
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}

    def batch_loss(p: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        return loss_fn(functional_call(model, p, (xb,)), yb)

    per_batch = vmap(grad(batch_loss), in_dims=(None, 0, 0))
    out = []
    step = chunk or n_batches
    if not replace:  # random subsets from argsorts of uniform rows: about 2**22 numbers at once
        step = min(step, max(1, 2**22 // n))
    for start in range(0, n_batches, step):
        m = min(step, n_batches - start)
        if replace:
            rows = torch.randint(n, (m, batch_size), generator=g)
        else:  # the first B entries of m random permutations
            rows = torch.rand(m, n, generator=g).argsort(dim=1)[:, :batch_size]
        flat = _flat_grads(per_batch(params, X[rows], y[rows]), m)
        out.append(flat.double().pow(2).sum(1))
    return torch.cat(out).numpy()


def estimate_noise_scale(
    model: nn.Module,
    loss_fn: LossFn,
    X: Tensor,
    y: Tensor,
    *,
    b_small: int,
    b_big: int,
    n_small: int,
    n_big: int,
    seed: int = 0,
    replace: bool = False,
    chunk: int | None = None,
) -> NoiseScale:
    r"""The two-batch-size estimate of signal and noise at the model's current weights, from
    ``n_small`` batches of ``b_small`` and ``n_big`` batches of ``b_big`` examples
    (:func:`batch_gradient_sq_norms`, :func:`noise_scale_from_norms`; without replacement the
    finite-population form for :math:`N =` ``len(X)``)."""
    sq_small = batch_gradient_sq_norms(model, loss_fn, X, y, b_small, n_small, seed=seed,
                                       replace=replace, chunk=chunk)  # fmt: skip
    sq_big = batch_gradient_sq_norms(model, loss_fn, X, y, b_big, n_big, seed=seed + 1,
                                     replace=replace, chunk=chunk)  # fmt: skip
    return noise_scale_from_norms(sq_small, b_small, sq_big, b_big,
                                  population=None if replace else len(X))  # fmt: skip


def exact_noise_scale(model: nn.Module, loss_fn: LossFn, X: Tensor, y: Tensor) -> NoiseScale:
    r"""Signal :math:`\lVert\nabla f\rVert^2` and noise :math:`\sigma^2 = \frac1N\sum_i
    \lVert\nabla\ell_i - \nabla f\rVert^2` computed directly from all :math:`N` per-example
    gradients (:func:`~optlib.experiments.stochastic.per_example_gradients`), in float64."""
    G = per_example_gradients(model, loss_fn, X, y).double()
    return NoiseScale(signal=float(G.mean(0).pow(2).sum()), noise=gradient_spread(G))


def fit_critical_batch(
    batch_sizes: Sequence[float], steps: Sequence[float]
) -> tuple[float, float]:
    r"""Least-squares fit of :math:`S = S_{\min}(1 + B_{\rm crit}/B)` to measured steps
    :math:`S` at batch sizes :math:`B` (both positive and finite; at least two sizes), in
    relative terms (each point weighted by :math:`1/S^2`, since the steps range over orders of
    magnitude). Returns :math:`(S_{\min}, B_{\rm crit})`."""
    B = np.asarray(batch_sizes, dtype=np.float64)
    S = np.asarray(steps, dtype=np.float64)
    if B.shape != S.shape or B.ndim != 1 or len(B) < 2:
        raise ValueError("Invalid data: need at least two batch sizes, one step count each")
    if not (np.all(np.isfinite(S)) and np.all(S > 0) and np.all(B > 0)):
        raise ValueError("Invalid data: batch sizes and steps must be positive and finite")
    # S = a + c / B, linear in (a, c) = (S_min, S_min * B_crit); rows divided by S
    A = np.stack([np.ones_like(B), 1 / B], axis=1) / S[:, None]
    (a, c), *_ = np.linalg.lstsq(A, np.ones_like(S), rcond=None)
    if a <= 0:
        raise ValueError("the steps do not level off: S_min is not positive")
    if c < 0:
        raise ValueError("the steps do not fall with the batch size: B_crit is negative")
    return float(a), float(c / a)


def stacked_per_example_gradients(stacked: StackedModels, loss_fn: LossFn, X: Tensor,
                                  y: Tensor) -> Tensor:  # fmt: skip
    r"""Every copy's per-example gradients at once: a tensor ``(K, N, d)`` whose ``[k, i]`` is
    :math:`\nabla\ell_i` of copy :math:`k`, flattened in the model's parameter order (as
    :func:`~optlib.experiments.stochastic.per_example_gradients` for each copy alone, in one
    vectorised pass over examples and copies)."""
    from torch.func import functional_call, grad, vmap

    keys = list(stacked.stacked.keys())
    params = {f"stacked.{key}": stacked.stacked[key].detach() for key in keys}
    K = stacked.n_models

    def loss_one(p: dict[str, Tensor], x: Tensor, t: Tensor) -> Tensor:
        out = functional_call(stacked, p, (x.unsqueeze(0),))  # (K, 1, ...)
        return sum(loss_fn(out[k], t.unsqueeze(0)) for k in range(K))

    grads = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, X, y)  # each (N, K, ...)
    order = [f"stacked.{n.replace('.', '/')}" for n in stacked.names]
    return torch.cat([grads[n].reshape(len(X), K, -1) for n in order], dim=2).transpose(0, 1)


def _estimate_from_rows(G: Tensor, *, b_small: int, b_big: int, n_small: int, n_big: int,
                        seed: int) -> NoiseScale:  # fmt: skip
    """The two-batch estimate from batch gradients formed as means of rows of ``G`` (the
    per-example gradients): the same batch gradients a model would give, drawn cheaply."""
    g = torch.Generator().manual_seed(derive_seed(seed))
    small = sample_minibatch_gradients(G, b_small, n_small, generator=g).pow(2).sum(1)
    big = sample_minibatch_gradients(G, b_big, n_big, generator=g).pow(2).sum(1)
    return noise_scale_from_norms(small.numpy(), b_small, big.numpy(), b_big, population=len(G))


def noise_scale_during_training(
    name: str,
    optimizer: str,
    lr: float,
    seeds: Sequence[int],
    at_steps: Sequence[int],
    *,
    batch_size: int = 32,
    estimate: dict | None = None,
    options: dict | None = None,
    workload_options: dict | None = None,
) -> dict:
    r"""Train one copy of workload ``name`` per seed with optlib's ``optimizer`` at learning rate
    ``lr`` (mini-batches of ``batch_size``; the copies side by side, each as it would run alone,
    :func:`~optlib.experiments.stacked.train_stacked`) and, at each step of ``at_steps`` (0:
    before training), measure every copy's training loss and its gradient's signal and noise on
    the whole training set, directly (as :func:`exact_noise_scale`, for all copies in one pass:
    :func:`stacked_per_example_gradients`) and, with ``estimate`` (the keyword arguments
    ``b_small``, ``b_big``, ``n_small``, ``n_big`` of :func:`estimate_noise_scale`), by the
    two-batch estimator, on batch gradients formed as means of rows of the per-example
    gradients (drawn without replacement; exactly the batch gradients the model gives, without
    a backward pass each).

    Returns plain JSON data: ``steps``; ``loss``, ``signal``, ``noise``, ``b_simple``
    (``[checkpoint][seed]``) and, with ``estimate``, ``estimated_signal``, ``estimated_noise``,
    ``estimated_b_simple``.
    """
    import optlib

    at = sorted({int(t) for t in at_steps})
    if not at or at[0] < 0:
        raise ValueError(f"Invalid at_steps: {list(at_steps)}; need steps >= 0")
    work = workload(name, **(workload_options or {}))
    X, y = work.data.X_train, work.data.y_train
    seeds = [int(s) for s in seeds]
    stacked = StackedModels([work.model(s) for s in seeds])
    opt = getattr(optlib, optimizer)([{"params": stacked.views(0, len(seeds)), "lr": lr}],
                                     **{"foreach": True, **(options or {})})  # fmt: skip
    keys = ["loss", "signal", "noise", "b_simple"]
    if estimate is not None:
        keys += ["estimated_signal", "estimated_noise", "estimated_b_simple"]
    out: dict = {"steps": [], **{k: [] for k in keys}}

    def measure(t: int, stacked: StackedModels) -> None:
        if t not in at:
            return
        rows: dict[str, list[float]] = {k: [] for k in keys}
        G_all = stacked_per_example_gradients(stacked, work.loss_fn, X, y).double()
        losses = stacked.evaluate(work.loss_fn, X, y)
        for k, seed in enumerate(seeds):
            G = G_all[k]
            exact = NoiseScale(signal=float(G.mean(0).pow(2).sum()), noise=gradient_spread(G))
            rows["loss"].append(float(losses[k]))
            rows["signal"].append(exact.signal)
            rows["noise"].append(exact.noise)
            rows["b_simple"].append(exact.b_simple)
            if estimate is not None:
                est = _estimate_from_rows(G, seed=1000 * seed + t, **estimate)
                rows["estimated_signal"].append(est.signal)
                rows["estimated_noise"].append(est.noise)
                rows["estimated_b_simple"].append(est.b_simple)
        out["steps"].append(t)
        for key, values in rows.items():
            out[key].append(values)

    measure(0, stacked)
    if at[-1] > 0:
        train_stacked(stacked, opt, X, y, work.loss_fn, steps=at[-1], batch_size=batch_size,
                      seeds=seeds, callback=measure)  # fmt: skip
    return out
