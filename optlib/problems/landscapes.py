r"""Two-dimensional test functions with exact, hand-derived gradients and Hessians.

Every landscape maps a point :math:`\theta = (\theta_1, \theta_2)` to a loss :math:`f(\theta)` and
offers

* ``f(xy)``, ``grad(xy)`` and ``hessian(xy)``, written out by hand (not by autograd, which the
  tests use to check them); ``xy`` is a tensor of shape ``(..., 2)``, so a whole contour grid is
  evaluated in one call, and the results have shapes ``(...)``, ``(..., 2)`` and ``(..., 2, 2)``;
* ``minimizers``: the known minimisers as a ``(k, 2)`` tensor, and ``f_min``, the minimum value;
* ``box``: a plotting window ``((x_lo, x_hi), (y_lo, y_hi))`` and ``start``: a customary
  starting point.

Inputs are converted to float64 tensors (numpy arrays and lists are accepted). ``f`` is built
from differentiable torch operations, so it can also be used as an ordinary loss.

The functions are the classic ones: the quadratic
:math:`f(\theta) = \tfrac12 (\theta-\theta^\star)^\top H (\theta-\theta^\star)` with
:math:`H = R(\phi)\,\mathrm{diag}(L, \mu)\,R(\phi)^\top` (the model problem of chapters 1, 3
and 7), Rosenbrock's valley (Rosenbrock, 1960), Beale's function (Beale, 1958), Himmelblau's
four-minimum function (Himmelblau, 1972), and a saddle; :class:`Noisy` adds seeded Gaussian noise
to any landscape's gradient, for stochastic-gradient demonstrations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .._seed import derive_seed

Box = tuple[tuple[float, float], tuple[float, float]]

__all__ = [
    "Landscape",
    "Quadratic",
    "Rosenbrock",
    "Beale",
    "Himmelblau",
    "Saddle",
    "Noisy",
    "as_points",
    "LANDSCAPES",
]


def as_points(xy: Tensor | Sequence | object) -> Tensor:
    """``xy`` as a float64 tensor of shape ``(..., 2)`` (tensors keep their autograd graph)."""
    t = xy if isinstance(xy, Tensor) else torch.as_tensor(xy)
    if t.dtype != torch.float64:
        t = t.to(torch.float64)
    if t.shape[-1:] != (2,):
        raise ValueError(f"a landscape point must have a last dimension of size 2, got {t.shape}")
    return t


def _stack_hessian(fxx: Tensor, fxy: Tensor, fyy: Tensor) -> Tensor:
    row1 = torch.stack([fxx, fxy], dim=-1)
    row2 = torch.stack([fxy, fyy], dim=-1)
    return torch.stack([row1, row2], dim=-2)


class Landscape:
    """Base class: subclasses define ``_f``, ``_grad`` and ``_hessian`` on ``(x, y)`` tensors."""

    name: str = "landscape"
    box: Box = ((-2.0, 2.0), (-2.0, 2.0))
    start: tuple[float, float] = (-1.5, 1.5)
    minimizers: Tensor | None = None

    def f(self, xy) -> Tensor:
        r"""The loss :math:`f(\theta)`, shape ``(...)``."""
        p = as_points(xy)
        return self._f(p[..., 0], p[..., 1])

    def grad(self, xy) -> Tensor:
        r"""The exact gradient :math:`\nabla f(\theta)`, shape ``(..., 2)``."""
        p = as_points(xy)
        return torch.stack(self._grad(p[..., 0], p[..., 1]), dim=-1)

    def hessian(self, xy) -> Tensor:
        r"""The exact Hessian :math:`\nabla^2 f(\theta)`, shape ``(..., 2, 2)``."""
        p = as_points(xy)
        return _stack_hessian(*self._hessian(p[..., 0], p[..., 1]))

    def __call__(self, xy) -> Tensor:
        return self.f(xy)

    @property
    def f_min(self) -> float | None:
        """The minimum value (``None`` when unknown)."""
        if self.minimizers is None:
            return None
        return float(self.f(self.minimizers).min())

    def reset(self) -> None:
        """Restore any random state (a no-op for deterministic landscapes)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # subclasses implement these three on the coordinate tensors x, y
    def _f(self, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def _grad(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _hessian(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError


class Quadratic(Landscape):
    r"""The model problem :math:`f(\theta) = \tfrac12 (\theta-\theta^\star)^\top H
    (\theta-\theta^\star)` with :math:`H = R(\phi)\,\mathrm{diag}(L, \mu)\,R(\phi)^\top`.

    Args:
        kappa: condition number :math:`\kappa = L/\mu \ge 1`.
        L: largest eigenvalue (the smoothness constant); :math:`\mu = L/\kappa`.
        angle: rotation :math:`\phi` of the eigenvectors, in radians (0 puts the steep
            direction along :math:`\theta_1`).
        center: the minimiser :math:`\theta^\star`.
    """

    name = "quadratic"

    def __init__(
        self,
        kappa: float = 10.0,
        *,
        L: float = 1.0,
        angle: float = 0.0,
        center: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        if not (kappa >= 1 and math.isfinite(kappa)):
            raise ValueError(f"Invalid kappa: {kappa!r}; need 1 <= kappa < inf")
        if not (L > 0 and math.isfinite(L)):
            raise ValueError(f"Invalid L: {L!r}; need 0 < L < inf")
        self.kappa = float(kappa)
        self.L = float(L)
        self.mu = self.L / self.kappa
        self.angle = float(angle)
        c, s = math.cos(angle), math.sin(angle)
        self.R = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
        self.H = (
            self.R @ torch.diag(torch.tensor([self.L, self.mu], dtype=torch.float64)) @ self.R.T
        )
        self.center = torch.tensor(center, dtype=torch.float64)
        self.minimizers = self.center.unsqueeze(0)
        # A window that shows the valley: wide along the flat direction, as the start needs.
        cx, cy = center
        self.box = ((cx - 2.0, cx + 2.0), (cy - 2.0, cy + 2.0))
        self.start = (cx - 1.5, cy + 1.5)

    @property
    def eigenvalues(self) -> tuple[float, float]:
        r""":math:`(L, \mu)`, the eigenvalues of :math:`H`."""
        return (self.L, self.mu)

    @property
    def optimal_lr(self) -> float:
        r"""The step :math:`\eta^\star = 2/(L+\mu)` that minimises GD's contraction factor."""
        return 2.0 / (self.L + self.mu)

    def gd_rate(self, lr: float | None = None) -> float:
        r"""GD's contraction factor :math:`\rho(\eta) = \max(|1-\eta L|, |1-\eta\mu|)`.

        With ``lr=None`` it is evaluated at :math:`\eta^\star`, where it equals
        :math:`(\kappa-1)/(\kappa+1)`.
        """
        eta = self.optimal_lr if lr is None else lr
        return max(abs(1 - eta * self.L), abs(1 - eta * self.mu))

    # Written with matrix products (two or three torch calls), as optimizer loops call them often.
    def f(self, xy) -> Tensor:
        e = as_points(xy) - self.center
        return 0.5 * ((e @ self.H) * e).sum(-1)

    def grad(self, xy) -> Tensor:
        return (as_points(xy) - self.center) @ self.H  # H is symmetric

    def hessian(self, xy) -> Tensor:
        p = as_points(xy)
        return self.H.expand(*p.shape[:-1], 2, 2).clone()

    def __repr__(self) -> str:
        return f"Quadratic(kappa={self.kappa:g}, L={self.L:g}, angle={self.angle:g})"


class Rosenbrock(Landscape):
    r"""Rosenbrock's banana valley :math:`f = (a-x)^2 + b\,(y-x^2)^2`, minimum 0 at
    :math:`(a, a^2)` (Rosenbrock, 1960). Classic start :math:`(-1.2, 1)`."""

    name = "rosenbrock"
    box = ((-2.0, 2.0), (-1.0, 3.0))
    start = (-1.2, 1.0)

    def __init__(self, a: float = 1.0, b: float = 100.0) -> None:
        self.a, self.b = float(a), float(b)
        self.minimizers = torch.tensor([[self.a, self.a**2]], dtype=torch.float64)

    def _f(self, x, y):
        return (self.a - x) ** 2 + self.b * (y - x * x) ** 2

    def _grad(self, x, y):
        r = y - x * x
        return -2 * (self.a - x) - 4 * self.b * x * r, 2 * self.b * r

    def _hessian(self, x, y):
        b = self.b
        fxx = 2 - 4 * b * y + 12 * b * x * x
        fxy = -4 * b * x
        fyy = 2 * b * torch.ones_like(x)
        return fxx, fxy, fyy

    def __repr__(self) -> str:
        return f"Rosenbrock(a={self.a:g}, b={self.b:g})"


class Beale(Landscape):
    r"""Beale's function :math:`f = \sum_{i=1}^{3} (c_i - x + x y^i)^2` with
    :math:`c = (1.5, 2.25, 2.625)`, minimum 0 at :math:`(3, 0.5)` (Beale, 1958)."""

    name = "beale"
    box = ((-4.5, 4.5), (-4.5, 4.5))
    start = (1.0, 1.5)
    c = (1.5, 2.25, 2.625)

    def __init__(self) -> None:
        self.minimizers = torch.tensor([[3.0, 0.5]], dtype=torch.float64)

    def _terms(self, x, y):
        """Residuals :math:`u_i = c_i - x + x y^i` and their partial derivatives."""
        out = []
        for i, ci in enumerate(self.c, start=1):
            u = ci - x + x * y**i
            ux = y**i - 1
            uy = i * x * y ** (i - 1)
            uxy = i * y ** (i - 1)
            uyy = i * (i - 1) * x * y ** (i - 2) if i >= 2 else torch.zeros_like(x)
            out.append((u, ux, uy, uxy, uyy))
        return out

    def _f(self, x, y):
        return sum((ci - x + x * y**i) ** 2 for i, ci in enumerate(self.c, start=1))

    def _grad(self, x, y):
        gx = gy = 0
        for u, ux, uy, _, _ in self._terms(x, y):
            gx = gx + 2 * u * ux
            gy = gy + 2 * u * uy
        return gx, gy

    def _hessian(self, x, y):
        # d²(u²) = 2 (∇u ∇uᵀ + u ∇²u), and ∂²u/∂x² = 0.
        fxx = fxy = fyy = 0
        for u, ux, uy, uxy, uyy in self._terms(x, y):
            fxx = fxx + 2 * ux * ux
            fxy = fxy + 2 * (ux * uy + u * uxy)
            fyy = fyy + 2 * (uy * uy + u * uyy)
        return fxx, fxy, fyy


class Himmelblau(Landscape):
    r"""Himmelblau's function :math:`f = (x^2+y-11)^2 + (x+y^2-7)^2`, four minimisers with
    :math:`f = 0` (Himmelblau, 1972)."""

    name = "himmelblau"
    box = ((-5.0, 5.0), (-5.0, 5.0))
    start = (0.0, 0.0)

    def __init__(self) -> None:
        self.minimizers = torch.tensor(
            [
                [3.0, 2.0],
                [-2.805118086952745, 3.131312518250573],
                [-3.779310253377747, -3.283185991286170],
                [3.584428340330492, -1.848126526964404],
            ],
            dtype=torch.float64,
        )

    def _f(self, x, y):
        return (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2

    def _grad(self, x, y):
        p, q = x * x + y - 11, x + y * y - 7
        return 4 * x * p + 2 * q, 2 * p + 4 * y * q

    def _hessian(self, x, y):
        fxx = 12 * x * x + 4 * y - 42
        fxy = 4 * x + 4 * y
        fyy = 4 * x + 12 * y * y - 26
        return fxx, fxy, fyy


class Saddle(Landscape):
    r"""A saddle between two minima: :math:`f = \tfrac{a}{2} x^2 + \tfrac14 (y^2 - 1)^2`.

    The origin is a saddle point (Hessian :math:`\mathrm{diag}(a, -1)`); the minimisers are
    :math:`(0, \pm 1)` with :math:`f = 0`. A start on the line :math:`y = 0` never leaves it under
    gradient descent; any perturbation escapes along :math:`y`.
    """

    name = "saddle"
    box = ((-1.5, 1.5), (-1.5, 1.5))
    start = (1.2, 1e-3)

    def __init__(self, a: float = 1.0) -> None:
        if not a > 0:
            raise ValueError(f"Invalid a: {a!r}; need a > 0")
        self.a = float(a)
        self.minimizers = torch.tensor([[0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
        self.saddle_points = torch.zeros(1, 2, dtype=torch.float64)

    def _f(self, x, y):
        return 0.5 * self.a * x * x + 0.25 * (y * y - 1) ** 2

    def _grad(self, x, y):
        return self.a * x, y * (y * y - 1)

    def _hessian(self, x, y):
        return self.a * torch.ones_like(x), torch.zeros_like(x), 3 * y * y - 1

    def __repr__(self) -> str:
        return f"Saddle(a={self.a:g})"


class Noisy(Landscape):
    r"""``base`` with a noisy gradient :math:`\nabla f(\theta) + \sigma \xi`,
    :math:`\xi \sim \mathcal N(0, I)`, drawn from a seeded generator.

    ``f`` and ``hessian`` are the base landscape's (exact). Each ``grad`` call draws fresh noise;
    :meth:`reset` restarts the noise sequence from ``seed`` (``optlib.experiments.train.run`` calls
    it, so two runs see the same noise).
    """

    def __init__(self, base: Landscape, sigma: float, *, seed: int = 0) -> None:
        if not (sigma >= 0 and math.isfinite(sigma)):
            raise ValueError(f"Invalid sigma: {sigma!r}; need 0 <= sigma < inf")
        self.base, self.sigma, self.seed = base, float(sigma), int(seed)
        self.name = f"noisy {base.name}"
        self.box, self.start, self.minimizers = base.box, base.start, base.minimizers
        self._gen = torch.Generator().manual_seed(derive_seed(self.seed))

    def reset(self) -> None:
        self._gen.manual_seed(derive_seed(self.seed))
        self.base.reset()

    def f(self, xy) -> Tensor:
        return self.base.f(xy)

    def grad(self, xy) -> Tensor:
        g = self.base.grad(xy)
        noise = torch.randn(g.shape, generator=self._gen, dtype=g.dtype)
        return g + self.sigma * noise

    def hessian(self, xy) -> Tensor:
        return self.base.hessian(xy)

    def __getattr__(self, name: str):
        # Expose the base's attributes (L, mu, kappa, optimal_lr, ...) on the noisy variant.
        if name.startswith("_") or name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def __repr__(self) -> str:
        return f"Noisy({self.base!r}, sigma={self.sigma:g}, seed={self.seed})"


#: Constructors of the standard landscapes by name (used by the explorers).
LANDSCAPES = {
    "quadratic (κ=10)": lambda: Quadratic(10.0, angle=math.pi / 6),
    "quadratic (κ=50)": lambda: Quadratic(50.0, angle=math.pi / 6),
    "rosenbrock": Rosenbrock,
    "beale": Beale,
    "himmelblau": Himmelblau,
    "saddle": Saddle,
}
