"""Helpers for the book's notebooks (not needed to use the optimizers).

:func:`glue` is ``myst_nb.glue(name, value, display=False)`` for numbers computed in a chapter.
myst-nb formats a glued number (``{glue:text}`name:.3f```) from its ``text/plain`` repr, which
for NumPy 2 scalars reads ``np.float64(0.57)`` and cannot be formatted: the build then fails.
This helper turns NumPy and 0-d torch scalars into plain Python numbers first.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch


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


def glue(name: str, value: Any, display: bool = False) -> None:
    """Glue ``value`` (converted by :func:`plain`) under ``name`` for use in the chapter's prose."""
    from myst_nb import glue as _glue

    _glue(name, plain(value), display=display)
