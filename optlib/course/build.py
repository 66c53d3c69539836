"""Build the book: ``python -m optlib.course.build book [--student]`` (what ``make book`` runs).

Three things a plain ``jupyter-book build`` does not do:

1. **Execution cache keyed on optlib.** Jupyter Book re-executes a notebook only when the
   notebook's own code changes. This driver fingerprints optlib's sources; when the fingerprint
   changes it drops the cached executions of every notebook that imports ``optlib``, so a change
   in an optimizer re-executes exactly the chapters that use it.
2. **Static explorers.** It sets ``OPTLIB_STATIC=1`` for the executing kernels, so
   ``optlib.plots.widgets`` renders figures and animations instead of live widgets (which would be
   dead boxes in a static site).
3. **Strict checks.** Warnings are errors (``-W``, including a notebook that raises), a notebook
   that takes longer than the budget to execute (``NOTEBOOK_BUDGET_S``, 60 s as in
   ``tests/nbtiming.py``) fails the build, and after the build every local link and asset in the
   HTML must exist and no page may load a script or stylesheet from the network (the book is read
   offline). Each executed notebook's time is printed.
4. **Offline copies.** The course package is built as a wheel into the site's ``notebooks/``
   folder, beside the reader notebooks that :mod:`optlib.course.reader` writes there, and every
   link to a notebook or the wheel downloads it (``download`` attribute) instead of showing JSON.

``--student`` builds into ``_build/student`` with exercise solutions removed
(``OPTLIB_HIDE_SOLUTIONS=1``, read by ``optlib.course.sphinxext``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[2]  # the checkout: optlib/course/build.py


def optlib_fingerprint(root: Path = ROOT) -> str:
    """SHA-256 over optlib's Python sources (paths and contents) and pyproject.toml."""
    h = hashlib.sha256()
    files = sorted((root / "optlib").rglob("*.py")) + [root / "pyproject.toml"]
    for f in files:
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _imports_optlib(nb) -> bool:
    return any(c.cell_type == "code" and re.search(r"\boptlib\b", c.source) for c in nb.cells)


def invalidate_stale_executions(cache_dir: Path, fingerprint: str) -> int:
    """Drop cached executions of notebooks importing optlib if optlib changed; return how many."""
    stamp = cache_dir / "optlib.fingerprint"
    if not cache_dir.exists():
        return 0
    if stamp.exists() and stamp.read_text() == fingerprint:
        return 0
    from jupyter_cache import get_cache

    cache = get_cache(str(cache_dir))
    dropped = 0
    for record in cache.list_cache_records():
        if _imports_optlib(cache.get_cache_bundle(record.pk).nb):
            cache.remove_cache(record.pk)
            dropped += 1
    return dropped


def check_html(html_dir: Path) -> list[str]:
    """Problems in the built site: missing local targets and assets loaded from the network."""
    problems = []
    attr = re.compile(
        r"""<(a|link|script|img|source|iframe)\b[^>]*?\b(href|src)=["']([^"']+)["']"""
    )
    for page in sorted(html_dir.rglob("*.html")):
        if "_static" in page.relative_to(html_dir).parts:
            continue  # theme templates, not pages
        text = page.read_text(errors="replace")
        for tag, _, url in attr.findall(text):
            parts = urlsplit(url)
            if parts.scheme in ("http", "https") or url.startswith("//"):
                if tag in ("script", "link", "img", "iframe", "source"):
                    problems.append(
                        f"{page.relative_to(html_dir)}: <{tag}> loads {url} from the network"
                    )
                continue
            if parts.scheme or not parts.path:
                continue  # mailto:, data:, javascript:, or a same-page #anchor
            target = (page.parent / unquote(parts.path)).resolve()
            if not target.exists():
                problems.append(f"{page.relative_to(html_dir)}: broken link to {url}")
    return problems


BUDGET_S = float(os.environ.get("NOTEBOOK_BUDGET_S", "60"))
_EXECUTED = re.compile(r"(\S+\.ipynb): Executed notebook in ([0-9.]+) seconds")


def run_logged(cmd: list[str], env: dict, cwd: Path) -> tuple[int, dict[str, float]]:
    """Run ``cmd``, echoing its output, and collect the notebook execution times it reports."""
    times: dict[str, float] = {}
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        errors="replace",
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        if m := _EXECUTED.search(re.sub(r"\x1b\[[0-9;]*m", "", line)):
            times[os.path.relpath(m.group(1), cwd)] = float(m.group(2))
    return proc.wait(), times


