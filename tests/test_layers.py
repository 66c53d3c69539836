"""optlib's layers: a lower layer never imports an upper one.

The folders of optlib show its architecture (COURSE.md §2): the optimizers at the bottom, the
linear algebra and the workloads above them, then what the chapters measure, then plots and
benchmarks, and the course machinery on top::

    optim  <-  linalg, problems  <-  experiments  <-  plots, bench  <-  course

Every ``import`` statement in every module is read from the source (with ``ast``, so imports
inside functions count too) and resolved to the optlib module it names; the test fails on any
import from a layer above the importing module's own, and on any module outside the layers.
It also keeps the checks registry free of import circles: the core imports no chapter module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import optlib

PACKAGE = Path(optlib.__file__).resolve().parent

# layer of each top-level part of optlib; parts on the same layer may not import each other
LAYERS = {
    "__init__": 0,
    "_seed": 0,
    "optim": 0,
    "linalg": 1,
    "problems": 1,
    "experiments": 2,
    "plots": 3,
    "bench": 3,
    "course": 4,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imported_modules(path: Path, name: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every optlib import in the file (module ``name``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = name or _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "optlib"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "optlib":
                continue
            if module == "optlib":  # "from optlib import problems": the names are modules
                found += [(node.lineno, f"optlib.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, module))
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_belongs_to_a_layer():
    strays = [str(p.relative_to(PACKAGE)) for p in MODULES if _part(_module_name(p)) not in LAYERS]
    assert not strays, f"modules outside the layers of COURSE.md §2: {strays}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_an_upper_layer(path):
    own = _part(_module_name(path))
    bad = []
    for line, module in _imported_modules(path):
        other = _part(module)
        if other not in LAYERS:
            # optlib's own face ("import optlib", "from optlib import SGD") is the optimizers
            if module == "optlib" or hasattr(optlib, module.split(".")[1]):
                other = "optim"
            else:
                bad.append(f"line {line}: {module} is in no layer")
                continue
        if own == "__init__":  # the package face re-exports the optimizers and the seed only
            if other not in ("optim", "_seed"):
                bad.append(f"line {line}: the package face imports {module}")
        elif LAYERS[other] > LAYERS[own] or (LAYERS[other] == LAYERS[own] and other != own):
            bad.append(f"line {line}: {own} (layer {LAYERS[own]}) imports {module} "
                       f"(layer {LAYERS[other]})")
    assert not bad, f"{path.relative_to(PACKAGE)}: " + "; ".join(bad)


def test_the_checks_core_imports_no_chapter_module():
    core = PACKAGE / "course" / "checks" / "_core.py"
    imported = [m for _, m in _imported_modules(core) if m.startswith("optlib.course.checks")]
    assert not imported, f"the checks core imports {imported}: the registry would be a circle"
    for path in (PACKAGE / "course" / "checks").glob("*.py"):
        if path.name in ("__init__.py", "_core.py"):
            continue
        siblings = [
            m for _, m in _imported_modules(path)
            if m.startswith("optlib.course.checks") and m != "optlib.course.checks._core"
        ]
        assert not siblings, f"{path.name} imports {siblings}: chapter modules use the core only"


def test_the_layering_test_sees_a_violation(tmp_path):
    """The scanner is not vacuous: upper-layer imports in a lower module are found, at module
    level and inside a function, relative and absolute."""
    fake = tmp_path / "probe.py"
    fake.write_text("from ..course import cache\n\n\ndef f():\n    from optlib.plots import viz\n")
    found = [m for _, m in _imported_modules(fake, "optlib.optim.probe")]
    assert found == ["optlib.course", "optlib.plots"]
