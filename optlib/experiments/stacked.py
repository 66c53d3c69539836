r"""Train many small models at once: learning-rate (and weight-decay) sweeps over seeds.

A sweep needs one training run per (learning rate, weight decay, seed). The models of the
workload suite are small, so run alone they spend most of their time in Python and in tiny
kernels. :class:`StackedModels` instead stacks the parameters of :math:`K` independent copies of
a model along a new leading dimension (:func:`torch.func.stack_module_state`) and evaluates all
of them with one :func:`torch.func.vmap` of :func:`torch.func.functional_call`, each copy on its
own mini-batch. The sum of the :math:`K` losses has, for each copy, the gradient of that copy's
own loss, so one ``backward()`` gives every run its gradient.

The optimizer then sees each run as its own param group, whose tensors are *views* of that run's
slice of the stacked weights (:meth:`StackedModels.views`) with that run's learning rate and
weight decay (or as several groups that share its tensors out, each tensor in one of them, as
:class:`~optlib.MuonWithAuxAdamW` needs: Muon for the hidden matrices, AdamW for the rest).
Any optimizer that updates each tensor of each group on its own (SGD, Adam, AdamW, Lion,
Adafactor, Shampoo, SOAP, Muon on matrices, SophiaH…) then takes exactly the steps it would take
on that run alone; :func:`train_stacked` checks that the optimizer is not one that
couples tensors across groups (L-BFGS, K-FAC, LAMB's global gradient clipping). The tests
check a stacked run against :func:`optlib.experiments.train.run` of the same optimizer, seed
and workload, step for step.

:func:`sweep` runs such a set of runs on a named workload and returns plain JSON data, so a
chapter can memoise it with :func:`optlib.course.cache.memoize`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from .._seed import derive_seed
from ..problems.charlm import lm_loss
from ..problems.workloads import Workload, workload

__all__ = [
    "COUPLED", "ELEMENTWISE", "BatchStream", "StackedModels", "UpdateSize", "sweep",
    "train_stacked",
]  # fmt: skip

# Optimizers whose step is not a set of independent per-tensor updates within a param group.
COUPLED = ("LBFGS", "KFAC", "LAMB")
# Optimizers whose update of each entry depends only on that entry's gradient and state and on
# the group's hyperparameters: one view may cover several copies (see StackedModels.views).
ELEMENTWISE = (
    "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam", "RAdam", "Lion",
    "SophiaG", "SophiaH",  # the step and the Hessian refresh (experiments.sophia.lm_race)
)  # fmt: skip
# Losses that are a mean of per-example (or per-token) cross-entropies: one call for all copies.
_MEAN_CROSS_ENTROPY = (nn.functional.cross_entropy, lm_loss)


class StackedModels(nn.Module):
    r""":math:`K` independent copies of one architecture, evaluated together.

    ``StackedModels([make_model(s) for s in seeds])`` keeps each copy's initial weights. Every
    parameter becomes one stacked tensor with a leading dimension :math:`K` (``stacked[name]``);
    buffers are stacked too. ``forward(X)`` gives the outputs of all copies on one shared batch,
    ``(K, B, ...)``; ``forward(X, per_model=True)`` expects one batch per copy, ``X`` of shape
    ``(K, B, ...)``. With ``vectorize=False`` the copies are evaluated one after another (for
    modules that :func:`torch.func.vmap` cannot batch, such as :class:`torch.nn.GRU`); results
    are the same.
    """

    def __init__(self, models: Sequence[nn.Module], *, vectorize: bool = True) -> None:
        super().__init__()
        if not models:
            raise ValueError("StackedModels needs at least one model")
        params, buffers = stack_module_state(list(models))
        self.names = list(params)
        self.stacked = nn.ParameterDict(
            {n.replace(".", "/"): nn.Parameter(p.detach()) for n, p in params.items()}
        )
        self._buffers_stacked = {n: b.detach() for n, b in buffers.items()}
        self.base = copy.deepcopy(models[0]).to("meta")
        self.vectorize = vectorize
        for p in self.stacked.values():
            p.grad = torch.zeros_like(p)

    @property
    def n_models(self) -> int:
        return next(iter(self.stacked.values())).shape[0]

    def tensors(self) -> dict[str, nn.Parameter]:
        """The stacked parameters by the model's own parameter names."""
        return {n: self.stacked[n.replace(".", "/")] for n in self.names}

    def named_views(self, k: int, stop: int | None = None) -> dict[str, Tensor]:
        """Copy ``k``'s parameters as views into the stacked tensors, whose ``.grad`` are views
        into the stacked gradients: an optimizer given these trains exactly copy ``k``. With
        ``stop``, the views cover copies ``k, ..., stop - 1`` at once (keeping the leading
        dimension), which trains them as separate runs only under an element-wise optimizer
        (``ELEMENTWISE``, or a group for which the optimizer's ``elementwise_group(group)``
        is true, as in :class:`optlib.experiments.race.Mixed`). Clear gradients with
        ``zero_grad_`` (in place), never by
        setting them to ``None``."""
        index = k if stop is None else slice(k, stop)
        out = {}
        for name, p in self.tensors().items():
            view = p.detach()[index]
            view.grad = p.grad[index]
            out[name] = view
        return out

    def views(self, k: int, stop: int | None = None) -> list[Tensor]:
        """:meth:`named_views` as a list, in the model's parameter order."""
        return list(self.named_views(k, stop).values())

    def zero_grad_(self) -> None:
        for p in self.stacked.values():
            p.grad.zero_()

    def model(self, k: int) -> nn.Module:
        """A stand-alone copy of model ``k`` with its current weights and buffers."""
        module = copy.deepcopy(self.base).to_empty(device="cpu")
        with torch.no_grad():
            for name, p in self.tensors().items():
                module.get_parameter(name).copy_(p[k])
            for name, b in self._buffers_stacked.items():
                module.get_buffer(name).copy_(b[k])
        return module

    def _call(self, params: dict, buffers: dict, X: Tensor, kwargs: dict) -> Tensor:
        return functional_call(self.base, (params, buffers), (X,), kwargs)

    def forward(self, X: Tensor, *, per_model: bool = False, **kwargs: Any) -> Tensor:
        params, buffers = self.tensors(), self._buffers_stacked
        if self.vectorize:
            fn = vmap(lambda p, b, x: self._call(p, b, x, kwargs),
                      in_dims=(0, 0, 0 if per_model else None))  # fmt: skip
            return fn(params, buffers, X)
        outs = []
        for k in range(self.n_models):
            p = {n: t[k] for n, t in params.items()}
            b = {n: t[k] for n, t in buffers.items()}
            outs.append(self._call(p, b, X[k] if per_model else X, kwargs))
        return torch.stack(outs)

    def losses(self, loss_fn: Callable[[Tensor, Tensor], Tensor], X: Tensor, y: Tensor, *,
               per_model: bool = False) -> Tensor:  # fmt: skip
        """Each copy's mean loss, shape ``(K,)``; ``per_model`` as in :meth:`forward` (then
        ``y`` has a leading ``K`` too). A mean cross-entropy (torch's, or
        :func:`~optlib.problems.charlm.lm_loss`) is computed on all copies' outputs at once;
        any other loss is mapped over the copies."""
        params, buffers = self.tensors(), self._buffers_stacked
        if loss_fn in _MEAN_CROSS_ENTROPY:
            out = self(X, per_model=per_model)
            target = y if per_model else y.expand(out.shape[0], *y.shape)
            each = nn.functional.cross_entropy(
                out.reshape(-1, out.shape[-1]), target.reshape(-1), reduction="none"
            )
            return each.reshape(out.shape[0], -1).mean(1)
        if self.vectorize:
            dim = 0 if per_model else None
            fn = vmap(lambda p, b, x, t: loss_fn(self._call(p, b, x, {}), t),
                      in_dims=(0, 0, dim, dim))  # fmt: skip
            return fn(params, buffers, X, y)
        out = self(X, per_model=per_model)
        return torch.stack([loss_fn(out[k], y[k] if per_model else y) for k in range(len(out))])

    @torch.no_grad()
    def evaluate(self, loss_fn: Callable[[Tensor, Tensor], Tensor], X: Tensor, y: Tensor, *,
                 chunk: int = 512) -> np.ndarray:  # fmt: skip
        """Every copy's mean loss on ``X, y`` (shared), ``chunk`` examples at a time."""
        total = torch.zeros(self.n_models, dtype=torch.float64)
        for start in range(0, len(X), chunk):
            Xb, yb = X[start : start + chunk], y[start : start + chunk]
            total += self.losses(loss_fn, Xb, yb).double() * len(Xb)
        return (total / len(X)).numpy()


