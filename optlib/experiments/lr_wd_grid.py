r"""Hyperparameter grids on the digits MLP, many training runs at once (chapter 6).

A grid of learning rates :math:`\eta` and weight decays :math:`\lambda` needs one training run
per cell. The runs are small (a one-hidden-layer tanh MLP on scikit-learn's 8×8 digits), so most
of their time would go to Python overhead; :class:`BatchedMLP` instead stacks :math:`K` MLPs,
each initialised exactly like ``problems.mlp(..., seed=seed)``, and evaluates them with one
batched matrix product per layer. The sum of the :math:`K` losses has, for each model, the
gradient of that model's own loss, so one ``backward()`` and one step of an element-wise
optimizer (Adam, SGD...) whose param groups hold slices of the stacked weights (one group per
learning rate) advance all :math:`K` runs as :math:`K` separate runs would, on the same
mini-batches. Each run's weight decay enters as its own L2 penalty or decoupled decay
(:func:`train_batched`); the tests check every run against ``optlib.Adam(weight_decay=λ)``
and ``optlib.AdamW(weight_decay=λ)`` run alone.

:func:`digits_grid` runs such a sweep and returns plain JSON data (so that a chapter can memoise
it on disk with :func:`optlib.course.cache.memoize`). :func:`best_per_row` and
:func:`optimum_slope` summarise a grid by where its per-row optima lie;
:func:`single_decay_penalty` by what one decay for every row costs, which does not depend on
where inside a flat row the minimum happens to fall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .._seed import derive_seed
from ..problems import digits, mlp

__all__ = [
    "BatchedMLP",
    "best_per_row",
    "digits_grid",
    "optimum_slope",
    "single_decay_penalty",
    "train_batched",
]


class BatchedMLP(nn.Module):
    r"""``n_models`` one-hidden-layer tanh MLPs evaluated together.

    The weights of all models live in four stacked tensors (``W1`` of shape ``(n_models,
    n_hidden, n_in)``, ``b1``, ``W2``, ``b2``), so a forward and backward pass costs a few
    batched kernels. Every model starts from the weights of ``problems.mlp(n_in, n_hidden,
    n_out, seed=seed)``. ``forward(X)`` maps a batch ``(B, n_in)`` shared by all models to logits
    ``(n_models, B, n_out)``.

    With ``norm=True`` the hidden pre-activations are layer-normalised (no gain or shift), and
    with a ``temperature`` :math:`\tau` the logits are too and then multiplied by :math:`\tau`.
    With both, every weight is *scale-invariant*: multiplying ``(W1, b1)`` or ``(W2, b2)`` by a
    constant leaves the function unchanged, as for the convolutions before batch norm in the
    ResNets of Loshchilov & Hutter (2019).
    """

    def __init__(
        self,
        n_models: int,
        n_in: int,
        n_hidden: int,
        n_out: int,
        *,
        seed: int = 0,
        norm: bool = False,
        temperature: float | None = None,
    ) -> None:
        super().__init__()
        self.norm, self.temperature = norm, temperature
        ref = mlp(n_in, n_hidden, n_out, seed=seed)
        first, last = ref[0], ref[2]

        def stacked(t: Tensor) -> nn.Parameter:
            p = nn.Parameter(t.detach().unsqueeze(0).repeat(n_models, *([1] * t.dim())))
            p.grad = torch.zeros_like(p)
            return p

        self.W1, self.b1 = stacked(first.weight), stacked(first.bias)
        self.W2, self.b2 = stacked(last.weight), stacked(last.bias)

    @property
    def n_models(self) -> int:
        return self.W1.shape[0]

    def stacked(self) -> list[nn.Parameter]:
        """``[W1, b1, W2, b2]``, each with a leading model dimension."""
        return [self.W1, self.b1, self.W2, self.b2]

    def views(self, start: int, stop: int) -> list[Tensor]:
        """The parameters of models ``start, ..., stop - 1`` as views into the stacked tensors,
        whose ``.grad`` are views into the stacked gradients. Give them to an optimizer and its
        in-place updates train exactly those models. Clear gradients with :meth:`zero_grad_`
        (in place), never with ``set_to_none``, or the views lose their gradients."""
        out = []
        for p in self.stacked():
            view = p.detach()[start:stop]  # shares storage with p
            view.grad = p.grad[start:stop]  # shares storage with p.grad
            out.append(view)
        return out

    def zero_grad_(self) -> None:
        """Zero the stacked gradients in place (the views keep pointing at them)."""
        for p in self.stacked():
            p.grad.zero_()

    def squared_norms(self) -> Tensor:
        r""":math:`\|\theta_k\|^2` of every model, shape ``(n_models,)``."""
        return sum(p.pow(2).flatten(1).sum(1) for p in self.stacked())

    def forward(self, X: Tensor) -> Tensor:
        """Logits of the :math:`K` models on the same inputs, shape ``(K, batch, classes)``."""
        z = torch.matmul(X, self.W1.transpose(1, 2)) + self.b1[:, None, :]
        if self.norm:
            z = nn.functional.layer_norm(z, z.shape[-1:])
        out = torch.matmul(torch.tanh(z), self.W2.transpose(1, 2)) + self.b2[:, None, :]
        if self.temperature is not None:
            out = self.temperature * nn.functional.layer_norm(out, out.shape[-1:])
        return out


def _per_model_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy of each model, shape ``(n_models,)``."""
    K, B, C = logits.shape
    losses = nn.functional.cross_entropy(logits.reshape(K * B, C), y.repeat(K), reduction="none")
    return losses.reshape(K, B).mean(1)


