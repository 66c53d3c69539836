"""What every optlib optimizer shares: a thin layer over :class:`torch.optim.Optimizer`.

The base class keeps ``param_groups``, ``state``, ``state_dict``/``load_state_dict``, hooks and
learning-rate-scheduler support exactly as torch has them, so an optlib optimizer is a drop-in
replacement. On top it offers three small helpers that keep each optimizer's ``step`` short:

* :meth:`Optimizer._params_and_grads` collects the parameters that have a gradient (negated when
  ``maximize=True``), refusing sparse gradients by name unless the optimizer supports them;
* :func:`scalar_step` reads the step counter, stored like torch's as a 0-d tensor so that state
  dicts are interchangeable with ``torch.optim``;
* :meth:`Optimizer._reject_unsupported` turns torch's GPU-only switches (``capturable``,
  ``differentiable``, ``fused``) into a clear error instead of a silent difference.

Every hyperparameter of every param group (those given to the constructor and those of a later
:meth:`~torch.optim.Optimizer.add_param_group`) must have the type of its default: a number
where the default is a number, a flag where it is a flag (:func:`check_group_types`).

**Non-finite gradients** are never hidden: the optimizers torch.optim also has give torch's NaN
and infinite parameters at the same steps, and every other one makes the affected parameters NaN
(or infinite) from that step on, so the loss shows it at once; none freezes a coordinate (see
:func:`._moments.sign_`). ``tests/test_torch_compat.py`` checks both for every optimizer.

**Under torch.compile.** ``torch.compile(opt.step)`` traces the update. Two helpers keep a
value that changes every step out of the compiled graph's constants (a constant that changes
recompiles the step every time, until dynamo gives up): :func:`step_value` and :func:`scalar`
return Python numbers in eager mode (the exact float arithmetic of the readable update) and the
0-d tensors themselves while dynamo traces, so bias corrections become tensor arithmetic inside
the graph.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch
from torch import Tensor

from ._validate import HyperparameterTypeError, check_flag, is_number


def new_step_counter() -> Tensor:
    """A fresh step counter: a 0-d float tensor, as torch.optim stores it."""
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.tensor(0.0, dtype=dtype)


def eager(reason: str) -> Callable[[Callable], Callable]:
    """Run the decorated function eagerly under ``torch.compile`` (dynamo does not trace it;
    ``reason`` says why, for the reader).

    The same as ``torch.compiler.disable(fn, reason=reason)``, except that ``torch._dynamo`` (a
    second's import on a laptop CPU, doubling ``import optlib``) is imported at the function's
    first call, not when optlib is imported: torch's own ``torch._disable_dynamo`` does exactly
    this for the same reason.
    """

    def decorate(fn: Callable) -> Callable:
        wrapped = torch._disable_dynamo(fn)
        wrapped.__eager_reason__ = reason  # type: ignore[attr-defined]
        return wrapped

    return decorate


def compiling() -> bool:
    """Whether torch.compile (dynamo) is tracing the code that calls this."""
    return torch.compiler.is_compiling()


def scalar_step(step: Tensor | int | float) -> int:
    """The step counter as a Python int, for control flow (every ``f`` steps...)."""
    return int(step.item()) if isinstance(step, Tensor) else int(step)


def step_value(step: Tensor) -> int | Tensor:
    """The step counter for arithmetic: a Python int in eager mode (bias corrections in exact
    Python floats); under torch.compile the 0-d tensor itself, a graph input."""
    return step if compiling() else int(step.item())


def host_scalar(x: Tensor) -> float | Tensor:
    """``x.item()`` in eager mode; under torch.compile the 0-d tensor itself (no graph break)."""
    return x if compiling() else x.item()


def scalar(x: Tensor | float) -> float | Tensor:
    """A hyperparameter (possibly a 1-element tensor, as schedulers may set) as a float; under
    torch.compile a tensor hyperparameter stays a 0-d tensor (no graph break)."""
    if isinstance(x, Tensor):
        return x.reshape(()) if compiling() else float(x.item())
    return float(x)


def _is_flag(value: object) -> bool:
    return isinstance(value, bool)


@functools.cache
def declared_defaults(cls: type) -> dict[str, object]:
    """The defaults in the signature of ``cls.__init__``: the types its hyperparameters have."""
    try:
        parameters = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def check_group_types(group: dict, defaults: dict, index: int, declared: dict) -> None:
    """Every hyperparameter of ``group`` (or, where the group does not set it, of ``defaults``,
    the constructor's values) has the type of its declared default (``declared``, from the
    signature; else the constructor's value): a number (or a 1-element tensor) where that is a
    number, a flag where it is a flag, a tuple of numbers where it is one (``betas``). ``None``
    is left to each optimizer's own checks."""
    for key in {**defaults, **group}:
        if key == "params":
            continue
        value = group.get(key, defaults.get(key))
        default = declared.get(key, defaults.get(key))
        if value is None or default is None:
            continue
        where = f"{key} (param group {index})"
        if _is_flag(default):
            check_flag(where, value)
        elif is_number(default) and not is_number(value):
            raise HyperparameterTypeError(
                f"Invalid {where}: {value!r} ({type(value).__name__}) is not a number"
            )
        elif isinstance(default, tuple) and isinstance(value, str):
            raise HyperparameterTypeError(
                f"Invalid {where}: {value!r} is a string; expected a tuple like {default!r}"
            )
        elif isinstance(default, tuple) and isinstance(value, tuple | list):
            for i, (d, v) in enumerate(zip(default, value)):
                if v is not None and is_number(d) and not is_number(v):
                    raise HyperparameterTypeError(
                        f"Invalid {key}[{i}] (param group {index}): {v!r} "
                        f"({type(v).__name__}) is not a number"
                    )


class Optimizer(torch.optim.Optimizer):
    """Base class of optlib optimizers (see the module docstring)."""

    #: Whether ``step`` accepts sparse gradients (``nn.Embedding(sparse=True)``): SGD, Adagrad.
    _sparse_grads_ok = False
    #: Why complex parameters are refused at construction (``None``: they are supported).
    _complex_params_refused: str | None = None

    def add_param_group(self, param_group: dict) -> None:
        """torch's ``add_param_group``, after checking the types of the group's hyperparameters
        (``check_group_types``); complex parameters are refused here, by name, where the
        optimizer does not support them."""
        check_group_types(
            param_group, self.defaults, len(self.param_groups), declared_defaults(type(self))
        )
        super().add_param_group(param_group)
        if self._complex_params_refused:
            for p in self.param_groups[-1]["params"]:
                if p.is_complex():
                    self.param_groups.pop()
                    raise ValueError(
                        f"Invalid params: {type(self).__name__} does not support complex "
                        f"parameters (got one of shape {tuple(p.shape)}): "
                        f"{self._complex_params_refused}"
                    )

    def _reject_unsupported(self, **switches: object) -> None:
        for name, value in switches.items():
            if value:
                raise ValueError(
                    f"Invalid {name}: {value!r}; optlib implements the readable single-tensor and "
                    f"foreach paths only, so {name} must be False/None"
                )

    def _params_and_grads(self, group: dict) -> tuple[list[Tensor], list[Tensor]]:
        """Parameters of ``group`` that received a gradient, and those gradients.

        With ``maximize=True`` the gradients are negated, so the update ascends.
        Sparse gradients are rejected, naming the optimizer, unless it supports them
        (``_sparse_grads_ok``), as torch.optim does.
        """
        params, grads = [], []
        maximize = group.get("maximize", False)
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse and not self._sparse_grads_ok:
                raise RuntimeError(
                    f"{type(self).__name__} does not support sparse gradients (a parameter of "
                    f"shape {tuple(p.shape)} has one); use optlib.SGD or optlib.Adagrad, or "
                    "torch.optim.SparseAdam, for nn.Embedding(sparse=True)"
                )
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
