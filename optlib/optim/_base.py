"""What every optlib optimizer shares: a thin layer over :class:`torch.optim.Optimizer`.

The base class keeps ``param_groups``, ``state``, ``state_dict``/``load_state_dict``, hooks and
learning-rate-scheduler support exactly as torch has them, so an optlib optimizer is a drop-in
replacement. On top it offers three small helpers that keep each optimizer's ``step`` short:

* :meth:`Optimizer._params_and_grads` collects the parameters that have a gradient (negated when
  ``maximize=True``);
* :func:`scalar_step` reads the step counter, stored like torch's as a 0-d tensor so that state
  dicts are interchangeable with ``torch.optim``;
* :meth:`Optimizer._reject_unsupported` turns torch's GPU-only switches (``capturable``,
  ``differentiable``, ``fused``) into a clear error instead of a silent difference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def new_step_counter() -> Tensor:
    """A fresh step counter: a 0-d float tensor, as torch.optim stores it."""
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.tensor(0.0, dtype=dtype)


def scalar_step(step: Tensor | int | float) -> int:
    """The step counter as a Python int (bias corrections use exact Python floats)."""
    return int(step.item()) if isinstance(step, Tensor) else int(step)


def scalar(x: Tensor | float) -> float:
    """A hyperparameter (possibly a 1-element tensor, as schedulers may set) as a float."""
    return float(x.item()) if isinstance(x, Tensor) else float(x)


class Optimizer(torch.optim.Optimizer):
    """Base class of optlib optimizers (see the module docstring)."""

    def _reject_unsupported(self, **switches: object) -> None:
        for name, value in switches.items():
            if value:
                raise ValueError(
                    f"Invalid {name}: {value!r}; optlib implements the readable single-tensor and "
                    f"foreach paths only, so {name} must be False/None"
                )

    @staticmethod
    def _params_and_grads(group: dict) -> tuple[list[Tensor], list[Tensor]]:
        """Parameters of ``group`` that received a gradient, and those gradients.

        With ``maximize=True`` the gradients are negated, so the update ascends.
        Sparse gradients are rejected: every optlib update rule is written for dense tensors.
        """
        params, grads = [], []
        maximize = group.get("maximize", False)
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(p).__name__} with a sparse gradient is not supported")
            params.append(p)
            grads.append(-p.grad if maximize else p.grad)
        return params, grads

    @staticmethod
    def _evaluate(closure: Callable[[], Tensor] | None) -> Tensor | None:
        """Run ``closure`` with gradients enabled (``step`` itself runs under no_grad)."""
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()
