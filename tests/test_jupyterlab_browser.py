"""A chapter in JupyterLab, as a learner opens it: the reader notebook that the book build wrote
(``_build/html/notebooks/01_gradient_descent.ipynb``) opened in the environment's own
``jupyter lab``, run top to bottom in a real browser; its computed numbers read as numbers (no
``{glue:text}`` placeholder), and its live explorer redraws when a slider moves.

Set ``OPTLIB_SCREENSHOTS=folder`` to keep the screenshots (desktop and phone width).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.browser import DESKTOP, PHONE, chromium, offline_context, require_site, screenshot

pytestmark = pytest.mark.slow

CHAPTER = "01_gradient_descent"


def test_jupyter_lab_command_is_installed():
    """The README's notebook command exists in the environment `make` builds."""
    jupyter = Path(sys.executable).with_name("jupyter")
    r = subprocess.run([str(jupyter), "lab", "--version"], capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert re.match(r"4\.\d+", r.stdout.strip()), r.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _glued_sentence(site: Path) -> str:
    """A sentence of the reader notebook that holds a glued number, as JupyterLab shows it."""
    reader = json.loads((site / "notebooks" / f"{CHAPTER}.ipynb").read_text())
    src_nb = Path(__file__).resolve().parent.parent / "chapters" / f"{CHAPTER}.ipynb"
    original = json.loads(src_nb.read_text())
    by_id = {c.get("id"): "".join(c["source"]) for c in original["cells"]}
    for cell in reader["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        before = by_id.get(cell.get("id"), "")
        for line_before, line in zip(before.splitlines(), text.splitlines()):
            m = re.search(r"\{glue:text\}`[^`]+`", line_before)
            if m and "$" not in line and "`" not in line and "{" not in line and re.search(
                r"\d+\.\d+", line
            ):
                return line.strip()
    pytest.fail("no line with a glued number in the reader notebook")


def test_chapter_runs_in_jupyterlab_with_numbers_and_a_live_explorer(tmp_path):
    site = require_site()
    reader = site / "notebooks" / f"{CHAPTER}.ipynb"
    if not reader.is_file():
        pytest.fail(f"the build wrote no reader notebook {reader}")
    work = tmp_path / "lab"
    work.mkdir()
    shutil.copy2(reader, work / reader.name)
    sentence = _glued_sentence(site)
    words = [w for w in re.findall(r"\d+\.\d+", sentence)]
    assert words, f"no number in {sentence!r}"

    port, token = _free_port(), secrets.token_hex(16)
    jupyter = Path(sys.executable).with_name("jupyter")
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # every cell in the page (JupyterLab otherwise draws only the cells in view)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"))  # fmt: skip
    env.pop("OPTLIB_STATIC", None)
    log = (tmp_path / "lab.log").open("w")
    lab = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
         "--LabApp.expose_app_in_browser=True", "--ServerApp.open_browser=False",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI runs as root
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while time.time() < deadline and lab.poll() is None:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        else:
            pytest.fail("jupyter lab did not start:\n" + (tmp_path / "lab.log").read_text()[-3000:])
        with chromium() as browser:
            ctx = offline_context(browser, DESKTOP)
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/lab/tree/{reader.name}?token={token}", timeout=120_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
            page.wait_for_timeout(3000)  # the kernel starts
            done = page.evaluate(
                """async () => {
                  const nb = window.jupyterapp.shell.currentWidget;
                  await nb.context.ready;
                  await nb.sessionContext.ready;
                  const t0 = Date.now();
                  const status = () => nb.sessionContext.session?.kernel?.status;
                  while (status() !== 'idle') {
                    if (Date.now() - t0 > 90000) return 'kernel ' + status();
                    await new Promise(r => setTimeout(r, 500));
                  }
                  nb.content.activate();
                  return await Promise.race([
                    window.jupyterapp.commands.execute('notebook:run-all-cells'),
                    new Promise(r => setTimeout(() => r('timeout'), 400000)),
                  ]);
                }"""
            )
            if done is not True:
                screenshot(page, "jupyterlab-failure")
            assert done is True, f"run all cells: {done}"
            failures = page.evaluate(
                """() => {
                  const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
                  const out = [];
                  for (let i = 0; i < cells.length; i++) {
                    const c = cells.get(i).toJSON();
                    for (const o of c.outputs || [])
                      if (o.output_type === 'error') out.push(o.ename + ': ' + o.evalue);
                    if (c.cell_type === 'code' && c.execution_count === null) out.push('not run');
                  }
                  return out;
                }"""
            )
            assert not failures, "cells raised in JupyterLab:\n" + "\n".join(failures)[:3000]
            rendered = page.inner_text(".jp-Notebook")
            assert "{glue:text}" not in rendered and "{eq}" not in rendered
            assert all(w in rendered for w in words), f"glued numbers {words} not shown"
            page.evaluate("() => jupyterapp.commands.execute('application:toggle-left-area')")
            loc = page.locator(".jp-RenderedMarkdown", has_text=words[0]).first
            loc.scroll_into_view_if_needed()
            assert loc.is_visible()
            screenshot(page, "jupyterlab-ch01-desktop")

            # the live explorer: move the learning-rate slider from the keyboard
            handle = page.locator(".widget-slider .noUi-handle").first
            handle.scroll_into_view_if_needed()
            out = page.locator(".jupyter-widgets .jp-OutputArea-output img").first
            out.wait_for(timeout=60_000)
            before = out.get_attribute("src")
            handle.focus()
            page.keyboard.press("ArrowLeft")
            page.keyboard.press("ArrowLeft")
            page.wait_for_function(
                "src => { const i = document.querySelector("
                "'.jupyter-widgets .jp-OutputArea-output img'); return i && i.src !== src; }",
                arg=before, timeout=60_000,
            )  # fmt: skip
            screenshot(page, "jupyterlab-explorer-after-desktop")
            page.set_viewport_size(PHONE)
            page.wait_for_timeout(500)
            shown = page.locator(".jp-RenderedMarkdown", has_text=words[0]).first
            shown.scroll_into_view_if_needed()
            screenshot(page, "jupyterlab-ch01-phone")
            assert not [e for e in errors if "THEBE" in e]
            ctx.close()
    finally:
        log.close()
        os.killpg(lab.pid, signal.SIGTERM)
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
