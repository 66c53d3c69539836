"""Helpers for the book's notebooks (not needed to use the optimizers).

:func:`glue` is ``myst_nb.glue(name, value, display=False)`` for values computed in a chapter,
with two guards that keep the page honest:

* NumPy and 0-d torch scalars become plain Python numbers first (:func:`plain`). myst-nb formats a
  glued number (``{glue:text}`name:.3f```) from its ``text/plain`` repr, which for NumPy 2
  scalars reads ``np.float64(0.57)`` and cannot be formatted: the build would fail.
* A non-finite value (``inf``, ``nan``, also inside a list, tuple, dict, array or tensor, or a
  string that is itself such a number) raises :class:`NonFiniteGlueError` naming the glue key, so
  a page never states "needs inf epochs": the chapter cell fails, and with it the build. Say what
  happened in words instead ("more than 1000 epochs").

Outside the book toolchain (a learner's Jupyter without ``myst_nb``) gluing has no reader, so
:func:`glue` checks the value and does nothing else.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["NonFiniteGlueError", "check_finite", "glue", "plain"]


class NonFiniteGlueError(ValueError):
    """A glued value is (or holds) ``inf`` or ``nan``."""


def plain(value: Any) -> Any:
    """``value`` as a plain Python number if it is a NumPy or 0-d torch scalar; else unchanged."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def _non_finite(value: Any) -> bool:
    """Whether ``value`` is, or holds, a number that is not finite."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Complex):
        return not (math.isfinite(value.real) and math.isfinite(value.imag))
    if isinstance(value, str):
        try:
            return not math.isfinite(float(value))  # "inf", "-inf", "nan", "Infinity"
        except (ValueError, OverflowError):
            return False  # words, not a number
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex():
            return not bool(torch.isfinite(value).all())
        return False
    if isinstance(value, np.ndarray):
        if np.issubdtype(value.dtype, np.inexact):
            return not bool(np.isfinite(value).all())
        if value.dtype == object:
            return any(_non_finite(v) for v in value.ravel())
        return False
    if isinstance(value, np.generic):
        return _non_finite(value.item())
    if isinstance(value, Mapping):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_non_finite(v) for v in value)
    return False  # figures, HTML, anything else that is not a number


def check_finite(name: str, value: Any) -> None:
    """Raise :class:`NonFiniteGlueError`, naming the glue key ``name``, if ``value`` is or holds
    ``inf`` or ``nan``."""
    if _non_finite(value):
        raise NonFiniteGlueError(
            f"glue key {name!r}: the value {value!r} is not finite, and a page must not print "
            "'inf' or 'nan'; state what happened in words (e.g. 'more than 1000 epochs') and "
            "glue a finite number"
        )


def glue(name: str, value: Any, display: bool = False) -> None:
    """Glue ``value`` (converted by :func:`plain`) under ``name`` for use in the chapter's prose.

    Raises :class:`NonFiniteGlueError` (a ``ValueError``) if the value is or holds ``inf`` or
    ``nan``. Without ``myst_nb`` installed the value is checked and nothing else happens.
    """
    value = plain(value)
    check_finite(name, value)
    try:
        from myst_nb import glue as _glue
    except ImportError:  # a learner's Jupyter without the book toolchain: nobody reads glue
        return
    _glue(name, value, display=display)
