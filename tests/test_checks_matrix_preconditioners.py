"""optlib.course.checks.matrix_preconditioners (chapter 10's exercise checks): right answers pass
with one deterministic line; the known wrong answers listed below fail with a message that
locates the problem without giving the solution away; answers that delegate to the library score
nothing; the cases/probe/expect/compare split survives JSON for the sandboxed grader; and the
scalar Newton-Schulz map the check trusts for lists no matrix can hold agrees with the matrix
iteration."""

from __future__ import annotations

import json

import pytest
import torch

from optlib.course import checks
from optlib.course.checks import matrix_preconditioners as mp
from optlib.optim.muon import NS_COEFFICIENTS, newton_schulz5

NAMES = ["shampoo_direction", "inverse_root", "newton_schulz_singular_values", "kfac_factors"]


# ------------------------------------------------------------------ right answers


def _root(A, p, eps):
    B = A.double() + eps * torch.eye(len(A), dtype=torch.float64)
    lam, Q = torch.linalg.eigh(B)
    lam = lam + max(eps - float(lam.min()), 0.0)
    return (Q * lam.pow(-1.0 / p)) @ Q.T


def shampoo(grads, eps):
    G = torch.stack([g.double() for g in grads])
    L = sum(g @ g.T for g in G)
    R = sum(g.T @ g for g in G)
    return (_root(L, 4, eps) @ G[-1] @ _root(R, 4, eps)).to(grads[-1].dtype)


def shampoo_by_kronecker(grads, eps):  # the vec form: (L^-1/4 (x) R^-1/4) vec(G)
    G = torch.stack([g.double() for g in grads])
    L = torch.einsum("tij,tkj->ik", G, G)
    R = torch.einsum("tij,tik->jk", G, G)
    vec = torch.kron(_root(L, 4, eps), _root(R, 4, eps)) @ G[-1].reshape(-1)
    return vec.reshape(G[-1].shape)


def inverse_root(A, p, eps):
    return _root(A, p, eps).to(A.dtype)


def ns_map(sigma, steps, coefficients):
    a, b, c = coefficients
    x = sigma / (sigma.norm() + 1e-7)
    for _ in range(steps):
        x = a * x + b * x**3 + c * x**5
    return x


def ns_map_python(sigma, steps, coefficients):  # plain floats, returns a list
    a, b, c = coefficients
    values = [float(s) for s in sigma]
    norm = sum(v * v for v in values) ** 0.5 + 1e-7
    out = []
    for v in values:
        x = v / norm
        for _ in range(steps):
            x = a * x + b * x**3 + c * x**5
        out.append(x)
    return out


def kfac(x, s, bias):
    a = x.reshape(-1, x.shape[-1])
    n = len(a)
    if bias:
        a = torch.cat([a, torch.ones(n, 1, dtype=a.dtype)], 1)
    ns = s.reshape(-1, s.shape[-1]) * n
    return a.T @ a / n, ns.T @ ns / n


RIGHT = [
    (checks.shampoo_direction, shampoo, {}),
    (checks.shampoo_direction, shampoo_by_kronecker, {"seed": 7, "n_cases": 8, "max_steps": 8}),
    (checks.inverse_root, inverse_root, {}),
    (checks.inverse_root, inverse_root, {"seed": 3, "n_cases": 10}),
    (checks.newton_schulz_singular_values, ns_map, {}),
    (checks.newton_schulz_singular_values, ns_map_python, {"seed": 5, "n_cases": 6, "huge": False}),
    (checks.kfac_factors, kfac, {}),
    (checks.kfac_factors, kfac, {"seed": 9, "n_cases": 8}),
]


@pytest.mark.parametrize("check, answer, options", RIGHT)
def test_right_answers_pass_with_one_deterministic_line(check, answer, options, capsys):
    check(answer, **options)
    first = capsys.readouterr().out
    check(answer, **options)
    assert capsys.readouterr().out == first
    assert first.count("\n") == 1 and ": OK, " in first


def _fails(check, answer, **options) -> str:
    with pytest.raises(AssertionError) as err:
        check(answer, **options)
    return str(err.value)


# ------------------------------------------------------------------ known wrong answers


def shampoo_half(grads, eps):
    G = torch.stack([g.double() for g in grads])
    L, R = sum(g @ g.T for g in G), sum(g.T @ g for g in G)
    return _root(L, 2, eps) @ G[-1] @ _root(R, 2, eps)


def shampoo_last_only(grads, eps):
    return shampoo(grads[-1:], eps)


def shampoo_one_sided(grads, eps):  # only the left factor, with AdaGrad's -1/2
    G = torch.stack([g.double() for g in grads])
    return _root(sum(g @ g.T for g in G), 2, eps) @ G[-1]


def shampoo_no_eps(grads, eps):
    return shampoo(grads, 0.0)


