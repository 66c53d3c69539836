"""optlib.linalg.newton: exact on quadratics, quadratic convergence, damping, line search."""

import math

import pytest
import torch

from optlib import linalg as la
from optlib.problems import landscapes as ls

F64 = torch.float64


def logistic_problem(seed=0, with_derivatives=False):
    """L2-regularised logistic regression: smooth and strictly convex."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(40, 5, generator=g, dtype=F64)
    y = (torch.rand(40, generator=g, dtype=F64) < 0.5).to(F64)

    def f(w):
        z = X @ w
        return (torch.nn.functional.softplus(z) - y * z).mean() + 0.05 * (w @ w)

    def grad(w):  # X^T (sigma(Xw) - y) / n + 0.1 w, by hand
        return X.T @ (torch.sigmoid(X @ w) - y) / len(y) + 0.1 * w

    def hessian(w):  # X^T diag(sigma (1 - sigma)) X / n + 0.1 I, by hand
        s = torch.sigmoid(X @ w)
        return (X.T * (s * (1 - s))) @ X / len(y) + 0.1 * torch.eye(5, dtype=F64)

    return (f, grad, hessian) if with_derivatives else f


def test_one_newton_step_solves_a_quadratic():
    A, b = la.spd_matrix(6, 1e4, seed=1), torch.arange(6.0, dtype=F64)
    res = la.newton(None, torch.ones(6, dtype=F64), grad=lambda x: A @ x - b, hessian=lambda x: A)
    assert res.converged and res.iterations == 1
    # two float64 solves of the same system with kappa = 1e4: each is good to ~kappa eps = 2e-12
    # relative (measured 4e-13 apart); rtol 1e-9 allows the step's extra residual evaluation
    torch.testing.assert_close(res.x, torch.linalg.solve(A, b), rtol=1e-9, atol=1e-12)
    assert res.losses is None and res.step_sizes == [1.0]


def test_quadratic_convergence_the_error_squares():
    f = logistic_problem()
    res = la.newton(f, torch.full((5,), 2.0, dtype=F64), tol=1e-14)
    assert res.converged and res.iterations <= 12
    x_star = res.x
    errors = [float(torch.linalg.vector_norm(x - x_star)) for x in res.iterates]
    checked = 0
    for e_k, e_next in zip(errors, errors[1:]):
        if 1e-10 < e_k < 0.2 and e_next > 1e-15:
            assert e_next <= 1.0 * e_k**2  # e_{k+1} <= C e_k^2
            if e_k < 1e-2:
                assert math.log(e_next) / math.log(e_k) > 1.8  # the digits double
            checked += 1
    assert checked >= 3
    # the gradient norms square too, and the losses decrease monotonically
    g = res.grad_norms
    # the last gradient is at the float64 floor: ~eps x (|X^T sigma| ~ 1) = 2e-16 per entry,
    # 1e-13 leaves 500x; the one before is the square of a ~1e-3 gradient (quadratic phase)
    assert g[-2] < 1e-6 and g[-1] < 1e-13
    assert all(b <= a + 1e-15 for a, b in zip(res.losses, res.losses[1:]))


def test_autograd_explicit_and_grad_only_derivatives_agree():
    f, grad, hessian = logistic_problem(seed=2, with_derivatives=True)
    x0 = torch.full((5,), -1.0, dtype=F64)
    auto = la.newton(f, x0)
    explicit = la.newton(None, x0, grad=grad, hessian=hessian)
    grad_only = la.newton(f, x0, grad=grad)  # Hessian by differentiating grad with autograd
    assert auto.converged
    for other in (explicit, grad_only):
        assert other.iterations == auto.iterations
        for a, b in zip(auto.iterates, other.iterates):
            # derivatives by hand or by autograd differ by ulps; 5 Newton steps on a problem
            # with kappa(H) ~ 2.3 carry them to ~5 x 2.3 ulps (measured 5 ulps of the largest
            # entry): rtol 1e-12 (4500 ulps), atol 1e-14 for entries near 0
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_landscapes_supply_their_own_derivatives():
    rosenbrock = ls.Rosenbrock()
    res = la.newton(rosenbrock, torch.tensor([-1.2, 1.0], dtype=F64))
    assert res.converged
    # converged to |grad| <= tol = 1e-10, so |x - x*| <= tol / lambda_min(H(x*)) = 1e-10 / 0.4
    # (measured: exactly (1, 1))
    torch.testing.assert_close(res.x, torch.tensor([1.0, 1.0], dtype=F64), rtol=0, atol=2.5e-10)
    searched = la.newton(rosenbrock, torch.tensor([-1.5, 1.5], dtype=F64), line_search=True)
    assert searched.converged
    assert all(b <= a for a, b in zip(searched.losses, searched.losses[1:]))  # Armijo descent
    assert min(searched.step_sizes) < 1.0  # the line search did cut some steps


def test_pure_newton_walks_into_a_saddle_and_line_search_escapes():
    saddle, x0 = ls.Saddle(), torch.tensor([1.2, 0.3], dtype=F64)
    pure = la.newton(saddle, x0)
    assert pure.converged  # the gradient vanishes...
    # ...at the saddle point, to |grad| <= tol = 1e-10 over curvatures +-1 there: 1e-10
    torch.testing.assert_close(pure.x, torch.zeros(2, dtype=F64), rtol=0, atol=1e-10)
    searched = la.newton(saddle, x0, line_search=True)
    assert searched.converged
    # a minimiser (0, +-1), to |grad| <= 1e-10 over curvatures 1 and 2 there
    assert float(searched.x[1].abs()) == pytest.approx(1.0, abs=1e-10)


def test_damping_is_levenberg_regularisation():
    f, x0, lam = logistic_problem(seed=3), torch.zeros(5, dtype=F64), 0.7
    g = torch.autograd.functional.jacobian(f, x0)
    H = torch.autograd.functional.hessian(f, x0)
    one = la.newton(f, x0, damping=lam, max_iter=1)
    assert one.iterations == 1 and one.reason == "max_iter"
    expected = x0 - torch.linalg.solve(H + lam * torch.eye(5, dtype=F64), g)
    # one damped step, computed twice with autograd's derivatives: ulps x kappa(H + 0.7 I) = 1.3
    # (measured: identical); rtol 1e-12 is 4500 ulps
    torch.testing.assert_close(one.x, expected, rtol=1e-12, atol=1e-14)
    # damping slows the final convergence to linear: more iterations than pure Newton
    assert la.newton(f, x0, damping=lam).iterations > la.newton(f, x0).iterations


def test_singular_hessian_is_reported():
    res = la.newton(
        None, torch.ones(2, dtype=F64), grad=lambda x: x, hessian=lambda x: 0 * x[:, None] * x
    )
    assert res.reason == "singular" and not res.converged


def test_bad_arguments_raise_value_error_naming_the_parameter():
    x0 = torch.zeros(2, dtype=F64)
    quad = ls.Quadratic(4.0)
    cases = [
        (lambda: la.newton(None, x0), "grad"),
        (lambda: la.newton(None, x0, hessian=lambda x: x), "grad"),
        (lambda: la.newton(3.0, x0), "f"),
        (lambda: la.newton(quad, torch.zeros(1, 2, dtype=F64)), "x0"),
        (lambda: la.newton(quad, torch.zeros(2, dtype=torch.long)), "x0"),
        (lambda: la.newton(quad, x0, tol=0.0), "tol"),
        (lambda: la.newton(quad, x0, max_iter=0), "max_iter"),
        (lambda: la.newton(quad, x0, damping=-1.0), "damping"),
        (lambda: la.newton(quad, x0, c1=1.0), "c1"),
        (lambda: la.newton(quad, x0, shrink=0.0), "shrink"),
        (
            lambda: la.newton(None, x0, grad=quad.grad, hessian=quad.hessian, line_search=True),
            "line_search",
        ),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=rf"Invalid {name}\b"):
            call()


# --- Newton-CG: the Newton system solved by CG on Hessian-vector products ---------------------


def test_newton_cg_on_a_quadratic_is_cg():
    """On f = ½xᵀAx − bᵀx one Newton-CG step from 0 is CG on Ax = b with the forcing term as
    tolerance, then the steps repeat on the remaining residual."""
    A, b = la.spd_matrix(30, 100.0, seed=2), la.random_vector(30, seed=3)

    def f(x):
        return 0.5 * x @ A @ x - b @ x

    res = la.newton_cg(f, torch.zeros(30, dtype=F64), tol=1e-10, line_search=False)
    assert res.converged and res.negative_curvature == []
    first = la.cg(A, b, tol=min(0.5, math.sqrt(float(b.norm()))), max_iter=30)
    # the first step equals CG's iterate: the same recurrences, one on A @ p and one on double
    # backward products that equal A @ p to rounding (30 x 30, kappa 100: ~1e-14 relative)
    torch.testing.assert_close(res.iterates[1], first.x, rtol=1e-10, atol=1e-12)
    assert res.cg_iterations[0] == first.iterations
    # x solves Ax = b to the gradient tolerance: |x - x*| <= |grad| / mu = 1e-10
    torch.testing.assert_close(res.x, torch.linalg.solve(A, b), rtol=0, atol=2e-10)


def test_newton_cg_converges_superlinearly_without_forming_the_hessian():
    f, grad, hessian = logistic_problem(seed=1, with_derivatives=True)
    calls = []

    def hvp(x, v):  # a counted product from the explicit Hessian
        calls.append(1)
        return hessian(x) @ v

    x0 = torch.full((5,), 2.0, dtype=F64)
    res = la.newton_cg(f, x0, grad=grad, hvp=hvp, tol=1e-12)
    exact = la.newton(f, x0, grad=grad, hessian=hessian, tol=1e-12)
    assert res.converged and res.hessian_vector_products == len(calls)
    # both end within the gradient tolerance over the smallest curvature (0.1) of each other
    torch.testing.assert_close(res.x, exact.x, rtol=0, atol=2e-11)
    g = res.grad_norms
    ratios = [g[k + 1] / g[k] for k in range(len(g) - 1) if g[k + 1] > 1e-13]
    assert ratios[-1] < 0.1 * ratios[0]  # the per-step factor shrinks: superlinear
    # the forcing term min(1/2, sqrt|g|) lets the early steps stop CG long before n iterations
    assert res.cg_iterations[0] < 5


def test_newton_cg_autograd_products_match_explicit_ones():
    f, grad, hessian = logistic_problem(seed=2, with_derivatives=True)
    x0 = torch.zeros(5, dtype=F64)
    by_autograd = la.newton_cg(f, x0, tol=1e-12)
    by_hand = la.newton_cg(f, x0, grad=grad, hvp=lambda x, v: hessian(x) @ v, tol=1e-12)
    assert by_autograd.cg_iterations == by_hand.cg_iterations
    # same steps, products that agree to rounding (5 x 5, well conditioned): 1e-12 relative
    torch.testing.assert_close(by_autograd.x, by_hand.x, rtol=1e-10, atol=1e-13)


def test_newton_cg_stops_at_negative_curvature_and_still_descends():
    """From (0.1, 0.3) on x²/2 + (y² − 1)²/4 the gradient points along negative curvature
    (pᵀHp = 0.01 − 0.73 · 0.075 < 0): pure Newton walks into the saddle at the origin, while
    Newton-CG stops CG there, steps along −∇f and reaches a minimiser (0, ±1)."""
    saddle, x0 = ls.Saddle(), torch.tensor([0.1, 0.3], dtype=F64)
    pure = la.newton(saddle, x0)
    torch.testing.assert_close(pure.x, torch.zeros(2, dtype=F64), rtol=0, atol=1e-10)
    res = la.newton_cg(saddle.f, x0, tol=1e-10)
    assert res.converged and res.negative_curvature[0] == 0
    assert all(b <= a for a, b in zip(res.losses, res.losses[1:]))
    # |grad| <= 1e-10 over curvatures 1 and 2 at the minimiser: within 1e-10
    assert float(res.x[1].abs()) == pytest.approx(1.0, abs=1e-9)


def test_newton_cg_bad_arguments_name_the_parameter():
    x0 = torch.zeros(2, dtype=F64)
    f = ls.Quadratic(4.0).f
    cases = [
        (lambda: la.newton_cg(3.0, x0), "f"),
        (lambda: la.newton_cg(f, torch.zeros(1, 2, dtype=F64)), "x0"),
        (lambda: la.newton_cg(f, x0, hvp=2.0), "hvp"),
        (lambda: la.newton_cg(f, x0, grad=2.0), "grad"),
        (lambda: la.newton_cg(f, x0, tol=0.0), "tol"),
        (lambda: la.newton_cg(f, x0, max_cg=0), "max_cg"),
        (lambda: la.newton_cg(f, x0, shrink=1.5), "shrink"),
        (lambda: la.newton_cg(lambda x: x, torch.ones(2, dtype=F64)), "f"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=f"Invalid {name}"):
            call()
