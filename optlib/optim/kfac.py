r"""K-FAC: Kronecker-factored approximate curvature (chapter 10).

Same update rule as the reference code alecwangcq/KFAC-Pytorch (``optimizers/kfac.py`` and
``utils/kfac_utils.py``), ported to :func:`torch.linalg.eigh` and full backward hooks; Martens &
Grosse, *Optimizing neural networks with Kronecker-factored approximate curvature* (ICML 2015),
Grosse & Martens (ICML 2016) for convolutions.

For a layer with weight :math:`W` (out × in; a convolution's filter viewed as
out × in·kh·kw) and bias :math:`b`, the Fisher block of :math:`[W\ b]` is approximated by
:math:`G \otimes A`: :math:`A` is the second moment of the layer's inputs :math:`a` (with a
column of ones for the bias) and :math:`G` that of the gradients :math:`s` of the loss with
respect to the layer's outputs. With step counter :math:`t`, statistics decay :math:`\rho`,
damping :math:`\gamma`, KL bound :math:`\kappa`, momentum :math:`\mu` and learning rate
:math:`\eta`:

.. math::

   &\text{if } t \bmod T_\text{cov} = 0: &&
     A \leftarrow \rho A + (1-\rho)\, \tfrac1n \textstyle\sum a a^\top, \quad
     G \leftarrow \rho G + (1-\rho)\, \tfrac1n \textstyle\sum (n s)(n s)^\top
     \quad (A = G = I \text{ before step } 0) \\
   &\text{if } t \bmod T_\text{inv} = 0: &&
     A = Q_A \operatorname{diag}(d_A) Q_A^\top,\ G = Q_G \operatorname{diag}(d_G) Q_G^\top
     \quad (\text{eigenvalues} \le 10^{-10} \text{ set to } 0) \\
   & && V = Q_G\, \frac{Q_G^\top\, \nabla_{[W\,b]}\, Q_A}{d_G d_A^\top + \gamma}\, Q_A^\top
     \quad (\text{element-wise division} = ((G \otimes A) + \gamma I)^{-1}\nabla
     \text{ when no eigenvalue is clipped}) \\
   & && \nu = \min\Bigl(1, \sqrt{\kappa \,/\, \textstyle\sum_\text{layers} \eta^2
     \langle V, \nabla\rangle}\Bigr) \\
   & && d = \nu V \ (\text{K-FAC layers}),\ d = \nabla \ (\text{other parameters}); \quad
     d \mathrel{+}= \lambda\theta \ \text{ once } t \ge 20\,T_\text{cov} \\
   & && b \leftarrow \mu b + d \ (b = d \text{ at first}); \quad \theta \leftarrow \theta - \eta b;
     \quad t \leftarrow t + 1

:math:`n` is the number of rows (batch size; batch × positions for a convolution, whose rows
are the unfolded patches; the reference additionally divides :math:`a` by the number of
positions :math:`L` and multiplies :math:`s` by :math:`L`, which is kept). The factor :math:`n`
on :math:`s` (``batch_averaged=True``) undoes the :math:`1/n` of a mean-reduced loss.
The last step is :func:`optlib.optim.sgd.sgd_update` (momentum, no dampening), as in the
reference, including its choice to switch weight decay on only after :math:`20\,T_\text{cov}`
steps.

**Which Fisher.** A backward pass feeds :math:`G` while ``opt.acc_stats`` is true (the
default), so by default :math:`G` comes from the training loss: the *empirical* Fisher. The
reference instead estimates the *true* Fisher with labels sampled from the model's own
predictions, by one extra backward at every statistics step; :meth:`KFAC.backward_sampled_fisher`
does exactly that::

    opt.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    opt.backward_sampled_fisher(logits)  # at t % TCov == 0: acc_stats on, backward on
    loss.backward()                      #   sampled labels, acc_stats off, zero_grad
    opt.step()

which is the reference's training loop written out::

    if opt.steps % opt.TCov == 0:
        opt.acc_stats = True
        with torch.no_grad():
            y_sampled = torch.multinomial(torch.softmax(logits, 1), 1).squeeze(1)
        F.cross_entropy(logits, y_sampled).backward(retain_graph=True)
        opt.acc_stats = False
        opt.zero_grad()

**When statistics are gathered.** A forward pass through a tracked layer, in training mode
(``model.train()``) or inside ``step(closure)``, with gradients enabled, at a statistics step,
puts a hook on the layer's output; when a backward pass with ``acc_stats`` on reaches it, that
pass's input and output gradient are folded into :math:`A` and :math:`G` together. So an
evaluation pass (``model.eval()``, or any forward without a backward) never changes the
factors, with or without ``torch.no_grad()``, and :math:`A` and :math:`G` always come from the
same passes. The reference folds :math:`A` at every forward pass with gradients enabled.

**In a training pipeline.** Under ``torch.autocast`` the factors are computed in float32 (the
layer's input as it arrives, the output gradient upcast) whatever the autocast dtype. An
in-place operation on a layer's output (``ReLU(inplace=True)``) is fine: the output hook
receives the gradient of the layer's output as it was before the in-place change.
``copy.deepcopy``, ``pickle`` and ``torch.save`` of the optimizer (alone or with its model)
give a working optimizer: the copy re-attaches its hooks to the copied layers, and the hooks a
copied *model* carries are inert (they belong to no optimizer). ``add_param_group`` with
the parameters of a layer added to the model after construction preconditions that layer too
(plain SGD until its first statistics step); a parameter that is no Linear/Conv2d weight of the
model takes plain SGD-momentum steps, as at construction. Complex layers are refused.

Deviations from the reference, none of which changes an update it computes: eigenvalues come from
:func:`torch.linalg.eigh` in float64 (``torch.symeig`` is gone); statistics as above; ``p.grad``
is left untouched; a zero gradient gives :math:`\nu = 1` instead of a division by zero; a
closure is evaluated; the step counter travels in the state dict; a ``Linear`` fed
``(..., in)`` inputs counts every leading index as a row; grouped, non-zero-padded or
string-padded convolutions are left to plain SGD (the reference would mis-shape them); a layer
without a gradient at an eigendecomposition step is decomposed too (the reference skips it).
**Non-finite gradients** make the parameters NaN, as with torch's SGD (a non-finite factor is
not eigendecomposed: its layer's direction becomes NaN, with a warning).
"""

