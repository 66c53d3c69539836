r"""L-BFGS: quasi-Newton steps from a short history of curvature pairs (chapter 7).

Same arguments, defaults, state and results as :class:`torch.optim.LBFGS` (which follows
Schmidt's minFunc and Torch7's ``optim.lbfgs``). Nocedal, "Updating quasi-Newton matrices with
limited storage", Math. Comp. 1980; Liu & Nocedal, "On the limited memory BFGS method for large
scale optimization", Math. Prog. 1989; Nocedal & Wright, *Numerical Optimization*, 2nd ed.,
Algorithms 7.4 (two-loop recursion), 3.5 and 3.6 (strong-Wolfe line search and zoom).

All parameters are treated as one flat vector :math:`x`. After a step
:math:`x_{k+1} = x_k + t_k d_k` the curvature pair

.. math::

   s_k = t_k d_k, \qquad y_k = g_{k+1} - g_k, \qquad \rho_k = \frac{1}{y_k^\top s_k}

is kept when :math:`y_k^\top s_k > 10^{-10}` (the last ``history_size`` pairs), and the next
direction :math:`d = -H g` applies the L-BFGS inverse-Hessian estimate :math:`H` to the
gradient without forming it, by the two-loop recursion:

.. math::

   &q \leftarrow g \\
   &\textbf{for } i = k, k-1, \dots, k-m+1: \quad
      \alpha_i \leftarrow \rho_i\, s_i^\top q, \quad q \leftarrow q - \alpha_i y_i \\
   &r \leftarrow \gamma\, q, \qquad \gamma = \frac{s_k^\top y_k}{y_k^\top y_k}
      \quad\text{(initial Hessian } H^0 = \gamma I\text{)} \\
   &\textbf{for } i = k-m+1, \dots, k: \quad
      \beta \leftarrow \rho_i\, y_i^\top r, \quad r \leftarrow r + (\alpha_i - \beta)\, s_i \\
   &d \leftarrow -r

The first direction is :math:`d = -g` with step :math:`t = \eta\min(1, 1/\lVert g\rVert_1)`;
later steps start from :math:`t = \eta`. With ``line_search_fn=None`` that step is taken as is;
with ``"strong_wolfe"`` it is refined until the strong Wolfe conditions hold,

.. math::

   f(x + t d) \le f(x) + c_1 t\, g^\top d, \qquad
   \lvert \nabla f(x + t d)^\top d \rvert \le c_2 \lvert g^\top d \rvert,
   \qquad c_1 = 10^{-4},\ c_2 = 0.9.

One ``step(closure)`` runs up to ``max_iter`` iterations and ``max_eval`` closure calls, and
stops early when :math:`\lVert g\rVert_\infty \le` ``tolerance_grad`` or when the step, the
directional derivative or the change in loss falls below ``tolerance_change``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torch import Tensor

from ._base import Optimizer, eager, scalar
from ._validate import check_choice, check_nonnegative, check_positive_int

Number = float | Tensor  # a step length or a loss: Python float or 0-d tensor, as in torch
_ONE_GROUP = (
    "Invalid params: LBFGS doesn't support per-parameter options (parameter groups); it "
    "optimises one flat vector with one curvature history"
)


def two_loop_direction(
    g: Tensor,
    s_list: list[Tensor],
    y_list: list[Tensor],
    rho_list: list[Number],
    H_diag: Number,
    *,
    alpha: list | None = None,
) -> Tensor:
    r"""The L-BFGS direction :math:`d = -H g` by the two-loop recursion (module docstring).

    ``s_list``, ``y_list``, ``rho_list`` hold the curvature pairs oldest first; ``H_diag`` is
    :math:`\gamma`. The recursion runs on :math:`q = -g`, which yields :math:`-Hg` directly.
    ``alpha``, if given, receives :math:`\alpha_i` (torch keeps them in ``state["al"]``).
    """
    m = len(s_list)
    if alpha is None:
        alpha = [None] * m
    q = g.neg()
    for i in reversed(range(m)):
        alpha[i] = s_list[i].dot(q) * rho_list[i]
        q.add_(y_list[i], alpha=-alpha[i])
    r = torch.mul(q, H_diag)
    for i in range(m):
        beta = y_list[i].dot(r) * rho_list[i]
        r.add_(s_list[i], alpha=alpha[i] - beta)
    return r


def cubic_interpolate(
    x1: Number,
    f1: Number,
    g1: Number,
    x2: Number,
    f2: Number,
    g2: Number,
    bounds: tuple[Number, Number] | None = None,
) -> Number:
    r"""Minimiser of the cubic through :math:`(x_1, f_1, f'_1)` and :math:`(x_2, f_2, f'_2)`,
    clamped to ``bounds`` (default: the interval between the points); the midpoint when the
    cubic has no minimiser. Nocedal & Wright, eq. (3.59):

    .. math::

       d_1 = f'_1 + f'_2 - 3\frac{f_1 - f_2}{x_1 - x_2}, \quad
       d_2 = \sqrt{d_1^2 - f'_1 f'_2}, \quad
       x^\star = x_2 - (x_2 - x_1)\frac{f'_2 + d_2 - d_1}{f'_2 - f'_1 + 2 d_2}
    """
    if bounds is not None:
        lo, hi = bounds
    else:
        lo, hi = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_squared = d1**2 - g1 * g2
    if d2_squared < 0:
        return (lo + hi) / 2.0
    d2 = d2_squared.sqrt() if isinstance(d2_squared, Tensor) else math.sqrt(d2_squared)
    if x1 <= x2:
        x_star = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        x_star = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(x_star, lo), hi)


class Trial(NamedTuple):
    """A point on the line: step ``t``, loss ``f``, gradient ``g`` and slope ``gtd`` = g·d."""

    t: Number
    f: float
    g: Tensor
    gtd: Number


def strong_wolfe_bracket(
    phi: Callable[[Number], Trial],
    start: Trial,
    first: Trial,
    *,
    c1: float,
    c2: float,
    max_ls: int,
) -> tuple[list[Trial], bool, int]:
    r"""Phase 1 (Nocedal & Wright, Alg. 3.5): grow the step until an interval is bracketed.

    Returns ``(bracket, done, n_trials)``: a one-point bracket with ``done=True`` when a trial
    already satisfies the strong Wolfe conditions, else two trials around an acceptable step.
    ``n_trials`` counts the evaluations of ``phi`` made here after ``first``.
    """
    f0, slope0 = start.f, start.gtd
    prev, new = start, first
    n = 0
    while n < max_ls:
        if new.f > f0 + c1 * new.t * slope0 or (n > 1 and new.f >= prev.f):
            return [prev, new], False, n  # sufficient decrease fails: minimum passed
        if abs(new.gtd) <= -c2 * slope0:
            return [new], True, n  # strong Wolfe holds
        if new.gtd >= 0:
            return [prev, new], False, n  # slope turned positive: minimum passed
        # extrapolate, at least 1% and at most 10x further
        t_next = cubic_interpolate(
            prev.t, prev.f, prev.gtd, new.t, new.f, new.gtd,
            bounds=(new.t + 0.01 * (new.t - prev.t), new.t * 10),
        )  # fmt: skip
        prev, new = new, phi(t_next)
        n += 1
    return [start, new], False, n  # out of evaluations


def strong_wolfe_zoom(
    phi: Callable[[Number], Trial],
    start: Trial,
    bracket: list[Trial],
    d_norm: Tensor,
    *,
    c1: float,
    c2: float,
    tolerance_change: float,
    max_ls: int,
) -> tuple[Trial, int]:
    r"""Phase 2 (Nocedal & Wright, Alg. 3.6): shrink ``bracket`` by safeguarded cubic
    interpolation until a trial satisfies the strong Wolfe conditions, the bracket is shorter
    than ``tolerance_change`` (in :math:`\lVert d\rVert_\infty` units) or ``max_ls`` trials are
    spent. Returns the lowest trial and the number of evaluations made here."""
    f0, slope0 = start.f, start.gtd
    lo, hi = (0, 1) if bracket[0].f <= bracket[1].f else (1, 0)
    insufficient_progress = False
    n = 0
    while n < max_ls:
        if abs(bracket[1].t - bracket[0].t) * d_norm < tolerance_change:
            break
        a, b = bracket
        t = cubic_interpolate(a.t, a.f, a.gtd, b.t, b.f, b.gtd)
        # Safeguard: a trial within 10% of an end twice in a row (or outside) moves to 10%.
        t_min, t_max = min(a.t, b.t), max(a.t, b.t)
        margin = 0.1 * (t_max - t_min)
        if min(t_max - t, t - t_min) < margin:
            if insufficient_progress or t >= t_max or t <= t_min:
                t = t_max - margin if abs(t - t_max) < abs(t - t_min) else t_min + margin
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False

        new = phi(t)
        n += 1
        if new.f > f0 + c1 * t * slope0 or new.f >= bracket[lo].f:
            bracket[hi] = new  # no sufficient decrease, or not the lowest: new high end
            lo, hi = (0, 1) if bracket[0].f <= bracket[1].f else (1, 0)
        else:
            if abs(new.gtd) <= -c2 * slope0:
                bracket[lo] = new
                return bracket[lo], n  # strong Wolfe holds
            if new.gtd * (bracket[hi].t - bracket[lo].t) >= 0:
                bracket[hi] = bracket[lo]  # the minimum lies on the other side
            bracket[lo] = new
    return bracket[lo], n


def strong_wolfe_line_search(
    phi: Callable[[Number], Trial],
    start: Trial,
    t: Number,
    d: Tensor,
    *,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
    max_ls: int = 25,
) -> tuple[Trial, int]:
    """A step along ``d`` from ``start`` satisfying the strong Wolfe conditions (module
    docstring), trying ``t`` first; ``phi(t)`` evaluates the loss at ``x + t d``. Returns the
    accepted trial and the number of evaluations of ``phi``."""
    first = phi(t)
    bracket, done, n_bracket = strong_wolfe_bracket(phi, start, first, c1=c1, c2=c2, max_ls=max_ls)
    if done:
        return bracket[0], 1 + n_bracket
    if n_bracket == max_ls:  # no evaluations left to zoom: keep the lower end
        lower = bracket[0] if bracket[0].f <= bracket[1].f else bracket[1]
        return lower, 1 + n_bracket
    best, n_zoom = strong_wolfe_zoom(
        phi,
        start,
        bracket,
        d.abs().max(),
        c1=c1,
        c2=c2,
        tolerance_change=tolerance_change,
        max_ls=max_ls - n_bracket,
    )
    return best, 1 + n_bracket + n_zoom


class LBFGS(Optimizer):
    r"""Limited-memory BFGS (Nocedal 1980; Liu & Nocedal 1989); drop-in
    :class:`torch.optim.LBFGS`. ``step`` needs a closure that re-evaluates the loss and its
    gradient and returns the loss. One parameter group only; state is global and, as in torch,
    stored under the first parameter (same keys, so state dicts are interchangeable).

    Args:
        params: parameters (one group).
        lr: learning rate :math:`\eta \ge 0`, the initial trial step.
        max_iter: iterations per ``step``.
        max_eval: closure evaluations per ``step`` (default ``max_iter * 5 // 4``).
        tolerance_grad: stop when :math:`\lVert g\rVert_\infty \le` this.
        tolerance_change: stop when the step, the slope or the loss change is below this.
        history_size: number :math:`m` of curvature pairs kept.
        line_search_fn: ``None`` (fixed step :math:`t`) or ``"strong_wolfe"``.

    State (torch's names): ``func_evals``, ``n_iter``, ``d``, ``t``, ``old_dirs`` (the
    :math:`y_i`), ``old_stps`` (the :math:`s_i`), ``ro`` (the :math:`\rho_i`), ``H_diag``
    (:math:`\gamma`), ``prev_flat_grad``, ``prev_loss``, ``al`` (the :math:`\alpha_i`).

    As in torch: :meth:`add_param_group` is refused (torch accepts the group and fails at the
    next ``step``; optlib refuses it at once, with torch's constructor message), and
    ``torch.compile(opt.step)`` runs the step eagerly (torch excludes ``LBFGS.step`` from
    compilation: the line search branches on the loss, and the history grows each iteration).
    Sparse gradients are used as dense ones, as in torch.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 1,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: str | None = None,
    ) -> None:
        check_nonnegative("lr", lr)
        check_positive_int("max_iter", max_iter)
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        check_positive_int("max_eval", max_eval)
        check_nonnegative("tolerance_grad", tolerance_grad)
        check_nonnegative("tolerance_change", tolerance_change)
        check_positive_int("history_size", history_size)
        check_choice("line_search_fn", line_search_fn, (None, "strong_wolfe"))
        defaults = dict(
            lr=lr,
            max_iter=max_iter,
            max_eval=max_eval,
            tolerance_grad=tolerance_grad,
            tolerance_change=tolerance_change,
            history_size=history_size,
            line_search_fn=line_search_fn,
        )
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(_ONE_GROUP)
        self._params: list[Tensor] = self.param_groups[0]["params"]

    def add_param_group(self, param_group: dict) -> None:
        """Refused once the optimizer has its group: L-BFGS treats all parameters as one vector
        with one history (torch raises at the next ``step``)."""
        if self.param_groups:
            raise ValueError(_ONE_GROUP)
        super().add_param_group(param_group)

    # --- the parameters as one flat vector x -------------------------------------------------

    @staticmethod
    def _real_view(t: Tensor) -> Tensor:
        """Complex tensors are optimised as pairs of reals, as in torch."""
        return torch.view_as_real(t) if torch.is_complex(t) else t

    def _flat_grad(self) -> Tensor:
        """:math:`g`: every gradient flattened into one vector (zeros where ``grad`` is None)."""
        views = []
        for p in self._params:
            if p.grad is None:
                views.append(p.new_zeros(p.numel()))
                continue
            grad = p.grad.to_dense() if p.grad.is_sparse else p.grad
            views.append(self._real_view(grad.view(-1)).view(-1))
        return torch.cat(views, 0)

    def _move(self, t: Number, d: Tensor) -> None:
        r""":math:`x \leftarrow x + t d`, in place."""
        offset = 0
        for p in self._params:
            p = self._real_view(p)
            p.add_(d[offset : offset + p.numel()].view_as(p), alpha=t)
            offset += p.numel()

    def _evaluate_along(self, closure: Callable[[], Tensor], d: Tensor) -> Callable:
        r""":math:`\phi(t)`: the loss and gradient at :math:`x + t d`, leaving :math:`x` as is."""
        x = [p.clone(memory_format=torch.contiguous_format) for p in self._params]

        def phi(t: Number) -> Trial:
            self._move(t, d)
            f = float(closure())
            g = self._flat_grad()
            for p, x_p in zip(self._params, x):
                p.copy_(x_p)
            return Trial(t, f, g, g.dot(d))

        return phi

    # --- the algorithm ----------------------------------------------------------------------

    @eager("L-BFGS branches on losses, as torch.optim.LBFGS (not compiled)")
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> Tensor:  # type: ignore[override]
        """Run up to ``max_iter`` L-BFGS iterations; returns the loss before the first one."""
        if len(self.param_groups) != 1:
            raise ValueError(_ONE_GROUP)
        group = self.param_groups[0]
        lr = scalar(group["lr"])
        max_iter, max_eval = group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        history_size = group["history_size"]
        closure = torch.enable_grad()(closure)

        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        orig_loss = closure()
        f = float(orig_loss)
        n_evals = 1
        state["func_evals"] += 1
        g = self._flat_grad()
        if g.abs().max() <= tolerance_grad:
            return orig_loss  # already stationary

        d, t = state.get("d"), state.get("t")
        s_list, y_list, rho_list = state.get("old_stps"), state.get("old_dirs"), state.get("ro")
        H_diag = state.get("H_diag")
        g_prev, f_prev = state.get("prev_flat_grad"), state.get("prev_loss")

        k = 0
        while k < max_iter:
            k += 1
            state["n_iter"] += 1

            # direction d
            if state["n_iter"] == 1:
                d = g.neg()
                s_list, y_list, rho_list = [], [], []
                H_diag = 1
            else:
                y = g.sub(g_prev)
                s = d.mul(t)
                ys = y.dot(s)
                if ys > 1e-10:  # keep only pairs with positive curvature
                    if len(s_list) == history_size:
                        s_list.pop(0)
                        y_list.pop(0)
                        rho_list.pop(0)
                    s_list.append(s)
                    y_list.append(y)
                    rho_list.append(1.0 / ys)
                    H_diag = ys / y.dot(y)
                alpha = state.setdefault("al", [None] * history_size)
                d = two_loop_direction(g, s_list, y_list, rho_list, H_diag, alpha=alpha)

            if g_prev is None:
                g_prev = g.clone(memory_format=torch.contiguous_format)
            else:
                g_prev.copy_(g)
            f_prev = f

            # step length t
            t = min(1.0, 1.0 / g.abs().sum()) * lr if state["n_iter"] == 1 else lr
            gtd = g.dot(d)
            if gtd > -tolerance_change:
                break  # not a descent direction (to tolerance)

            line_search_fn = group["line_search_fn"]
            if line_search_fn not in (None, "strong_wolfe"):
                raise RuntimeError(f"line_search_fn {line_search_fn!r}: only 'strong_wolfe'")
            if line_search_fn == "strong_wolfe":
                # As torch: the line search uses its default tolerance_change (1e-9).
                best, n_ls = strong_wolfe_line_search(
                    self._evaluate_along(closure, d),
                    Trial(0, f, g, gtd),
                    t,
                    d,
                    max_ls=max_eval - n_evals,
                )
                f, g, t = best.f, best.g, best.t
                self._move(t, d)
                stationary = g.abs().max() <= tolerance_grad
            else:
                self._move(t, d)
                n_ls = 0
                if k != max_iter:  # the last iteration's loss is not needed
                    f = float(closure())
                    g = self._flat_grad()
                    stationary = g.abs().max() <= tolerance_grad
                    n_ls = 1
            n_evals += n_ls
            state["func_evals"] += n_ls

            # stopping tests
            if k == max_iter or n_evals >= max_eval or stationary:
                break
            if d.mul(t).abs().max() <= tolerance_change:
                break  # step too small
            if abs(f - f_prev) < tolerance_change:
                break  # loss no longer changes

        state["d"], state["t"] = d, t
        state["old_stps"], state["old_dirs"], state["ro"] = s_list, y_list, rho_list
        state["H_diag"] = H_diag
        state["prev_flat_grad"], state["prev_loss"] = g_prev, f_prev
        return orig_loss
