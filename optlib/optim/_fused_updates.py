r"""The element-wise updates of the fused path, one per optimizer (see :mod:`._fused`).

Each kernel mirrors its optimizer's readable single-tensor update *line by line*: the same
symbols, the same lines in the same order, with a comment naming the line (or the
:mod:`._moments` piece) it mirrors. Only the form changes, so that one compiled graph serves
every step:

* every per-step scalar arrives in the 0-d tensors of ``s``, computed in Python double precision
  exactly as the single-tensor function computes it (``-lr / c1``, ``c2 ** 0.5``, ...);
* a switch that a scalar can express exactly becomes that scalar (no weight decay: a factor of
  1; no bias correction: 1; ``maximize``: a factor of -1; SGD's first step: momentum 0, no
  dampening), and the others (L2 penalty, AMSGrad, centring, momentum, Nesterov) are static flags;
* in-place methods that take Python numbers (``addcmul_``, ``addcdiv_``, ``lerp_``) are written
  out as the arithmetic ATen does for them: ``a.addcdiv_(x, y, value=c)`` is
  ``a + (c * x) / y``, and ``a.lerp_(b, w)`` is ``a + w (b - a)`` for :math:`|w| < 1/2`,
  ``b - (b - a)(1 - w)`` otherwise; which of the two is a static flag (``small_weight``), since
  the weight is the same for every element: a kernel that selected per element computed both
  and was about 10 % slower. A scheduler that moves the weight across 1/2 compiles the other
  kernel once.

The single-tensor functions stay the source of truth; ``tests/test_fused.py`` runs each kernel
against its single-tensor update on every configuration the parity tests cover and asserts
agreement to float rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._base import scalar
from ._fused import FusedUpdate, Key


def _lerp(a: Tensor, b: Tensor, w: Tensor, small_weight: bool) -> Tensor:
    """``a.lerp(b, w)`` as ATen computes it: one formula for :math:`|w| < 1/2`
    (``small_weight``), another, accurate near :math:`w = 1`, otherwise."""
    return a + w * (b - a) if small_weight else b - (b - a) * (1 - w)


def _small(w: float) -> bool:
    """Whether the lerp weight ``w`` takes ATen's :math:`|w| < 1/2` formula."""
    return abs(w) < 0.5


def _sign(group: dict) -> float:
    return -1.0 if group.get("maximize", False) else 1.0


def _betas(group: dict) -> tuple[float, float]:
    beta1, beta2 = group["betas"]
    return scalar(beta1), scalar(beta2)


# --- SGD ---------------------------------------------------------------------------------------


def sgd_kernel(s, theta, g, b=None, *, l2: bool, momentum: bool, nesterov: bool) -> None:
    """Mirrors :func:`optlib.optim.sgd.sgd_update`."""
    sign, weight_decay, mu, one_minus_dampening, beta, neg_lr = s.unbind()
    g = g * sign  # maximize
    if l2:
        g = g + weight_decay * theta  # g.add(theta, alpha=weight_decay)
    if momentum:
        b.mul_(mu).add_(one_minus_dampening * g)  # b.mul_(momentum).add_(g, alpha=1-dampening)
        d = g + beta * b if nesterov else b  # g.add(b, alpha=momentum) if nesterov else b
    else:
        d = g
    theta.add_(neg_lr * d)  # theta.add_(d, alpha=-lr)


class SGDUpdate(FusedUpdate):
    name = "sgd"
    flag_names = ("l2", "momentum", "nesterov")
    counters = ()
    n_scalars = 6
    uses_fresh = True  # the first step copies g into the buffer: momentum 0, no dampening
    kernel = staticmethod(sgd_kernel)

    def flags(self, group):
        return (group["weight_decay"] != 0, group["momentum"] != 0, bool(group["nesterov"]))

    def state_keys(self, group, optimizer):
        return (("momentum_buffer", 0.0),) if group["momentum"] != 0 else ()

    def scalars(self, group, key):
        first = key[-1]
        momentum = group["momentum"]
        mu, damp = (0.0, 1.0) if first else (momentum, 1 - group["dampening"])
        return [_sign(group), group["weight_decay"], mu, damp, momentum, -scalar(group["lr"])]


# --- Adam, AdamW (and MuonWithAuxAdamW's AdamW groups) -----------------------------------------


