"""The distribution as a library user gets it: a wheel of this checkout, installed with no extras
into a fresh virtual environment, imports every library module and runs the documented
``python -m optlib.bench`` commands there.

The environment sees only what the library's core requirements pull in (torch, numpy, matplotlib,
PyYAML and their own dependencies): a ``.pth`` file points at a folder of links to those packages
as this environment has them, so torch 2.13 is neither downloaded nor upgraded, and scikit-learn,
Jupyter, Sphinx and the test tools are absent, as in ``pip install optlib-course`` beside a user's
own torch. pip installs the wheel with ``--no-index``: the wheel's dependency metadata must be
satisfied by that folder alone. Measured here (2 cores shared with other jobs, load 6): 45-60 s,
in four parts of similar size: building the wheel, the venv and pip, the smoke script, and the
memory benchmark (each subprocess pays for importing torch).
"""

from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CORE = ["torch", "numpy", "matplotlib", "pyyaml"]  # pyproject.toml's [project] dependencies


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def core_closure() -> dict[str, md.Distribution]:
    """The installed distributions that the core requirements pull in, transitively."""
    found: dict[str, md.Distribution] = {}
    stack = list(CORE)
    while stack:
        name = stack.pop()
        if _normal(name) in found:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        found[_normal(name)] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(req.name)
    return found


def link_folder(target: Path) -> Path:
    """A folder of symbolic links to every top-level file or package of :func:`core_closure`."""
    target.mkdir()
    for dist in core_closure().values():
        for f in dist.files or []:
            top = f.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            source = Path(dist.locate_file(top))
            if source.exists() and not (target / top).exists():
                (target / top).symlink_to(source)
    return target


SMOKE = textwrap.dedent(
    """
    import importlib, importlib.metadata, importlib.util, pkgutil, sys
    import torch
    import optlib

    assert importlib.util.find_spec("sklearn") is None, "scikit-learn leaked into the venv"
    assert "site-packages" in optlib.__file__, optlib.__file__  # the wheel, not the checkout
    assert importlib.metadata.version("optlib-course") == optlib.__version__
    assert torch.__version__ == sys.argv[1], (torch.__version__, sys.argv[1])

    # every library module imports (optlib.course is the course machinery: book build, grader)
    library = []
    for top in pkgutil.iter_modules(optlib.__path__, "optlib."):  # not into optlib.course
        if top.name != "optlib.course":
            library.append(top.name)
            if top.ispkg:
                package = importlib.import_module(top.name)
                library += [m.name for m in pkgutil.walk_packages(package.__path__, top.name + ".")]
    failed = {}
    for name in library:
        try:
            importlib.import_module(name)
        except ImportError as error:
            failed[name] = repr(error)
    # explorers need the 'widgets' extra (ipywidgets); they must say so
    widgets = failed.pop("optlib.plots.widgets", None)
    assert widgets is None or "ipywidgets" in widgets, widgets
    assert not failed, failed
    assert not [m for m in sys.modules if m.startswith("optlib.course")], "course code imported"
    print("imported", len(library), "library modules")

    # one step of every optimizer on a tiny model
    from torch import nn
    from optlib.optim.muon import muon_param_groups
    torch.manual_seed(0)
    X, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for name in optlib.__all__:
        cls = getattr(optlib, name)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            continue
        model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
        if name == "KFAC":
            opt = cls(model)
        elif name == "Muon":
            opt = cls([p for p in model.parameters() if p.ndim == 2])
        elif name == "MuonWithAuxAdamW":
            opt = cls(muon_param_groups(model))
        else:
            opt = cls(model.parameters())
        if name == "AdamWScheduleFree":
            opt.train()
        before = [p.detach().clone() for p in model.parameters()]
        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(X), y)
            loss.backward()
            return loss
        for _ in range(2):  # SOAP's first step only builds its bases
            opt.step(closure)
        moved = any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
        assert moved and all(torch.isfinite(p).all() for p in model.parameters()), name
    print("stepped every optimizer")

    # the step-time benchmark: its help, and its model table (which reads the digits) tiny
    import runpy
    for argv in (["optlib.bench", "steps", "--help"],
                 ["optlib.bench.model_steps", "--hidden", "8", "--warmup", "1",
                  "--iterations", "3", "--only", "SGD"]):
        sys.argv = argv
        try:
            runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
        except SystemExit as exit:
            assert exit.code in (0, None), (argv, exit.code)
    """
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """What ``make dist`` builds: the sdist, and the wheel built from the unpacked sdist (so a
    file the sdist lacks fails here, and the checkout gets no ``build/`` folder)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), "."],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert len(list(out.glob("optlib_course-*.tar.gz"))) == 1
    (path,) = out.glob("optlib_course-*.whl")
    return path


@pytest.fixture(scope="module")
def library_venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the core dependencies linked in and the wheel installed, no extras."""
    root = tmp_path_factory.mktemp("venv")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    links = link_folder(root / "core")
    (Path(site) / "core_dependencies.pth").write_text(f"{links}\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index",
         "--no-cache-dir", "--disable-pip-version-check", "-q", str(wheel)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return python


def run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run in the venv, isolated from this checkout (-I: no script folder, no PYTHONPATH)."""
    return subprocess.run(
        [str(python), "-I", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_wheel_is_named_optlib_course(wheel):
    assert wheel.name.startswith("optlib_course-")


def test_library_install_imports_steps_and_benchmarks(library_venv, tmp_path):
    import torch

    script = tmp_path / "smoke.py"
    script.write_text(SMOKE)
    result = run(library_venv, str(script), torch.__version__, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stepped every optimizer" in result.stdout
    assert "usage: python -m optlib.bench steps" in result.stdout
    assert "no scikit-learn" in result.stdout  # the model table's caption names its data


def test_library_install_runs_bench_memory(library_venv, tmp_path):
    memory = run(
        library_venv, "-m", "optlib.bench", "memory", "--only", "SGD", "Adam", "KFAC", "Shampoo",
        cwd=tmp_path,
    )  # fmt: skip
    assert memory.returncode == 0, memory.stdout + memory.stderr
    assert "no scikit-learn" in memory.stdout and "KFAC" in memory.stdout
