"""optlib.linalg.kronecker: full-matrix AdaGrad, Shampoo's Kronecker factors, K-FAC's Fisher
blocks and the Newton-Schulz map, against direct computations and against optlib's optimizers.

Tolerances: float64 throughout; matrix roots of well-conditioned matrices of size <= 64 agree to
about 1e-12 relative, and to 1e-9 where a root of a nearly singular sum amplifies rounding
(epsilon 1e-12 next to eigenvalues of order 1 gives a condition number of 1e12 under a fourth
root: 1e3 times machine epsilon, times the size)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import optlib
from optlib.linalg import kronecker
from optlib.linalg.curvature import gauss_newton
from optlib.optim._matrix import matrix_inverse_root
from optlib.optim.muon import NS_COEFFICIENTS, newton_schulz5


def _grads(seed: int, T: int, m: int, n: int, rank: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if rank is None:
        return torch.randn(T, m, n, generator=g, dtype=torch.float64)
    a = torch.randn(T, m, rank, generator=g, dtype=torch.float64)
    b = torch.randn(T, rank, n, generator=g, dtype=torch.float64)
    return a @ b


def _steps(make, grads):
    p = torch.zeros(grads.shape[1:], dtype=torch.float64, requires_grad=True)
    opt = make([p])
    out = []
    for G in grads:
        before = p.detach().clone()
        p.grad = G.clone()
        opt.step()
        out.append(before - p.detach())
    return torch.stack(out)


def test_row_major_vec_identity():
    g = torch.Generator().manual_seed(0)
    A, G, B = (torch.randn(s, generator=g, dtype=torch.float64) for s in ((3, 3), (3, 5), (5, 5)))
    assert torch.allclose(torch.kron(A, B.T.contiguous()) @ G.reshape(-1), (A @ G @ B).reshape(-1))


def test_psd_power_against_matrix_inverse_root_and_squares():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A = X @ X.T
    half = kronecker.psd_power(A, 0.5)
    assert torch.allclose(half @ half, A, rtol=1e-10, atol=1e-10)
    assert torch.allclose(kronecker.psd_power(A, -0.25, 1e-3), matrix_inverse_root(A, 4, 1e-3))
    with pytest.raises(ValueError, match="power"):
        kronecker.psd_power(A, 0)


def test_factors_and_second_moment_are_the_sums():
    G = _grads(2, 4, 3, 5)
    L, R = kronecker.kronecker_factors(G)
    assert torch.allclose(L, sum(x @ x.T for x in G)) and torch.allclose(R, sum(x.T @ x for x in G))
    L2, _ = kronecker.kronecker_factors(G, beta2=0.9)
    ema = torch.zeros(3, 3, dtype=torch.float64)
    for x in G:
        ema = 0.9 * ema + 0.1 * x @ x.T
    assert torch.allclose(L2, ema)
    H = kronecker.gradient_second_moment(G)
    assert torch.allclose(H, sum(torch.outer(x.reshape(-1), x.reshape(-1)) for x in G))


@pytest.mark.parametrize("m, n, T", [(3, 5, 4), (4, 4, 20), (6, 2, 3)])
def test_shampoo_direction_is_optlib_shampoos_step(m, n, T):
    G = _grads(3, T, m, n)
    steps = _steps(lambda p: optlib.Shampoo(p, lr=1.0, betas=(0.0, 1.0), epsilon=1e-8,
                                            merge_dims=False), G)  # fmt: skip
    for t in range(1, T + 1):
        D = kronecker.shampoo_kronecker_direction(G[:t], 1e-8)
        assert torch.allclose(steps[t - 1], D, rtol=1e-9, atol=1e-12)


def test_merged_small_matrix_is_full_matrix_adagrad():
    G = _grads(4, 30, 4, 5)
    steps = _steps(lambda p: optlib.Shampoo(p, lr=1.0, betas=(0.0, 1.0), epsilon=1e-6), G)
    for t in (1, 7, 20, 30):
        full = kronecker.full_matrix_adagrad_direction(G[:t], 1e-6)
        assert torch.allclose(steps[t - 1], full, rtol=1e-8, atol=1e-10)


def test_full_matrix_adagrad_against_a_dense_solve_and_rotations():
    G = _grads(5, 25, 3, 4)
    H = sum(torch.outer(x.reshape(-1), x.reshape(-1)) for x in G)
    H = H + 1e-3 * torch.eye(12, dtype=torch.float64)
    lam, Q = torch.linalg.eigh(H)
    dense = (Q * lam.rsqrt()) @ Q.T @ G[-1].reshape(-1)
    D = kronecker.full_matrix_adagrad_direction(G, 1e-3)
    assert torch.allclose(D.reshape(-1), dense, rtol=1e-10)
    Qn = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0),
                                     dtype=torch.float64)).Q  # fmt: skip
    for direction in (kronecker.full_matrix_adagrad_direction,
                      kronecker.shampoo_kronecker_direction):  # fmt: skip
        rotated = direction(G @ Qn.T, 1e-3)
        assert torch.allclose(rotated, direction(G, 1e-3) @ Qn.T, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_gupta_bound_holds(rank):
    for seed in range(3):
        G = _grads(10 + seed, 6, 4, 5, rank=rank)
        assert kronecker.kronecker_bound_gap(G) > -1e-12
        assert kronecker.kronecker_bound_gap(G, rank=rank) > -1e-12


def test_the_bound_needs_the_rank():
    """With r = 1 for gradients of full rank 4 the bound can fail: the factor r matters."""
    worst = min(kronecker.kronecker_bound_gap(_grads(20 + s, 1, 4, 4), rank=1) for s in range(5))
    assert worst < -1e-3


def _tiny_mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3), nn.Tanh(),
                         nn.Linear(3, 3)).double()  # fmt: skip


@pytest.mark.parametrize("index", [0, 2, 4])
def test_fisher_block_is_the_gauss_newton_block(index):
    model = _tiny_mlp()
    X = torch.randn(17, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    block = kronecker.linear_layer_fisher(model, index, X)
    layer = model[index]
    GN = gauss_newton(model(X), [layer.weight, layer.bias])
    order = kronecker.kfac_order(layer.out_features, layer.in_features)
    assert torch.allclose(block["F"], GN[order][:, order], rtol=1e-10, atol=1e-14)
    one = kronecker.linear_layer_fisher(model, index, X[:1])  # one example: exactly Kronecker
    assert torch.allclose(one["F"], torch.kron(one["G"], one["A"]), rtol=1e-10, atol=1e-14)
    assert model[index].weight.dtype == torch.float64 and model[0].weight.requires_grad


def test_empirical_fisher_block_is_the_mean_outer_product_of_per_example_gradients():
    model = _tiny_mlp(1)
    X = torch.randn(9, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    block = kronecker.linear_layer_fisher(model, 2, X, y)
    layer = model[2]
    rows = []
    for x, c in zip(X, y):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[None]), c[None]).backward()
        rows.append(torch.cat([layer.weight.grad, layer.bias.grad[:, None]], 1).reshape(-1))
    per = torch.stack(rows)
    assert torch.allclose(block["F"], per.T @ per / len(X), rtol=1e-10, atol=1e-14)


def test_damped_solves():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(6, 4, generator=g, dtype=torch.float64)
    F = X @ X.T
    v = torch.randn(2, 3, generator=g, dtype=torch.float64)
    for gamma, d in zip((1e-3, 1.0), kronecker.damped_solves(F, v, (1e-3, 1.0))):
        solve = torch.linalg.solve(F + gamma * torch.eye(6, dtype=torch.float64), v.reshape(-1))
        assert torch.allclose(d.reshape(-1), solve, rtol=1e-9)


@pytest.mark.parametrize("steps", [0, 1, 5, 8])
@pytest.mark.parametrize("coefficients", [NS_COEFFICIENTS, (1.5, -0.5, 0.0)])
def test_newton_schulz_map_is_the_matrix_iteration(steps, coefficients):
    """The scalar map is what newton_schulz5 does to each singular direction (float64)."""
    for seed, shape in ((0, (7, 5)), (1, (4, 9)), (2, (6, 6))):
        u = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        U, S, Vh = torch.linalg.svd(u, full_matrices=False)
        out = newton_schulz5(u, steps, dtype=None, coefficients=coefficients)
        assert torch.allclose((U.T @ out @ Vh.T).diagonal(),
                              kronecker.newton_schulz_map(S, steps, coefficients=coefficients),
                              rtol=1e-10, atol=1e-12)  # fmt: skip


def test_newton_schulz_map_refuses_bad_input():
    with pytest.raises(ValueError):
        kronecker.newton_schulz_map([[1.0]])
    with pytest.raises(ValueError):
        kronecker.newton_schulz_map([1.0, -2.0])


def test_spectral_steepest_descent_attains_the_nuclear_norm():
    g = torch.Generator().manual_seed(4)
    G = torch.randn(5, 3, generator=g, dtype=torch.float64) @ torch.randn(
        3, 7, generator=g, dtype=torch.float64)  # rank 3  # fmt: skip
    P = kronecker.spectral_steepest_descent(G)
    assert torch.linalg.matrix_norm(P, ord=2) == pytest.approx(1.0, rel=1e-12)
    assert torch.linalg.matrix_rank(P) == 3
    assert float((G * P).sum()) == pytest.approx(float(torch.linalg.matrix_norm(G, "nuc")),
                                                 rel=1e-12)  # fmt: skip
