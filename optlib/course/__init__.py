"""The course machinery, on top of the library: nothing in :mod:`optlib`'s lower layers imports
it, and an engineer who only uses the optimizers never needs it.

* :mod:`~optlib.course.build` and :mod:`~optlib.course.sphinxext`: the book build and its Sphinx
  extension (exercise and grill directives, student builds);
* :mod:`~optlib.course.book`: helpers for the chapters' notebooks (``glue``);
* :mod:`~optlib.course.cache`: an on-disk cache for long, deterministic experiments;
* :mod:`~optlib.course.grill`: the interview-grill question banks and the self-quiz;
* :mod:`~optlib.course.checks`: the exercise checks, one module per chapter topic;
* :mod:`~optlib.course.grading`: otter releases and the trusted classroom grader.
"""
