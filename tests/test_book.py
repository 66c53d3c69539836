"""The book's source: clean notebooks, a complete table of contents, working code in the docs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHAPTER_NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        for ch in part["chapters"]:
            files.append(ch["file"])
            files += [s["file"] for s in ch.get("sections", [])]
    return files


@pytest.mark.parametrize("nb", CHAPTER_NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_notebooks_are_stored_without_outputs(nb):
    data = json.loads(nb.read_text())
    dirty = [
        i
        for i, c in enumerate(data["cells"])
        if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))
    ]
    assert not dirty, f"{nb.name}: cells {dirty} have stored outputs; clear them before committing"


@pytest.mark.parametrize("nb", CHAPTER_NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_notebooks_seed_first(nb):
    data = json.loads(nb.read_text())
    code = [c for c in data["cells"] if c["cell_type"] == "code"]
    assert code and "seed_everything(" in "".join(code[0]["source"]), (
        f"{nb.name}: the first code cell must call optlib.seed_everything"
    )


def test_every_toc_entry_exists_and_every_chapter_is_listed():
    listed = set(_toc_files())
    for f in listed:
        assert any((ROOT / f"{f}{ext}").exists() for ext in (".md", ".ipynb")), f"missing {f}"
    for nb in CHAPTER_NOTEBOOKS:
        assert f"chapters/{nb.stem}" in listed, f"{nb.name} is not in _toc.yml"


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("doc", ["README.md", "chapters/intro.md"])
def test_code_examples_in_docs_run(doc, tmp_path):
    blocks = _python_blocks(ROOT / doc)
    assert blocks, f"{doc} has no python example"
    for code in blocks:
        script = tmp_path / "example.py"
        script.write_text(code)
        r = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=120
        )
        assert r.returncode == 0, f"example in {doc} failed:\n{code}\n{r.stderr[-2000:]}"


def test_reader_markdown_resolves_myst_roles_and_directives():
    """The reader notebooks' Markdown: glued numbers, cross-references, citations, included code,
    labelled equations, targets and admonitions become plain Markdown that Jupyter renders."""
    from optlib.course.reader import Resolver, resolve_markdown

    labels = {("eq", "eq-gd"): "(1.2)", ("numref", "fig-rate"): "Figure 1.3"}
    res = Resolver(
        glue={"eta": "0.18181818", "n": "128"},
        label=lambda role, target: labels.get((role, target)),
        cite=lambda role, keys: f"[{role}:{','.join(keys)}]",
        include=lambda path, opts: f"def {opts['pyobject']}(): ...",
    )
    text = (
        "(sec-x)=\n## Title\n\nWith $\\eta^\\star \\approx$ {glue:text}`eta:.2f` and "
        "{glue:text}`n` steps, see {eq}`eq-gd`, {numref}`fig-rate`, {numref}`Fig. %s <fig-rate>` "
        "and {cite:p}`kingma2015`.\n\n$$\nx = 1\n$$ (eq-gd)\n\n"
        "```{literalinclude} ../optlib/optim/sgd.py\n:pyobject: sgd_update\n```\n\n"
        ":::{note}\nA {glue:text}`missing:.1f` value.\n:::\n"
    )
    out = resolve_markdown(text, res)
    assert "0.18 and 128 steps, see (1.2), Figure 1.3, Fig. 1.3 and [cite:p:kingma2015]" in out
    assert "\\tag{1.2}$$" in out and '<a id="sec-x"></a>' in out
    assert "```python\ndef sgd_update(): ...\n```" in out
    assert "> **Note**" in out and "`missing`" in out
    assert "{glue" not in out and "{eq}" not in out and "{literalinclude}" not in out


def test_course_wheel_carries_the_grill_banks_and_the_explorer_script(tmp_path):
    """The wheel `make book` links from the site works outside the repository: the grill banks
    (one source, exercises/grill) and the explorer's script are package data."""
    import zipfile

    from optlib.course.build import build_wheel

    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    banks = sorted(p.name for p in (ROOT / "exercises" / "grill").glob("*.yml"))
    assert banks and all(f"optlib/course/grill_banks/{b}" in names for b in banks)
    assert "optlib/plots/explorer.js" in names and "optlib/course/static/optlib.css" in names
    assert not (ROOT / "build").exists()  # built from a copy: no build/ in the checkout


def test_colab_links_only_with_a_repository():
    from types import SimpleNamespace

    from optlib.course.sphinxext import _colab_link, _repository_colab_link

    none = SimpleNamespace(optlib_repository_url="", optlib_colab_branch="gh-pages",
                           html_theme_options={})  # fmt: skip
    assert _colab_link(none, "notebooks/x.ipynb") is None
    assert _repository_colab_link(none, "chapters/x.ipynb") is None
    cfg = SimpleNamespace(optlib_repository_url="https://github.com/o/r",
                          optlib_colab_branch="gh-pages",
                          html_theme_options={"repository_branch": "main"})  # fmt: skip
    assert _colab_link(cfg, "notebooks/x.ipynb") == (
        "https://colab.research.google.com/github/o/r/blob/gh-pages/notebooks/x.ipynb"
    )
    repo = _repository_colab_link(cfg, "chapters/x.ipynb")
    assert repo.endswith("/o/r/blob/main/chapters/x.ipynb")
