"""Suite-wide settings.

The tests run many tiny tensor operations; on a 2-core machine torch's intra-op thread pool
costs more than it saves there (measured: 20 Shampoo steps on the digits MLP took 0.33 s on one
thread and 19.5 s on two while the other core was busy). Results do not depend on it.
"""

import torch

torch.set_num_threads(1)