class BatchStream:
    """The mini-batch index sequence of :func:`optlib.experiments.train.run` for one seed:
    a seeded permutation per epoch, ``n // batch_size`` batches each (``None``: full batch)."""

    def __init__(self, n: int, batch_size: int | None, seed: int) -> None:
        self.n, self.batch_size = n, batch_size
        self.g = torch.Generator().manual_seed(derive_seed(seed))
        self.per_epoch = 1 if batch_size is None or batch_size >= n else n // batch_size
        self.k, self.perm = 0, None

    def next(self) -> Tensor:
        if self.batch_size is None or self.batch_size >= self.n:
            return torch.arange(self.n)
        if self.k % self.per_epoch == 0:
            self.perm = torch.randperm(self.n, generator=self.g)
        i = self.k % self.per_epoch
        self.k += 1
        return self.perm[i * self.batch_size : (i + 1) * self.batch_size]


class UpdateSize:
    r"""A ``callback`` for :func:`train_stacked` that records, after every step :math:`t`, the
    root mean square of each copy's parameter change, :math:`\mathrm{RMS}(\theta_t -
    \theta_{t-1})` over all of its parameters: ``rms[t-1, k]``."""

    def __init__(self, stacked: StackedModels) -> None:
        self.previous = [p.detach().clone() for p in stacked.tensors().values()]
        self.per_copy = sum(p[0].numel() for p in self.previous)
        self.history: list[np.ndarray] = []

    def __call__(self, t: int, stacked: StackedModels) -> None:
        squares = []
        for before, p in zip(self.previous, stacked.tensors().values()):
            now = p.detach()
            before.sub_(now)  # -(theta_t - theta_{t-1}), then back to theta_t below
            squares.append(before.flatten(1).pow(2).sum(1, dtype=torch.float64))
            before.copy_(now)
        total = torch.stack(squares).sum(0)
        self.history.append((total / self.per_copy).sqrt().numpy())

    @property
    def rms(self) -> np.ndarray:
        """Shape ``(steps, K)``."""
        return np.array(self.history)


