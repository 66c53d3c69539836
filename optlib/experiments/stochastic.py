r"""Mini-batch gradients: how batches are drawn, and how noisy their gradient is (chapter 2).

A training loss is an average over :math:`N` examples, :math:`f(\theta) = \frac1N \sum_{i=1}^N
\ell_i(\theta)`. A mini-batch :math:`\mathcal B` of :math:`B` indices drawn uniformly gives the
estimate

.. math::
    g_{\mathcal B}(\theta) = \frac1B \sum_{i \in \mathcal B} \nabla \ell_i(\theta),
    \qquad \mathbb E[g_{\mathcal B}] = \nabla f(\theta),

unbiased whether the indices are drawn with replacement (i.i.d.) or without (a uniformly random
subset, as a shuffled epoch gives). With the per-example spread
:math:`\sigma^2 = \frac1N \sum_i \|\nabla\ell_i - \nabla f\|^2` its mean squared error is
(Cochran, 1977, Thm. 2.2; Bottou, Curtis & Nocedal, 2018, §3)

.. math::
    \mathbb E\,\|g_{\mathcal B} - \nabla f\|^2 =
    \begin{cases} \dfrac{\sigma^2}{B} & \text{with replacement,} \\[1ex]
    \dfrac{\sigma^2}{B}\,\dfrac{N - B}{N - 1} & \text{without replacement,}
    \end{cases}

the second with the *finite-population correction*, which is 0 at :math:`B = N` (the full
batch has no noise).

This module draws batches (:func:`batch_indices`, :func:`epoch_batches`), computes every
per-example gradient at once (:func:`per_example_gradients`), evaluates the formula
(:func:`gradient_spread`, :func:`minibatch_variance`), measures it by sampling
(:func:`sample_minibatch_gradients`, :func:`measured_minibatch_variance`), fits power laws
(:func:`loglog_slope`) and measures the sharpness of a minimum (:func:`sharpness`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..linalg import top_hessian_eigenvalue
from ..optim._validate import check_positive_int

__all__ = [
    "batch_indices",
    "epoch_batches",
    "per_example_gradients",
    "gradient_spread",
    "minibatch_variance",
    "sample_minibatch_gradients",
    "measured_minibatch_variance",
    "loglog_slope",
    "sharpness",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


def _check_batch(n: int, batch_size: int, replace: bool) -> tuple[int, int]:
    n = check_positive_int("n", n)
    batch_size = check_positive_int("batch_size", batch_size)
    if not replace and batch_size > n:
        raise ValueError(
            f"Invalid batch_size: {batch_size}; without replacement it must be <= n = {n}"
        )
    return n, batch_size


def batch_indices(
    n: int, batch_size: int, *, replace: bool = False, generator: torch.Generator | None = None
) -> Tensor:
    r"""One mini-batch: ``batch_size`` indices in ``range(n)``, uniformly at random.

    ``replace=False`` gives a uniformly random subset (the first :math:`B` entries of a random
    permutation); ``replace=True`` gives :math:`B` independent uniform draws.
    """
    n, batch_size = _check_batch(n, batch_size, replace)
    if replace:
        return torch.randint(n, (batch_size,), generator=generator)
    return torch.randperm(n, generator=generator)[:batch_size]


def epoch_batches(
    n: int, batch_size: int, *, generator: torch.Generator | None = None, drop_last: bool = True
) -> list[Tensor]:
    r"""One epoch: a random permutation of ``range(n)`` cut into consecutive batches.

    Every batch is a uniformly random subset, and the batches of an epoch are disjoint. When
    :math:`B` divides :math:`N` they cover the data exactly once, so the average of their
    gradients *is* the full gradient. ``drop_last`` drops a final batch smaller than
    ``batch_size`` (as :class:`torch.utils.data.DataLoader` does with ``drop_last=True``).
    """
    n, batch_size = _check_batch(n, batch_size, replace=False)
    perm = torch.randperm(n, generator=generator)
    batches = list(perm.split(batch_size))
    if drop_last and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def per_example_gradients(model: nn.Module, loss_fn: LossFn, X: Tensor, y: Tensor) -> Tensor:
    r"""The matrix :math:`G \in \mathbb R^{N \times d}` whose row :math:`i` is
    :math:`\nabla_\theta \ell_i(\theta) = \nabla_\theta\, \mathrm{loss\_fn}(\mathrm{model}(x_i),
    y_i)`, flattened in the order of ``model.parameters()`` (as :func:`optlib.linalg.flatten`).

    Computed in one vectorised pass (``torch.func.vmap`` of ``torch.func.grad``), so the mean of
    the rows is the full-batch gradient for a loss that averages over the batch.
    """
    from torch.func import functional_call, grad, vmap

    if len(X) != len(y):
        raise ValueError(f"Invalid X, y: they disagree in length, {len(X)} != {len(y)}")
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("Invalid model: it has no parameters that require grad")

    def loss_one(p: dict[str, Tensor], x: Tensor, t: Tensor) -> Tensor:
        return loss_fn(functional_call(model, p, (x.unsqueeze(0),)), t.unsqueeze(0))

    grads = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, X, y)
    return torch.cat([grads[k].reshape(len(X), -1) for k in params], dim=1)


def gradient_spread(G: Tensor) -> float:
    r"""The per-example spread :math:`\sigma^2 = \frac1N \sum_i \|g_i - \bar g\|^2` of the rows
    :math:`g_i` of ``G`` around their mean :math:`\bar g` (the trace of their covariance, with
    the population's :math:`1/N`)."""
    if G.ndim != 2 or len(G) < 1:
        raise ValueError(f"Invalid G: expected an (N, d) matrix, got shape {tuple(G.shape)}")
    centred = G - G.mean(0, keepdim=True)
    return float((centred**2).sum(1).mean())


def minibatch_variance(sigma2: float, n: int, batch_size: int, *, replace: bool = False) -> float:
    r"""The exact :math:`\mathbb E\|g_{\mathcal B} - \nabla f\|^2` of a mini-batch mean of
    :math:`B` of :math:`N` per-example gradients with spread :math:`\sigma^2`:
    :math:`\sigma^2/B`, times :math:`(N-B)/(N-1)` without replacement (see the module
    docstring)."""
    n, batch_size = _check_batch(n, batch_size, replace)
    if replace:
        return sigma2 / batch_size
    if n == 1:
        return 0.0
    return sigma2 / batch_size * (n - batch_size) / (n - 1)


def sample_minibatch_gradients(
    G: Tensor,
    batch_size: int,
    n_samples: int,
    *,
    replace: bool = False,
    generator: torch.Generator | None = None,
    chunk_elements: int = 2**22,
) -> Tensor:
    r"""``n_samples`` independent mini-batch gradients :math:`g_{\mathcal B}`, one per row: each
    the mean of the rows of ``G`` at the indices of one batch (see :func:`batch_indices`).
    Small batches gather their rows; large ones use a product (batch counts) @ ``G``, whose
    cost does not grow with :math:`B`; both in chunks of at most about ``chunk_elements``
    entries, to bound memory."""
    n = len(G)
    n, batch_size = _check_batch(n, batch_size, replace)
    n_samples = check_positive_int("n_samples", n_samples)
    gather = 16 * batch_size <= n  # small batches gather their rows, large ones multiply
    d = max(G.shape[1], 1)
    per_chunk = max(1, chunk_elements // max(n, d, batch_size * d if gather else 0))
    out = []
    for start in range(0, n_samples, per_chunk):
        m = min(per_chunk, n_samples - start)
        if replace:
            idx = torch.randint(n, (m, batch_size), generator=generator)
        else:  # m independent random subsets: the first B entries of m random permutations
            idx = torch.rand(m, n, generator=generator).argsort(dim=1)[:, :batch_size]
        if gather:
            out.append(G[idx].mean(1))
        else:  # row s of `counts` says how often each example is in batch s
            counts = torch.zeros(m, n, dtype=G.dtype).scatter_add_(
                1, idx, torch.ones(m, batch_size, dtype=G.dtype)
            )
            out.append(counts @ G / batch_size)
    return torch.cat(out)


def measured_minibatch_variance(
    G: Tensor,
    batch_size: int,
    n_samples: int,
    *,
    replace: bool = False,
    generator: torch.Generator | None = None,
) -> float:
    r"""The Monte Carlo estimate :math:`\frac1S \sum_{s=1}^S \|g_{\mathcal B_s} - \bar g\|^2`
    over ``n_samples`` = :math:`S` sampled batches, :math:`\bar g` the mean of the rows of
    ``G`` (the full gradient). Its expectation is :func:`minibatch_variance`."""
    g_full = G.mean(0)
    gB = sample_minibatch_gradients(G, batch_size, n_samples, replace=replace, generator=generator)
    return float(((gB - g_full) ** 2).sum(1).mean())


def loglog_slope(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    r"""The slope :math:`p` of the least-squares line through :math:`(\log x_k, \log y_k)`: the
    exponent of a power law :math:`y \approx C x^p` (exact for an exact power law)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError("Invalid x, y: expected two 1-D sequences of equal length >= 2")
    if not (np.all(x > 0) and np.all(y > 0) and np.all(np.isfinite(x) & np.isfinite(y))):
        raise ValueError("Invalid x, y: a log-log fit needs finite positive values")
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    X: Tensor,
    y: Tensor,
    *,
    iters: int = 100,
    seed: int = 0,
    tol: float = 1e-6,
) -> float:
    r"""The sharpness :math:`\lambda_{\max}(\nabla^2 f(\theta))` of the loss
    :math:`f = \mathrm{loss\_fn}(\mathrm{model}(X), y)` at the model's current parameters, by
    power iteration on Hessian-vector products (:func:`optlib.linalg.top_hessian_eigenvalue`),
    the measure of Keskar et al. (2017)."""
    params = [p for p in model.parameters() if p.requires_grad]
    result = top_hessian_eigenvalue(
        lambda: loss_fn(model(X), y), params, iters=iters, seed=seed, tol=tol
    )
    return result.eigenvalue
