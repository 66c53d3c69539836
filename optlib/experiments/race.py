r"""Races on the workload suite: many runs of one optimizer, with held-out curves (chapter 12).

:func:`race` trains one copy of a workload (:func:`optlib.problems.workload`) per run
``(lr, seed)`` with one optimizer, all copies at once as one stacked model
(:mod:`optlib.experiments.stacked`), under a schedule that multiplies every learning rate,

.. math::

   \eta_t = \eta \cdot \min\!\Big(1, \frac{t+1}{T_{\rm w}}\Big) \cdot
   \tfrac12\Big(1 + \cos\frac{\pi t}{T}\Big) \qquad (\text{``cosine''; ``constant'' drops the
   last factor}),

and records, every ``eval_every`` steps, each copy's held-out loss and accuracy (the share of
held-out targets whose largest logit is the right class or character), the measurements from
which a benchmark reads steps-to-target (:func:`steps_to_target`).

Schedule-free AdamW (:class:`optlib.AdamWScheduleFree`) needs its ``train()``/``eval()``
switch: the race calls ``train()`` before the first step and evaluates every copy at the
averaged point :math:`x` (``eval()``, then ``train()`` again to go on), as its authors do. Any
optimizer of :mod:`optlib` whose step treats each tensor of a param group on its own runs here
(not L-BFGS, K-FAC, LAMB: :data:`~optlib.experiments.stacked.COUPLED`); a class may also be
given instead of a name (e.g. :class:`~optlib.experiments.switching.AdamThenSGD`).

Results are plain JSON data (lists aligned with ``runs``), so a chapter can memoise a race
with :func:`optlib.course.cache.memoize` and a benchmark can store it.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..problems.workloads import workload
from .sophia import steps_to_target
from .stacked import ELEMENTWISE, StackedModels, train_stacked

__all__ = ["HeldOut", "Mixed", "evenly_spaced", "heldout", "race", "steps_to_target"]


@torch.no_grad()
def heldout(stacked: StackedModels, X: Tensor, y: Tensor, *, chunk: int = 256,
            ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Every copy's mean cross-entropy (nats per target) and accuracy on ``X, y``, in chunks.

    The outputs' last dimension holds the logits (classes or characters); every other
    dimension after the copies' is a target (one per example, or one per character)."""
    K = stacked.n_models
    loss = torch.zeros(K, dtype=torch.float64)
    hits = torch.zeros(K, dtype=torch.float64)
    count = 0
    for start in range(0, len(X), chunk):
        out = stacked(X[start : start + chunk])  # (K, B, ..., C)
        target = y[start : start + chunk].expand(K, *y[start : start + chunk].shape)
        logits, t = out.reshape(K, -1, out.shape[-1]), target.reshape(K, -1)
        each = torch.nn.functional.cross_entropy(logits.transpose(1, 2), t, reduction="none")
        loss += each.double().sum(1)
        hits += (logits.argmax(-1) == t).double().sum(1)
        count += t.shape[1]
    return (loss / count).numpy(), (hits / count).numpy()


class HeldOut:
    """A ``callback`` for :func:`~optlib.experiments.stacked.train_stacked`: every copy's
    held-out loss and accuracy (:func:`heldout`) before the first step and after every
    ``every``-th step; with ``optimizer`` (schedule-free), evaluated at its ``eval()`` point."""

    def __init__(self, stacked: StackedModels, X: Tensor, y: Tensor, *, every: int,
                 optimizer: torch.optim.Optimizer | None = None) -> None:  # fmt: skip
        if every < 1:
            raise ValueError(f"Invalid every: {every}; need every >= 1")
        self.X, self.y, self.every, self.optimizer = X, y, every, optimizer
        self.steps: list[int] = []
        self.loss: list[np.ndarray] = []
        self.accuracy: list[np.ndarray] = []
        self.record(0, stacked)

    def record(self, t: int, stacked: StackedModels) -> None:
        switch = self.optimizer is not None and hasattr(self.optimizer, "eval")
        if switch:
            self.optimizer.eval()
        loss, accuracy = heldout(stacked, self.X, self.y)
        if switch:
            self.optimizer.train()
        self.steps.append(t)
        self.loss.append(loss)
        self.accuracy.append(accuracy)

    def __call__(self, t: int, stacked: StackedModels) -> None:
        if t % self.every == 0:
            self.record(t, stacked)


