"""Seeded real workloads, small enough for a 2-core laptop.

Every problem is built from data that ships with an installed package (scikit-learn's bundled
digits, Python's own standard-library source) or is generated from a seed, so nothing is
downloaded at run time. One module per workload; the names below are the public API.
"""

from .charlm import CharCorpus, bits_per_char, char_lm, lm_loss, stdlib_corpus
from .digits import Dataset, digits, digits_mlp, mlp
from .digits_cnn import DigitsCNN, digit_images, digits_cnn
from .logistic import logistic_regression, synthetic_logistic
from .logreg import digits_logreg, l2_loss, minimize, softmax_regression
from .logreg_objective import LogisticObjective, digits_logistic_objective
from .moe import MoE, expert_load, moe_clusters, moe_toy, routing_change
from .reddi import OnlineRun, ReddiProblem, play_online
from .sparse import SparseFeatures, logistic_model, sparse_logistic
from .wilson import WilsonProblem, minimum_norm, wilson_features, wilson_problem
from .workloads import WORKLOADS, Workload, evaluate, workload

__all__ = ["Dataset", "digits", "digits_mlp", "mlp", "digits_logreg", "softmax_regression"]
__all__ += ["l2_loss", "minimize"]
__all__ += ["SparseFeatures", "logistic_model", "sparse_logistic"]
__all__ += ["logistic_regression", "synthetic_logistic", "OnlineRun", "ReddiProblem", "play_online"]
__all__ += ["LogisticObjective", "digits_logistic_objective"]
__all__ += ["CharCorpus", "bits_per_char", "char_lm", "lm_loss", "stdlib_corpus"]
__all__ += ["DigitsCNN", "digit_images", "digits_cnn"]
__all__ += ["MoE", "expert_load", "moe_clusters", "moe_toy", "routing_change"]
__all__ += ["WORKLOADS", "Workload", "evaluate", "workload"]
__all__ += ["WilsonProblem", "minimum_norm", "wilson_features", "wilson_problem"]