def _schedule(kind: str, steps: int, warmup: int) -> Callable[[int], float]:
    if kind not in ("constant", "cosine"):
        raise ValueError(f"Invalid schedule: {kind!r}; allowed are 'constant', 'cosine'")
    if warmup < 0:
        raise ValueError(f"Invalid warmup: {warmup}; need warmup >= 0")

    def factor(t: int) -> float:
        ramp = min(1.0, (t + 1) / warmup) if warmup else 1.0
        decay = 0.5 * (1 + math.cos(math.pi * t / steps)) if kind == "cosine" else 1.0
        return ramp * decay

    return factor


def train_stacked(
    stacked: StackedModels,
    optimizer: torch.optim.Optimizer,
    X: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    *,
    steps: int,
    batch_size: int | None,
    seeds: Sequence[int],
    schedule: str = "constant",
    warmup: int = 0,
    divergence_factor: float = 1e6,
    callback: Callable[[int, StackedModels], None] | None = None,
    step_kwargs: dict | None = None,
) -> np.ndarray:
    r"""Train every copy of ``stacked`` for ``steps`` steps, copy :math:`k` on the mini-batches
    that :func:`optlib.experiments.train.run` draws for ``seeds[k]``; return the batch losses,
    shape ``(steps + 1, K)`` (row :math:`t` is the loss at :math:`\theta_t` on the batch of
    step :math:`t`; the last row uses one more batch).

    ``optimizer`` must hold, in its param groups, views of every copy (e.g. one group per copy,
    ``{"params": stacked.views(k), "lr": ...}``). ``schedule`` (``"constant"`` or ``"cosine"``
    to 0 at ``steps``) and a linear ``warmup`` multiply every group's learning rate. A copy whose
    loss becomes non-finite or grows past :math:`\ell_0 + \text{factor}\cdot\max(|\ell_0|, 1)`
    has diverged, as in :func:`~optlib.experiments.train.run`: its later losses are NaN, it gets
    no more loss gradient, and a param group whose copies have all diverged is removed from
    ``optimizer``. ``callback(t, stacked)`` runs after every step ``t = 1..steps``;
    ``step_kwargs`` go to every ``optimizer.step`` (SophiaG's ``bs``).
    """
    name = type(optimizer).__name__
    if name in COUPLED:
        raise ValueError(f"{name} couples tensors across param groups; a stacked run would "
                         "not equal separate runs")  # fmt: skip
    K = stacked.n_models
    if len(seeds) != K:
        raise ValueError(f"seeds has {len(seeds)} entries for {K} models")
    owner = _owners(stacked, optimizer)
    factor = _schedule(schedule, steps, warmup)
    base_lr = [group["lr"] for group in optimizer.param_groups]
    streams = [BatchStream(len(y), batch_size, s) for s in seeds]
    history = np.full((steps + 1, K), np.nan)
    alive = np.ones(K, dtype=bool)
    loss0 = None
    for t in range(steps + 1):
        idx = torch.stack([s.next() for s in streams])
        stacked.zero_grad_()
        losses = stacked.losses(loss_fn, X[idx], y[idx], per_model=True)
        values = losses.detach().double().numpy()
        if loss0 is None:
            loss0 = values.copy()
        bad = ~np.isfinite(values) | (values > loss0 + divergence_factor * np.maximum(
            np.abs(loss0), 1.0))  # fmt: skip
        if (bad & alive).any():
            alive &= ~bad
            # A group whose copies have all diverged leaves the optimizer for good. A diverged
            # copy that shares a group with live ones (element-wise optimizers only) gets no
            # loss gradient; whatever its slice holds stays in its slice.
            keep = [i for i, (a, b) in enumerate(owner) if alive[a:b].any()]
            optimizer.param_groups[:] = [optimizer.param_groups[i] for i in keep]
            owner, base_lr = [owner[i] for i in keep], [base_lr[i] for i in keep]
        history[t] = np.where(alive, values, np.nan)
        if t == steps or not alive.any():
            break
        torch.where(torch.from_numpy(alive), losses, torch.zeros_like(losses)).sum().backward()
        for group, lr in zip(optimizer.param_groups, base_lr):
            group["lr"] = lr * factor(t)
        optimizer.step(**(step_kwargs or {}))
        if callback is not None:
            callback(t + 1, stacked)
    for group, lr in zip(optimizer.param_groups, base_lr):
        group["lr"] = lr
    return history


