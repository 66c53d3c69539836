r"""The grader's output: a CSV written and flushed row by row, safe text, a progress bar.

Everything a submission controls (its file name, the messages of its exceptions) passes through
:func:`clean` before it reaches the CSV or the terminal: invalid UTF-8 and lone surrogates are
escaped (``\xff``, ``\udc80``), control characters (ANSI escapes included) and bidirectional
overrides are removed, and a leading ``=``, ``+``, ``-`` or ``@`` is neutralised with a quote so
that a spreadsheet does not read the cell as a formula.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["CsvOut", "Progress", "clean", "clean_name", "say"]


def say(line: str) -> None:
    """Print one line at once (the grader's log, also when redirected to a file)."""
    print(line, flush=True)

_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]+")


def clean(text: str, limit: int | None = 600) -> str:
    """One safe line of at most ``limit`` characters (see the module docstring)."""
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    text = _CONTROL.sub(" ", _ANSI.sub("", text)).strip()
    text = re.sub(r" {2,}", " ", text)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def clean_name(name: str) -> str:
    r"""A file name as a safe string: undecodable bytes become ``\xNN``."""
    raw = os.fsencode(name)
    return clean(raw.decode("utf-8", "backslashreplace"), limit=300)


class CsvOut:
    """The grades CSV: header first, then one row per submission, each flushed to disk as
    soon as it is known; :meth:`done` lists the files already in an existing CSV (resume)."""

    def __init__(self, path: str | Path, header: list[str], *, resume: bool) -> None:
        self.path = Path(path)
        self.header = header
        self.done: set[str] = set()
        if resume and self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
            if not rows or rows[0] != header:
                raise ValueError(
                    f"{self.path} does not have this assignment's columns: cannot resume it"
                )
            self.done = {r[0] for r in rows[1:] if r}
            self._file = open(self.path, "a", newline="", encoding="utf-8")
            if rows and self.path.stat().st_size and not _ends_with_newline(self.path):
                self._file.write("\r\n")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", newline="", encoding="utf-8")
            self._write(header)

    def _write(self, cells: list[str]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer).writerow(cells)
        self._file.write(buffer.getvalue())
        self._file.flush()
        os.fsync(self._file.fileno())

    def write(self, cells: list[str]) -> None:
        self._write([clean(str(c), None) if i else str(c) for i, c in enumerate(cells)])

    def close(self) -> None:
        self._file.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


class Progress:
    """``[#####-----] 120/300  2 running  1.9 s per file  about 5 min left``: redrawn in place
    on a terminal, one line per finished file otherwise (logs, CI)."""

    def __init__(self, total: int, workers: int, log: Callable[[str], None]) -> None:
        self.total, self.workers, self.log = total, workers, log
        self.done = 0
        self.start = time.monotonic()
        self.tty = log in (print, say) and sys.stdout.isatty()

    def estimate(self) -> str:
        if not self.done:
            return ""
        elapsed = time.monotonic() - self.start
        per_file = elapsed / self.done
        left = per_file * (self.total - self.done)
        when = f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"
        return f"{per_file:.1f} s per file, about {when} left"

    def bar(self) -> str:
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        return f"[{'#' * filled}{'-' * (width - filled)}] {self.done}/{self.total}"

    def finished(self, line: str) -> None:
        self.done += 1
        status = f"{self.bar()}  {self.estimate()}"
        if self.tty:
            sys.stdout.write("\r\x1b[K" + line + "\n" + status)
            sys.stdout.flush()
        else:
            self.log(f"{line}  {status}")

    def close(self) -> None:
        if self.tty:
            sys.stdout.write("\n")
            sys.stdout.flush()