def train_batched(
    model: BatchedMLP,
    optimizer: torch.optim.Optimizer,
    X: Tensor,
    y: Tensor,
    *,
    steps: int,
    batch_size: int,
    weight_decay: Tensor | None = None,
    decoupled: bool = False,
    seed: int = 0,
    schedule: str = "cosine",
) -> None:
    r"""Train every model of ``model`` for ``steps`` steps on the same seeded mini-batches
    (drawn without replacement, reshuffled every epoch).

    ``optimizer`` holds :meth:`BatchedMLP.views` in groups, each model in exactly one group, in
    model order; its own ``weight_decay`` should be 0. ``weight_decay`` gives model :math:`k` its
    :math:`\lambda_k`: an L2 penalty :math:`\tfrac{\lambda_k}{2}\|\theta_k\|^2` added to its
    loss (the same as the optimizer's ``weight_decay=λ_k``), or with ``decoupled`` the decay
    :math:`\theta_k \leftarrow (1-\eta_k\lambda_k)\,\theta_k` with its group's current
    :math:`\eta_k`, applied after the backward pass and before the step, as AdamW does.
    ``schedule`` is ``"cosine"`` (:math:`\eta_t = \eta\,\tfrac12(1+\cos(\pi t/T))`, as in
    Loshchilov & Hutter's experiments) or ``"constant"``; it multiplies every group's ``lr``.
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"Invalid schedule: {schedule!r}; allowed are 'cosine', 'constant'")
    factor = (
        (lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)))
        if schedule == "cosine"
        else (lambda t: 1.0)
    )
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    sizes = [len(group["params"][0]) for group in optimizer.param_groups]
    if sum(sizes) != model.n_models:
        raise ValueError("the optimizer's groups must hold every model exactly once")
    g = torch.Generator().manual_seed(derive_seed(seed))
    n = len(y)
    per_epoch = max(1, n // batch_size)
    perm = torch.randperm(n, generator=g)
    for t in range(steps):
        k = t % per_epoch
        if k == 0 and t > 0:
            perm = torch.randperm(n, generator=g)
        idx = perm[k * batch_size : (k + 1) * batch_size]
        model.zero_grad_()
        loss = _per_model_loss(model(X[idx]), y[idx]).sum()
        if weight_decay is not None and not decoupled:
            loss = loss + 0.5 * (weight_decay * model.squared_norms()).sum()
        loss.backward()
        if weight_decay is not None and decoupled:
            lr = torch.cat(
                [torch.full((m,), float(gr["lr"])) for m, gr in zip(sizes, optimizer.param_groups)]
            )
            with torch.no_grad():
                for p in model.stacked():
                    p.mul_((1 - lr * weight_decay).reshape(-1, *[1] * (p.dim() - 1)))
        optimizer.step()
        sched.step()


def digits_grid(
    optimizer: str,
    settings: list,
    *,
    decoupled: bool = False,
    options: dict | None = None,
    n_train: int = 1348,
    n_hidden: int = 64,
    norm: bool = False,
    temperature: float | None = None,
    label_noise: float = 0.0,
    batch_size: int = 32,
    steps: int = 500,
    schedule: str = "cosine",
    seed: int = 0,
) -> dict:
    r"""Train the digits MLP once per ``(lr, weight_decay)`` pair in ``settings`` and report
    each run's final losses and accuracies.

    Run :math:`k` is ``getattr(optlib, optimizer)`` (e.g. ``"Adam"``, ``"SGD"``, with
    ``options``) at learning rate :math:`\eta_k` with weight decay :math:`\lambda_k` as an L2
    penalty (``decoupled=False``: ``optimizer="Adam"`` is ``optlib.Adam(weight_decay=λ)``) or as
    decoupled decay (``decoupled=True``: ``optimizer="Adam"`` is ``optlib.AdamW(weight_decay=λ)``).
    Runs that share a learning rate share a param group (see :func:`train_batched`).

    Every run starts from the same seeded weights and sees the same mini-batches of the first
    ``n_train`` training images, a fraction ``label_noise`` of whose labels are replaced by
    seeded random ones; the test set is the usual held-out quarter. ``n_hidden``, ``norm`` and
    ``temperature`` choose the :class:`BatchedMLP`. Returns ``{"settings", "train_loss",
    "test_loss", "test_accuracy"}``, lists aligned with ``settings`` (NaN for a diverged run).
    """
    import optlib

    cls = getattr(optlib, optimizer, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ValueError(f"Invalid optimizer: {optimizer!r} is not an optlib optimizer")
    data = digits(seed=seed)
    X, y = data.X_train[:n_train], data.y_train[:n_train].clone()
    if label_noise:
        g = torch.Generator().manual_seed(derive_seed(seed + 1))
        flip = torch.rand(len(y), generator=g) < label_noise
        y[flip] = torch.randint(0, data.n_classes, (int(flip.sum()),), generator=g)
    order = sorted(range(len(settings)), key=lambda k: float(settings[k][0]))
    lrs = [float(settings[k][0]) for k in order]
    wds = torch.tensor([float(settings[k][1]) for k in order])
    model = BatchedMLP(
        len(settings), data.n_features, n_hidden, data.n_classes, seed=seed, norm=norm,
        temperature=temperature,
    )  # fmt: skip
    groups, start = [], 0
    for lr in sorted(set(lrs)):
        stop = start + lrs.count(lr)
        groups.append({"params": model.views(start, stop), "lr": lr})
        start = stop
    opt = cls(groups, foreach=True, **(options or {}))
    train_batched(
        model, opt, X, y, steps=steps, batch_size=batch_size, weight_decay=wds,
        decoupled=decoupled, seed=seed, schedule=schedule,
    )  # fmt: skip
    with torch.no_grad():
        train_loss = _per_model_loss(model(X), y)
        logits = model(data.X_test)
        test_loss = _per_model_loss(logits, data.y_test)
        accuracy = (logits.argmax(-1) == data.y_test).double().mean(1)
    back = [0] * len(order)
    for position, k in enumerate(order):
        back[k] = position
    return {
        "settings": [[float(lr), float(wd)] for lr, wd in settings],
        "train_loss": [float(train_loss[back[k]]) for k in range(len(settings))],
        "test_loss": [float(test_loss[back[k]]) for k in range(len(settings))],
        "test_accuracy": [float(accuracy[back[k]]) for k in range(len(settings))],
    }


def best_per_row(values: Sequence[Sequence[float]], columns: Sequence[float]) -> np.ndarray:
    r"""For each row of a grid ``values[i][j]`` (lower is better, NaN = diverged), the column
    coordinate of the minimum, refined by a parabola through the minimum and its two neighbours
    in ``log10(columns)`` (the columns must be log-spaced); an edge minimum is returned as is."""
    V = np.where(np.isfinite(np.asarray(values, float)), np.asarray(values, float), np.inf)
    c = np.log10(np.asarray(columns, float))
    out = []
    for row in V:
        j = int(np.argmin(row))
        best = c[j]
        if 0 < j < len(row) - 1 and np.all(np.isfinite(row[j - 1 : j + 2])):
            a, b, d = row[j - 1], row[j], row[j + 1]
            curvature = a - 2 * b + d
            if curvature > 0:
                best = c[j] + 0.5 * (c[1] - c[0]) * (a - d) / curvature
        out.append(10**best)
    return np.array(out)


def optimum_slope(rows: Sequence[float], best: Sequence[float]) -> float:
    r"""The slope of :math:`\log_{10}` (best column) against :math:`\log_{10}` (row) by least
    squares: 0 when the optimum does not move across rows (axis-aligned), :math:`-1` when it
    moves along the diagonal :math:`\text{row}\times\text{column} = \text{const}`."""
    return float(np.polyfit(np.log10(rows), np.log10(best), 1)[0])


def single_decay_penalty(values: Sequence[Sequence[float]]) -> tuple[float, int]:
    r"""What the best *single* column costs across the rows of a grid ``values[i][j]`` (lower is
    better, NaN = diverged): with :math:`R_{ij} = V_{ij} / \min_k V_{ik}` (1 at each row's own
    best column), returns :math:`\min_j \max_i R_{ij}` and the column :math:`j` that attains
    it. 1 means one decay is the best for every learning rate (a separable grid); a diagonal
    good region makes every fixed column bad somewhere, so the penalty is large. Unlike the
    slope of the per-row optima it is not moved by rows that are flat to a few per cent."""
    V = np.asarray(values, float)
    V = np.where(np.isfinite(V), V, np.inf)
    relative = V / V.min(axis=1, keepdims=True)
    worst = relative.max(axis=0)
    j = int(np.argmin(worst))
    return float(worst[j]), j