def _owners(stacked: StackedModels, optimizer: torch.optim.Optimizer) -> list[tuple[int, int]]:
    """The copies ``range(a, b)`` each param group trains, from the views it holds."""
    K = stacked.n_models
    tensors = list(stacked.tensors().values())
    starts = {}
    for j, p in enumerate(tensors):
        base = p.detach()
        for k in range(K):
            starts[base[k].data_ptr()] = (j, k, base[0].numel())
    owners = []
    held = np.zeros((len(tensors), K), dtype=int)  # how often each tensor of each copy is held
    for i, group in enumerate(optimizer.param_groups):
        spans = set()
        for p in group["params"]:
            found = starts.get(p.data_ptr())
            if found is None:
                spans.add(None)
                continue
            j, k, per_copy = found
            n = p.numel() // per_copy if p.numel() % per_copy == 0 else 0
            spans.add((k, k + n) if n else None)
            held[j, k : k + n] += 1
        if len(spans) != 1 or None in spans:
            raise ValueError(f"param group {i} must hold views of the same copies of every "
                             "tensor it holds (use StackedModels.views)")  # fmt: skip
        owners.append(spans.pop())
    if not (held == 1).all():
        raise ValueError("the optimizer's groups must hold every stacked copy exactly once "
                         "(each of its tensors in one group)")  # fmt: skip
    name = type(optimizer).__name__
    check = getattr(optimizer, "elementwise_group", None)  # per group (a mixed optimizer)
    if any(b - a > 1 and name not in ELEMENTWISE and not (check is not None and check(group))
           for (a, b), group in zip(owners, optimizer.param_groups)):  # fmt: skip
        raise ValueError(f"{name} is not element-wise: give each copy its own param group")
    return owners


