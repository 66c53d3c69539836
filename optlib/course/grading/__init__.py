"""Exercises for the classroom: otter-grader for authoring and self-checks, a trusted grader.

Two layers, because otter's own grading runs its tests inside the student's kernel, after the
student's code, and so trusts the submission:

* **authoring and self-check** (:mod:`.assign`): ``otter assign`` turns each master notebook
  in ``exercises/`` into a student release and an autograder version; in the released
  notebook ``grader.check("q1")`` gives the learner instant, advisory feedback;
* **grading** (:mod:`.grade`): the trusted grader reads each submission as JSON, runs each
  question's code in a fresh unprivileged sandboxed process (:mod:`.sandbox`, :mod:`.child`)
  that returns only plain data, and scores it against reference answers computed in the parent
  with :mod:`optlib.course.checks`.

What the grade relies on, and what it does not:

* a question's points come only from comparing, in the parent, the data produced inside its
  sandbox for inputs drawn fresh for this grading run with reference answers that never leave
  the parent; stored outputs, otter's results and anything the submission prints are ignored;
* each question runs in its own process with its own time limit (an infinite loop, a crash or
  a killed sandbox costs that question only); no process it starts outlives it; as root it runs
  as ``nobody``, so it cannot modify submissions, the masters or the grader;
* code inside the sandbox can still compute right answers any way it likes, including by
  calling optlib's own reference code, which is public. Patching the checks is detected and
  scores nothing, and the CSV flags code that touches the checks' internals ("review: ...")
  for a human look; copying is a teaching matter, not something a sandbox can decide.

Command line (``python -m optlib.course.grading --help``)::

    python -m optlib.course.grading assign exercises/01_gradient_descent.ipynb
    python -m optlib.course.grading grade 01_gradient_descent submissions/ grades.csv
"""

from .assign import assign
from .grade import grade_folder
from .master import read_master
from .sandbox import Limits

__all__ = ["Limits", "assign", "grade_folder", "read_master"]
