"""Readers of the run directory's files (the format: :mod:`prune_hooks.core.outputs.rundir`).

Every command that reads a run goes through these; each refuses a missing or malformed file in one line.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PruneHooksError
from ..io import read_json

__all__ = [
    "IMAGE_COLUMNS",
    "LABEL_ISSUE_COLUMNS",
    "read_images_csv",
    "read_label_issues",
    "read_meta",
    "read_objects_csv",
]

# images.csv: these first (file_name: the image entry's, a string), then one float column per image score
IMAGE_COLUMNS = ("image_id", "n_objects", "file_name")

# label_issues.csv (core.scoring.audit writes its rows)
LABEL_ISSUE_COLUMNS = (
    "kind",
    "ann_id",
    "image_id",
    "category_id",
    "bbox",
    "suggested_category_id",
    "suggested_bbox",
    "score",
)


def read_label_issues(run: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of RUN/label_issues.csv as dicts of strings."""
    path = Path(run) / "label_issues.csv"
    if not path.is_file():
        raise PruneHooksError(
            f"{path} not found: the run has no label audit (it is written by the hooks and `score vps`)"
        )
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if set(LABEL_ISSUE_COLUMNS) - set(reader.fieldnames or ()):
            raise PruneHooksError(f"{path}: expected the columns {','.join(LABEL_ISSUE_COLUMNS)}")
        return list(reader)


def read_meta(run: str | os.PathLike) -> dict[str, Any]:
    run = Path(run)
    if not run.is_dir():
        raise PruneHooksError(f"run directory not found: {run}")
    meta = read_json(run / "meta.json", "run metadata")
    if not isinstance(meta, dict):
        raise PruneHooksError(f"{run / 'meta.json'}: expected an object, got {type(meta).__name__}")
    return meta


def _read_table(
    path: Path, what: str, ints: tuple[str, ...], first: list[str], strings: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """A run CSV as columns: ``ints`` int64, ``strings`` str, the others float64 (empty = NaN); the header starts
    with ``first``."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise PruneHooksError(f"{what} not found: {path}") from None
    if not rows or rows[0][: len(first)] != first:
        raise PruneHooksError(f"{path}: expected a header starting with {','.join(first)}, got {rows[:1]}")
    header, body = rows[0], rows[1:]
    for k, row in enumerate(body, 2):
        if len(row) != len(header):  # a file cut mid-write, or another table's rows
            raise PruneHooksError(f"{path}: line {k} has {len(row)} fields, the header {len(header)}")
    if len(set(header)) != len(header):
        raise PruneHooksError(f"{path}: duplicate column names in the header {header}")
    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        col = [r[j] for r in body]
        try:
            if name in ints:
                out[name] = np.array([int(v) for v in col], dtype=np.int64)
            elif name in strings:
                out[name] = np.array(col, dtype=object)
            else:
                out[name] = np.array([float(v) if v != "" else np.nan for v in col], dtype=np.float64)
        except ValueError as e:
            raise PruneHooksError(f"{path}: column {name}: {e}") from None
    return out


def read_objects_csv(run: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of RUN/objects.csv: ids int64, score columns float64 (NaN = none)."""
    ids = ("ann_id", "image_id", "category_id")
    return _read_table(Path(run) / "objects.csv", "objects", ids, list(ids))


def read_images_csv(run: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of RUN/images.csv: ``image_id``/``n_objects`` int64, ``file_name`` str (runs of 0.1.0 have none),
    score columns float64 (NaN = none)."""
    ids = ("image_id", "n_objects")
    return _read_table(Path(run) / "images.csv", "image scores", ids, list(ids), strings=("file_name",))
