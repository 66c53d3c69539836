"""Helpers for the browser tests: Debian's chromium driven by Playwright, offline.

* :func:`chromium`: a Playwright browser on ``/usr/bin/chromium`` (never a downloaded browser);
  the tests skip, saying why, when either is missing (``.ci/run`` installs chromium).
* :func:`offline_context`: a browser context that aborts and records every request leaving this
  machine (anything but ``file://``, ``data:``, ``blob:`` and the loopback server).
* :func:`serve`: the built site over ``http://127.0.0.1:<port>`` from a thread.
* :func:`screenshot`: saves a PNG into ``$OPTLIB_SCREENSHOTS`` when that is set (to look at).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(os.environ.get("OPTLIB_SITE", ROOT / "_build" / "html"))
CHROMIUM = os.environ.get("OPTLIB_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def require_site() -> Path:
    if not (SITE / "index.html").is_file():
        pytest.skip(f"no built site at {SITE}: run `make book` first (make test does)")
    return SITE


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    if not Path(CHROMIUM).is_file() and not shutil.which(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM} (.ci/run installs Debian's package)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -c constraints.txt playwright)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


LOCAL = ("file://", "data:", "blob:", "http://127.0.0.1", "http://localhost", "about:")


def offline_context(browser, viewport=DESKTOP, scale: float = 2):
    """A context with ``viewport`` at ``scale`` device pixels per CSS pixel that blocks the
    network; ``ctx.blocked`` lists what it blocked."""
    ctx = browser.new_context(viewport=viewport, device_scale_factor=scale)
    ctx.blocked = []

    def route(r):
        url = r.request.url
        if url.startswith(LOCAL):
            r.continue_()
        else:
            ctx.blocked.append(url)
            r.abort()

    ctx.route("**/*", route)
    return ctx


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """``directory`` over HTTP on a free loopback port; yields the base URL."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def screenshot(page, name: str, full_page: bool = False, element=None) -> Path | None:
    """Save ``name``.png into ``$OPTLIB_SCREENSHOTS`` (if set); return its path."""
    folder = os.environ.get("OPTLIB_SCREENSHOTS")
    if not folder:
        return None
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if element is not None:
        element.screenshot(path=str(path))
    else:
        page.screenshot(path=str(path), full_page=full_page)
    return path


def pages(site: Path) -> list[Path]:
    """Every page of the site (theme templates under ``_static`` excluded)."""
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts)
