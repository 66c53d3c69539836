r"""Exercise checks: test a learner's code differentially against optlib and ``torch.optim``.

Every check lives in the module of its chapter's topic and registers itself in ``CHECKS``
(see :mod:`~optlib.course.checks._core` for the four parts of a check and the shared helpers):

* :mod:`~optlib.course.checks.gradient_descent` (chapter 1),
* :mod:`~optlib.course.checks.sgd` (chapter 2),
* :mod:`~optlib.course.checks.momentum` (chapter 3),
* :mod:`~optlib.course.checks.adagrad` (chapter 4),
* :mod:`~optlib.course.checks.adam` (chapter 5),
* :mod:`~optlib.course.checks.weight_decay` (chapter 6),
* :mod:`~optlib.course.checks.preconditioners` (chapter 7),
* :mod:`~optlib.course.checks.sign_methods` (chapter 8),
* :mod:`~optlib.course.checks.curvature` (chapter 9),
* :mod:`~optlib.course.checks.matrix_preconditioners` (chapter 10),
* :mod:`~optlib.course.checks.large_batches` (chapter 11),
* :mod:`~optlib.course.checks.choosing` (chapter 12).

Exercises call them as ``checks.<name>(answer)``: ``from optlib.course import checks``.
"""

from . import delegation  # noqa: F401  (what each check's answer must not delegate to)
from ._core import CHECKS, DELEGATION, Check, run_check
from .adagrad import *  # noqa: F403
from .adagrad import __all__ as _adagrad
from .adam import *  # noqa: F403
from .adam import __all__ as _adam
from .choosing import *  # noqa: F403
from .choosing import __all__ as _choosing
from .curvature import *  # noqa: F403
from .curvature import __all__ as _curvature
from .gradient_descent import *  # noqa: F403
from .gradient_descent import __all__ as _gradient_descent
from .large_batches import *  # noqa: F403
from .large_batches import __all__ as _large_batches
from .matrix_preconditioners import *  # noqa: F403
from .matrix_preconditioners import __all__ as _matrix_preconditioners
from .momentum import *  # noqa: F403
from .momentum import __all__ as _momentum
from .preconditioners import *  # noqa: F403
from .preconditioners import __all__ as _preconditioners
from .sgd import *  # noqa: F403
from .sgd import __all__ as _sgd
from .sign_methods import *  # noqa: F403
from .sign_methods import __all__ as _sign_methods
from .weight_decay import *  # noqa: F403
from .weight_decay import __all__ as _weight_decay

__all__ = ["CHECKS", "DELEGATION", "Check", "run_check"]
for _names in (
    _gradient_descent, _sgd, _momentum, _adagrad, _adam, _weight_decay, _preconditioners,
    _sign_methods, _curvature, _matrix_preconditioners, _large_batches, _choosing,
):
    __all__ += _names
