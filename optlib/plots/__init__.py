"""Figures and explorers: :mod:`~optlib.plots.viz` (the palette, contour and trajectory plots,
loss curves, animations that play in the static site) and :mod:`~optlib.plots.widgets`
(``ipywidgets`` explorers, live in Jupyter, rendered statically in the book).

This layer sits above :mod:`optlib.experiments`; the course machinery imports it, nothing below
does.
"""
