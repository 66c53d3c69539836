r"""What each check's answer must not delegate to (see "Delegation" in
:mod:`~optlib.course.checks._core`).

One line per check: the method the learner writes, then the dotted names of torch's and optlib's
own implementations of it. A class stands for its own code and every subclass, a module for
everything defined in it. "Predict without running" questions forbid running the method. A
check that nothing in torch or optlib answers declares an empty list, with the reason. A new
check (chapters 8 and later) adds its line here, in chapter order, or declares it in its own
module next to ``_register`` (that declaration, imported later, wins).
"""

from __future__ import annotations

from ._core import no_delegation

__all__: list[str] = []

# Implementations the lines below share.
SGD = ("torch.optim.SGD", "torch.optim.sgd", "optlib.SGD", "optlib.optim.sgd")
ADAM = ("torch.optim.Adam", "torch.optim.adam", "optlib.Adam", "optlib.optim.adam")
ADAMW = ("torch.optim.AdamW", "torch.optim.adamw", "optlib.AdamW")
ADAGRAD = ("torch.optim.Adagrad", "torch.optim.adagrad", "optlib.Adagrad", "optlib.optim.adagrad")
RMSPROP = ("torch.optim.RMSprop", "torch.optim.rmsprop", "optlib.RMSprop", "optlib.optim.rmsprop")
UPDATE_PIECES = ("optlib.optim._moments",)  # optlib's shared moment and decay updates
RUNNERS = (  # what runs gradient descent or heavy ball for you
    "optlib.linalg.richardson",
    "optlib.linalg.heavy_ball",
    "optlib.experiments.momentum",
    "optlib.experiments.train.run",
    "optlib.linalg.iterations_to_tolerance",
)

# --- chapter 1: gradient descent
no_delegation("gd_step", "gradient-descent step", *SGD)
no_delegation(
    "largest_stable_lr", "stability limit", "optlib.experiments.rates.stable_lr_limit", *SGD
)
no_delegation("predict_iterations", "gradient-descent run (predict, do not run)", *SGD, *RUNNERS)

# --- chapter 2: stochastic gradient descent
no_delegation(
    "minibatch_gradient",
    "mini-batch sampling",
    "optlib.experiments.stochastic.sample_minibatch_gradients",
    "optlib.experiments.stochastic.measured_minibatch_variance",
    "optlib.experiments.stochastic.batch_indices",
    "optlib.experiments.stochastic.epoch_batches",
)
no_delegation(
    "predict_minibatch_variance",
    "mini-batch variance (predict, do not measure)",
    "optlib.experiments.stochastic.minibatch_variance",
    "optlib.experiments.stochastic.measured_minibatch_variance",
    "optlib.experiments.stochastic.sample_minibatch_gradients",
)
no_delegation(
    "warmup_cosine_lr",
    "learning-rate schedule (a closed formula, not the schedulers)",
    "torch.optim.lr_scheduler.LinearLR",
    "torch.optim.lr_scheduler.CosineAnnealingLR",
    "torch.optim.lr_scheduler.SequentialLR",
    "torch.optim.lr_scheduler.ChainedScheduler",
    "torch.optim.lr_scheduler.OneCycleLR",
    "torch.optim.lr_scheduler.CosineAnnealingWarmRestarts",
)

# --- chapter 3: momentum and Nesterov
no_delegation("momentum_sgd_class", "SGD with momentum", *SGD)
no_delegation(
    "predict_momentum_iterations", "heavy-ball run (predict, do not run)", *SGD, *RUNNERS
)

# --- chapter 4: AdaGrad and RMSProp
no_delegation("adagrad_class", "AdaGrad", *ADAGRAD, *UPDATE_PIECES)
no_delegation(  # eigenvalues are the learner's tool; no optlib function scales and solves it
    "preconditioned_kappa", "preconditioned condition number"
)
no_delegation("adagrad_effective_lr", "AdaGrad run (predict, do not run)", *ADAGRAD)

# --- chapter 5: Adam and bias correction
no_delegation("adam_class", "Adam", *ADAM, *ADAMW, *UPDATE_PIECES)
no_delegation("uncorrected_step_ratio", "Adam run (predict, do not run)", *ADAM, *ADAMW)
no_delegation(
    "reddi_drift",
    "Adam run on Reddi et al.'s problem (predict, do not run)",
    *ADAM,
    *ADAMW,
    *UPDATE_PIECES,
    "optlib.problems.reddi",
)
no_delegation(
    "radam_threshold",
    "RAdam run (predict, do not run)",
    "torch.optim.RAdam",
    "torch.optim.radam",
    "optlib.RAdam",
    "optlib.optim.radam",
)

# --- chapter 6: AdamW versus L2 (q3 asks to subclass Adam: Adam itself is allowed there)
WEIGHT_DECAY = ("optlib.experiments.weight_decay", "optlib.optim._moments.decay_weights_")
no_delegation(
    "sgd_decoupled_step", "decoupled SGD step", *SGD, *WEIGHT_DECAY, "optlib.optim._moments.add_l2"
)
no_delegation(
    "predict_decay_rate",
    "Adam and AdamW runs (predict, do not run)",
    *ADAM,
    *ADAMW,
    "optlib.experiments.weight_decay",
)
no_delegation("adamw_class", "decoupled weight decay", *ADAMW, *WEIGHT_DECAY)
no_delegation(
    "no_decay_groups", "no-decay parameter groups", "optlib.optim.param_groups"
)

# --- chapter 7: optimizers as preconditioners
no_delegation(
    "richardson_step", "Richardson step", "optlib.linalg.richardson", "optlib.linalg.heavy_ball",
    *SGD,
)  # fmt: skip
no_delegation(
    "richardson_plan",
    "Richardson plan (predict, do not run)",
    "optlib.linalg.richardson",
    "optlib.linalg.heavy_ball",
    "optlib.linalg.optimal_richardson_omega",
    "optlib.linalg.iterations_to_tolerance",
    *SGD,
)
no_delegation(
    "jacobi_preconditioner",
    "Jacobi preconditioner",
    "optlib.linalg.jacobi_preconditioner",
    "optlib.linalg.stationary.DiagonalPreconditioner",
)
