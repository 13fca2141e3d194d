"""The pruned COCO file: the source restricted to the kept images, everything else as it was."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ...io import atomic_writer, open_text
from .index import CocoIndex
from .stream import file_members, file_slices

__all__ = ["write_pruned_coco"]


def write_pruned_coco(
    source: CocoIndex | dict | str | os.PathLike,
    keep_image_ids: Iterable[int],
    path: str | os.PathLike,
    replace: dict | None = None,
) -> Path:
    """Write the COCO file ``source`` restricted to ``keep_image_ids``. ``source``: a ``CocoIndex``, a
    parsed dataset, or a file (read member by member: never held whole).

    Kept: those images (file order), all their annotations (crowd regions included), every category,
    and every other top-level member (``info``, ``licenses``, ...) unchanged in the source's order;
    ``replace`` gives new values for top-level members other than images and annotations (a member
    the source lacks comes last). Entries are written by ``json.dumps``, except from the index of an
    unchanged file read by ``load_coco``: its kept entries are copied as the file writes them (no
    second parse; the same bytes for a file that ``json.dump`` wrote).
    """
    keep = {int(i) for i in keep_image_ids}
    replace = dict(replace or {})
    if {"images", "annotations"} & set(replace):
        raise ValueError("write_pruned_coco: images and annotations are not replaceable")
    if isinstance(source, CocoIndex):
        if source._dataset is None and source._spans is not None and source._spans.usable(source.path):
            return _copy_kept_entries(source, keep, path, replace)
        source = source.dataset if source._dataset is not None or source.path is None else source.path
    opened = contextlib.nullcontext(source.items()) if isinstance(source, dict) else file_members(str(source))
    with opened as members, atomic_writer(path) as out:
        dumps, sep = json.dumps, "{"
        for key, value in members:
            out.write(f"{sep}{dumps(key)}: ".encode())
            sep = ", "
            if key in ("images", "annotations"):
                field = "id" if key == "images" else "image_id"
                first = True
                out.write(b"[")
                for item in value:
                    if int(item[field]) in keep:
                        out.write((dumps(item) if first else ", " + dumps(item)).encode())
                        first = False
                out.write(b"]")
            else:
                out.write(dumps(replace.pop(key, value)).encode())
        _write_rest(out, replace, sep)
    return Path(path)


def _write_rest(out: Any, replace: dict, sep: str) -> None:
    for key, value in replace.items():
        out.write(f"{sep}{json.dumps(key)}: {json.dumps(value)}".encode())
        sep = ", "
    out.write(b"}\n")


def _copy_kept_entries(index: CocoIndex, keep: set[int], path: str | os.PathLike, replace: dict) -> Path:
    """``write_pruned_coco`` from the entry positions ``load_coco`` recorded: one sequential read."""
    spans, wanted = index._spans, np.fromiter(keep, np.int64, len(keep))
    kept = {
        "images": spans.images[np.isin(index.image_ids, wanted)],
        "annotations": spans.annotations[np.isin(spans.ann_image_ids, wanted)],
    }
    with open_text(index.path, "annotation file") as f, atomic_writer(path) as out:
        in_file_order = [kept[key] for key in spans.members if key in kept]
        text = file_slices(f, index.path, np.concatenate(in_file_order).tolist())
        sep = "{"
        for key in spans.members:
            out.write(f"{sep}{json.dumps(key)}: ".encode())
            sep = ", "
            if key in kept:
                n = len(kept[key])
                out.write(b"[")
                for a in range(0, n, 4096):
                    part = ", ".join(next(text) for _ in range(min(4096, n - a)))
                    out.write((", " + part if a else part).encode())
                out.write(b"]")
            else:
                out.write(json.dumps(replace.pop(key, index.header[key])).encode())
        _write_rest(out, replace, sep)
    return Path(path)