from __future__ import annotations

import functools
import math
import warnings
import weakref
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import Optimizer, eager, host_scalar, scalar
from ._validate import check_beta, check_nonnegative, check_positive, check_positive_int
from .sgd import sgd_update


class _LayerHook:
    """The forward hook a KFAC puts on each of its layers. It holds the optimizer weakly (a
    discarded optimizer leaves a hook that does nothing), and a copy or a pickle of it, which
    comes with a copied or pickled *model*, is inert: the optimizer's own copy re-attaches a
    fresh hook (:meth:`KFAC.__setstate__`), so no layer is ever counted twice."""

    def __init__(self, optimizer: KFAC | None) -> None:
        self._optimizer = weakref.ref(optimizer) if optimizer is not None else None

    def __call__(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        optimizer = self._optimizer() if self._optimizer is not None else None
        if optimizer is not None:
            optimizer._on_forward(module, args, output)

    def __reduce__(self):
        return (_LayerHook, (None,))


#: Eigenvalues at or below this are treated as exactly zero (as in the reference).
EIGENVALUE_FLOOR = 1e-10
_FACTOR_KEYS = ("A", "G", "QA", "dA", "QG", "dG")


def is_kfac_layer(module: nn.Module) -> bool:
    """Whether K-FAC preconditions ``module``: ``nn.Linear``, or an ungrouped, zero-padded
    ``nn.Conv2d`` with numeric padding, whose weight is trained."""
    if isinstance(module, nn.Conv2d):
        conv_ok = (
            module.groups == 1
            and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)
        )
        return conv_ok and module.weight.requires_grad
    return isinstance(module, nn.Linear) and module.weight.requires_grad


