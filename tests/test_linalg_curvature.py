"""optlib.linalg curvature tools against explicit Hessians from torch.autograd.functional."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from optlib import linalg as la

F64 = torch.float64
EPS = torch.finfo(F64).eps
# optlib's Hessian products and torch.autograd.functional.hessian run the same double-backward
# arithmetic on a 38-parameter MLP in another order: they agree to a few ulps of the largest
# entry (measured 2 ulps; ||H|| = 0.86). rtol 1e-10 and atol 1e-12 (4500 ulps of the largest
# entry) hold for any order of those sums, and are 1e8 below what a wrong term would change.
CLOSE = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and leave the other core to other jobs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Problem:
    """A small tanh MLP on seeded data, with its Hessian computed independently of optlib."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).to(F64)
        with torch.no_grad():
            for p in self.model.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=F64))
        self.X = torch.randn(16, 3, generator=g, dtype=F64)
        self.y = torch.randint(0, 3, (16,), generator=g)
        self.params = list(self.model.parameters())
        self.names = [name for name, _ in self.model.named_parameters()]

    def loss(self) -> torch.Tensor:
        return nn.functional.cross_entropy(self.model(self.X), self.y)

    def hessian(self) -> torch.Tensor:
        """torch.autograd.functional.hessian of the loss as a function of the flat parameters."""
        shapes = [p.shape for p in self.params]
        sizes = [p.numel() for p in self.params]

        def flat_loss(theta):
            pieces = [t.view(s) for t, s in zip(theta.split(sizes), shapes)]
            logits = functional_call(self.model, dict(zip(self.names, pieces)), (self.X,))
            return nn.functional.cross_entropy(logits, self.y)

        theta = torch.cat([p.detach().reshape(-1) for p in self.params])
        return torch.autograd.functional.hessian(flat_loss, theta)


@pytest.fixture(scope="module")
def mlp():
    problem = Problem()
    problem.H = problem.hessian()
    return problem


def test_flatten_unflatten_round_trip():
    tensors = [torch.arange(6.0).view(2, 3), torch.tensor([7.0]), torch.zeros(2, 1, 2)]
    flat = la.flatten(tensors)
    assert flat.shape == (11,)
    for a, b in zip(la.unflatten(flat, tensors), tensors):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="Invalid vector"):
        la.unflatten(torch.zeros(10), tensors)
    with pytest.raises(ValueError, match="Invalid tensors"):
        la.flatten([])


def test_hvp_matches_the_explicit_hessian(mlp):
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(mlp.H.shape[0], generator=g, dtype=F64)
        expected = mlp.H @ v
        torch.testing.assert_close(la.hvp(mlp.loss, mlp.params, v), expected, **CLOSE)
        as_list = la.hvp(mlp.loss, mlp.params, la.unflatten(v, mlp.params))
        assert [t.shape for t in as_list] == [p.shape for p in mlp.params]
        torch.testing.assert_close(la.flatten(as_list), expected, **CLOSE)
    # a loss tensor (not a closure) keeps its graph, so it can be used for several products
    loss = mlp.loss()
    e0 = torch.zeros(mlp.H.shape[0], dtype=F64)
    e0[0] = 1.0
    for _ in range(2):
        torch.testing.assert_close(la.hvp(loss, mlp.params, e0), mlp.H[:, 0], **CLOSE)


def test_exact_hessian_and_its_diagonal(mlp):
    torch.testing.assert_close(la.exact_hessian(mlp.loss, mlp.params), mlp.H, **CLOSE)
    diag = la.exact_hessian_diag(mlp.loss, mlp.params)
    torch.testing.assert_close(la.flatten(diag), mlp.H.diagonal(), **CLOSE)


def test_unused_and_linear_parameters_have_zero_hessian_blocks():
    w = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    c = torch.tensor([0.5, 0.5, 0.5], dtype=F64, requires_grad=True)  # enters linearly
    unused = torch.ones(4, dtype=F64, requires_grad=True)

    def loss():
        return (w**3).sum() + 3.0 * c.sum() + (w[0] * w[1])

    H = la.exact_hessian(loss, [w, c, unused])
    expected = torch.zeros(9, 9, dtype=F64)
    expected[:2, :2] = torch.tensor([[6.0, 1.0], [1.0, -12.0]], dtype=F64)
    torch.testing.assert_close(H, expected, rtol=0, atol=0)  # small integers: exact
    # a loss whose gradient is constant has H = 0
    v = [torch.ones(3, dtype=F64)]
    assert torch.equal(la.hvp(lambda: 3.0 * c.sum(), [c], v)[0], torch.zeros(3, dtype=F64))