def adam_kernel(
    s, theta, g, m, v, v_max=None, *, l2: bool, amsgrad: bool, small_weight: bool
) -> None:
    """Mirrors :func:`optlib.optim.adam.adam_update`."""
    sign, decay, weight_decay, one_minus_beta1, beta2, one_minus_beta2, eps, sqrt_c2, step = (
        s.unbind()
    )
    g = g * sign  # maximize
    theta.mul_(decay)  # decay_weights_ (AdamW; a factor of 1 for Adam)
    if l2:
        g = g + weight_decay * theta  # add_l2 (Adam)
    m.copy_(_lerp(m, g, one_minus_beta1, small_weight))  # update_first_moment_
    v.mul_(beta2).add_(one_minus_beta2 * g * g)  # update_second_moment_
    if amsgrad:
        v = v_max.copy_(torch.maximum(v_max, v))  # running_max_
    theta.add_(step * m / (v.sqrt() / sqrt_c2 + eps))  # addcdiv_(m, rms_denominator, -lr/c1)


class AdamUpdate(FusedUpdate):
    name = "adam"
    flag_names = ("l2", "amsgrad", "small_weight")
    n_scalars = 9

    def __init__(self, decoupled: bool | None = None) -> None:
        self.decoupled = decoupled  # None: read the group's decoupled_weight_decay

    kernel = staticmethod(adam_kernel)

    def _decoupled(self, group):
        if self.decoupled is not None:
            return self.decoupled
        return group.get("decoupled_weight_decay", False)

    def flags(self, group):
        l2 = not self._decoupled(group) and group["weight_decay"] != 0
        small = _small(1 - _betas(group)[0])
        return (l2, bool(group.get("amsgrad", False)), small)

    def state_keys(self, group, optimizer):
        keys = (("exp_avg", 0.0), ("exp_avg_sq", 0.0))
        return keys + ((("max_exp_avg_sq", 0.0),) if group.get("amsgrad", False) else ())

    def scalars(self, group, key):
        t = int(key[0])
        lr, (beta1, beta2), wd = scalar(group["lr"]), _betas(group), group["weight_decay"]
        decay = 1 - lr * wd if self._decoupled(group) and wd != 0 else 1.0
        if group.get("bias_correction", True):
            c1, c2 = 1 - beta1**t, 1 - beta2**t
            sqrt_c2, step = c2**0.5, -lr / c1
        else:
            sqrt_c2, step = 1.0, -lr / 1.0
        return [_sign(group), decay, wd, 1 - beta1, beta2, 1 - beta2, group["eps"], sqrt_c2, step]


# --- Adagrad -----------------------------------------------------------------------------------


def adagrad_kernel(s, theta, g, G, *, l2: bool) -> None:
    """Mirrors :func:`optlib.optim.adagrad.adagrad_update`."""
    sign, weight_decay, eps, step = s.unbind()
    g = g * sign  # maximize
    if l2:
        g = g + weight_decay * theta  # add_l2
    G.add_(g * g)  # accumulate_square_
    theta.add_(step * g / (G.sqrt() + eps))  # addcdiv_(g, rms_denominator(G, eps), -lr_t)


class AdagradUpdate(FusedUpdate):
    name = "adagrad"
    flag_names = ("l2",)
    n_scalars = 4
    kernel = staticmethod(adagrad_kernel)

    def flags(self, group):
        return (group["weight_decay"] != 0,)

    def state_keys(self, group, optimizer):
        return (("sum", float(optimizer.defaults["initial_accumulator_value"])),)

    def scalars(self, group, key):
        lr_t = scalar(group["lr"]) / (1 + (int(key[0]) - 1) * group["lr_decay"])
        return [_sign(group), group["weight_decay"], group["eps"], -lr_t]


# --- RMSprop -----------------------------------------------------------------------------------


def rmsprop_kernel(
    s, theta, g, v, *rest, l2: bool, centered: bool, momentum: bool, small_weight: bool
) -> None:
    r"""Mirrors :func:`optlib.optim.rmsprop.rmsprop_update` (``rest``: :math:`\bar g` when
    centred, then the momentum buffer :math:`b`)."""
    sign, weight_decay, alpha, one_minus_alpha, eps, beta, neg_lr = s.unbind()
    g = g * sign  # maximize
    if l2:
        g = g + weight_decay * theta  # add_l2
    v.mul_(alpha).add_(one_minus_alpha * g * g)  # update_second_moment_
    if centered:
        g_bar = rest[0]
        g_bar.copy_(_lerp(g_bar, g, one_minus_alpha, small_weight))  # update_first_moment_
        d = (v - g_bar * g_bar).sqrt() + eps  # rms_denominator(v, eps, centre=g_bar)
    else:
        d = v.sqrt() + eps  # rms_denominator(v, eps)
    if momentum:
        b = rest[-1]
        b.mul_(beta).add_(g / d)  # b.mul_(momentum).addcdiv_(g, d)
        theta.add_(neg_lr * b)  # theta.add_(b, alpha=-lr)
    else:
        theta.add_(neg_lr * g / d)  # theta.addcdiv_(g, d, value=-lr)


