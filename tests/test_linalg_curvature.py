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
