"""Reproducibility: one call seeds every random number generator a chapter touches, and one
environment variable moves every seed at once.

Every seeded helper in optlib (data splits and initial weights in :mod:`optlib.problems`, test
matrices and random probes in :mod:`optlib.linalg`, batch orders in :mod:`optlib.experiments`)
turns the ``seed`` it is given into a generator seed with ``derive_seed``. With the
environment variable ``OPTLIB_SEED`` unset (or ``0``), ``derive_seed(s) == s``; set to another
base, it maps every seed to a different one, so a whole chapter can be re-run under other random
draws (``OPTLIB_SEED=1 jupyter nbconvert --execute ...``) to check that its claims are about the
method, not about one draw.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["base_seed", "derive_seed", "seed_everything"]

_MODULUS = 2**31 - 1  # seeds stay valid for every generator (NumPy's legacy one needs < 2**32)
_STRIDE = 1_000_003  # a prime: distinct seeds stay distinct under one base


def base_seed() -> int:
    """The base from the environment variable ``OPTLIB_SEED`` (a non-negative integer; 0 if
    unset)."""
    raw = os.environ.get("OPTLIB_SEED", "").strip()
    if not raw:
        return 0
    try:
        base = int(raw)
    except ValueError:
        raise ValueError(
            f"Invalid OPTLIB_SEED: {raw!r}; allowed values are integers in [0, inf)"
        ) from None
    if base < 0:
        raise ValueError(f"Invalid OPTLIB_SEED: {base}; allowed values are integers in [0, inf)")
    return base


def derive_seed(seed: int) -> int:
    """The generator seed for a helper's ``seed``: ``seed`` itself under the default base 0,
    otherwise ``(seed + base * 1000003) mod (2**31 - 1)``."""
    seed = int(seed)
    base = base_seed()
    return seed if base == 0 else (seed + base * _STRIDE) % _MODULUS


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's, NumPy's and torch's generators with ``derive_seed(seed)``, and return a
    torch.Generator seeded the same way.

    Every chapter calls this first; ``OPTLIB_SEED`` (see ``derive_seed``) moves the whole
    chapter to other draws.
    """
    seed = derive_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return torch.Generator().manual_seed(seed)