class Mixed(torch.optim.Optimizer):
    r"""Each param group stepped by an optimizer of its own, so that runs of several optimizers
    can train side by side in one stacked model.

    A group names its optimizer in ``"optimizer"`` (an optlib name or a class) and gives its
    keyword arguments in ``"options"``; its ``"lr"`` goes to that optimizer at every step
    (so a schedule that changes it reaches it), unless ``"scheduled"`` is False, when the inner
    optimizer keeps the group's first ``lr`` (schedule-free AdamW). ``train()`` and ``eval()``
    reach the inner optimizers that have them. After every step, the inner group's entries
    (such as :class:`~optlib.experiments.switching.AdamThenSGD`'s ``switched_at``) are copied
    into the outer group, so they can be read there.
    """

    _OWN = ("params", "lr", "optimizer", "options", "scheduled", "initial_lr")
    #: Optimizers whose step treats every entry on its own given the group's numbers, so that a
    #: group may hold views of several stacked copies (with ELEMENTWISE of stacked).
    ELEMENTWISE = (*ELEMENTWISE, "AdamWScheduleFree")

    def __init__(self, params) -> None:
        super().__init__(params, dict(optimizer=None, options={}, scheduled=True))
        self.inner: list[torch.optim.Optimizer] = []
        for group in self.param_groups:
            _, cls = _build(group["optimizer"])
            kwargs = dict(group["options"])
            if "foreach" in inspect.signature(cls).parameters:
                kwargs.setdefault("foreach", True)
            group["initial_lr"] = group["lr"]
            self.inner.append(cls([{"params": group["params"], "lr": group["lr"]}], **kwargs))
        self._groups = list(self.param_groups)  # a diverged run's group may leave the list

    @classmethod
    def elementwise_group(cls, group: dict) -> bool:
        """Whether ``group``'s optimizer treats every entry on its own (then the group may hold
        views of several stacked copies: :meth:`~optlib.experiments.stacked.StackedModels.views`
        with ``stop``)."""
        return _build(group["optimizer"])[0] in cls.ELEMENTWISE

    def train(self) -> None:
        for opt in self.inner:
            if hasattr(opt, "train"):
                opt.train()

    def eval(self) -> None:
        for opt in self.inner:
            if hasattr(opt, "eval"):
                opt.eval()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        live = {id(g) for g in self.param_groups}
        for group, opt in zip(self._groups, self.inner):
            if id(group) not in live:  # the run diverged and left
                continue
            inner = opt.param_groups[0]
            inner["lr"] = group["lr"] if group["scheduled"] else group["initial_lr"]
            opt.step()
            for key, value in inner.items():
                if key not in self._OWN:
                    group[key] = value
        return loss


def _build(optimizer: str | type) -> tuple[str, type]:
    import optlib

    if isinstance(optimizer, str):  # an optlib optimizer, or one of the experiments' own
        from .switching import AdamThenSGD

        own = {"Mixed": Mixed, "AdamThenSGD": AdamThenSGD}
        cls = own[optimizer] if optimizer in own else getattr(optlib, optimizer, None)
    else:
        cls = optimizer
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ValueError(f"Invalid optimizer: {optimizer!r} is not an optimizer class of optlib")
    return cls.__name__, cls


def evenly_spaced(n: int, k: int | None) -> Tensor:
    """``k`` evenly spaced indices of ``range(n)`` (all of them when ``k`` is None or >= n)."""
    if k is None or k >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, k).round().long()


