"""optlib's optimizers. Each module holds one method and the readable update it is built on."""

# --- torch.optim family (foundation) ---
from .adafactor import Adafactor
from .lbfgs import LBFGS
from .sgd import SGD

# --- Muon, K-FAC ---
# isort: split
from .kfac import KFAC
from .muon import Muon, MuonWithAuxAdamW
from .muon import muon_param_groups as muon_param_groups

__all__ = [
    "SGD",
    "Adafactor",
    "LBFGS",
    # --- Muon, K-FAC ---
    "Muon",
    "MuonWithAuxAdamW",
    "KFAC",
]