def input_factor(module: nn.Module, x: Tensor) -> Tensor:
    r"""This batch's :math:`\frac1n \sum a a^\top` for the layer's input ``x`` (bias column
    included)."""
    if isinstance(module, nn.Conv2d):
        patches = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
        batch, L = patches.size(0), patches.size(2)
        a = patches.transpose(1, 2).reshape(batch * L, -1)
    else:
        a = x.reshape(-1, x.size(-1))
        batch, L = a.size(0), 1
    if module.bias is not None:
        a = torch.cat([a, a.new_ones(a.size(0), 1)], dim=1)
    a = a / L
    return a.T @ a / batch


def output_factor(module: nn.Module, s: Tensor, *, batch_averaged: bool) -> Tensor:
    r"""This batch's :math:`\frac1n \sum (n s)(n s)^\top` for the gradient ``s`` of the loss
    with respect to the layer's output (:math:`n` only when ``batch_averaged``)."""
    if isinstance(module, nn.Conv2d):
        batch, L = s.size(0), s.size(2) * s.size(3)
        s = s.permute(0, 2, 3, 1).reshape(batch * L, -1)
        if batch_averaged:
            s = s * batch
        s = s * L
        return s.T @ s / s.size(0)
    s = s.reshape(-1, s.size(-1))
    n = s.size(0)
    return s.T @ s * n if batch_averaged else s.T @ s / n


