"""The label audit's changes as YOLO label files, in a new folder: the user's files are never written.

``prune-hooks clean`` on a YOLO run (``framework: ultralytics``) writes, beside the cleaned COCO file and
``changes.csv``, ``OUT/yolo/``: ``images/`` (links to the training images, the folders as they were below the
last ``images/`` folder), ``labels/`` (every label file, copied, with the changes applied to its lines),
``train.txt`` (the linked images) and ``<data stem>_cleaned.yaml`` (the data file with ``train:`` on it). A
relabel changes the class of its line, a missing box becomes a new line; a badly placed box is removed (YOLO
labels have no flag that would ignore it, as ``iscrowd`` does in COCO). Untouched lines stay as written
(segments included).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from ..core.errors import fail
from ..core.io import atomic_write_text, read_json
from .data import label_path
from .retrain import pruned_data_file

__all__ = ["write_cleaned_labels"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_cleaned_labels(run: str | os.PathLike, changes_csv: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The YOLO files of the cleaned labels (module docstring) under ``out/yolo``; returns the cleaned data file."""
    run, out = Path(run), Path(out) / "yolo"
    images = {int(r["image_id"]): r["path"] for r in _rows(run / "yolo_images.csv")}
    where = {int(r["ann_id"]): (r["label_file"], int(r["line"])) for r in _rows(run / "yolo_objects.csv")}
    coco = read_json(run / "annotations.json", "annotations")
    size = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    root = Path(os.path.commonpath([str(Path(p).parent) for p in images.values()]))
    edits: dict[str, dict[int, str | None]] = {}  # label file -> {line: new text, None = removed}
    added: dict[int, list[str]] = {}  # image id -> new lines
    for c in _rows(Path(changes_csv)):
        ann = int(c["ann_id"])
        if c["change"] == "add":  # new: the added annotation's category and box
            w, h = size[int(c["image_id"])]
            new = json.loads(c["new"])
            x, y, bw, bh = new["bbox"]
            line = f"{new['category_id']} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}"
            added.setdefault(int(c["image_id"]), []).append(line)
            continue
        if ann not in where:
            raise fail(f"{changes_csv}: ann_id {ann} is not an object of {run / 'yolo_objects.csv'}")
        label, n = where[ann]
        lines = edits.setdefault(label, {})
        if c["change"] == "ignore":
            lines[n] = None
        else:  # relabel: the class token of the line
            tokens = Path(label).read_text(encoding="utf-8").splitlines()[n - 1].split()
            lines[n] = " ".join([c["new"], *tokens[1:]])
    listed = []
    for image_id, path in sorted(images.items()):
        image = out / "images" / _below_images(path, root)
        image.parent.mkdir(parents=True, exist_ok=True)
        if not image.exists():
            image.symlink_to(Path(path).resolve())
        listed.append(str(image))
        source = label_path(path)
        lines = Path(source).read_text(encoding="utf-8").splitlines() if os.path.isfile(source) else []
        changed = edits.get(source, {})
        kept = [changed.get(n, line) for n, line in enumerate(lines, 1)]
        kept = [line for line in kept if line is not None] + added.get(image_id, [])
        if kept:
            atomic_write_text(label_path(str(image)), "\n".join(kept) + "\n")
    train = atomic_write_text(out / "train.txt", "".join(f"{p}\n" for p in listed))
    return pruned_data_file(read_json(run / "meta.json", "run metadata")["data"], train, out, suffix="cleaned")


def _below_images(path: str, root: Path) -> Path:
    """The part of ``path`` below its last ``images/`` folder (Ultralytics' layout), else below ``root``."""
    marker = f"{os.sep}images{os.sep}"
    if marker in path:
        return Path(path.rsplit(marker, 1)[1])
    return Path(path).parent.relative_to(root) / Path(path).name
