r"""What the chapters measure, built on the optimizers and the problems.

One module per kind of experiment:

* :mod:`~optlib.experiments.train`: a small seeded training loop that records a history;
* :mod:`~optlib.experiments.curves`: loss curves measured in examples seen (chapter 2);
* :mod:`~optlib.experiments.line_search`: a backtracking (Armijo) step on a landscape (chapter 1);
* :mod:`~optlib.experiments.stochastic`: mini-batch gradients and their variance (chapter 2);
* :mod:`~optlib.experiments.rates`: measured contraction rates and momentum's rate theory
  (chapters 1, 3, 7);
* :mod:`~optlib.experiments.momentum`: reference momentum iterations (chapter 3);
* :mod:`~optlib.experiments.adaptive`: AdaGrad-Norm, a 1/sqrt(t) schedule and effective learning
  rates (chapter 4);
* :mod:`~optlib.experiments.weight_decay`: decoupled decay and its effective rate (chapter 6);
* :mod:`~optlib.experiments.lr_wd_grid`: learning-rate × weight-decay grids of many digits
  MLPs trained at once (chapter 6);
* :mod:`~optlib.experiments.stacked`: many copies of one model trained at once, one optimizer
  per copy (chapters 8-12);
* :mod:`~optlib.experiments.memory_light`: Lion's update size and Adafactor's factored second
  moment measured on real gradients (chapter 8);
* :mod:`~optlib.experiments.routing`: how jumpy a mixture-of-experts router is (chapters 8, 12);
* :mod:`~optlib.experiments.preconditioning`: the digits MLP on badly scaled features, in
  their own basis and in a rotated one, for diagonal preconditioning on a network (chapter 7);
* :mod:`~optlib.experiments.matrix_preconditioners`: gradients of one layer along a run, the
  staleness of Shampoo's roots, SOAP's equivalence with Adafactor in Shampoo's eigenbasis, Muon
  on the hidden matrices of stacked runs (chapter 10);
* :mod:`~optlib.experiments.sophia`: SophiaG (with its Gauss-Newton-Bartlett refresh) against
  AdamW on the character model, and the fraction of clipped coordinates (chapter 9);
* :mod:`~optlib.experiments.noise_scale`: the gradient noise scale and the critical batch size
  (chapter 11);
* :mod:`~optlib.experiments.large_batches`: steps to a target against batch size, scaling rules,
  trust ratios (chapter 11);
* :mod:`~optlib.experiments.data_parallel`: data parallelism on torch.distributed (gloo) ranks
  on one machine: all-reduce, DDP, ZeRO-1, accumulation (chapter 11);
* :mod:`~optlib.experiments.race`: many runs of one optimizer on a workload of the suite, with
  held-out curves (chapter 12's benchmark and experiments);
* :mod:`~optlib.experiments.switching`: Adam, then SGD (SWATS) (chapter 12);
* :mod:`~optlib.experiments.evolution`: the evolution-strategies gradient estimate (chapter 12).

This layer imports :mod:`optlib.optim`, :mod:`optlib.linalg` and :mod:`optlib.problems`, never
the plots, the benchmarks or the course machinery above it.
"""
