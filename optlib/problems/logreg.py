r"""Multinomial logistic (softmax) regression on scikit-learn's digits: the convex workload.

The model is one linear layer :math:`z = Wx + c` with :math:`W \in \mathbb R^{10 \times 64}`,
and the loss the mean cross-entropy

.. math::
    f(W, c) = \frac1N \sum_{i=1}^N \Bigl(\log \sum_{k} e^{z_{ik}} - z_{i y_i}\Bigr),

which is convex in :math:`(W, c)` (its Hessian is an average of
:math:`(\mathrm{diag}(p_i) - p_i p_i^\top) \otimes \tilde x_i \tilde x_i^\top \succeq 0`,
:math:`p_i = \mathrm{softmax}(z_i)`, :math:`\tilde x_i = (x_i, 1)`), so every run that
converges reaches the same loss; chapter 2 uses it where a unique answer helps.
"""

from __future__ import annotations

import torch
from torch import nn

from .digits import Dataset, digits


def softmax_regression(
    n_in: int, n_out: int, *, init_scale: float = 0.0, seed: int = 0, dtype=torch.float32
) -> nn.Linear:
    """A linear layer ``n_in -> n_out``: zero-initialised by default (the model then predicts the
    uniform distribution, and the run does not depend on a seed), else with weights drawn
    from :math:`\\mathcal N(0, \\mathrm{init\\_scale}^2)` and zero biases."""
    torch.manual_seed(seed)
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