def test_power_iteration_finds_the_top_hessian_eigenvalue(mlp):
    eigenvalues = torch.linalg.eigvalsh(mlp.H)
    dominant = eigenvalues[eigenvalues.abs().argmax()]
    res = la.top_hessian_eigenvalue(mlp.loss, mlp.params, iters=500, seed=0, tol=1e-12)
    assert res.converged and res.iterations == len(res.history) <= 500
    # Stopped when successive Rayleigh quotients agree to tol = 1e-12: with |lambda_2/lambda_1|
    # = r = 0.66 the remaining error is ~ tol r^2 / (1 - r^2) = 8e-13 (measured 5.6e-13).
    assert res.eigenvalue == pytest.approx(float(dominant), rel=1e-8)
    v = la.flatten(res.eigenvector)
    # normalised: sqrt of a sum of 38 squares, a few ulps
    assert float(torch.linalg.vector_norm(v)) == pytest.approx(1.0, rel=64 * EPS)
    # for a symmetric matrix the Rayleigh quotient's error is the square of the vector's, so
    # the vector is good to ~sqrt(1e-12) = 1e-6 and ||Hv - lambda v|| <~ ||H|| 1e-6 (measured
    # 8e-8); atol 1e-5 is ten times that bound
    torch.testing.assert_close(mlp.H @ v, res.eigenvalue * v, rtol=0, atol=1e-5)
    # seeded: the same seed gives the same history
    again = la.top_hessian_eigenvalue(mlp.loss, mlp.params, iters=500, seed=0, tol=1e-12)
    assert again.history == res.history
    short = la.top_hessian_eigenvalue(mlp.loss, mlp.params, iters=2, seed=0, tol=1e-12)
    assert not short.converged and short.iterations == 2


def test_power_iteration_on_a_quadratic_gives_L():
    A = la.spd_matrix(20, 50.0, seed=3, mu=0.2)  # L = 10
    theta = torch.randn(20, dtype=F64, generator=torch.Generator().manual_seed(0))
    theta.requires_grad_()
    res = la.top_hessian_eigenvalue(lambda: 0.5 * theta @ A @ theta, [theta], iters=1000, tol=1e-12)
    # L = 10 to Weyl's few ulps, plus the power iteration's ~tol r^2/(1 - r^2) = 2e-12 (log-spaced
    # spectrum: r = 50^(-1/19) = 0.81); rel 1e-9 is a wide margin below any other eigenvalue
    assert res.eigenvalue == pytest.approx(10.0, rel=1e-9)
    # the Rayleigh quotients increase towards L (power iteration on an SPD matrix), up to their
    # rounding, ~20 ulps of L = 4e-14 each
    assert all(b >= a - 1e-12 for a, b in zip(res.history, res.history[1:]))


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    theta = torch.tensor([0.3, -1.0, 2.0, 0.5], dtype=F64, requires_grad=True)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)

    def loss():
        return (weights * theta**2).sum() + (theta**4).sum()

    (estimate,) = la.hutchinson_diag(loss, [theta], n_samples=1, seed=5)
    # z * (H z) with z = +-1 and H diagonal is the diagonal itself: a few roundings (8 ulps)
    expected = 2 * weights + 12 * theta.detach() ** 2
    torch.testing.assert_close(estimate, expected, rtol=8 * EPS, atol=0)