def shampoo_in_place(grads, eps):
    out = shampoo(grads, eps)
    grads[0].zero_()
    return out


WRONG_SHAMPOO = [
    (shampoo_half, "fourth root"),
    (shampoo_last_only, "accumulate"),
    (shampoo_one_sided, "differs"),
    (shampoo_no_eps, "shampoo_direction"),
    (shampoo_in_place, "in place"),
    (lambda grads, eps: None, "None"),
    (lambda grads, eps: grads[-1], "differs"),
]


@pytest.mark.parametrize("answer, words", WRONG_SHAMPOO)
def test_known_wrong_shampoo_directions_fail(answer, words):
    assert words in _fails(checks.shampoo_direction, answer, seed=7, n_cases=8, max_steps=8)


def root_positive(A, p, eps):
    return _root(A, -p, eps).to(A.dtype)


def root_clipped(A, p, eps):
    B = A.double() + eps * torch.eye(len(A), dtype=torch.float64)
    lam, Q = torch.linalg.eigh(B)
    return ((Q * lam.clamp_min(eps).pow(-1.0 / p)) @ Q.T).to(A.dtype)


def root_no_shift(A, p, eps):
    B = A.double() + eps * torch.eye(len(A), dtype=torch.float64)
    lam, Q = torch.linalg.eigh(B)
    return ((Q * lam.pow(-1.0 / p)) @ Q.T).to(A.dtype)


def root_float64(A, p, eps):
    return _root(A, p, eps)  # not cast back to A's dtype


def root_in_place(A, p, eps):
    out = inverse_root(A, p, eps)
    A.zero_()
    return out


WRONG_ROOT = [
    (root_positive, "inverse root"),
    (root_clipped, "common shift"),
    (root_no_shift, "inverse_root"),
    (root_float64, "dtype"),
    (root_in_place, "in place"),
    (lambda A, p, eps: _root(A, p, 0.0 + 1e-300).to(A.dtype), "inverse_root"),
]


@pytest.mark.parametrize("answer, words", WRONG_ROOT)
def test_known_wrong_inverse_roots_fail(answer, words):
    assert words in _fails(checks.inverse_root, answer, seed=3, n_cases=10)


def ns_not_normalised(sigma, steps, coefficients):
    a, b, c = coefficients
    x = sigma.clone()
    for _ in range(steps):
        x = a * x + b * x**3 + c * x**5
    return x


def ns_by_max(sigma, steps, coefficients):
    a, b, c = coefficients
    x = sigma / (sigma.max() + 1e-7)
    for _ in range(steps):
        x = a * x + b * x**3 + c * x**5
    return x


WRONG_NS = [
    (ns_not_normalised, "not from u itself", {}),
    (ns_by_max, "Frobenius", {}),
    (lambda s, k, c: ns_map(s, k + 1, c), "count the iterations", {}),
    (lambda s, k, c: ns_map(s, k, c).sort(descending=True).values, "differs", {}),
    (lambda s, k, c: ns_map(s.float(), k, c), "differs", {"huge": False}),
    (lambda s, k, c: ns_map(s, k, NS_COEFFICIENTS), "differs", {}),  # ignores the coefficients
    (lambda s, k, c: ns_map(s, k, c)[:-1], "numbers", {}),
]


@pytest.mark.parametrize("answer, words, options", WRONG_NS)
def test_known_wrong_newton_schulz_predictions_fail(answer, words, options):
    assert words in _fails(checks.newton_schulz_singular_values, answer, **options)


def kfac_no_n(x, s, bias):
    A, G = kfac(x, s, bias)
    n = x.reshape(-1, x.shape[-1]).shape[0]
    return A, G / n**2


def kfac_no_bias_column(x, s, bias):
    return kfac(x, s, False)


def kfac_bias_first(x, s, bias):
    A, G = kfac(x, s, bias)
    if bias:
        order = [A.shape[0] - 1] + list(range(A.shape[0] - 1))
        A = A[order][:, order]
    return A, G


def kfac_first_dim_only(x, s, bias):  # treats only the first dimension as rows
    n = x.shape[0]
    a = x.reshape(n, -1)[:, : x.shape[-1]]
    if bias:
        a = torch.cat([a, torch.ones(n, 1, dtype=a.dtype)], 1)
    ns = s.reshape(n, -1)[:, : s.shape[-1]] * n
    return a.T @ a / n, ns.T @ ns / n


WRONG_KFAC = [
    (kfac_no_n, "mean"),
    (kfac_no_bias_column, "1 appended"),
    (kfac_bias_first, "A differs"),
    (kfac_first_dim_only, "differs"),
    (lambda x, s, bias: kfac(x, s, bias)[0], "pair"),
]


