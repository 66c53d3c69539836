"""optlib's optimizers. Each module holds one method and the readable update it is built on."""

# --- torch.optim family (foundation) ---
from .adafactor import Adafactor
from .sgd import SGD

__all__ = [
    "SGD",
    "Adafactor",
]
