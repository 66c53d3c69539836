"""optlib.experiments.memory_light: Adafactor's factored estimate (checked against the state of
optlib.Adafactor and against its step), the scalar baseline, the step-size error, and the
LLaMA-style parameter shapes (parameter counts of the published 7B and 70B models)."""

from __future__ import annotations

import math

import pytest
import torch

import optlib
from optlib.experiments.memory_light import (
    LLAMA2_7B,
    LLAMA2_70B,
    DecoderConfig,
    llama_shapes,
    rank_one,
    scalar_estimate,
    step_size_error,
)


def test_rank_one_is_adafactors_estimate():
    """One Adafactor step on the gradient sqrt(V) leaves V's row and column means in its state
    (the decay is 0 at step 1); the step itself is -alpha * G / sqrt(V_hat), unclipped when
    RMS(G / sqrt(V_hat)) <= 1, which pins V_hat entry by entry."""
    g = torch.Generator().manual_seed(0)
    for shape in [(5, 7), (3, 4, 6)]:
        V = torch.rand(shape, generator=g, dtype=torch.float64) + 0.1
        theta = torch.ones(shape, dtype=torch.float64, requires_grad=True)
        opt = optlib.Adafactor([theta], lr=1e-2, d=1e6)
        theta.grad = V.sqrt()
        opt.step()
        state = opt.state[theta]
        R, C = state["row_var"], state["col_var"]
        assert torch.allclose(rank_one(V), R @ C / R.mean(dim=-2, keepdim=True), rtol=1e-13)
        alpha = 1.0 * 1e-2  # RMS(theta_0) = 1, rho_1 = min(lr, 1)
        step = (theta.detach() - 1.0) / -alpha
        assert torch.allclose(step, V.sqrt() / rank_one(V).sqrt(), rtol=1e-12)


def test_rank_one_properties():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(6, 1, generator=g, dtype=torch.float64)
    b = torch.rand(1, 4, generator=g, dtype=torch.float64)
    assert torch.allclose(rank_one(a @ b), a @ b, rtol=1e-14)  # exact for rank one
    V = torch.rand(6, 4, generator=g, dtype=torch.float64)
    V_hat = rank_one(V)
    assert torch.allclose(V_hat.mean(1), V.mean(1), rtol=1e-13)  # same row means
    assert torch.allclose(V_hat.mean(0), V.mean(0), rtol=1e-13)  # same column means
    assert torch.equal(rank_one(torch.zeros(3, 2), eps=1e-30), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="order >= 2"):
        rank_one(torch.ones(3))


def test_scalar_estimate_and_step_size_error():
    V = torch.tensor([[1.0, 4.0], [0.0, 9.0]], dtype=torch.float64)
    assert torch.equal(scalar_estimate(V), torch.full((2, 2), 3.5, dtype=torch.float64))
    errors = step_size_error(V, torch.full((2, 2), 4.0, dtype=torch.float64))
    assert errors.tolist() == [0.5, 1.0, 1.5]  # the zero entry is left out


def test_llama_shapes_count_the_published_models():
    n7 = sum(math.prod(s) for _, s, _ in llama_shapes(LLAMA2_7B))
    n70 = sum(math.prod(s) for _, s, _ in llama_shapes(LLAMA2_70B))
    assert n7 == 6_738_415_616  # LLaMA-2 7B, as its checkpoints count it
    assert n70 == 68_976_648_192  # LLaMA-2 70B (grouped-query attention, 8 KV heads)
    roles = {role for _, _, role in llama_shapes(LLAMA2_7B)}
    assert roles == {"embedding", "hidden", "norm", "head"}
    tiny = llama_shapes(DecoderConfig(8, 1, 16, 10, n_heads=4, n_kv_heads=2))
    assert [s for _, s, _ in tiny] == [(10, 8), (8, 8), (4, 8), (4, 8), (8, 8), (16, 8),
                                      (16, 8), (8, 16), (8,), (8,), (8,), (10, 8)]  # fmt: skip