def test_hutchinson_is_unbiased_with_error_shrinking_like_one_over_sqrt_samples(mlp):
    diag = mlp.H.diagonal()
    # one sample's entry i has variance sum_{j != i} H_ij^2, so E||error||^2 = that sum / S
    off_diagonal_mass = float((mlp.H**2).sum() - (diag**2).sum())

    def mean_squared_error(n_samples, seeds):
        errors = [
            float(
                (
                    (la.flatten(la.hutchinson_diag(mlp.loss, mlp.params, n_samples, s)) - diag) ** 2
                ).sum()
            )
            for s in seeds
        ]
        return sum(errors) / len(errors)

    mse_1 = mean_squared_error(1, range(200))
    mse_64 = mean_squared_error(64, range(200, 208))
    # Means of 200 and 8 squared errors: their relative standard errors are 0.039 and 0.077
    # (measured from the same draws), so 0.25 and 0.5 are both ~6.5 standard errors.
    assert mse_1 == pytest.approx(off_diagonal_mass, rel=0.25)
    assert mse_64 == pytest.approx(off_diagonal_mass / 64, rel=0.5)
    # RMS error ratio ~ sqrt(64) = 8, known to about (0.039 + 0.077) / 2 = 6%: (5, 12) is > 5 of
    # those on either side (measured 7.5)
    assert 5.0 < (mse_1 / mse_64) ** 0.5 < 12.0
    # seeded
    a = la.hutchinson_diag(mlp.loss, mlp.params, 3, seed=9)
    b = la.hutchinson_diag(mlp.loss, mlp.params, 3, seed=9)
    c = la.hutchinson_diag(mlp.loss, mlp.params, 3, seed=10)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_bad_arguments_raise_value_error_naming_the_parameter(mlp):
    frozen = torch.ones(3, dtype=F64)
    v = torch.zeros(mlp.H.shape[0], dtype=F64)
    cases = [
        (lambda: la.hvp(mlp.loss, [], v), "params"),
        (lambda: la.hvp(lambda: frozen.sum(), [frozen], torch.zeros(3)), "params"),
        (lambda: la.hvp("loss", mlp.params, v), "loss"),
        (lambda: la.hvp(lambda: mlp.loss().detach(), mlp.params, v), "loss"),
        (lambda: la.hvp(mlp.loss, mlp.params, [torch.zeros(2)]), "v"),
        (lambda: la.hvp(mlp.loss, mlp.params, torch.zeros(5, dtype=F64)), "vector"),
        (lambda: la.top_hessian_eigenvalue(mlp.loss, mlp.params, iters=0), "iters"),
        (lambda: la.top_hessian_eigenvalue(mlp.loss, mlp.params, tol=-1.0), "tol"),
        (lambda: la.hutchinson_diag(mlp.loss, mlp.params, n_samples=0), "n_samples"),
        (lambda: la.hutchinson_diag(mlp.loss, mlp.params, seed=-1), "seed"),
        (lambda: la.top_hessian_eigenvalue(mlp.loss, mlp.params, seed=0.5), "seed"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=rf"Invalid {name}\b"):
            call()


# ------------------------------------------------------------------ chapter 9's additions


def test_exact_hessian_is_the_same_whatever_the_chunk(mlp):
    loss = mlp.loss
    one = la.exact_hessian(loss, mlp.params, chunk=1)
    for chunk in (7, 38, 1000):
        # the same products, vectorised over more rows: the same arithmetic per row
        torch.testing.assert_close(la.exact_hessian(loss, mlp.params, chunk=chunk), one, **CLOSE)
    torch.testing.assert_close(one, mlp.H, **CLOSE)


def _quadratic(H):
    theta = torch.zeros(H.shape[0], dtype=F64, requires_grad=True)
    return (lambda: 0.5 * theta @ H @ theta), [theta]


def test_hutchinson_variance_is_the_exact_rademacher_variance_by_enumeration():
    g = torch.Generator().manual_seed(4)
    A = torch.randn(4, 4, generator=g, dtype=F64)
    H = A + A.T
    signs = torch.tensor(
        [[1 - 2 * ((k >> i) & 1) for i in range(4)] for k in range(16)], dtype=F64
    )  # all 16 sign vectors, each with probability 1/16
    samples = signs * (signs @ H)  # u * (H u), one row per u
    torch.testing.assert_close(samples.mean(0), H.diagonal(), rtol=0, atol=1e-14)
    # population variance over the 16 equally likely probes; sums of 16 terms of size ~10
    torch.testing.assert_close(
        samples.var(0, unbiased=False), la.hutchinson_variance(H), rtol=1e-12, atol=1e-12
    )


def test_gaussian_probes_are_unbiased_with_2_hii_squared_more_variance():
    g = torch.Generator().manual_seed(5)
    A = torch.randn(6, 6, generator=g, dtype=F64)
    H = A + A.T + 4 * torch.eye(6, dtype=F64)  # a heavy diagonal: the difference shows
    loss, params = _quadratic(H)
    S = 4000
    for distribution in ("rademacher", "gaussian"):
        samples = la.hutchinson_samples(loss, params, S, seed=1, distribution=distribution)
        assert samples.shape == (S, 6)
        var = la.hutchinson_variance(H, distribution)
        # the mean of S samples has standard error sqrt(var / S): 5 of them is a wide margin
        assert ((samples.mean(0) - H.diagonal()).abs() < 5 * (var / S).sqrt()).all()
        # a sample variance of S draws is within ~sqrt(2 / S) * kurtosis factor (~0.05 for
        # these sums of products) of the truth: 20% is 4 standard errors
        torch.testing.assert_close(samples.var(0), var, rtol=0.2, atol=0)
    expected_gap = 2 * H.diagonal() ** 2
    gap = la.hutchinson_variance(H, "gaussian") - la.hutchinson_variance(H, "rademacher")
    torch.testing.assert_close(gap, expected_gap, rtol=1e-14, atol=0)


def test_hutchinson_samples_average_to_hutchinson_diag_with_the_same_probes(mlp):
    for distribution in ("rademacher", "gaussian"):
        rows = la.hutchinson_samples(mlp.loss, mlp.params, 16, seed=3, distribution=distribution)
        mean = la.flatten(
            la.hutchinson_diag(mlp.loss, mlp.params, 16, seed=3, distribution=distribution)
        )
        # the same 16 terms summed in another order: a few ulps of the largest term
        torch.testing.assert_close(rows.mean(0), mean, rtol=1e-12, atol=1e-14)
    rademacher = la.hutchinson_samples(mlp.loss, mlp.params, 4, seed=3)
    gaussian = la.hutchinson_samples(mlp.loss, mlp.params, 4, seed=3, distribution="gaussian")
    assert not torch.equal(rademacher, gaussian)


def test_gaussian_probe_is_not_exact_for_a_diagonal_hessian():
    H = torch.diag(torch.tensor([1.0, -2.0, 3.0], dtype=F64))
    loss, params = _quadratic(H)
    exact = la.hutchinson_samples(loss, params, 5, seed=0)
    # u_i^2 = 1 exactly: every sample is the diagonal
    assert torch.equal(exact, H.diagonal().expand(5, 3))
    gaussian = la.hutchinson_samples(loss, params, 5, seed=0, distribution="gaussian")
    assert (gaussian - H.diagonal()).abs().max() > 0.01
    assert torch.equal(la.hutchinson_variance(H), torch.zeros(3, dtype=F64))


class Softmax:
    """A softmax regression (logits linear in the parameters) and a tanh MLP on seeded data."""

    def __init__(self, hidden: int | None, seed: int = 0, n: int = 12) -> None:
        g = torch.Generator().manual_seed(seed)
        layers = [nn.Linear(4, 3)] if hidden is None else [
            nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 3)]  # fmt: skip
        self.model = nn.Sequential(*layers).to(F64)
        with torch.no_grad():
            for p in self.model.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=F64))
        self.X = torch.randn(n, 4, generator=g, dtype=F64)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.params = list(self.model.parameters())

    def loss(self):
        return nn.functional.cross_entropy(self.model(self.X), self.y)

    def gauss_newton_by_loop(self):
        """sum_r J_r^T (diag p - p p^T) J_r / R, one row r and one class c at a time."""
        rows = []
        for x in self.X:
            z = self.model(x)
            J = torch.stack([la.flatten(torch.autograd.grad(z[c], self.params,
                                                            retain_graph=True))
                             for c in range(3)])  # fmt: skip
            p = torch.softmax(z.detach(), -1)
            rows.append(J.T @ (torch.diag(p) - torch.outer(p, p)) @ J)
        return torch.stack(rows).mean(0)


