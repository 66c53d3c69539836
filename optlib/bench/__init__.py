"""Measurement tools: step times, optimizer-state memory, learning-rate sweeps.

Run ``python -m optlib.bench --help`` for the command-line entry points.
"""
