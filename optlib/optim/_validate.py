"""Hyperparameter validation shared by every optlib optimizer.

Each check raises :class:`ValueError` naming the parameter, the value received and the allowed
range, at construction time, so a typo never becomes a silent NaN a thousand steps later.
NaN fails every check because every comparison with NaN is false. A value of the wrong *type*
(a string such as ``lr="0.1"``, ``None``, a bool where a number is meant, a string where a flag
is meant) raises :class:`HyperparameterTypeError`, which is both a :class:`TypeError` and a
:class:`ValueError`: torch.optim would accept ``"0.1"`` and fail with a ``TypeError`` at the first
step, and ``nesterov="False"`` would silently switch Nesterov *on*.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor


class HyperparameterTypeError(TypeError, ValueError):
    """A hyperparameter of the wrong type; catch it as either ``TypeError`` or ``ValueError``."""


def is_number(value: object) -> bool:
    """A real number: a Python/NumPy int or float (not a bool), or a real 1-element tensor."""
    if isinstance(value, Tensor):
        return value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_float(name: str, value: object, allowed: str) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"Invalid {name}: a Tensor {name} must have exactly one element")
    if not is_number(value):
        raise HyperparameterTypeError(
            f"Invalid {name}: {value!r} ({type(value).__name__}) is not a number; "
            f"allowed range is {allowed}"
        )
    return float(value.item()) if isinstance(value, Tensor) else float(value)  # type: ignore[arg-type]


def check_interval(
    name: str,
    value: object,
    low: float,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = True,
) -> float:
    """Check ``low <= value < high`` (the brackets set by ``low_open``/``high_open``)."""
    lb = "(" if low_open else "["
    rb = ")" if high_open else "]"
    hi = "inf" if math.isinf(high) else f"{high:g}"
    allowed = f"{lb}{low:g}, {hi}{rb}"
    x = _as_float(name, value, allowed)
    ok_low = x > low if low_open else x >= low
    ok_high = x < high if high_open else x <= high
    if not (ok_low and ok_high):
        raise ValueError(f"Invalid {name}: {value!r}; allowed range is {allowed}")
    return x


def check_nonnegative(name: str, value: object) -> float:
    """``value`` in ``[0, inf)``: learning rates, weight decay, epsilon, momentum coefficients."""
    return check_interval(name, value, 0.0)


def check_positive(name: str, value: object) -> float:
    """``value`` in ``(0, inf)``."""
    return check_interval(name, value, 0.0, low_open=True)


def check_beta(name: str, value: object) -> float:
    """A decay rate in ``[0, 1)``."""
    return check_interval(name, value, 0.0, 1.0)


def check_betas(betas: object, names: tuple[str, ...] = ("beta1", "beta2")) -> tuple[float, ...]:
    """A tuple of decay rates, each in ``[0, 1)``; the message names which one is wrong."""
    try:
        values = tuple(betas)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"Invalid betas: {betas!r}; expected a tuple {names}") from None
    if len(values) != len(names):
        raise ValueError(f"Invalid betas: {betas!r}; expected {len(names)} values {names}")
    return tuple(check_beta(f"{n} (betas[{i}])", b) for i, (n, b) in enumerate(zip(names, values)))


def check_positive_int(name: str, value: object) -> int:
    """An integer ``>= 1``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise HyperparameterTypeError(
            f"Invalid {name}: {value!r} ({type(value).__name__}) is not an integer; "
            "allowed values are integers >= 1"
        )
    if value < 1:
        raise ValueError(f"Invalid {name}: {value!r}; allowed values are integers >= 1")
    return int(value)


def check_flag(name: str, value: object) -> bool:
    """A switch: ``True``/``False`` (or 0/1). A string is refused: ``"False"`` is truthy."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":  # Python or NumPy bool
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise HyperparameterTypeError(
        f"Invalid {name}: {value!r} ({type(value).__name__}); allowed values are True/False"
    )


def check_choice(name: str, value: object, choices: tuple[object, ...]) -> object:
    """One of a fixed set of values."""
    if value not in choices:
        raise ValueError(f"Invalid {name}: {value!r}; allowed values are {choices}")
    return value
