r"""A mixture-of-experts toy: a router sends each input to one of a few small experts.

**Data** (:func:`moe_clusters`): inputs in :math:`\mathbb{R}^d` drawn around ``n_clusters``
seeded centres, :math:`x = \mu_k + \sigma\xi`; the label of an input of cluster :math:`k` comes
from that cluster's own random linear teacher, :math:`y = \arg\max_c (T_k(x - \mu_k))_c`. One
small expert per cluster can learn its teacher; a router that sends each cluster to its own
expert solves the task.

**Model** (:class:`MoE`): a linear router :math:`r(x) = W_r x + b_r \in \mathbb{R}^E`, gate
probabilities :math:`p = \operatorname{softmax}(r(x))`, and :math:`E` one-hidden-layer tanh
experts :math:`e_j`. With ``top_k = 1`` (Switch-style routing, Fedus et al. 2022) the output is
:math:`p_{j^*}(x)\, e_{j^*}(x)` with :math:`j^* = \arg\max_j r_j(x)`; in general the
:math:`k` largest gates, not renormalised, weight their experts (renormalising would give the
router no gradient when :math:`k = 1`). The top-:math:`k` choice is discrete, so a small change
of the router's weights can send an input to another expert: early in training, while the
router's logits are close to each other, the routing is jumpy.

**Measuring the jumps.** ``model(x, route=True)`` returns each input's top expert
:math:`j^*(x)`; :func:`routing_change` is the fraction of a fixed set of inputs whose expert
changed between two moments of training (the *routing-change rate* when taken between
consecutive steps), and :func:`expert_load` the fraction of inputs each expert receives. There
is no load-balancing loss: collapse onto few experts is one of the failures the toy can show.
The experts are computed densely (every expert on every input, then gated), which is the
cheapest way for a handful of tiny experts on a CPU and lets :func:`torch.func.vmap` batch
many copies of the model.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._seed import derive_seed
from .digits import Dataset

__all__ = ["MoE", "expert_load", "moe_clusters", "moe_toy", "routing_change"]


def moe_clusters(
    *,
    n_train: int = 2048,
    n_test: int = 1024,
    n_features: int = 16,
    n_clusters: int = 4,
    n_classes: int = 4,
    separation: float = 3.0,
    noise: float = 1.0,
    seed: int = 0,
    dtype=torch.float32,
) -> Dataset:
    r"""Seeded cluster data with one linear teacher per cluster (see the module docstring).

    Centres are ``separation`` times random unit vectors; ``noise`` is :math:`\sigma`. Train
    and test examples are drawn independently from the same mixture (equal cluster weights).
    """
    for name, value in (("n_train", n_train), ("n_test", n_test), ("n_features", n_features),
                        ("n_clusters", n_clusters)):  # fmt: skip
        if value < 1:
            raise ValueError(f"Invalid {name}: {value}; need {name} >= 1")
    if n_classes < 2:
        raise ValueError(f"Invalid n_classes: {n_classes}; need n_classes >= 2")
    g = torch.Generator().manual_seed(derive_seed(seed))
    centres = torch.randn(n_clusters, n_features, generator=g, dtype=torch.float64)
    centres = separation * centres / centres.norm(dim=1, keepdim=True)
    teachers = torch.randn(n_clusters, n_classes, n_features, generator=g, dtype=torch.float64)

    def draw(n: int) -> tuple[Tensor, Tensor]:
        k = torch.randint(n_clusters, (n,), generator=g)
        xi = torch.randn(n, n_features, generator=g, dtype=torch.float64)
        y = torch.einsum("ncd,nd->nc", teachers[k], xi).argmax(1)
        return (centres[k] + noise * xi).to(dtype), y

    X_train, y_train = draw(n_train)
    X_test, y_test = draw(n_test)
    return Dataset(X_train, y_train, X_test, y_test)


class MoE(nn.Module):
    r"""A router over ``n_experts`` one-hidden-layer tanh experts (see the module docstring).

    Parameters: ``router`` (an :class:`~torch.nn.Linear`), and the experts' stacked weights
    ``W1 (E, hidden, in)``, ``b1 (E, hidden)``, ``W2 (E, out, hidden)``, ``b2 (E, out)``,
    initialised as :class:`~torch.nn.Linear` would initialise each expert.
    ``forward(x (B, in)) -> logits (B, out)``; ``forward(x, route=True) -> (B,)`` top experts.
    """

    def __init__(
        self, n_in: int, n_hidden: int, n_out: int, *, n_experts: int = 4, top_k: int = 1
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"Invalid top_k: {top_k}; need 1 <= top_k <= n_experts")
        self.top_k = top_k
        self.router = nn.Linear(n_in, n_experts)
        E = n_experts

        def uniform(*shape: int, fan_in: int) -> nn.Parameter:
            bound = 1 / math.sqrt(fan_in)
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        self.W1 = uniform(E, n_hidden, n_in, fan_in=n_in)
        self.b1 = uniform(E, n_hidden, fan_in=n_in)
        self.W2 = uniform(E, n_out, n_hidden, fan_in=n_hidden)
        self.b2 = uniform(E, n_out, fan_in=n_hidden)

    @property
    def n_experts(self) -> int:
        return self.W1.shape[0]

    def gates(self, x: Tensor) -> Tensor:
        """The gate of every expert for every input, zero outside the top ``k``: ``(B, E)``."""
        p = torch.softmax(self.router(x), dim=-1)
        chosen = p.topk(self.top_k, dim=-1).indices
        mask = torch.zeros_like(p).scatter(-1, chosen, 1.0)
        return p * mask

    def forward(self, x: Tensor, *, route: bool = False) -> Tensor:
        if route:
            return self.router(x).argmax(-1)
        h = torch.tanh(torch.einsum("bi,ehi->beh", x, self.W1) + self.b1)
        out = torch.einsum("beh,eoh->beo", h, self.W2) + self.b2
        return torch.einsum("be,beo->bo", self.gates(x), out)


def routing_change(before: Tensor, after: Tensor) -> float:
    """Fraction of inputs whose top expert differs between two routings of the same inputs."""
    if before.shape != after.shape:
        raise ValueError(f"routings of different shapes: {tuple(before.shape)}, "
                         f"{tuple(after.shape)}")  # fmt: skip
    return float((before != after).double().mean())


def expert_load(routes: Tensor, n_experts: int) -> Tensor:
    """Fraction of the inputs routed to each expert, shape ``(n_experts,)`` (sums to 1)."""
    return torch.bincount(routes.reshape(-1), minlength=n_experts).double() / routes.numel()


def moe_model(
    n_in: int = 16, n_hidden: int = 16, n_out: int = 4, *, n_experts: int = 4, top_k: int = 1,
    seed: int = 0, dtype=torch.float32,
) -> MoE:  # fmt: skip
    """A seeded :class:`MoE`."""
    torch.manual_seed(derive_seed(seed))
    return MoE(n_in, n_hidden, n_out, n_experts=n_experts, top_k=top_k).to(dtype)


def moe_toy(
    *, n_experts: int = 4, top_k: int = 1, n_hidden: int = 16, seed: int = 0, data_seed: int = 0,
    dtype=torch.float32, data_options: dict | None = None,
) -> tuple[Dataset, MoE]:  # fmt: skip
    """The cluster data (from ``data_seed``) and a fresh seeded MoE for it: ``(data, model)``."""
    data = moe_clusters(seed=data_seed, dtype=dtype, **(data_options or {}))
    model = moe_model(
        data.n_features, n_hidden, data.n_classes, n_experts=n_experts, top_k=top_k, seed=seed,
        dtype=dtype,
    )  # fmt: skip
    return data, model
