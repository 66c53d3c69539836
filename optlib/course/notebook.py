r"""The first lines of every chapter and exercise notebook: a set-up that works wherever a learner
runs it, or says the one command that makes it work.

Every notebook's first code cell starts with :func:`header`::

    # Course set-up: the same first lines in every notebook (see the preface).
    INSTALL = '%pip install "optlib-course[notebooks] @ git+https://github.com/owner/repo"'
    try:
        import optlib.course.notebook as course
    except ModuleNotFoundError:
        ...  # on Colab: run INSTALL; elsewhere: print INSTALL and stop
    course.setup(INSTALL)

* In a Python without the course package it prints ``INSTALL`` (on Colab it runs it).
* :func:`setup` checks the packages the notebooks use beyond the library (scikit-learn's bundled
  data sets, otter-grader for ``grader.check``, ipywidgets for live explorers) and, if one is
  missing, prints the same command and stops; ipywidgets is optional (the explorers then show
  precomputed runs).

``INSTALL`` depends on where the notebook lives: the repository's notebooks name the repository
(``repository.url`` in ``_config.yml``) or, when none is set, the checkout (``-e ..``); the book's
downloadable notebooks name the wheel downloaded beside them (:func:`install_command`).

``python -m optlib.course.notebook rewrite [NOTEBOOK ...]`` rewrites the first code cell of every
chapter and exercise notebook to this form (keeping the cell's own lines after the header);
``python -m optlib.course.notebook check`` lists notebooks that are not in this form.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path

__all__ = [
    "HEADER_FIRST_LINE",
    "HEADER_END",
    "DISTRIBUTION",
    "header",
    "install_command",
    "set_install_command",
    "setup",
    "wheel_name",
    "course_version",
    "has_header",
]

DISTRIBUTION = "optlib-course"
HEADER_FIRST_LINE = "# Course set-up: the same first lines in every notebook (see the preface)."
_INSTALL = re.compile(r"^INSTALL = .*$", re.M)
HEADER_END = "course.setup(INSTALL)"
#: the first cell's tag: folded on the book's pages, as it is set-up, not content
HIDE_TAG = "hide-input"

#: import name -> why the notebooks need it (beyond torch, numpy, matplotlib and PyYAML)
NEEDED = {
    "sklearn": "scikit-learn's bundled data sets",
    "otter": "otter-grader, for grader.check",
}
OPTIONAL = {"ipywidgets": "live explorers (without it they show precomputed runs)"}


def _distribution() -> tuple[str, str]:
    """(name, version) of the installed course package (the name it had before its rename,
    ``optlib``, is accepted too); ``(DISTRIBUTION, "0+unknown")`` outside an install."""
    from importlib import metadata

    for dist in (DISTRIBUTION, "optlib"):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return DISTRIBUTION, "0+unknown"


def course_version() -> str:
    """The installed course package's version."""
    return _distribution()[1]


def wheel_name(version: str | None = None) -> str:
    """The course wheel's file name, ``optlib_course-<version>-py3-none-any.whl``."""
    name, installed = _distribution()
    return f"{name.replace('-', '_')}-{version or installed}-py3-none-any.whl"


def install_command(repository_url: str = "", *, wheel: bool = False) -> str:
    """The one command that installs the course package with what the notebooks use.

    ``repository_url`` set: from the repository (works anywhere, Colab included). Else, for a
    notebook downloaded from the book (``wheel=True``): the wheel downloaded beside it. Else, for
    a notebook in a checkout (``chapters/`` or ``exercises/``): the checkout, editable.
    """
    url = repository_url.strip().rstrip("/")
    if url:
        return f'%pip install "{DISTRIBUTION}[notebooks] @ git+{url}"'
    if wheel:
        return f'%pip install "./{wheel_name()}[notebooks]"'
    return '%pip install -e "..[notebooks]"'


def header(command: str) -> str:
    """The standard first lines of a notebook's first code cell, installing with ``command``."""
    return f'''{HEADER_FIRST_LINE}
INSTALL = {command!r}
try:
    import optlib.course.notebook as course
except ModuleNotFoundError as missing:
    import sys

    if "google.colab" not in sys.modules:
        print(f"Missing {{missing.name}}: run in a cell, then restart the kernel:", INSTALL)
        raise
    get_ipython().run_line_magic("pip", INSTALL.removeprefix("%pip "))  # noqa: F821
    import optlib.course.notebook as course
{HEADER_END}
'''


def has_header(source: str) -> bool:
    return source.startswith(HEADER_FIRST_LINE) and HEADER_END in source


def set_install_command(source: str, command: str) -> str:
    """``source`` (a first cell) with the standard header installing with ``command``: its
    ``INSTALL`` line replaced, or the header put in front of the cell's own lines."""
    if has_header(source):
        return _INSTALL.sub(lambda _: f"INSTALL = {command!r}", source, count=1)
    return header(command) + "\n" + source


def setup(install: str) -> None:
    """Check what the notebooks import beyond the library; if something is missing, print
    ``install`` (the command that brings all of it) and stop."""
    missing = [f"{name} ({why})" for name, why in NEEDED.items() if not _importable(name)]
    if missing:
        print(
            "Missing: " + "; ".join(missing) + ". Run in a cell, then restart the kernel:",
            install,
        )
        raise ModuleNotFoundError(f"missing {', '.join(missing)}: run {install}")
    if not _importable("ipywidgets"):
        print(f"(No ipywidgets: the explorers show precomputed runs. For live ones: {install})")


def _importable(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# --- the rewrite script ------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def course_notebooks(root: Path = ROOT) -> list[Path]:
    """Every chapter and exercise notebook (the self-quiz included)."""
    return sorted((root / "chapters").glob("*.ipynb")) + sorted(
        (root / "exercises").glob("*.ipynb")
    )


def repository_url(root: Path = ROOT) -> str:
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text()) or {}
    return str((config.get("repository") or {}).get("url") or "")


def first_code_cell(nb: dict) -> dict | None:
    return next((c for c in nb.get("cells", []) if c.get("cell_type") == "code"), None)


def rewrite(path: Path, command: str) -> bool:
    """Put the standard header in ``path``'s first code cell; True if the file changed. The cell
    also imports ``glue`` from :mod:`optlib.course.book` (a no-op without myst-nb), not myst_nb,
    and is tagged ``hide-input``: the book shows it folded (readers of the site install nothing)."""
    text = path.read_text()
    nb = json.loads(text)
    cell = first_code_cell(nb)
    if cell is None:
        return False
    src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    new = set_install_command(src, command).replace(
        "from myst_nb import glue\n", "from optlib.course.book import glue\n"
    )
    tags = cell.setdefault("metadata", {}).setdefault("tags", [])
    if new == src and HIDE_TAG in tags:
        return False
    if HIDE_TAG not in tags:
        tags.append(HIDE_TAG)
    lines = new.splitlines(keepends=True)
    cell["source"] = lines
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optlib.course.notebook", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["rewrite", "check"])
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    command = install_command(repository_url())
    paths = args.notebooks or course_notebooks()
    if args.action == "rewrite":
        for p in paths:
            print(("rewrote " if rewrite(p, command) else "already standard ") + str(p))
        return 0
    bad = []
    for p in paths:
        cell = first_code_cell(json.loads(p.read_text()))
        src = "" if cell is None else "".join(cell["source"])
        if not src.startswith(header(command)):
            bad.append(p)
    for p in bad:
        print(f"not standard: {p}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
