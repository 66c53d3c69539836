"""Reproducibility: one call seeds every random number generator a chapter touches."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's, NumPy's and torch's generators, and return a seeded torch.Generator.

    Figures and asserted numbers in the book are reproducible on any CPU because every
    notebook calls this first.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return torch.Generator().manual_seed(seed)