class RMSpropUpdate(FusedUpdate):
    name = "rmsprop"
    flag_names = ("l2", "centered", "momentum", "small_weight")
    n_scalars = 7
    kernel = staticmethod(rmsprop_kernel)

    def flags(self, group):
        centered = bool(group["centered"])
        small = centered and _small(1 - group["alpha"])  # (only the centred rule has a lerp)
        return (group["weight_decay"] != 0, centered, group["momentum"] > 0, small)

    def state_keys(self, group, optimizer):
        keys = (("square_avg", 0.0),)
        if group["centered"]:
            keys += (("grad_avg", 0.0),)
        if group["momentum"] > 0:
            keys += (("momentum_buffer", 0.0),)
        return keys

    def advance(self, counters, runs, group):
        super().advance(counters, runs, group)  # torch keeps a step count; the rule ignores it
        return None

    def scalars(self, group, key):
        alpha = group["alpha"]
        return [
            _sign(group),
            group["weight_decay"],
            alpha,
            1 - alpha,
            group["eps"],
            group["momentum"],
            -scalar(group["lr"]),
        ]


# --- NAdam -------------------------------------------------------------------------------------


def nadam_kernel(s, theta, g, m, v, *, l2: bool, small_weight: bool) -> None:
    """Mirrors :func:`optlib.optim.nadam.nadam_update`."""
    sign, decay, weight_decay, one_minus_beta1, beta2, one_minus_beta2, eps, sqrt_c2 = s[:8]
    g_size, m_size = s[8], s[9]
    g = g * sign  # maximize
    theta.mul_(decay)  # decay_weights_ (decoupled; a factor of 1 otherwise)
    if l2:
        g = g + weight_decay * theta  # add_l2
    m.copy_(_lerp(m, g, one_minus_beta1, small_weight))  # update_first_moment_
    v.mul_(beta2).add_(one_minus_beta2 * g * g)  # update_second_moment_
    d = v.sqrt() / sqrt_c2 + eps  # rms_denominator(v, eps, 1 - beta2**t)
    theta.add_(g_size * g / d)  # theta.addcdiv_(g, d, value=-lr (1-beta1_t) / (1-prod))
    theta.add_(m_size * m / d)  # theta.addcdiv_(m, d, value=-lr beta1_next / (1-prod beta1_next))


class NAdamUpdate(FusedUpdate):
    name = "nadam"
    flag_names = ("l2", "small_weight")
    counters = (("step", 0.0), ("mu_product", 1.0))
    n_scalars = 10
    kernel = staticmethod(nadam_kernel)

    def flags(self, group):
        l2 = not group["decoupled_weight_decay"] and group["weight_decay"] != 0
        return (l2, _small(1 - _betas(group)[0]))

    def state_keys(self, group, optimizer):
        return (("exp_avg", 0.0), ("exp_avg_sq", 0.0))

    def advance(self, counters, runs, group):
        """``step += 1``, then ``mu_product *= beta1_t`` in the counter's own dtype, as
        :func:`.nadam.nadam_update` does; the key is the step and the new product."""
        from .nadam import nadam_beta1  # (imported here: nadam imports this module)

        steps = super().advance(counters, runs, group)
        beta1, psi = scalar(group["betas"][0]), group["momentum_decay"]
        prods = counters["mu_product"]
        for i, j in runs:  # runs of equal step share one multiplication
            k = i
            while k < j:
                e = k + 1
                while e < j and steps[e] == steps[k]:
                    e += 1
                prods[k:e].mul_(nadam_beta1(beta1, psi, int(steps[k])))
                k = e
        return list(zip(steps, prods.tolist()))

    def scalars(self, group, key):
        from .nadam import nadam_beta1

        t, prod = int(key[0][0]), key[0][1]
        lr, (beta1, beta2), wd = scalar(group["lr"]), _betas(group), group["weight_decay"]
        psi = group["momentum_decay"]
        beta1_t, beta1_next = nadam_beta1(beta1, psi, t), nadam_beta1(beta1, psi, t + 1)
        decay = 1 - lr * wd if group["decoupled_weight_decay"] and wd != 0 else 1.0
        return [
            _sign(group),
            decay,
            wd,
            1 - beta1,
            beta2,
            1 - beta2,
            group["eps"],
            (1 - beta2**t) ** 0.5,
            -lr * (1 - beta1_t) / (1 - prod),
            -lr * beta1_next / (1 - prod * beta1_next),
        ]