def test_gauss_newton_against_a_loop_and_its_diagonal():
    for hidden in (None, 5):
        problem = Softmax(hidden)
        G = la.gauss_newton(problem.model(problem.X), problem.params, chunk=5)
        torch.testing.assert_close(G, problem.gauss_newton_by_loop(), **CLOSE)
        torch.testing.assert_close(G, G.T, rtol=0, atol=1e-15)
        # positive semi-definite: eigenvalues >= 0 up to rounding of ||G||
        assert float(torch.linalg.eigvalsh(G).min()) > -1e-12 * float(G.abs().max())
        diag = la.gauss_newton_diag(problem.model(problem.X), problem.params)
        assert [d.shape for d in diag] == [p.shape for p in problem.params]
        torch.testing.assert_close(la.flatten(diag), G.diagonal(), **CLOSE)


def test_gauss_newton_is_the_hessian_when_logits_are_linear_in_the_parameters():
    problem = Softmax(None)
    H = la.exact_hessian(problem.loss, problem.params)
    G = la.gauss_newton(problem.model(problem.X), problem.params)
    torch.testing.assert_close(G, H, **CLOSE)
    # not so for the MLP: the residual term makes some of H's diagonal negative there
    mlp = Softmax(5, seed=2, n=40)
    H = la.exact_hessian(mlp.loss, mlp.params)
    G = la.gauss_newton_diag(mlp.model(mlp.X), mlp.params)
    assert (H.diagonal() < 0).any() and (la.flatten(G) >= 0).all()
    assert float((H.diagonal() - la.flatten(G)).abs().max()) > 1e-3


