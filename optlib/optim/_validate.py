"""Hyperparameter validation shared by every optlib optimizer.

Each check raises :class:`ValueError` naming the parameter, the value received and the allowed
range, at construction time, so a typo never becomes a silent NaN a thousand steps later.
NaN fails every check because every comparison with NaN is false.
"""

from __future__ import annotations

import math

from torch import Tensor


def _as_float(name: str, value: object) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"Invalid {name}: a Tensor {name} must have exactly one element")
        return float(value.item())
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"Invalid {name}: {value!r} is not a number") from None


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
    x = _as_float(name, value)
    ok_low = x > low if low_open else x >= low
    ok_high = x < high if high_open else x <= high
    if not (ok_low and ok_high):
        lb = "(" if low_open else "["
        rb = ")" if high_open else "]"
        hi = "inf" if math.isinf(high) else f"{high:g}"
        raise ValueError(f"Invalid {name}: {value!r}; allowed range is {lb}{low:g}, {hi}{rb}")
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
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid {name}: {value!r}; allowed values are integers >= 1")
    return value


def check_choice(name: str, value: object, choices: tuple[object, ...]) -> object:
    """One of a fixed set of values."""
    if value not in choices:
        raise ValueError(f"Invalid {name}: {value!r}; allowed values are {choices}")
    return value
