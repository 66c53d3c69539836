"""Checks shared by the tests of Lion, Sophia, LARS, LAMB and schedule-free AdamW.

Each takes a factory ``make_opt(params)`` and, where an optimizer has its own protocol (a
Hessian refresh, a train/eval switch, a batch size), a ``do_step`` callback, so the check itself
stays the same for every optimizer.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import torch
from torch import nn

import optlib
import optlib.problems

from ._parity import make_params, quartic_loss

SHAPES = [(3,), (4, 5), (2, 3, 2)]


def plain_step(opt: torch.optim.Optimizer, params: list[torch.Tensor], i: int) -> None:
    """Zero the gradients, backpropagate :func:`quartic_loss`, step."""
    opt.zero_grad()
    quartic_loss(params).backward()
    opt.step()


def resume_runs(
    make_opt: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    do_step: Callable = plain_step,
    *,
    n: int = 6,
    seed: int = 0,
    shapes=SHAPES,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``2n`` uninterrupted steps, and ``n`` steps + ``torch.save``/``torch.load`` of the
    parameters and ``state_dict`` into a fresh optimizer + ``n`` steps. Returns both endpoints."""
    p_a = make_params(shapes, seed=seed)
    opt_a = make_opt(p_a)
    for i in range(2 * n):
        do_step(opt_a, p_a, i)

    p_b = make_params(shapes, seed=seed)
    opt_b = make_opt(p_b)
    for i in range(n):
        do_step(opt_b, p_b, i)
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in p_b], "opt": opt_b.state_dict()}, buf)
    del opt_b, p_b
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    p_c = [t.clone().requires_grad_() for t in saved["params"]]
    opt_c = make_opt(p_c)
    opt_c.load_state_dict(saved["opt"])
    for i in range(n, 2 * n):
        do_step(opt_c, p_c, i)
    return [p.detach() for p in p_a], [p.detach() for p in p_c]


def assert_resume_bit_identical(make_opt, do_step: Callable = plain_step, **kw) -> None:
    a, c = resume_runs(make_opt, do_step, **kw)
    for i, (x, y) in enumerate(zip(a, c)):
        assert torch.equal(x, y), f"parameter {i} differs after save/load/resume"


def assert_zero_gradient_is_finite(
    make_opt, do_step: Callable | None = None, *, steps: int = 3, zero_params: bool = False
) -> list[torch.Tensor]:
    """Step with all-zero gradients (on random or all-zero parameters); every parameter and
    every floating state tensor must stay finite. Returns the parameters."""
    params = make_params(SHAPES, seed=1)
    if zero_params:
        with torch.no_grad():
            for p in params:
                p.zero_()
    opt = make_opt(params)
    for i in range(steps):
        for p in params:
            p.grad = torch.zeros_like(p)
        if do_step is None:
            opt.step()
        else:
            do_step(opt, params, i)
    for i, p in enumerate(params):
        assert torch.isfinite(p).all(), f"parameter {i} not finite after zero-gradient steps"
    for state in opt.state.values():
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                assert torch.isfinite(v).all(), f"state {k!r} not finite after zero gradients"
    return params


def digits_losses(
    make_opt: Callable[[nn.Module], torch.optim.Optimizer],
    *,
    steps: int = 40,
    do_step: Callable | None = None,
    finish: Callable[[torch.optim.Optimizer], None] | None = None,
) -> tuple[float, float]:
    """Full-batch training of :func:`optlib.problems.digits_mlp` (train split) for ``steps``
    steps; returns the training loss before and after (after calling ``finish(opt)``)."""
    data, model = optlib.problems.digits_mlp(seed=0)
    X, y = data.X_train, data.y_train
    opt = make_opt(model)

    def loss_fn() -> torch.Tensor:
        return nn.functional.cross_entropy(model(X), y)

    with torch.no_grad():
        before = loss_fn().item()
    for i in range(steps):
        if do_step is None:
            opt.zero_grad()
            loss_fn().backward()
            opt.step()
        else:
            do_step(opt, model, X, y, i)
    if finish is not None:
        finish(opt)
    with torch.no_grad():
        after = loss_fn().item()
    return before, after


@pytest.fixture(autouse=True)
def one_thread():
    """Run on one intra-op thread: these tensors are tiny, and on a shared 2-core machine
    threads only wait for each other. (Autouse in every module that imports it.)"""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