# --- RAdam -------------------------------------------------------------------------------------


def radam_kernel(s, theta, g, m, v, *, l2: bool, small_weight: bool) -> None:
    """Mirrors :func:`optlib.optim.radam.radam_update` (``rectified`` selects the branch)."""
    sign, decay, weight_decay, one_minus_beta1, beta2, one_minus_beta2, eps, rectified = s[:8]
    step = s[8]
    g = g * sign  # maximize
    theta.mul_(decay)  # decay_weights_ (decoupled; a factor of 1 otherwise)
    if l2:
        g = g + weight_decay * theta  # add_l2
    m.copy_(_lerp(m, g, one_minus_beta1, small_weight))  # update_first_moment_
    v.mul_(beta2).add_(one_minus_beta2 * g * g)  # update_second_moment_
    d = torch.where(rectified > 0, v.sqrt() + eps, 1.0)  # rms_denominator(v, eps), or none
    theta.add_(step * m / d)  # addcdiv_(m, d, -lr r sqrt(c2) / c1), or add_(m, alpha=-lr / c1)


class RAdamUpdate(FusedUpdate):
    name = "radam"
    flag_names = ("l2", "small_weight")
    n_scalars = 9
    kernel = staticmethod(radam_kernel)

    def flags(self, group):
        l2 = not group["decoupled_weight_decay"] and group["weight_decay"] != 0
        return (l2, _small(1 - _betas(group)[0]))

    def state_keys(self, group, optimizer):
        return (("exp_avg", 0.0), ("exp_avg_sq", 0.0))

    def scalars(self, group, key):
        from .radam import radam_rectification  # (imported here: radam imports this module)

        t = int(key[0])
        lr, (beta1, beta2), wd = scalar(group["lr"]), _betas(group), group["weight_decay"]
        decay = 1 - lr * wd if group["decoupled_weight_decay"] and wd != 0 else 1.0
        c1, c2 = 1 - beta1**t, 1 - beta2**t
        r = radam_rectification(beta2, t)
        step = -lr / c1 if r is None else -lr * r * c2**0.5 / c1
        head = [_sign(group), decay, wd, 1 - beta1, beta2, 1 - beta2, group["eps"]]
        return head + [0.0 if r is None else 1.0, step]


# --- Lion --------------------------------------------------------------------------------------


def lion_kernel(s, theta, g, m) -> None:
    """Mirrors :func:`optlib.optim.lion.lion_update`."""
    sign, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, neg_lr = s.unbind()
    g = g * sign  # maximize
    theta.mul_(decay)  # theta.mul_(1 - lr * weight_decay)
    c = m * beta1 + one_minus_beta1 * g  # m.mul(beta1).add_(g, alpha=1 - beta1)
    c = torch.sign(c) + (c - c)  # sign_(c): the sign, NaN where c is not finite
    theta.add_(neg_lr * c)  # theta.add_(sign_(c), alpha=-lr)
    m.mul_(beta2).add_(one_minus_beta2 * g)  # m.mul_(beta2).add_(g, alpha=1 - beta2)


class LionUpdate(FusedUpdate):
    name = "lion"
    counters = ()
    n_scalars = 7
    kernel = staticmethod(lion_kernel)

    def state_keys(self, group, optimizer):
        return (("exp_avg", 0.0),)

    def scalars(self, group, key: Key):
        lr, (beta1, beta2) = scalar(group["lr"]), _betas(group)
        decay = 1 - lr * group["weight_decay"]
        return [_sign(group), decay, beta1, 1 - beta1, beta2, 1 - beta2, -lr]


SGD_UPDATE = SGDUpdate()
ADAM_UPDATE = AdamUpdate()
ADAMW_AUX_UPDATE = AdamUpdate(decoupled=True)
ADAGRAD_UPDATE = AdagradUpdate()
RMSPROP_UPDATE = RMSpropUpdate()
NADAM_UPDATE = NAdamUpdate()
RADAM_UPDATE = RAdamUpdate()
LION_UPDATE = LionUpdate()