def race(
    name: str,
    optimizer: str | type,
    runs: Sequence[Sequence[float]],
    *,
    steps: int,
    batch_size: int,
    eval_every: int,
    options: dict | None = None,
    workload_options: dict | None = None,
    schedule: str = "cosine",
    warmup: int = 0,
    eval_examples: int | None = None,
    group_keys: Sequence[str] = (),
    run_options: Sequence[dict] | None = None,
    train_examples: int | None = 0,
) -> dict[str, Any]:
    r"""Train one copy of workload ``name`` per run ``(lr, seed)`` with ``optimizer`` (an
    optlib name, ``"Mixed"``, ``"AdamThenSGD"`` or an optimizer class) built with ``options``,
    ``steps`` steps of ``batch_size`` examples, ``schedule`` (``"cosine"`` to 0 at ``steps`` or
    ``"constant"``) after a linear ``warmup``.

    Every ``eval_every`` steps (and at step 0 and at the end) each copy is evaluated on
    ``eval_examples`` evenly spaced held-out examples (all of them if ``None``). Returns plain
    JSON data: ``runs``; ``curve_steps``; ``loss`` and ``accuracy`` (``[i][k]``: after
    ``curve_steps[i]`` steps, run ``k``); ``final_loss`` and ``final_accuracy`` (the last
    evaluation); ``diverged``; ``seconds`` (the wall time of the whole race); and for each
    name in ``group_keys``, the value that entry of the run's param group holds at the end
    (e.g. ``switched_at`` of :class:`~optlib.experiments.switching.AdamThenSGD`; None for a
    run whose group left the optimizer when it diverged). A diverged run has NaN from the
    evaluation after it diverged on. ``run_options`` (aligned with ``runs``) adds entries to
    each run's own param group, e.g. the switching rule of each arm of a comparison, or with
    :class:`Mixed` each run's optimizer. ``train_examples`` (0: none; None: all) evenly spaced
    training examples are evaluated at the same steps: ``train_loss`` and ``train_accuracy``.
    """
    start = time.perf_counter()
    if not runs:
        raise ValueError("race needs at least one run")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"Invalid steps: {steps!r}; need an integer >= 1")
    if not (isinstance(eval_every, int) and eval_every >= 1):
        raise ValueError(f"Invalid eval_every: {eval_every!r}; need an integer >= 1")
    label, cls = _build(optimizer)
    work = workload(name, **(workload_options or {}))
    runs = [(float(lr), int(seed)) for lr, seed in runs]
    if run_options is not None and len(run_options) != len(runs):
        raise ValueError(f"run_options has {len(run_options)} entries for {len(runs)} runs")
    extra_of = [dict(o) for o in run_options] if run_options is not None else [{}] * len(runs)
    tag = [repr(sorted(o.items())) for o in extra_of]
    order = sorted(range(len(runs)), key=lambda i: (runs[i][0], tag[i], runs[i][1]))
    ordered = [runs[i] for i in order]
    stacked = StackedModels([work.model(seed) for _, seed in ordered],
                            vectorize=(workload_options or {}).get("arch") != "gru")  # fmt: skip
    groups, copies, k = [], [], 0
    while k < len(ordered):
        stop = k + 1
        shareable = label in ELEMENTWISE or (cls is Mixed
                                             and Mixed.elementwise_group(extra_of[order[k]]))
        if shareable:  # one view over every copy with this lr and these options
            while (stop < len(ordered) and ordered[stop][0] == ordered[k][0]
                   and tag[order[stop]] == tag[order[k]]):  # fmt: skip
                stop += 1
        groups.append({"params": stacked.views(k, stop if stop > k + 1 else None),
                       "lr": ordered[k][0], **extra_of[order[k]]})  # fmt: skip
        copies.append(stop - k)
        k = stop
    kwargs = dict(options or {})
    if "foreach" in inspect.signature(cls).parameters:
        kwargs.setdefault("foreach", True)
    opt = cls(groups, **kwargs)
    owners = list(zip(opt.param_groups, copies))  # each group and how many copies it holds
    schedule_free = hasattr(opt, "train") and hasattr(opt, "eval")
    if schedule_free:
        opt.train()
    data = work.data
    pick = evenly_spaced(len(data.X_test), eval_examples)
    switch = opt if schedule_free else None
    curve = HeldOut(stacked, data.X_test[pick], data.y_test[pick], every=eval_every,
                    optimizer=switch)  # fmt: skip
    curves = [curve]
    if train_examples != 0:
        pick_train = evenly_spaced(len(data.X_train), train_examples)
        curves.append(HeldOut(stacked, data.X_train[pick_train], data.y_train[pick_train],
                              every=eval_every, optimizer=switch))  # fmt: skip

    def callback(t: int, s: StackedModels) -> None:
        for c in curves:
            c(t, s)

    history = train_stacked(
        stacked, opt, data.X_train, data.y_train, work.loss_fn, steps=steps,
        batch_size=batch_size, seeds=[s for _, s in ordered], schedule=schedule, warmup=warmup,
        callback=callback,
    )  # fmt: skip
    for c in curves:
        if c.steps[-1] != steps:
            c.record(steps, stacked)
    if schedule_free:
        opt.eval()  # leave the models at x, the point that was evaluated
    back = np.argsort(order)  # results in the order of ``runs``
    alive = np.isfinite(history)  # (steps + 1, K): NaN from the divergence on
    diverged = ~alive[-1]

    def column(values: np.ndarray, t: int) -> list[float]:
        ok = alive[min(t, len(alive) - 1)]
        return [float(v) for v in np.where(ok, values, np.nan)[back]]

    live = {id(g) for g in opt.param_groups}
    extra = {}
    for key in group_keys:
        values = [g.get(key) if id(g) in live else None for g, n in owners for _ in range(n)]
        extra[key] = [values[i] for i in back]
    loss = [column(v, t) for v, t in zip(curve.loss, curve.steps)]
    accuracy = [column(v, t) for v, t in zip(curve.accuracy, curve.steps)]
    if len(curves) > 1:
        extra["train_loss"] = [column(v, t) for v, t in zip(curves[1].loss, curves[1].steps)]
        extra["train_accuracy"] = [column(v, t) for v, t in zip(curves[1].accuracy,
                                                                  curves[1].steps)]  # fmt: skip
    return {
        "runs": [list(r) for r in runs],
        "curve_steps": list(curve.steps),
        "loss": loss,
        "accuracy": accuracy,
        "final_loss": loss[-1],
        "final_accuracy": accuracy[-1],
        "diverged": [bool(d) for d in diverged[back]],
        "seconds": time.perf_counter() - start,
        **extra,
    }
