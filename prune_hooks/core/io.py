"""Atomic file writers (a reader never sees a half-written file, a crash never leaves one), readers, and the
progress bar of long loops."""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Sequence

__all__ = [
    "atomic_writer",
    "atomic_write_bytes",
    "atomic_write_text",
    "write_json",
    "write_csv",
    "open_text",
    "read_json",
    "no_gc",
    "progress",
]


@contextlib.contextmanager
def no_gc():
    """Pause the cyclic garbage collector while building large trees of new containers (a parsed
    COCO file, its index). JSON creates no reference cycles, but the collector would rescan the
    growing tree again and again: with it paused, parsing a 0.5 GB annotation file takes half the time."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file beside ``path``, renamed over ``path`` when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    with atomic_writer(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def open_text(path: str | os.PathLike, what: str = "file") -> io.TextIOWrapper:
    """Open a UTF-8 text file; a missing, directory or unreadable path is a PruneHooksError naming it."""
    from .errors import PruneHooksError

    try:
        return open(path, encoding="utf-8")
    except FileNotFoundError:
        raise PruneHooksError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise PruneHooksError(f"{what} is a directory, expected a file: {path}") from None
    except PermissionError:
        raise PruneHooksError(f"{what} is not readable: {path}") from None


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Load JSON, turning a missing file or bad JSON into a PruneHooksError naming the file."""
    from .errors import PruneHooksError

    with open_text(path, what) as f, no_gc():
        try:
            return json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PruneHooksError(f"{what} {path} is not valid JSON: {e}") from None


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV; floats with 9 significant digits (float32 round-trips), NaN/None as empty. Rows are
    streamed to the file (a table of millions of rows is never held as text)."""
    with atomic_writer(path) as f:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="", write_through=False)
        w = csv.writer(text, lineterminator="\n")
        w.writerow(header)
        for row in rows:
            w.writerow([_fmt(v) for v in row])
        text.flush()
        text.detach()  # atomic_writer closes the file
    return Path(path)


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if v != v else format(v, ".9g")
    return v


def progress(items: Iterable[Any], *, desc: str, unit: str = "it", total: int | None = None) -> Iterable[Any]:
    """``items`` with a progress bar and ETA on stderr where stderr is a terminal (tqdm); as they are elsewhere
    (logs, tests, a framework's trainer)."""
    try:
        from tqdm import tqdm
    except ImportError:  # a dependency of the package; kept optional for the core's own users
        return items
    return tqdm(items, desc=desc, unit=unit, total=total, leave=False, disable=None, mininterval=1.0)
