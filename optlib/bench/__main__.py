"""``python -m optlib.bench <command>``: the benchmarks the README and chapters report."""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, help). Each module exposes ``add_arguments(parser)`` and ``main(args)``.
COMMANDS = {
    "steps": ("optlib.bench.steps", "step time: torch/optlib, foreach/fused, vs the floor"),
    "memory": ("optlib.bench.memory", "optimizer-state bytes per parameter, measured vs expected"),
    "gpu": ("optlib.bench.gpu", "one optimizer step on a CUDA device, every path vs the floor"),
    "suite": ("optlib.bench.suite", "the optimizer benchmark of chapter 12 (tuned, to target)"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optlib.bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_, description=mod.__doc__)
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    args = parser.parse_args(argv)
    return int(args._main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
