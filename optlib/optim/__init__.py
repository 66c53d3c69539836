"""optlib's optimizers. Each module holds one method and the readable update it is built on."""

# --- torch.optim family (foundation) ---
from .adafactor import Adafactor
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .lbfgs import LBFGS
from .nadam import NAdam
from .radam import RAdam
from .rmsprop import RMSprop
from .sgd import SGD

# --- Muon, K-FAC ---
# isort: split
from .kfac import KFAC
from .muon import Muon, MuonWithAuxAdamW
from .muon import muon_param_groups as muon_param_groups

# --- sign methods, curvature, large batch, schedule-free ---
# isort: split
from .lamb import LAMB
from .lars import LARS
from .lion import Lion
from .schedulefree import AdamWScheduleFree
from .sophia import SophiaG, SophiaH

# --- matrix preconditioners (Shampoo, SOAP) ---
# isort: split
from .shampoo import Shampoo
from .soap import SOAP

__all__ = [
    "SGD",
    "Adafactor",
    "LBFGS",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "NAdam",
    "RAdam",
    # --- Muon, K-FAC ---
    "Muon",
    "MuonWithAuxAdamW",
    "KFAC",
    # --- sign methods, curvature, large batch, schedule-free ---
    "Lion",
    "SophiaG",
    "SophiaH",
    "LARS",
    "LAMB",
    "AdamWScheduleFree",
    # --- matrix preconditioners (Shampoo, SOAP) ---
    "Shampoo",
    "SOAP",
]
