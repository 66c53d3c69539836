r"""Sophia: momentum divided by a cheap diagonal Hessian, clipped per coordinate (chapter 9).

Liu, Li, Hall, Liang & Ma, "Sophia: A Scalable Stochastic Second-order Optimizer for Language
Model Pre-training", ICLR 2024 (arXiv:2305.14342). :class:`SophiaG` has the update, order of
operations, defaults and state names of the authors' ``sophia.py`` (Liuhong99/Sophia, the version
with ``rho`` and ``step(bs=...)``); :class:`SophiaH` follows the paper's Algorithm 3 with
Hutchinson's estimator.

.. math::

   \theta &\leftarrow (1 - \eta\lambda)\,\theta_{t-1}
       &&\text{(decoupled weight decay)} \\
   m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t
       &&\text{(momentum, no bias correction)} \\
   h_t &= \beta_2 h_{t-k} + (1-\beta_2)\, \hat h_t
       &&\text{(only every } k \text{ steps: } \texttt{update\_hessian()}\text{)} \\
   \theta_t &= \theta - \eta\,\operatorname{sign}(m_t)\,
       \min\!\Big(\frac{|m_t|}{\rho\, D(h_t)},\ 1\Big)
       &&\text{(clipped Newton-like step)}

The step is a Newton step :math:`m/(\rho h)` where the curvature is large enough to make it
small, and the sign step :math:`\eta\,\operatorname{sign}(m)` everywhere else: no coordinate ever
moves by more than :math:`\eta`. The two variants differ in :math:`\hat h` and :math:`D`:

* **SophiaG** (Gauss-Newton-Bartlett). Backpropagate the mean cross-entropy of the model's
  outputs against labels :math:`\hat y` *sampled from the model's own softmax*
  (:func:`gnb_loss`); the squared gradient is the estimate. Its expectation over :math:`\hat y` is
  :math:`\operatorname{diag}` of the Gauss-Newton matrix of the mean loss divided by the batch
  size :math:`B` (each example's sampled gradient has mean zero, so cross terms vanish). The
  reference folds :math:`\hat h = \hat g\odot\hat g` and restores the factor in the step:
  :math:`D(h) = B\,h + \epsilon/\rho`, i.e. the denominator is :math:`\rho\,B\,h + \epsilon`
  with ``bs`` :math:`= B` the number of sampled labels (tokens, for a language model) and
  :math:`\epsilon = 10^{-15}`. :func:`gnb_hessian_estimate` returns :math:`B\,\hat g\odot\hat g`
  itself, for experiments.
* **SophiaH** (Hutchinson). :math:`\hat h = u\odot(Hu)` with a Rademacher vector :math:`u`,
  computed by a Hessian-vector product (double backward): unbiased for
  :math:`\operatorname{diag}(H)`, but it can be negative. :math:`D(h) = \max(h, \epsilon/\rho)`,
  i.e. the denominator is :math:`\max(\rho h, \epsilon)` (see :class:`SophiaH`).

Until the first ``update_hessian()`` :math:`h = 0` and every coordinate takes the sign step.

**Complex parameters** are optimised as pairs of reals (``torch.view_as_real``), as torch.optim
does: :math:`m`, :math:`h` and the clipped step are taken per real and imaginary part, the GNB
estimate squares each part of the gradient, and Hutchinson's probe has an independent
Rademacher sign for each part. **Non-finite gradients** make the parameters NaN, as with torch's
Adam: a NaN or infinite :math:`m` steps by NaN (:func:`._moments.sign_`; an infinite :math:`m`
would otherwise clip to a full step in the same direction at every step, for ever), and a NaN
:math:`h` makes the clipped ratio NaN; an infinite curvature estimate is stored as NaN (it
would otherwise divide the step to 0, freezing the coordinate).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import Optimizer, new_step_counter, scalar
from ._moments import real_views, sign_
from ._validate import check_betas, check_nonnegative, check_positive

# --- the two diagonal Hessian estimators ---------------------------------------------------


def gnb_loss(logits: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    r"""Mean cross-entropy of ``logits`` against labels sampled from their own softmax.

    .. math:: \hat y_b \sim \operatorname{softmax}(f(\theta, x_b)), \qquad
              \hat L(\theta) = \frac1B \sum_{b=1}^B \ell\big(f(\theta, x_b), \hat y_b\big)

    ``logits`` has the classes in its last dimension (``[B, C]``, or ``[batch, time, C]`` for a
    language model: then :math:`B` counts tokens). Backpropagating :math:`\hat L` leaves
    :math:`\hat g = \nabla\hat L` in ``.grad``; :meth:`SophiaG.update_hessian` folds
    :math:`\hat g\odot\hat g` into its estimate. The labels are drawn without gradient.
    """
    flat = logits.reshape(-1, logits.shape[-1])
    with torch.no_grad():
        probs = torch.softmax(flat.detach().float(), dim=-1)
        y_hat = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return F.cross_entropy(flat, y_hat)


def gnb_hessian_estimate(
    model: nn.Module,
    inputs: Tensor,
    *,
    params: Sequence[Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    r"""The Gauss-Newton-Bartlett estimate :math:`\hat h = B\,\nabla\hat L\odot\nabla\hat L`.

    One sample of labels (:func:`gnb_loss`); :math:`\mathbb E_{\hat y}[\hat h]` is the diagonal
    of the Gauss-Newton matrix of the mean cross-entropy over the :math:`B` rows of logits
    (for a model with linear logits, the Hessian's diagonal). Gradients are taken with
    :func:`torch.autograd.grad`, so ``.grad`` is left alone. Returns one tensor per parameter
    (zeros for parameters the loss does not reach).
    """
    params = [p for p in model.parameters() if p.requires_grad] if params is None else params
    logits = model(inputs)
    B = logits.numel() // logits.shape[-1]
    grads = torch.autograd.grad(gnb_loss(logits, generator=generator), params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g.square().mul_(B) for p, g in zip(params, grads)]


def rademacher_like(p: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A tensor shaped like ``p`` with independent entries ±1, each with probability 1/2
    (for a complex ``p``, its real and imaginary parts each ±1)."""
    if p.is_complex():
        return torch.view_as_complex(rademacher_like(torch.view_as_real(p), generator))
    bits = torch.randint(0, 2, p.shape, generator=generator, device=p.device)
    return bits.to(p.dtype).mul_(2).sub_(1)


def _pairwise_product(u: Tensor, v: Tensor) -> Tensor:
    """``u * v`` entry by entry, a complex tensor's real and imaginary parts taken as two
    real entries (not the complex product)."""
    if u.is_complex():
        return torch.view_as_complex(torch.view_as_real(u) * torch.view_as_real(v))
    return u * v


def hutchinson_hessian_estimate(
    loss: Tensor,
    params: Sequence[Tensor],
    *,
    generator: torch.Generator | None = None,
    probes: Sequence[Tensor] | None = None,
) -> list[Tensor]:
    r"""Hutchinson's diagonal estimate :math:`\hat h = u\odot(Hu)` of :math:`\nabla^2` ``loss``.

    :math:`u` is Rademacher (``probes`` supplies it instead) and :math:`Hu` a Hessian-vector
    product by double backward: :math:`Hu = \nabla_\theta\langle\nabla_\theta L, u\rangle`.
    Unbiased, :math:`\mathbb E[u_i (Hu)_i] = \sum_j H_{ij}\,\mathbb E[u_i u_j] = H_{ii}`, and
    exact when :math:`H` is diagonal (:math:`u_i^2 = 1`). ``loss`` must still have its graph.
    """
    params = list(params)
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    us = (
        [rademacher_like(p, generator) for p in params]
        if probes is None
        else [u.to(p.dtype) for p, u in zip(params, probes)]
    )
    # Gradients that do not depend on the parameters have zero Hessian blocks.
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    Hus: list[Tensor | None] = [None] * len(params)
    if live:
        products = torch.autograd.grad(
            [grads[i] for i in live], [params[i] for i in live],
            grad_outputs=[us[i] for i in live], allow_unused=True,
        )  # fmt: skip
        for i, Hu in zip(live, products):
            Hus[i] = Hu
    return [
        torch.zeros_like(p) if Hu is None else _pairwise_product(u, Hu).detach()
        for p, u, Hu in zip(params, us, Hus)
    ]


def _nan_if_infinite_(h: Tensor) -> None:
    """An infinite curvature estimate becomes NaN (in place): dividing by it would give a step
    of 0, a coordinate frozen for ever without a sign; NaN shows in the parameters."""
    h.add_(h - h)


# --- the update ----------------------------------------------------------------------------


def _clipped_sign_step_(theta: Tensor, m: Tensor, denominator: Tensor, lr: float) -> None:
    r""":math:`\theta \leftarrow \theta - \eta\,\operatorname{sign}(m)\min(|m|/d,\ 1)`."""
    ratio = m.abs().div_(denominator).clamp_(max=1)
    theta.addcmul_(sign_(m.clone()), ratio, value=-lr)  # NaN where m is not finite


def sophiag_update(
    theta: Tensor,
    g: Tensor,
    m: Tensor,
    h: Tensor,
    *,
    lr: float,
    beta1: float,
    rho: float,
    bs: float,
    weight_decay: float,
    eps: float,
) -> None:
    r"""One SophiaG step on one tensor, in place; denominator :math:`\rho\,B\,h + \epsilon`."""
    theta.mul_(1 - lr * weight_decay)
    m.mul_(beta1).add_(g, alpha=1 - beta1)
    _clipped_sign_step_(theta, m, h.mul(rho * bs).add_(eps), lr)


def sophiah_update(
    theta: Tensor,
    g: Tensor,
    m: Tensor,
    h: Tensor,
    *,
    lr: float,
    beta1: float,
    rho: float,
    weight_decay: float,
    eps: float,
) -> None:
    r"""One SophiaH step on one tensor, in place; denominator :math:`\max(\rho h, \epsilon)`."""
    theta.mul_(1 - lr * weight_decay)
    m.mul_(beta1).add_(g, alpha=1 - beta1)
    _clipped_sign_step_(theta, m, h.mul(rho).clamp_(min=eps), lr)


def _sophia_update_foreach(
    thetas: list[Tensor],
    gs: list[Tensor],
    ms: list[Tensor],
    hs: list[Tensor],
    *,
    lr: float,
    beta1: float,
    rho: float,
    weight_decay: float,
    eps: float,
    bs: float | None,
) -> None:
    """Both variants on many tensors at once (``bs=None``: SophiaH's denominator)."""
    torch._foreach_mul_(thetas, 1 - lr * weight_decay)
    torch._foreach_mul_(ms, beta1)
    torch._foreach_add_(ms, gs, alpha=1 - beta1)
    if bs is None:
        denominators = torch._foreach_mul(hs, rho)
        torch._foreach_clamp_min_(denominators, eps)
    else:
        denominators = torch._foreach_mul(hs, rho * bs)
        torch._foreach_add_(denominators, eps)
    ratios = torch._foreach_abs(ms)
    torch._foreach_div_(ratios, denominators)
    torch._foreach_clamp_max_(ratios, 1.0)
    signs = sign_(torch._foreach_add(ms, 0.0))  # a copy of m; NaN where m is not finite
    torch._foreach_addcmul_(thetas, signs, ratios, value=-lr)


class _Sophia(Optimizer):
    """What SophiaG and SophiaH share: hyperparameters, state, the step loop."""

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor,
        betas: tuple[float, float],
        rho: float,
        weight_decay: float,
        eps: float,
        maximize: bool,
        foreach: bool | None,
    ) -> None:
        check_nonnegative("lr", lr)
        check_betas(betas)
        check_nonnegative("rho", rho)
        check_nonnegative("weight_decay", weight_decay)
        check_positive("eps", eps)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            rho=rho,
            weight_decay=weight_decay,
            eps=eps,
            maximize=maximize,
            foreach=foreach,
        )
        super().__init__(params, defaults)

    def _state_of(self, p: Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = new_step_counter()
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["hessian"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _sophia_step(self, closure: Callable[[], Tensor] | None, bs: float | None):
        loss = self._evaluate(closure)
        for group in self.param_groups:
            params, grads = self._params_and_grads(group)
            if not params:
                continue
            states = [self._state_of(p) for p in params]
            for state in states:
                state["step"] += 1
            ms = [state["exp_avg"] for state in states]
            hs = [state["hessian"] for state in states]
            if any(p.is_complex() for p in params):
                params, grads, ms, hs = real_views(params, grads, ms, hs)
            hyper = dict(
                lr=scalar(group["lr"]),
                beta1=group["betas"][0],
                rho=group["rho"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
            )
            if group["foreach"]:
                _sophia_update_foreach(params, grads, ms, hs, bs=bs, **hyper)
            elif bs is None:
                for p, g, m, h in zip(params, grads, ms, hs):
                    sophiah_update(p, g, m, h, **hyper)
            else:
                for p, g, m, h in zip(params, grads, ms, hs):
                    sophiag_update(p, g, m, h, bs=bs, **hyper)
        return loss


class SophiaG(_Sophia):
    r"""Sophia with the Gauss-Newton-Bartlett estimator, as in Liuhong99/Sophia's ``sophia.py``.

    Usage, every step a normal backward and ``step``; every :math:`k` steps (the paper: 10) also
    a Hessian refresh on labels sampled from the model::

        loss_fn(model(X), y).backward()
        opt.step(bs=B)            # B: rows of logits (tokens) in the Hessian batch
        opt.zero_grad()
        if t % k == k - 1:
            gnb_loss(model(X)).backward()
            opt.update_hessian()
            opt.zero_grad()

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\eta \ge 0`, the largest move of any coordinate.
        betas: :math:`(\beta_1, \beta_2)` in :math:`[0, 1)`: momentum, and the Hessian EMA.
        rho: :math:`\rho \ge 0`, scales the curvature (small :math:`\rho`: more clipping).
        weight_decay: decoupled weight decay :math:`\lambda \ge 0`.
        eps: :math:`\epsilon > 0` added to the denominator (the reference's ``1e-15``).
        maximize: ascend instead of descend.
        foreach: use the multi-tensor path.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.965, 0.99),
        rho: float = 0.04,
        weight_decay: float = 1e-1,
        *,
        eps: float = 1e-15,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(params, lr, betas, rho, weight_decay, eps, maximize, foreach)

    @torch.no_grad()
    def update_hessian(self) -> None:
        r"""Fold the current ``.grad`` :math:`\hat g` in: :math:`h \leftarrow \beta_2 h +
        (1-\beta_2)\,\hat g\odot\hat g`.

        Call it after backpropagating :func:`gnb_loss` (labels sampled from the model), not the
        training loss: the square of a true-label gradient estimates the empirical Fisher,
        which is not the Gauss-Newton matrix. ``.grad`` is left as it is.
        """
        for group in self.param_groups:
            beta2 = group["betas"][1]
            for p in group["params"]:
                if p.grad is None:
                    continue
                h, g = real_views([self._state_of(p)["hessian"]], [p.grad])
                h[0].mul_(beta2).addcmul_(g[0], g[0], value=1 - beta2)
                _nan_if_infinite_(h[0])

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None, bs: float = 5120) -> Tensor | None:
        """Take one step; ``bs`` is the number of sampled labels (rows of logits, tokens) behind
        the Hessian estimate. The default is the reference's; pass your own batch size."""
        check_positive("bs", bs)
        return self._sophia_step(closure, float(bs))


class SophiaH(_Sophia):
    r"""Sophia with Hutchinson's estimator :math:`\hat h = u\odot(Hu)` (paper, Algorithm 3).

    **Negative curvature.** Unlike the Gauss-Newton-Bartlett estimate, :math:`\hat h` (and so
    :math:`h`) can be negative: at a non-convex point :math:`\operatorname{diag}(H)` itself is,
    and a single Hutchinson sample can be even where it is not. Dividing by a negative
    :math:`h` would turn the step into Newton's step toward a *maximum*
    (:math:`-m/h` points uphill). The paper divides by :math:`\max\{\rho\, h_t, \epsilon\}`
    instead (the reference's ``relu(h) + eps`` is the same idea): wherever
    :math:`\rho\,h \le \epsilon` the ratio :math:`|m|/\epsilon` is huge, the clip sets it to 1,
    and the coordinate takes the sign-momentum step :math:`-\eta\,\operatorname{sign}(m_t)`:
    a bounded descent step, never an ascent. Only positive curvature ever shrinks a step.

    Usage: every :math:`k` steps, ``opt.update_hessian(closure)`` with a closure that returns
    the loss *without* calling ``backward`` (its graph is needed for the double backward).

    Defaults: those of :class:`SophiaG` (its :math:`\rho` scales the Hessian of the mean loss,
    which is what :math:`\hat h` estimates here too), and :math:`\epsilon = 10^{-12}`.
    Unlike the reference repository's early ``SophiaH`` draft (``gamma``, ``relu(h) + 1e-12``,
    a bias-corrected step size), there is no bias correction, as in the paper and in SophiaG.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\eta \ge 0`, the largest move of any coordinate.
        betas: :math:`(\beta_1, \beta_2)` in :math:`[0, 1)`: momentum, and the Hessian EMA.
        rho: :math:`\rho \ge 0`, scales the curvature.
        weight_decay: decoupled weight decay :math:`\lambda \ge 0`.
        eps: :math:`\epsilon > 0`, the floor of the denominator.
        maximize: ascend instead of descend (the curvature estimate is negated too).
        foreach: use the multi-tensor path.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.965, 0.99),
        rho: float = 0.04,
        weight_decay: float = 1e-1,
        *,
        eps: float = 1e-12,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(params, lr, betas, rho, weight_decay, eps, maximize, foreach)

    def update_hessian(
        self, closure: Callable[[], Tensor], *, generator: torch.Generator | None = None
    ) -> Tensor:
        r"""Evaluate ``closure`` and fold :math:`\hat h = u\odot(Hu)` in:
        :math:`h \leftarrow \beta_2 h + (1-\beta_2)\hat h`. Returns the (detached) loss.

        ``.grad`` is not touched. ``generator`` draws the Rademacher vectors.
        """
        groups = [(g, [p for p in g["params"] if p.requires_grad]) for g in self.param_groups]
        with torch.enable_grad():
            loss = closure()
            h_hats = hutchinson_hessian_estimate(
                loss, [p for _, ps in groups for p in ps], generator=generator
            )
        with torch.no_grad():
            it = iter(h_hats)
            for group, ps in groups:
                beta2 = group["betas"][1]
                sign = -1.0 if group["maximize"] else 1.0
                for p in ps:
                    h, h_hat = real_views([self._state_of(p)["hessian"]], [next(it)])
                    h[0].mul_(beta2).add_(h_hat[0], alpha=sign * (1 - beta2))
                    _nan_if_infinite_(h[0])
        return loss.detach()

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step; ``closure`` re-evaluates the loss and returns it."""
        return self._sophia_step(closure, None)
