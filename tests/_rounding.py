"""Tolerances for comparing two implementations of one floating-point computation.

Two implementations of the same update rule (optlib's and a transcription, a batched run and K
separate runs) differ only by rounding: each step the two round a few operations differently, by
at most a few ulps of the values involved. How far such a difference travels over ``steps`` steps
depends on the dynamics, not only on ``steps x size x eps``: an Adam-type step divides by
sqrt(v) ~ |g|, so near a minimum a rounding-sized change of the parameters can change the step
by (Hessian x change) / |g|, thousands of times more than the change itself (seen in
``test_schedulefree``: 1.8e-12 apart after 20 float64 steps, 7000 ulps).

So the tolerance is measured, not guessed: :func:`one_ulp_response` runs the reference twice,
from the start and from the start moved by one ulp, and returns how far apart the two ends are.
That is the computation's own amplification of a rounding-sized difference. An error injected
at a later step passes through fewer of the same steps, so taking the start's response for every
step, ``steps x ulps_per_step x max(response, eps x size)`` estimates the largest drift
(:func:`rounding_tolerance`; an estimate, not a theorem: it assumes no late step is far more
sensitive than the whole run). A genuine bug (a missing factor, a wrong step) moves results by
the size of a step, orders of magnitude above it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

ULPS_PER_STEP = 4  # operations an implementation may order or fuse differently in one step


def nudged(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of ``tensors`` moved up by one ulp in every element (leaves requiring grad)."""
    out = []
    for t in tensors:
        up = torch.nextafter(t.detach(), torch.full_like(t.detach(), float("inf")))
        out.append(up.requires_grad_(t.requires_grad))
    return out


def max_abs_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return max(float((x.detach() - y.detach()).abs().max()) for x, y in zip(a, b, strict=True))


def one_ulp_response(
    run: Callable[[list[torch.Tensor]], Sequence[torch.Tensor]], start: Sequence[torch.Tensor]
) -> float:
    """``max |run(start) - run(start moved by one ulp)|``: how far the computation carries a
    rounding-sized change of its input."""
    return max_abs_diff(run([t.detach().clone() for t in start]), run(nudged(start)))


def rounding_tolerance(
    steps: int,
    response: float,
    size: float,
    dtype: torch.dtype,
    ulps_per_step: int = ULPS_PER_STEP,
) -> float:
    """Absolute tolerance for two implementations of ``steps`` steps: each step adds at most
    ``ulps_per_step`` roundings, each carried at most as far as :func:`one_ulp_response` says
    (``response``), and never less far than one ulp of ``size`` (the largest magnitude)."""
    return steps * ulps_per_step * max(response, torch.finfo(dtype).eps * size)
