"""optlib: readable, tested deep-learning optimizers, drop-in replacements for torch.optim.

The package behind the course "Optimizers: from gradient descent to Shampoo".
"""

from ._seed import seed_everything
from .optim import *  # noqa: F403
from .optim import __all__ as _optimizers

__version__ = "0.1.0"
__all__ = ["seed_everything", *_optimizers]
