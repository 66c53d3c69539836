"""Helpers for differential tests: run an optlib optimizer and its reference side by side."""

from __future__ import annotations

from collections.abc import Callable

import torch


def make_params(shapes, *, dtype=torch.float64, seed=0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def clone_params(params) -> list[torch.Tensor]:
    return [p.detach().clone().requires_grad_() for p in params]


def quartic_loss(params) -> torch.Tensor:
    """A smooth, non-quadratic loss so gradients change from step to step in every coordinate."""
    total = 0
    for i, p in enumerate(params):
        total = total + ((p - 0.3 * (i + 1)) ** 2).sum() + 0.1 * (p**4).sum() + 0.05 * p.sum() ** 2
    return total


def run(
    opt_factory: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    params: list[torch.Tensor],
    steps: int,
    loss_fn=quartic_loss,
    *,
    use_closure: bool = False,
    scheduler_factory=None,
) -> list[torch.Tensor]:
    """Take ``steps`` steps on ``loss_fn`` and return the parameter trajectory's last point."""
    opt = opt_factory(params)
    sched = scheduler_factory(opt) if scheduler_factory else None
    for _ in range(steps):
        if use_closure:

            def closure():
                opt.zero_grad()
                loss = loss_fn(params)
                loss.backward()
                return loss

            opt.step(closure)
        else:
            opt.zero_grad()
            loss_fn(params).backward()
            opt.step()
        if sched is not None:
            sched.step()
    return [p.detach().clone() for p in params]


def assert_close_lists(got, expected, *, rtol=1e-12, atol=None, what="parameters"):
    """Each pair of tensors equal to ``rtol`` relative, and to ``atol`` absolute (default: rtol
    times the expected tensor's largest entry).

    Why these defaults: a parity run takes 10-30 float64 steps, and two implementations round
    a handful of operations per step differently, a few ulps of the parameters' scale each, so
    ~30 x 4 ulps = 3e-14 of that scale; rtol 1e-12 (4500 ulps) leaves a margin for the modest
    growth of such differences along these runs (measured: every parity test passes under
    random hypothesis draws, HYPOTHESIS_PROFILE=explore). An entry that cancels to near 0 is
    known only to ulps of the scale, never of itself: hence an absolute part proportional to
    the scale, not a fixed 1e-14. Runs whose dynamics amplify rounding (an Adam step near a
    minimum divides by sqrt(v) ~ |g|) need a measured tolerance: tests/_rounding.py."""
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        tol = atol if atol is not None else rtol * float(b.detach().abs().max())
        torch.testing.assert_close(
            a, b, rtol=rtol, atol=tol, msg=lambda m, i=i: f"{what}[{i}]: {m}"
        )