def sweep(
    name: str,
    optimizer: str,
    runs: Sequence[Sequence[float]],
    *,
    steps: int,
    batch_size: int | None = 32,
    options: dict | None = None,
    workload_options: dict | None = None,
    schedule: str = "constant",
    warmup: int = 0,
    average_last: int = 20,
    eval_examples: int | None = None,
    eval_chunk: int = 512,
    record_updates: bool = False,
) -> dict:
    r"""Train one copy of workload ``name`` per run ``(lr, weight_decay, seed)`` with
    ``getattr(optlib, optimizer)(…, lr=lr, weight_decay=weight_decay, **options)`` and report
    plain JSON data (lists aligned with ``runs``):

    ``train_loss``: the mean batch loss over the last ``average_last`` steps; ``test_loss``: the
    loss on the held-out split after training (on ``eval_examples`` evenly spaced examples of
    it, if given); ``diverged``; ``weight_rms``: the root mean square of all of the run's
    parameters after training; ``curve``: the batch losses every
    ``max(1, steps // 50)`` steps; ``seconds``: the wall time of the whole sweep. A diverged run
    has NaN losses. The model of run :math:`k` starts from ``make_model(seed_k)`` and sees the
    batches of ``seed_k``, as in a single run of :func:`optlib.experiments.train.run`. Runs
    with equal ``(lr, weight_decay)`` share one param group under an element-wise optimizer
    (``ELEMENTWISE``), which makes the optimizer's step cheaper; others get one group per
    run. The optimizer runs its multi-tensor path (``foreach=True``) unless ``options`` says
    otherwise. With ``record_updates``, ``update_rms`` holds each run's mean over the steps of
    :math:`\mathrm{RMS}(\theta_t - \theta_{t-1}) / \eta_t` (:class:`UpdateSize`; :math:`\eta_t`
    the scheduled learning rate), the step size in units of the learning rate.
    """
    import time

    import optlib

    cls = getattr(optlib, optimizer, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ValueError(f"Invalid optimizer: {optimizer!r} is not an optlib optimizer")
    if not runs:
        raise ValueError("sweep needs at least one run")
    start = time.perf_counter()
    work: Workload = workload(name, **(workload_options or {}))
    runs = [(float(lr), float(wd), int(seed)) for lr, wd, seed in runs]
    order = sorted(range(len(runs)), key=lambda i: runs[i])  # equal (lr, wd) side by side
    ordered = [runs[i] for i in order]
    stacked = StackedModels([work.model(seed) for _, _, seed in ordered],
                            vectorize=(workload_options or {}).get("arch") != "gru")  # fmt: skip
    groups, k = [], 0
    while k < len(ordered):
        stop = k + 1
        if optimizer in ELEMENTWISE:  # one view over every copy with these hyperparameters
            while stop < len(ordered) and ordered[stop][:2] == ordered[k][:2]:
                stop += 1
        lr, wd, _ = ordered[k]
        groups.append({"params": stacked.views(k, stop if stop > k + 1 else None), "lr": lr,
                       "weight_decay": wd})  # fmt: skip
        k = stop
    opt = cls(groups, **{"foreach": True, **(options or {})})
    data = work.data
    sizes = UpdateSize(stacked) if record_updates else None
    history = train_stacked(
        stacked, opt, data.X_train, data.y_train, work.loss_fn, steps=steps,
        batch_size=batch_size, seeds=[s for _, _, s in ordered], schedule=schedule,
        warmup=warmup, callback=sizes,
    )  # fmt: skip
    diverged = ~np.isfinite(history[-1])
    X_eval, y_eval = data.X_test, data.y_test
    if eval_examples is not None and eval_examples < len(X_eval):  # evenly spaced subset
        pick = torch.linspace(0, len(X_eval) - 1, eval_examples).round().long()
        X_eval, y_eval = X_eval[pick], y_eval[pick]
    test = stacked.evaluate(work.loss_fn, X_eval, y_eval, chunk=eval_chunk)
    test = np.where(diverged, np.nan, test)
    tensors = list(stacked.stacked.values())
    with torch.no_grad():
        squares = sum(p.detach().double().pow(2).flatten(1).sum(1) for p in tensors)
        weight_rms = (squares / sum(p[0].numel() for p in tensors)).sqrt().numpy()
    back = np.argsort(order)  # results in the order of ``runs``
    history, test, diverged = history[:, back], test[back], diverged[back]
    weight_rms = np.where(diverged, np.nan, weight_rms[back])
    extra = {}
    if sizes is not None:
        factor = _schedule(schedule, steps, warmup)
        etas = np.array([[lr * factor(t) for lr, _, _ in ordered] for t in range(len(sizes.rms))])
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = (sizes.rms / etas)[:, back]
        relative[:, diverged] = np.nan
        extra["update_rms"] = [float(v) for v in relative.mean(0)]
    tail = history[-min(average_last, steps + 1):]
    every = max(1, steps // 50)

    def plain(values: np.ndarray) -> list[float]:
        return [float(v) for v in values]

    return {
        "runs": [list(r) for r in runs],
        "train_loss": plain(np.where(diverged, np.nan, tail.mean(0))),
        "test_loss": plain(test),
        "diverged": [bool(d) for d in diverged],
        "weight_rms": plain(weight_rms),
        "curve_steps": list(range(0, steps + 1, every)),
        "curve": [plain(history[t]) for t in range(0, steps + 1, every)],
        "seconds": time.perf_counter() - start,
        **extra,
    }
