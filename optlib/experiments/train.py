r"""A small, seeded training loop that records what the chapters plot.

:func:`run` takes ``steps`` optimizer steps on either

* a :class:`~optlib.problems.landscapes.Landscape`: the parameter is one point
  :math:`\theta \in \mathbb{R}^2`, its gradient is the landscape's exact (or, for
  :class:`~optlib.problems.landscapes.Noisy`, noisy) ``grad``; or
* a :class:`Supervised` problem: a model, data and a loss, full batch or mini-batches drawn
  without replacement from a seeded permutation of the data each epoch,

with any :class:`torch.optim.Optimizer`, given ready-made or as a factory ``params -> optimizer``.
It returns a :class:`History`: :math:`f(\theta_t)` and :math:`\|\nabla f(\theta_t)\|` for
:math:`t = 0, \dots, T`, the step norms :math:`\|\theta_t - \theta_{t-1}\|`, the parameters
themselves for small problems, wall-clock time and examples seen. A run whose loss becomes
non-finite or grows by a factor ``divergence_factor`` stops early and is marked ``diverged``.

The rate at which a recorded sequence shrinks is measured by
:func:`optlib.experiments.rates.contraction_rate`.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from .._seed import derive_seed
from ..problems.landscapes import Landscape

__all__ = ["History", "Supervised", "run", "stepper"]

OptimizerLike = torch.optim.Optimizer | Callable[[list[Tensor]], torch.optim.Optimizer]


@dataclass
class Supervised:
    """A supervised problem: ``loss_fn(model(X[i]), y[i])`` averaged over a batch ``i``."""

    model: nn.Module
    X: Tensor
    y: Tensor
    loss_fn: Callable[[Tensor, Tensor], Tensor] = nn.functional.cross_entropy

    def __post_init__(self) -> None:
        if len(self.X) != len(self.y):
            raise ValueError(f"X and y disagree in length: {len(self.X)} != {len(self.y)}")

    @property
    def n(self) -> int:
        return len(self.X)


@dataclass
class History:
    r"""What :func:`run` recorded. Index ``t`` refers to :math:`\theta_t` (``t = 0`` is the start).

    Attributes:
        loss: :math:`f(\theta_t)`, ``steps + 1`` values (for mini-batches, the loss on the batch
            the step from :math:`\theta_t` used).
        grad_norm: :math:`\|\nabla f(\theta_t)\|`, aligned with ``loss``.
        step_norm: :math:`\|\theta_t - \theta_{t-1}\|` for ``t = 1..steps``.
        params: ``(steps + 1, d)`` array of :math:`\theta_t` when ``d`` is small, else ``None``.
        time: seconds elapsed when :math:`\theta_t` was reached (``time[0] == 0``).
        examples: training examples used to reach :math:`\theta_t`.
        diverged: the run stopped because the loss became non-finite or exploded.
    """

    label: str = ""
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    step_norm: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    examples: list[int] = field(default_factory=list)
    params: np.ndarray | None = None
    diverged: bool = False

    @property
    def steps(self) -> int:
        """Number of steps taken."""
        return len(self.step_norm)

    @property
    def final_loss(self) -> float:
        return self.loss[-1]

    def distances(self, to: Sequence[float] | Tensor | np.ndarray) -> np.ndarray:
        r""":math:`\|\theta_t - \theta^\star\|` for every recorded :math:`\theta_t`."""
        if self.params is None:
            raise ValueError("this history did not record parameters (the problem is too large)")
        target = np.asarray(to.detach() if isinstance(to, Tensor) else to, dtype=np.float64)
        return np.linalg.norm(self.params - target.reshape(1, -1), axis=1)

    def step_times(self) -> np.ndarray:
        """Seconds taken by each step (differences of ``time``)."""
        return np.diff(np.asarray(self.time))




class _Progress:
    """One self-overwriting stderr line, shown only once a run has lasted ``after`` seconds."""

    def __init__(self, label: str, total: int, enabled: bool | None, after: float = 3.0) -> None:
        static = os.environ.get("OPTLIB_STATIC", "") not in ("", "0")
        # The book build treats stderr output as a warning (an error under -W): stay quiet there.
        self.enabled = (not static) if enabled is None else enabled
        self.after = 0.0 if enabled else after
        self.label, self.total = label or "run", total
        self.last = -math.inf
        self.shown = False

    def update(self, t: int, elapsed: float, loss: float) -> None:
        if not self.enabled or elapsed < self.after or elapsed - self.last < 0.5:
            return
        self.last, self.shown = elapsed, True
        width = 24
        done = int(width * t / max(self.total, 1))
        bar = "#" * done + "." * (width - done)
        sys.stderr.write(
            f"\r{self.label}: [{bar}] {t}/{self.total} loss {loss:.4g} ({elapsed:.0f} s)"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _flat(params: list[Tensor]) -> Tensor:
    if len(params) == 1:
        return params[0].detach().reshape(-1).clone()
    return torch.cat([p.detach().reshape(-1) for p in params])


def _norm(tensors: list[Tensor]) -> float:
    if not tensors:
        return 0.0
    if len(tensors) == 1:
        return torch.linalg.vector_norm(tensors[0]).item()
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors))).item()


def run(
    optimizer: OptimizerLike,
    problem: Landscape | Supervised,
    steps: int,
    *,
    x0: Sequence[float] | Tensor | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    label: str = "",
    divergence_factor: float = 1e6,
    record_params_max: int = 64,
    progress: bool | None = None,
    scheduler: Callable[[torch.optim.Optimizer], object] | None = None,
) -> History:
    r"""Take ``steps`` steps of ``optimizer`` on ``problem`` and return the :class:`History`.

    Args:
        optimizer: an optimizer instance, or a factory ``params -> optimizer``. For a landscape
            with an instance, the optimizer's first parameter is the point :math:`\theta`.
        problem: a :class:`~optlib.problems.landscapes.Landscape` or a :class:`Supervised` problem.
        steps: number of optimizer steps :math:`T`.
        x0: starting point on a landscape (default: the landscape's ``start``; ignored when an
            optimizer instance brings its own point).
        batch_size: mini-batch size :math:`B` for a supervised problem (``None``: full batch).
        seed: seeds torch's global generator, the batch order and the landscape's noise.
        label: a name for plots and the progress line.
        divergence_factor: stop when :math:`f(\theta_t) > f(\theta_0) + \text{factor}\cdot
            \max(|f(\theta_0)|, 1)`, or when the loss is not finite.
        record_params_max: record :math:`\theta_t` when the problem has at most this many
            parameters.
        progress: ``None`` shows a progress line only once a run has lasted a few seconds
            (never when ``OPTLIB_STATIC`` is set); ``True``/``False`` force it on/off.
        scheduler: a factory ``optimizer -> scheduler`` (e.g. a ``torch.optim.lr_scheduler``),
            built once the optimizer exists; its ``step()`` is called after every optimizer step,
            so step :math:`t` (1-based) runs with the learning rate the scheduler set after
            :math:`t - 1` steps.
    """
    if steps < 0:
        raise ValueError(f"Invalid steps: {steps!r}; need steps >= 0")
    torch.manual_seed(derive_seed(seed))
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"Invalid batch_size: {batch_size!r}; need an integer >= 1 or None")
    if isinstance(problem, Landscape):
        if batch_size is not None:
            raise ValueError("a landscape has no data: batch_size must be None (use Noisy)")
        problem.reset()
        if isinstance(optimizer, torch.optim.Optimizer):
            theta = optimizer.param_groups[0]["params"][0]
            if theta.shape != (2,):
                raise ValueError(f"a landscape needs a 2-element parameter, got {theta.shape}")
        else:
            start = problem.start if x0 is None else x0
            theta = torch.as_tensor(start, dtype=torch.float64).detach().clone().requires_grad_()
            optimizer = optimizer([theta])
        params = [theta]
        batches = None
    elif isinstance(problem, Supervised):
        params = [p for p in problem.model.parameters() if p.requires_grad]
        if not isinstance(optimizer, torch.optim.Optimizer):
            optimizer = optimizer(params)
        batches = _batches(problem.n, batch_size, seed)
    else:
        raise TypeError(f"problem must be a Landscape or a Supervised problem, got {problem!r}")
    sched = scheduler(optimizer) if scheduler is not None else None

    n_params = sum(p.numel() for p in params)
    record = n_params <= record_params_max
    hist = History(label=label)
    trajectory: list[Tensor] = []
    state: dict = {}  # the current batch, and the loss and gradient norm first seen at theta_t

    def closure() -> Tensor:
        if batches is None:  # a landscape: its exact (or noisy) gradient, no autograd
            with torch.no_grad():
                loss = problem.f(theta)
                theta.grad = problem.grad(theta).to(theta.dtype)
        else:
            optimizer.zero_grad()
            idx = state["batch"]
            X, y = (problem.X, problem.y) if idx is None else (problem.X[idx], problem.y[idx])
            with torch.enable_grad():
                loss = problem.loss_fn(problem.model(X), y)
                loss.backward()
        if "loss" not in state:  # the first evaluation at theta_t is the one recorded
            state["loss"] = loss.item()
            grads = [p.grad for p in params if p.grad is not None]
            state["grad_norm"] = _norm(grads)
        return loss

    bar = _Progress(label, steps, progress)
    hist.time.append(0.0)
    hist.examples.append(0)
    prev = _flat(params)
    if record:
        trajectory.append(prev)
    loss0 = math.nan
    t0 = time.perf_counter()
    try:
        for t in range(steps + 1):
            state.clear()
            state["batch"] = None if batches is None else next(batches)
            if t < steps:
                optimizer.step(closure)
                if "loss" not in state:
                    raise RuntimeError(
                        f"{type(optimizer).__name__}.step(closure) ignored the closure"
                    )
                if sched is not None:
                    sched.step()
            else:
                closure()  # the loss at theta_T; no step
            loss = state["loss"]
            hist.loss.append(loss)
            hist.grad_norm.append(state["grad_norm"])
            if t == 0:
                loss0 = loss
            if not math.isfinite(loss) or loss > loss0 + divergence_factor * max(abs(loss0), 1.0):
                hist.diverged = True
                break
            if t == steps:
                break
            # theta_{t+1} has been reached: record it.
            elapsed = time.perf_counter() - t0
            now = _flat(params)
            hist.step_norm.append(torch.linalg.vector_norm(now - prev).item())
            hist.time.append(elapsed)
            hist.examples.append(hist.examples[-1] + _batch_len(problem, state["batch"]))
            if record:
                trajectory.append(now)
            prev = now
            bar.update(t + 1, elapsed, loss)
    finally:
        bar.close()
    if record:
        hist.params = torch.stack(trajectory).numpy()
    return hist


def stepper(
    optimizer: OptimizerLike, problem: Supervised, *, batch_size: int | None = None, seed: int = 0
) -> Callable[[], float]:
    r"""A function that takes one step of ``optimizer`` on the next batch of ``problem`` (the
    same batches as :func:`run`: ``None`` is the full batch) and returns that batch's loss.

    It does nothing else (no recording, no norms), so that timing it times a training step:
    forward, backward and update. ``optimizer`` is an instance or a factory ``params ->
    optimizer``, as for :func:`run`.
    """
    if not isinstance(problem, Supervised):
        raise TypeError(f"problem must be a Supervised problem, got {problem!r}")
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"Invalid batch_size: {batch_size!r}; need an integer >= 1 or None")
    params = [p for p in problem.model.parameters() if p.requires_grad]
    opt = optimizer if isinstance(optimizer, torch.optim.Optimizer) else optimizer(params)
    batches = _batches(problem.n, batch_size, seed)

    def step() -> float:
        idx = next(batches)
        X, y = (problem.X, problem.y) if idx is None else (problem.X[idx], problem.y[idx])
        opt.zero_grad()
        loss = problem.loss_fn(problem.model(X), y)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def _batch_len(problem: Landscape | Supervised, batch: Tensor | None) -> int:
    if isinstance(problem, Landscape):
        return 0
    return problem.n if batch is None else len(batch)


def _batches(n: int, batch_size: int | None, seed: int):
    """Index tensors of successive mini-batches (``None`` = the full batch), forever."""
    if batch_size is None or batch_size >= n:
        while True:
            yield None
    g = torch.Generator().manual_seed(derive_seed(seed))
    per_epoch = n // batch_size
    while True:
        perm = torch.randperm(n, generator=g)
        for k in range(per_epoch):
            yield perm[k * batch_size : (k + 1) * batch_size]