def eigenbasis(factor: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues ``d`` (those ``<= EIGENVALUE_FLOOR`` zeroed) and eigenvectors ``Q`` of a
    symmetric factor, computed in float64 and returned in the factor's dtype."""
    if not torch.isfinite(factor).all():  # NaN/inf gradients: a NaN step shows it
        warnings.warn(
            "KFAC: non-finite curvature factor (NaN/inf gradients?); the layer's step is NaN",
            RuntimeWarning,
            stacklevel=3,
        )
        nan = torch.full_like(factor, math.nan)
        return nan[0], nan
    d, Q = torch.linalg.eigh(factor.double())
    d = d * (d > EIGENVALUE_FLOOR)
    return d.to(factor.dtype), Q.to(factor.dtype)


def natural_gradient(
    M: Tensor, QA: Tensor, dA: Tensor, QG: Tensor, dG: Tensor, damping: float
) -> Tensor:
    r""":math:`V = Q_G \bigl[(Q_G^\top M Q_A) / (d_G d_A^\top + \gamma)\bigr] Q_A^\top`, the
    damped :math:`(G \otimes A)^{-1}` applied to the gradient matrix ``M`` (out × in[+1])."""
    M_eig = QG.T @ M @ QA
    return QG @ (M_eig / (dG[:, None] * dA[None, :] + damping)) @ QA.T


def kl_clip_factor(vg_sum: float | Tensor, kl_clip: float) -> float | Tensor:
    r""":math:`\nu = \min(1, \sqrt{\kappa / \sum \eta^2\langle V, \nabla\rangle})`; 1 when the
    sum is not positive (zero gradients), where the reference divides by zero. (Under
    torch.compile the sum is a 0-d tensor, and so is :math:`\nu`.)"""
    if isinstance(vg_sum, Tensor):
        nu = (kl_clip / vg_sum).sqrt().clamp(max=1.0)
        return torch.where(vg_sum > 0, nu, 1.0)
    return min(1.0, math.sqrt(kl_clip / vg_sum)) if vg_sum > 0 else 1.0


class KFAC(Optimizer):
    r"""K-FAC for the ``nn.Linear`` and ``nn.Conv2d`` layers of ``model`` (module docstring).

    Other parameters (norms, embeddings…) take plain SGD-momentum steps with their raw
    gradients, as in the reference.

    Args:
        model: the network; hooks on its layers record the Kronecker factors.
        lr: learning rate :math:`\eta \ge 0` (the first group's also sets the KL bound).
        momentum: momentum :math:`\mu \ge 0`.
        stat_decay: decay :math:`\rho \in [0, 1)` of the factors' moving averages.
        damping: :math:`\gamma > 0`, added to every eigenvalue product (the first group's).
        kl_clip: :math:`\kappa > 0`, bound on the step's approximate KL divergence.
        weight_decay: L2 penalty :math:`\lambda \ge 0`, applied once :math:`t \ge 20 T_{cov}`.
        TCov: refresh the factors every ``TCov`` steps.
        TInv: refresh the eigendecompositions every ``TInv`` steps.
        batch_averaged: the loss is a mean over the batch (scales :math:`G` by :math:`n^2`).
        params: parameters or param groups to optimise (default ``model.parameters()``).

    Attributes:
        steps: the step counter :math:`t`.
        acc_stats: whether a backward pass updates :math:`G` (see :meth:`backward_sampled_fisher`).
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float | Tensor = 1e-3,
        momentum: float = 0.9,
        stat_decay: float = 0.95,
        damping: float = 1e-3,
        kl_clip: float = 1e-3,
        weight_decay: float = 0.0,
        TCov: int = 10,
        TInv: int = 100,
        batch_averaged: bool = True,
        *,
        params: Iterable | None = None,
    ) -> None:
        check_nonnegative("lr", lr)
        check_nonnegative("momentum", momentum)
        check_beta("stat_decay", stat_decay)
        check_positive("damping", damping)
        check_positive("kl_clip", kl_clip)
        check_nonnegative("weight_decay", weight_decay)
        check_positive_int("TCov", TCov)
        check_positive_int("TInv", TInv)
        if not isinstance(model, nn.Module):
            raise ValueError(f"Invalid model: {type(model).__name__}; KFAC takes the nn.Module")
        defaults = dict(lr=lr, momentum=momentum, damping=damping, weight_decay=weight_decay)
        super().__init__(model.parameters() if params is None else params, defaults)
        self.stat_decay = stat_decay
        self.kl_clip = kl_clip
        self.TCov = TCov
        self.TInv = TInv
        self.batch_averaged = batch_averaged
        self.acc_stats = True
        self.steps = 0
        self.model = model
        self.layers: list[nn.Module] = []
        self._hooks: list = []
        self._in_closure = False
        self._track_new_layers()
        if not self.layers:
            raise ValueError(
                "Invalid model: it has no nn.Linear or nn.Conv2d layer to precondition"
            )

    # --- layers, hooks, copies ----------------------------------------------------------

    def _track_new_layers(self) -> None:
        """Hook every K-FAC layer of the model whose weight is optimised and not yet tracked."""
        optimised = {id(p) for g in self.param_groups for p in g["params"]}
        tracked = {id(m) for m in self.layers}
        for m in self.model.modules():
            if is_kfac_layer(m) and id(m.weight) in optimised and id(m) not in tracked:
                if m.weight.is_complex():
                    raise ValueError(
                        f"Invalid model: KFAC does not support complex layers ({m}); its "
                        "factors are real second moments"
                    )
                self.layers.append(m)
                self._hooks.append(m.register_forward_hook(_LayerHook(self)))

    def add_param_group(self, param_group: dict) -> None:
        """torch's ``add_param_group``; the model's Linear/Conv2d layers whose weights it adds
        (e.g. layers added to the model since) are preconditioned from their first statistics
        step on (plain SGD before it)."""
        super().add_param_group(param_group)
        if hasattr(self, "model"):  # not during __init__, which tracks the layers itself
            self._track_new_layers()

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        keep = ("stat_decay", "kl_clip", "TCov", "TInv", "batch_averaged", "acc_stats", "steps",
                "model", "layers")  # fmt: skip
        state.update({k: self.__dict__[k] for k in keep})
        return state

    def __setstate__(self, state: dict) -> None:
        unpickled = "_hooks" not in self.__dict__  # torch's load_state_dict also calls this
        super().__setstate__(state)
        if unpickled:
            self._in_closure = False
            self._hooks = [m.register_forward_hook(_LayerHook(self)) for m in self.layers]

    # --- statistics (hooks) -------------------------------------------------------------

    def _is_stats_step(self) -> bool:
        return self.steps % self.TCov == 0

    @staticmethod
    def _factor_dtype(module: nn.Module) -> torch.dtype:
        """Factors are kept in the weight's dtype, but at least float32 (bfloat16 weights)."""
        return torch.promote_types(module.weight.dtype, torch.float32)

    def _update_factor(self, module: nn.Module, key: str, batch_factor: Tensor) -> None:
        state = self.state[module.weight]
        if self.steps == 0 or key not in state:  # the reference restarts from I at step 0
            state[key] = torch.eye(
                batch_factor.size(0), dtype=batch_factor.dtype, device=batch_factor.device
            )
        state[key].mul_(self.stat_decay).add_(batch_factor, alpha=1 - self.stat_decay)

    def _on_forward(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        """At a statistics step, in training mode or inside ``step(closure)``: hook the output,
        so that a backward pass folds this pass's input and output gradient."""
        if not (torch.is_grad_enabled() and isinstance(output, Tensor) and output.requires_grad):
            return
        if (module.training or self._in_closure) and self._is_stats_step():
            x = args[0].detach()
            output.register_hook(functools.partial(self._on_backward, module, x))

    def _on_backward(self, module: nn.Module, x: Tensor, s: Tensor) -> None:
        if not (self.acc_stats and self._is_stats_step()):
            return
        dtype = self._factor_dtype(module)
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            self._update_factor(module, "A", input_factor(module, x.to(dtype)))
            G = output_factor(module, s.detach().to(dtype), batch_averaged=self.batch_averaged)
            self._update_factor(module, "G", G)

    def backward_sampled_fisher(
        self,
        logits: Tensor,
        loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        """At a statistics step, feed :math:`G` from labels sampled from the model (true Fisher).

        Samples ``y ~ softmax(logits)``, backpropagates ``loss_fn(logits, y)`` with
        ``acc_stats=True`` (keeping the graph), sets ``acc_stats=False`` so the training loss's
        backward does not feed :math:`G`, and clears the gradients. Does nothing on other steps.
        Call it after the forward pass and before ``loss.backward()``.
        """
        if not self._is_stats_step():
            return
        C = logits.size(-1)
        with torch.no_grad():
            probs = torch.softmax(logits.detach().reshape(-1, C).float(), dim=-1)
            y = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        self.acc_stats = True
        loss_fn(logits.reshape(-1, C), y).backward(retain_graph=True)
        self.acc_stats = False
        self.zero_grad()

    def remove_hooks(self) -> None:
        """Detach the optimizer's hooks from the model."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    # --- the step -----------------------------------------------------------------------

    def _grad_matrix(self, m: nn.Module, dtype: torch.dtype) -> Tensor:
        M = m.weight.grad.reshape(m.weight.size(0), -1)
        if m.bias is not None:
            gb = m.bias.grad if m.bias.grad is not None else torch.zeros_like(m.bias)
            M = torch.cat([M, gb[:, None]], dim=1)
        return M.to(dtype)

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step; ``closure`` runs the forward and backward passes and returns the loss.

        The eigendecompositions due at this step come first, for every layer together. Under
        torch.compile that part, and the step counter, run eagerly, outside every loop and in a
        ``with`` block rather than under a decorator, so that the update in between compiles to
        one graph whatever the number of layers."""
        with torch.no_grad():
            loss = self._evaluate_in_closure(closure) if closure is not None else None
            decay_on = self._prepare()
            self._update(decay_on)
            self._advance()
        return loss

    # torch 2.13's dynamo drops assignments to an optimizer's attributes inside a compiled
    # step (it models torch.optim.Optimizer objects specially): the two that change here are
    # made eagerly.
    @eager("sets the optimizer's attributes (lost when traced)")
    def _evaluate_in_closure(self, closure: Callable[[], Tensor]) -> Tensor:
        """``closure()`` with gradients on, its passes feeding the statistics in any mode."""
        self._in_closure = True
        try:
            return self._evaluate(closure)
        finally:
            self._in_closure = False

    @eager("sets the optimizer's attributes (lost when traced)")
    def _advance(self) -> None:
        self.steps += 1

    @eager("eigendecompositions and the step counter, eagerly")
    def _prepare(self) -> bool:
        r"""Refresh the eigenbases due at this step (every ``TInv`` steps, and at a layer's first
        step with statistics, whether or not it has a gradient now), check that the layers have
        statistics at step 0, and return whether weight decay is on (:math:`t \ge 20 T_{cov}`)."""
        due = []
        for m in self.layers:
            state = self.state[m.weight]
            if "A" in state and "G" in state:
                if self.steps % self.TInv == 0 or "QA" not in state:
                    due.append(state)
            elif self.steps == 0 and m.weight.grad is not None:
                raise RuntimeError(
                    f"KFAC has no curvature statistics for layer {m}: at step 0 (and every TCov "
                    "steps) run the forward pass in training mode (model.train()) or inside "
                    "step(closure), with gradients enabled, then a backward pass with "
                    "acc_stats=True"
                )
        _refresh_eigenbases(due)
        return self.steps >= 20 * self.TCov

    def _update(self, decay_on: bool) -> None:
        """The natural-gradient directions, the KL clip and the SGD-momentum step (weight decay
        only when ``decay_on``)."""
        lr = scalar(self.param_groups[0]["lr"])
        damping = self.param_groups[0]["damping"]
        directions: dict[int, Tensor] = {}
        vg_sum = 0.0
        for m in self.layers:
            if m.weight.grad is None:
                continue
            state = self.state[m.weight]
            if "QA" not in state:
                continue  # a layer added later: plain SGD until its first statistics step
            M = self._grad_matrix(m, state["A"].dtype)
            V = natural_gradient(M, state["QA"], state["dA"], state["QG"], state["dG"], damping)
            vg_sum = vg_sum + host_scalar((V * M).sum()) * lr**2
            if m.bias is not None:
                directions[id(m.bias)] = V[:, -1].to(m.bias.dtype)
                V = V[:, :-1]
            directions[id(m.weight)] = V.reshape_as(m.weight).to(m.weight.dtype)
        nu = kl_clip_factor(vg_sum, self.kl_clip)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = directions[id(p)] * nu if id(p) in directions else p.grad
                state = self.state[p]
                state["momentum_buffer"] = sgd_update(
                    p,
                    d,
                    state.get("momentum_buffer"),
                    lr=scalar(group["lr"]),
                    momentum=group["momentum"],
                    dampening=0.0,
                    weight_decay=group["weight_decay"] if decay_on else 0.0,
                    nesterov=False,
                )
                if state["momentum_buffer"] is None:
                    del state["momentum_buffer"]


    # --- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict:
        """torch's state dict plus the step counter ``kfac_steps``."""
        sd = super().state_dict()
        sd["kfac_steps"] = self.steps
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a :meth:`state_dict`; the factors keep their own dtype (not cast to bfloat16)."""
        state_dict = dict(state_dict)
        steps = int(state_dict.pop("kfac_steps", 0))
        super().load_state_dict(state_dict)
        self.steps = steps
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(saved_ids, params):
            saved = state_dict["state"].get(i, {})
            for key in _FACTOR_KEYS:
                if key in saved:
                    self.state[p][key] = saved[key].to(device=p.device, copy=True)


def _refresh_eigenbases(states: list[dict]) -> None:
    """:func:`eigenbasis` of both factors of every layer state given, in place."""
    for state in states:
        state["dA"], state["QA"] = eigenbasis(state["A"])
        state["dG"], state["QG"] = eigenbasis(state["G"])
