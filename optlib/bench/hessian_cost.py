r"""What Sophia's curvature costs per step, measured interleaved (chapter 9).

On one model and one batch, :func:`iteration_costs` times the pieces of a training iteration
round-robin (:func:`optlib.bench.steps.interleaved_times`: ``warmup`` untimed rounds, then
``rounds`` rounds calling each piece, the order reversed every other round, so a busy machine
slows them alike). Each timed sample is ``block`` consecutive calls of one piece: on a shared
CPU the scheduler takes the processor away for milliseconds at a time, and a sample long enough
to contain such pauses in proportion to its length keeps the ratios between the pieces right
(a median of single short calls can land all on one side of them). The pieces:

* ``gradient``: ``zero_grad``, forward, backward;
* ``HVP``: one Hessian-vector product by double backward (:func:`optlib.linalg.hvp`: forward,
  backward with a graph, a second backward);
* ``AdamW iteration`` and ``SophiaG iteration``: forward, backward and the optimizer's
  ``step`` (SophiaG with ``bs`` = ``tokens``);
* ``GNB refresh``: SophiaG's Hessian refresh, a forward, a backward of the cross-entropy
  against labels sampled from the model (:func:`optlib.optim.sophia.gnb_loss`) and
  ``update_hessian()``;
* ``Hutchinson refresh``: SophiaH's ``update_hessian(closure)``, one Rademacher probe.

Each piece runs on its own copy of the model, so no optimizer steps another's parameters. The
amortised cost of a Sophia step that refreshes every :math:`k` steps is
``SophiaG iteration + GNB refresh / k`` (:func:`amortised`). Times are wall-clock seconds of
this machine: display them, never assert them.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable

import torch
from torch import Tensor, nn

import optlib
from optlib.linalg import hvp
from optlib.optim.sophia import gnb_loss

from .steps import interleaved_times

__all__ = ["KINDS", "amortised", "iteration_costs"]

KINDS = (
    "gradient", "HVP", "AdamW iteration", "SophiaG iteration", "GNB refresh",
    "Hutchinson refresh",
)  # fmt: skip


def iteration_costs(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    *,
    tokens: int,
    warmup: int = 3,
    rounds: int = 15,
    block: int = 5,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Seconds per call of each of ``KINDS`` on ``model`` and the batch ``X, y``, one
    number per round (the mean over a block of ``block`` calls), measured interleaved (see the
    module docstring); ``tokens`` is SophiaG's ``bs``."""
    if tokens < 1:
        raise ValueError(f"Invalid tokens: {tokens}; need tokens >= 1")
    if block < 1:
        raise ValueError(f"Invalid block: {block}; need block >= 1")
    copies = {kind: copy.deepcopy(model) for kind in KINDS}
    params = {kind: [p for p in m.parameters() if p.requires_grad] for kind, m in copies.items()}
    adamw = optlib.AdamW(params["AdamW iteration"], lr=1e-6)
    sophiag = optlib.SophiaG(params["SophiaG iteration"], lr=1e-6)
    refreshed = optlib.SophiaG(params["GNB refresh"], lr=1e-6)
    sophiah = optlib.SophiaH(params["Hutchinson refresh"], lr=1e-6)
    generator = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params["HVP"]]

    def loss_of(kind: str) -> Tensor:
        return loss_fn(copies[kind](X), y)

    def gradient() -> None:
        for p in params["gradient"]:
            p.grad = None
        loss_of("gradient").backward()

    def iteration(kind: str, opt: torch.optim.Optimizer, **step_kwargs) -> Callable[[], None]:
        def run() -> None:
            opt.zero_grad()
            loss_of(kind).backward()
            opt.step(**step_kwargs)

        return run

    def gnb_refresh() -> None:
        refreshed.zero_grad()
        gnb_loss(copies["GNB refresh"](X), generator=generator).backward()
        refreshed.update_hessian()

    calls = {
        "gradient": gradient,
        "HVP": lambda: hvp(lambda: loss_of("HVP"), params["HVP"], v),
        "AdamW iteration": iteration("AdamW iteration", adamw),
        "SophiaG iteration": iteration("SophiaG iteration", sophiag, bs=tokens),
        "GNB refresh": gnb_refresh,
        "Hutchinson refresh": lambda: sophiah.update_hessian(
            lambda: loss_of("Hutchinson refresh"), generator=generator
        ),
    }
    def blocked(call: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(block):
                call()

        return run

    times = interleaved_times({kind: blocked(call) for kind, call in calls.items()},
                              warmup=warmup, rounds=rounds)  # fmt: skip
    return {kind: [t / block for t in ts] for kind, ts in times.items()}


def amortised(times: dict[str, list[float]], every: int) -> dict[str, float]:
    """Median seconds per training step: AdamW's iteration, and SophiaG's (and SophiaH's, with
    the SophiaG step) iteration plus its refresh every ``every`` steps."""
    if every < 1:
        raise ValueError(f"Invalid every: {every}; need every >= 1")
    med = {kind: statistics.median(ts) for kind, ts in times.items()}
    step = med["SophiaG iteration"]
    return {
        "AdamW": med["AdamW iteration"],
        "SophiaG": step + med["GNB refresh"] / every,
        "SophiaH": step + med["Hutchinson refresh"] / every,
    }
