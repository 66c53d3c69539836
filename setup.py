"""Packaging hook (the metadata is in pyproject.toml): the interview-grill banks, edited in
``exercises/grill/*.yml`` (their one source), are copied into the built package as
``optlib/course/grill_banks/``, where :func:`optlib.course.grill.default_dir` finds them when the
course package is installed from a wheel (a downloaded notebook, Colab)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BANKS = Path(__file__).resolve().parent / "exercises" / "grill"


class BuildWithBanks(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "optlib" / "course" / "grill_banks"
        target.mkdir(parents=True, exist_ok=True)
        for bank in sorted(BANKS.glob("*.yml")):
            shutil.copy2(bank, target / bank.name)


setup(cmdclass={"build_py": BuildWithBanks})
