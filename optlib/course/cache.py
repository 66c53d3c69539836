"""An on-disk cache for seeded experiments whose results are plain JSON data.

Some experiments in the book take longer than a reader wants to wait at every re-run (a grid of
training runs, say). They are deterministic: same arguments, same optlib, same result. So
:func:`memoize` stores each result as a JSON file keyed by

* the function's module and qualified name,
* its arguments (bound to its signature, defaults filled in, so ``f(1)`` and ``f(x=1)`` share
  an entry), which must be JSON data,
* :func:`source_hash`, a hash of every ``.py`` file of optlib, so that changing the library
  recomputes everything that depends on it, and
* the base seed ``OPTLIB_SEED`` (:func:`optlib._seed.base_seed`), which changes what every seeded
  helper draws.

A result is always returned as it reads back from JSON (tuples become lists, dict keys become
strings), on a miss as on a hit, so a cold run and a cached run see identical objects. The cache
is a convenience, never a source of truth: a missing, corrupt or mismatched entry is recomputed,
and an unwritable folder just means no caching.

Where: ``$OPTLIB_CACHE_DIR`` if set; otherwise ``.optlib-cache/`` at the root of the checkout
optlib runs from (ignored by git); otherwise ``$XDG_CACHE_HOME/optlib`` (``~/.cache/optlib``).
``OPTLIB_CACHE=0`` turns the cache off (every call computes).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .._seed import base_seed

__all__ = ["cache_dir", "clear", "enabled", "memoize", "source_hash"]

F = TypeVar("F", bound=Callable[..., Any])
_PACKAGE = Path(__file__).resolve().parents[1]  # the optlib package


def enabled() -> bool:
    """False when the environment variable ``OPTLIB_CACHE`` is ``0``, ``false`` or ``no``."""
    return os.environ.get("OPTLIB_CACHE", "1").strip().lower() not in ("0", "false", "no")


def cache_dir() -> Path:
    """The folder where results are stored (see the module docstring); not created here."""
    if os.environ.get("OPTLIB_CACHE_DIR"):
        return Path(os.environ["OPTLIB_CACHE_DIR"]).expanduser()
    checkout = _PACKAGE.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout / ".optlib-cache"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "optlib"


_HASHED: dict[tuple, str] = {}


def _sources() -> list[Path]:
    return sorted(p for p in _PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def source_hash() -> str:
    """SHA-256 of optlib's source: every ``.py`` file under the package, by relative path.

    Recomputed whenever a file's size or modification time changes (a ``stat`` of each file
    is cheaper than reading them all at every call)."""
    paths = _sources()
    signature = tuple((p, p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    if signature in _HASHED:
        return _HASHED[signature]
    h = hashlib.sha256()
    for path in paths:
        h.update(path.relative_to(_PACKAGE).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    _HASHED.clear()
    _HASHED[signature] = h.hexdigest()
    return _HASHED[signature]


def _plain(value: Any, what: str) -> Any:
    """``value`` as it reads back from JSON; TypeError if it is not JSON data."""
    try:
        text = json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{what} must be plain JSON data (numbers, strings, lists, dicts): {err}"
        ) from None
    return json.loads(text)


def _name(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def _stem(fn: Callable) -> str:
    """A file-name-safe prefix for ``fn``'s entries."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", getattr(fn, "__qualname__", str(fn)))


def _entry(fn: Callable, args: tuple, kwargs: dict) -> tuple[dict, Path]:
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    key = {
        "function": _name(fn),
        "arguments": _plain(dict(bound.arguments), f"the arguments of {_name(fn)}"),
        "optlib_source": source_hash(),
        "optlib_seed": base_seed(),  # OPTLIB_SEED moves every seeded helper: other results
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return key, cache_dir() / f"{_stem(fn)}-{digest}.json"


def _read(path: Path, key: dict) -> tuple[bool, Any]:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False, None
    if not isinstance(stored, dict) or "result" not in stored:
        return False, None
    if any(stored.get(k) != v for k, v in key.items()):
        return False, None  # a hash collision or a hand-edited file: recompute
    return True, stored["result"]


def _write(path: Path, key: dict, result: Any) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({**key, "result": result}, f)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except OSError:
        return


def memoize(fn: F) -> F:
    """Decorate a deterministic function whose arguments and result are JSON data.

    The first call with given arguments computes and stores the result; later calls, in this
    process or any other, read it back until optlib's source changes. The wrapper has two extra
    attributes: ``uncached(...)`` always computes (and stores nothing), ``cache_path(...)`` is the
    file an entry lives in.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not enabled():
            return _plain(fn(*args, **kwargs), f"the result of {_name(fn)}")
        key, path = _entry(fn, args, kwargs)
        hit, result = _read(path, key)
        if hit:
            return result
        result = _plain(fn(*args, **kwargs), f"the result of {_name(fn)}")
        _write(path, key, result)
        return result

    def uncached(*args: Any, **kwargs: Any) -> Any:
        return _plain(fn(*args, **kwargs), f"the result of {_name(fn)}")

    def cache_path(*args: Any, **kwargs: Any) -> Path:
        return _entry(fn, args, kwargs)[1]

    wrapper.uncached = uncached  # type: ignore[attr-defined]
    wrapper.cache_path = cache_path  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def clear(fn: Callable | None = None) -> int:
    """Delete the stored results of ``fn`` (a memoized function), or all of them; returns how
    many files were removed."""
    folder = cache_dir()
    if not folder.is_dir():
        return 0
    pattern = "*.json" if fn is None else f"{_stem(fn)}-*.json"
    removed = 0
    for path in folder.glob(pattern):
        try:
            path.unlink()
            removed += 1
        except OSError:
            pass
    return removed
