r"""Multinomial logistic (softmax) regression on scikit-learn's digits: the convex workload.

The model is one linear layer :math:`z = Wx + c` with :math:`W \in \mathbb R^{10 \times 64}`,
and the loss the mean cross-entropy

.. math::
    f(W, c) = \frac1N \sum_{i=1}^N \Bigl(\log \sum_{k} e^{z_{ik}} - z_{i y_i}\Bigr),

which is convex in :math:`(W, c)` (its Hessian is an average of
:math:`(\mathrm{diag}(p_i) - p_i p_i^\top) \otimes \tilde x_i \tilde x_i^\top \succeq 0`,
:math:`p_i = \mathrm{softmax}(z_i)`, :math:`\tilde x_i = (x_i, 1)`), so every run that
converges reaches the same loss. With an L2 penalty :math:`\tfrac\lambda2\|\theta\|^2`
(:func:`l2_loss`) it is :math:`\lambda`-strongly convex, with one minimiser :math:`\theta^\star`
and a finite :math:`f^\star`, which :func:`minimize` finds to rounding with L-BFGS; chapter 2
uses it where a unique answer helps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._seed import derive_seed
from .digits import Dataset, digits


def softmax_regression(
    n_in: int, n_out: int, *, init_scale: float = 0.0, seed: int = 0, dtype=torch.float32
) -> nn.Linear:
    r"""A linear layer ``n_in -> n_out``: zero-initialised by default (the model then predicts the
    uniform distribution, and the run does not depend on a seed), else with weights drawn
    from :math:`\mathcal N(0, \mathrm{init\_scale}^2)` and zero biases."""
    torch.manual_seed(derive_seed(seed))
    layer = nn.Linear(n_in, n_out).to(dtype)
    with torch.no_grad():
        layer.bias.zero_()
        if init_scale == 0.0:
            layer.weight.zero_()
        else:
            layer.weight.normal_(0.0, init_scale)
    return layer


def digits_logreg(*, seed: int = 0, dtype=torch.float32) -> tuple[Dataset, nn.Linear]:
    """The digits data (split by ``seed``) and a zero-initialised softmax regression for it:
    ``(data, model)``; train it with ``torch.nn.functional.cross_entropy``."""
    data = digits(seed=seed, dtype=dtype)
    return data, softmax_regression(data.n_features, data.n_classes, seed=seed, dtype=dtype)


def l2_loss(model: nn.Module, X: Tensor, y: Tensor, l2: float) -> Tensor:
    r"""The regularised loss :math:`\frac1N\sum_i \mathrm{CE}(z_i, y_i) +
    \tfrac{\lambda}{2}\|\theta\|^2` over every trainable parameter (the objective that
    :func:`optlib.experiments.curves.run_curve` trains and records with ``l2=λ``)."""
    loss = nn.functional.cross_entropy(model(X), y)
    if l2:
        loss = loss + 0.5 * l2 * sum(p.pow(2).sum() for p in model.parameters() if p.requires_grad)
    return loss


def minimize(
    model: nn.Module, X: Tensor, y: Tensor, l2: float, *, rounds: int = 5, tol: float = 1e-10
) -> float:
    r"""Minimise :func:`l2_loss` in place with full-batch L-BFGS (strong Wolfe line search)
    until the gradient norm is at most ``tol`` (at most ``rounds`` rounds of 500 iterations) and
    return :math:`f^\star`. Use float64 to reach a gradient norm near rounding."""
    from ..optim import LBFGS

    params = [p for p in model.parameters() if p.requires_grad]
    opt = LBFGS(
        params,
        lr=1.0,
        max_iter=500,
        tolerance_grad=tol,
        tolerance_change=0.0,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = l2_loss(model, X, y, l2)
        loss.backward()
        return loss

    for _ in range(rounds):
        opt.step(closure)
        closure()
        if torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in params])) <= tol:
            break
    with torch.no_grad():
        return float(l2_loss(model, X, y, l2))
