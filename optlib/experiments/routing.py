r"""How jumpy a mixture-of-experts router is during training (the MoE toy of
:mod:`optlib.problems.moe`).

:class:`RoutingTracker` is a ``callback`` for
:func:`optlib.experiments.stacked.train_stacked`: after every step it routes a fixed probe set
of inputs through every stacked copy and records the *routing-change rate*, the fraction of
probe inputs whose top expert differs from the previous step's
(:func:`optlib.problems.moe.routing_change`), and the fraction that differs from the routing
at the start. :func:`routing_rates` does the same for one model trained by a plain loop.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..problems.moe import MoE
from .stacked import BatchStream, StackedModels

__all__ = ["RoutingTracker", "routing_rates"]


class RoutingTracker:
    """Records, for every step ``t`` and copy ``k``, the routing-change rate ``rates[t-1, k]``
    between steps ``t-1`` and ``t``, and ``drift[t-1, k]``, the fraction of probe inputs routed
    to another expert than at step 0. Call ``start`` before training (``train_stacked``
    calls the tracker itself after each step)."""

    def __init__(self, probe: Tensor) -> None:
        self.probe = probe
        self._first: Tensor | None = None
        self._last: Tensor | None = None
        self.history: list[tuple[np.ndarray, np.ndarray]] = []

    @torch.no_grad()
    def _routes(self, stacked: StackedModels) -> Tensor:
        return stacked(self.probe, route=True)

    def start(self, stacked: StackedModels) -> RoutingTracker:
        self._first = self._last = self._routes(stacked)
        self.history.clear()
        return self

    def __call__(self, t: int, stacked: StackedModels) -> None:
        if self._last is None:
            raise RuntimeError("call RoutingTracker.start(stacked) before training")
        now = self._routes(stacked)
        changed = (now != self._last).double().mean(1).numpy()
        drift = (now != self._first).double().mean(1).numpy()
        self.history.append((changed, drift))
        self._last = now

    @property
    def rates(self) -> np.ndarray:
        """Routing-change rate per step and copy, shape ``(steps, K)``."""
        return np.array([c for c, _ in self.history])

    @property
    def drift(self) -> np.ndarray:
        """Fraction routed differently from step 0, shape ``(steps, K)``."""
        return np.array([d for _, d in self.history])


def routing_rates(
    model: MoE,
    optimizer: torch.optim.Optimizer,
    X: Tensor,
    y: Tensor,
    probe: Tensor,
    *,
    steps: int,
    batch_size: int,
    seed: int = 0,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = nn.functional.cross_entropy,
) -> np.ndarray:
    """Train one MoE for ``steps`` mini-batch steps (the batches of
    :func:`optlib.experiments.train.run` for ``seed``) and return the routing-change rate of
    the probe set after every step, shape ``(steps,)``."""
    batches = BatchStream(len(y), batch_size, seed)
    with torch.no_grad():
        last = model(probe, route=True)
    rates = []
    for _ in range(steps):
        idx = batches.next()
        optimizer.zero_grad()
        loss_fn(model(X[idx]), y[idx]).backward()
        optimizer.step()
        with torch.no_grad():
            now = model(probe, route=True)
        rates.append(float((now != last).double().mean()))
        last = now
    return np.array(rates)