def test_gauss_newton_of_sequence_logits_averages_over_every_row():
    problem = Softmax(5, n=12)
    flat = la.gauss_newton(problem.model(problem.X), problem.params)
    as_sequences = la.gauss_newton(problem.model(problem.X.reshape(3, 4, 4)), problem.params)
    torch.testing.assert_close(as_sequences, flat, **CLOSE)


def test_empirical_fisher_is_the_mean_squared_per_example_gradient():
    problem = Softmax(5, n=6)
    losses = nn.functional.cross_entropy(problem.model(problem.X), problem.y, reduction="none")
    F = la.flatten(la.empirical_fisher_diag(losses, problem.params, chunk=4))
    per_example = torch.stack(
        [la.flatten(torch.autograd.grad(losses[r], problem.params, retain_graph=True))
         for r in range(6)]
    )  # fmt: skip
    torch.testing.assert_close(F, (per_example**2).mean(0), **CLOSE)
    # Adam's second moment, B E[g_B^2] over batches of B = 2 drawn with replacement (all 36
    # ordered pairs, equally likely), is F + (B - 1) (grad L)^2 exactly
    B, mean_grad = 2, per_example.mean(0)
    pairs = torch.stack([(per_example[a] + per_example[b]) / 2 for a in range(6) for b in range(6)])
    torch.testing.assert_close(B * (pairs**2).mean(0), F + (B - 1) * mean_grad**2, **CLOSE)


def test_curvature_additions_reject_bad_arguments(mlp):
    cases = [
        (lambda: la.hutchinson_diag(mlp.loss, mlp.params, distribution="uniform"), "distribution"),
        (lambda: la.hutchinson_samples(mlp.loss, mlp.params, n_samples=0), "n_samples"),
        (lambda: la.hutchinson_variance(torch.zeros(2, 3)), "H"),
        (lambda: la.hutchinson_variance(torch.eye(2), "cauchy"), "distribution"),
        (lambda: la.exact_hessian(mlp.loss, mlp.params, chunk=0), "chunk"),
        (lambda: la.gauss_newton(torch.zeros(3, 2), mlp.params), "logits"),
        (lambda: la.gauss_newton_diag(mlp.model(mlp.X), []), "params"),
        (lambda: la.empirical_fisher_diag(mlp.loss(), mlp.params), "losses"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=rf"Invalid {name}\b"):
            call()


def test_finite_differences_approach_hvp_until_rounding_takes_over(mlp):
    v = torch.randn(mlp.H.shape[0], generator=torch.Generator().manual_seed(2), dtype=F64)
    exact = mlp.H @ v
    before = [p.detach().clone() for p in mlp.params]

    def error(h, central=True):
        fd = la.finite_difference_hvp(mlp.loss, mlp.params, v, h, central=central)
        return float((fd - exact).norm() / exact.norm())

    # truncation: O(h^2) central, O(h) forward; shrinking h tenfold from 1e-2 cuts the central
    # error about 100x and the forward error about 10x (within a factor 3 either way)
    assert 30 < error(1e-2) / error(1e-3) < 300
    assert 3 < error(1e-2, central=False) / error(1e-3, central=False) < 30
    # rounding: at h = 1e-12 the difference of gradients keeps only ~4 significant digits
    assert error(1e-12) > 100 * error(1e-5)
    assert error(1e-5) < 1e-8  # near the optimal h ~ eps^(1/3)
    # the parameters are restored exactly
    assert all(torch.equal(p.detach(), b) for p, b in zip(mlp.params, before))
    as_list = la.finite_difference_hvp(mlp.loss, mlp.params, la.unflatten(v, mlp.params), 1e-5)
    torch.testing.assert_close(la.flatten(as_list), exact, rtol=1e-7, atol=1e-9)
    with pytest.raises(ValueError, match="Invalid h"):
        la.finite_difference_hvp(mlp.loss, mlp.params, v, 0.0)
    with pytest.raises(ValueError, match="Invalid loss"):
        la.finite_difference_hvp(mlp.loss(), mlp.params, v, 1e-3)