@pytest.mark.parametrize("answer, words", WRONG_KFAC)
def test_known_wrong_kfac_factors_fail(answer, words):
    assert words in _fails(checks.kfac_factors, answer, seed=9, n_cases=8)


def test_hidden_options_reach_cases_the_public_ones_do_not():
    public = {c["kind"] for c in checks.CHECKS["inverse_root"].cases()}
    assert {"rounding-negative", "singular"} <= public
    shapes = checks.CHECKS["shampoo_direction"].cases(seed=7, n_cases=8, max_steps=8)
    assert any(m > n for m, n in (c["shape"] for c in shapes))
    assert any(len(c["grads"]) > 5 for c in shapes)
    kf = checks.CHECKS["kfac_factors"].cases(seed=9, n_cases=8)
    assert any(len(c["rows"]) == 2 for c in kf) and {c["dtype"] for c in kf} == {"float32",
                                                                                   "float64"}


# ------------------------------------------------------------------ delegation


def test_delegating_to_the_library_scores_nothing():
    def by_optlib_shampoo(grads, eps):
        import optlib

        W = torch.zeros_like(grads[0], requires_grad=True)
        opt = optlib.Shampoo([W], lr=1.0, betas=(0.0, 1.0), epsilon=eps, merge_dims=False)
        for G in grads:
            before = W.detach().clone()
            W.grad = G.clone()
            opt.step()
        return before - W.detach()

    assert "scores nothing" in _fails(checks.shampoo_direction, by_optlib_shampoo)

    def by_matrix_root(A, p, eps):
        from optlib.optim._matrix import matrix_inverse_root

        return matrix_inverse_root(A, p, eps)

    assert "scores nothing" in _fails(checks.inverse_root, by_matrix_root)

    def by_running_ns(sigma, steps, coefficients):
        small = sigma[:8]
        out = newton_schulz5(torch.diag(small), steps, dtype=None, coefficients=coefficients)
        return torch.cat([torch.linalg.svdvals(out), sigma[8:]])

    assert "scores nothing" in _fails(checks.newton_schulz_singular_values, by_running_ns)

    def by_kfac(x, s, bias):
        from torch import nn

        from optlib.optim.kfac import input_factor, output_factor

        layer = nn.Linear(x.shape[-1], s.shape[-1], bias=bias).to(x.dtype)
        return input_factor(layer, x), output_factor(layer, s, batch_averaged=True)

    assert "scores nothing" in _fails(checks.kfac_factors, by_kfac)


# ------------------------------------------------------------------ the trusted closed form


def test_the_long_lists_cannot_be_a_matrix():
    cases = checks.CHECKS["newton_schulz_singular_values"].cases()
    longest = max(len(c["sigma"]) for c in cases)
    assert 8 * longest**2 > 10**10  # a float64 matrix holding them: more than 10 GB
    assert {"spread", "huge", "equal", "zeros"} <= {c["kind"] for c in cases}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_trusted_map_agrees_with_the_matrix_iteration(seed):
    """The expectation is the scalar map; on lists a matrix can hold it equals the singular
    values newton_schulz5 produces in float64 (each singular direction's length)."""
    for case in checks.CHECKS["newton_schulz_singular_values"].cases(seed=seed, huge=False):
        sigma = torch.tensor(case["sigma"], dtype=torch.float64)
        if len(sigma) > mp._NS_RUN_MAX:
            continue
        k = len(sigma)
        g = torch.Generator().manual_seed(seed)
        U = torch.linalg.qr(torch.randn(k + 2, k, generator=g, dtype=torch.float64)).Q
        V = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64)).Q
        u = U @ torch.diag(sigma) @ V.T
        out = newton_schulz5(u, case["steps"], dtype=None,
                             coefficients=tuple(case["coefficients"]))  # fmt: skip
        lengths = (U.T @ out @ V).diagonal()
        expected = checks.CHECKS["newton_schulz_singular_values"].expect(case)["values"]
        assert torch.allclose(lengths, torch.tensor(expected, dtype=torch.float64),
                              rtol=1e-9, atol=1e-12)  # fmt: skip


# ------------------------------------------------------------------ the split the grader uses


ANSWERS = {
    "shampoo_direction": shampoo,
    "inverse_root": inverse_root,
    "newton_schulz_singular_values": ns_map,
    "kfac_factors": kfac,
}


@pytest.mark.parametrize("name", NAMES)
def test_probe_data_survives_json_and_compares_equal(name):
    check = checks.CHECKS[name]
    for i, case in enumerate(check.cases(seed=5, n_cases=3)):
        got = json.loads(json.dumps(check.probe(ANSWERS[name], case)))
        check.compare(case, got, check.expect(case), f"case {i + 1}")


def test_checks_are_registered_and_declare_what_they_forbid():
    for name in NAMES:
        assert name in checks.CHECKS and name in checks.DELEGATION
        assert callable(getattr(checks, name))