def build_wheel(dest: Path, root: Path = ROOT) -> Path:
    """The course package's wheel (grill banks included, see ``setup.py``), built from a copy of
    the sources so that the checkout gets no ``build/`` folder; returns its path in ``dest``."""
    import tempfile

    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        shutil.copytree(root / "optlib", src / "optlib", ignore=ignore)
        shutil.copytree(root / "exercises" / "grill", src / "exercises" / "grill")
        for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE"):
            if (root / name).is_file():
                shutil.copy2(root / name, src / name)
        out = Path(tmp) / "dist"
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
             "--disable-pip-version-check", "-w", str(out), str(src)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        wheel = next(out.glob("*.whl"))
        for old in dest.glob("*.whl"):
            old.unlink()
        return Path(shutil.copy2(wheel, dest / wheel.name))


_DOWNLOAD_LINK = re.compile(
    r"""<a\b(?![^>]*\sdownload[\s=>])([^>]*?\bhref=["']([^"'#?]+?\.(?:ipynb|whl))["'])"""
)


def mark_downloads(html_dir: Path) -> int:
    """Give every link to a notebook or a wheel a ``download`` attribute (the browser saves it
    under its own name instead of showing JSON); return how many links changed."""
    changed = 0
    for page in html_dir.rglob("*.html"):
        text = page.read_text(errors="replace")
        new, n = _DOWNLOAD_LINK.subn(
            lambda m: f'<a download="{Path(m.group(2)).name}"{m.group(1)}', text
        )
        if n:
            page.write_text(new)
            changed += n
    return changed


def build(student: bool = False, root: Path = ROOT) -> int:
    out = root / "_build" / "student" if student else root  # HTML lands in <out>/_build/html
    cache_dir = root / "_build" / ".jupyter_cache"
    fingerprint = optlib_fingerprint(root)
    dropped = invalidate_stale_executions(cache_dir, fingerprint)
    if dropped:
        print(f">> optlib changed: {dropped} cached notebook execution(s) dropped", flush=True)

    env = dict(os.environ, OPTLIB_STATIC="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
    if student:
        env["OPTLIB_HIDE_SOLUTIONS"] = "1"
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(root), "--path-output", str(out), "-W", "-n", "--keep-going"]
    if dropped:
        # Sphinx re-reads only pages whose source changed; a notebook whose execution was dropped
        # must be re-read too, or its old outputs stay in the site. Unchanged notebooks that do
        # not import optlib still come from the execution cache.
        cmd.append("--all")
    print(">>", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    rc, times = run_logged(cmd, env, root)
    elapsed = time.perf_counter() - t0
    if times:
        print(f">> notebook execution times (slowest first; budget {BUDGET_S:.0f} s):")
        for nb, s in sorted(times.items(), key=lambda kv: -kv[1]):
            print(f"   {s:7.1f} s  {'OVER BUDGET' if s > BUDGET_S else 'ok':11s} {nb}")
    if rc != 0:
        print(f">> book build FAILED after {elapsed:.0f} s (warnings are errors)", file=sys.stderr)
        return rc
    slow = [nb for nb, s in times.items() if s > BUDGET_S]
    if slow:
        print(f">> over the {BUDGET_S:.0f} s budget per notebook: {', '.join(slow)}",
              file=sys.stderr)
        return 1
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / "optlib.fingerprint").write_text(fingerprint)

    html = out / "_build" / "html"
    if student:
        shutil.rmtree(html / "_sources", ignore_errors=True)
    wheel = build_wheel(html / "notebooks", root)
    print(f">> course wheel: {wheel.relative_to(out)}")
    mark_downloads(html)
    problems = check_html(html)
    if problems:
        print(">> the built site has problems:", *problems, sep="\n   ", file=sys.stderr)
        return 1
    print(f">> book built in {elapsed:.0f} s: {html}/index.html (links and assets checked)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optlib.course.build", description=__doc__)
    parser.add_argument("target", choices=["book"])
    parser.add_argument("--student", action="store_true", help="build with solutions removed")
    args = parser.parse_args(argv)
    return build(student=args.student)


if __name__ == "__main__":
    sys.exit(main())
