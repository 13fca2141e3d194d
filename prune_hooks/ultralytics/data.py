"""A YOLO-format training set as the COCO file the core reads, with stable ids and the map back.

Ultralytics lists the training images (``data.yaml``'s ``train:``: a folder, a list of folders or a ``.txt`` of
paths) and finds each label file beside them (``images/`` → ``labels/``, ``.txt``). Each label line is an object:
``class x_center y_center width height`` (normalised), or ``class x1 y1 x2 y2 ...`` (a normalised polygon, for
``-seg`` data: its box is the polygon's extent, and the polygon becomes the COCO segmentation, so TFDP shape
scores work). Images are numbered 1..N in sorted path order and objects in (image, line) order, so the same
dataset gets the same ids in every run; ``yolo_objects.csv`` maps each annotation id back to its label file and
line, ``yolo_images.csv`` each image id to its path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ..core.errors import fail
from ..core.io import write_csv, write_json

__all__ = ["check_label_files", "label_path", "write_yolo_coco", "yolo_to_coco"]


def label_path(image: str) -> str:
    """Ultralytics' rule: the last ``/images/`` of the path becomes ``/labels/``, the suffix ``.txt``."""
    a, b = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return b.join(image.rsplit(a, 1)).rsplit(".", 1)[0] + ".txt"


def yolo_to_coco(
    images: Sequence[str], shapes: Sequence[tuple[int, int]], names: dict[int, str]
) -> tuple[dict[str, Any], list[tuple]]:
    """The COCO dict of ``images`` (paths; ``shapes``: (height, width) each) and their label files, and the rows of
    yolo_objects.csv (ann_id, image_id, label file, line). A malformed line or a class id outside ``names`` is one
    error naming the file, the line and the field; an image without a label file has no objects."""
    order = sorted(range(len(images)), key=lambda i: str(images[i]))
    coco: dict[str, Any] = {
        "info": {"description": "YOLO labels as COCO, written by prune_hooks"},
        "images": [],
        "annotations": [],
        "categories": [{"id": int(k), "name": str(v)} for k, v in sorted(names.items())],
    }
    rows: list[tuple] = []
    for image_id, i in enumerate(order, 1):
        path, (h, w) = str(images[i]), shapes[i]
        coco["images"].append({"id": image_id, "file_name": path, "height": int(h), "width": int(w)})
        labels = label_path(path)
        if not os.path.isfile(labels):
            continue  # Ultralytics' background image: valid, no objects
        with open(labels, encoding="utf-8") as f:
            lines = f.read().splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            ann = _annotation(line, labels, n, names, int(w), int(h))
            ann.update(id=len(coco["annotations"]) + 1, image_id=image_id)
            coco["annotations"].append(ann)
            rows.append((ann["id"], image_id, labels, n))
    return coco, rows


def check_label_files(images: Sequence[str], names: dict[int, str]) -> None:
    """Refuse, in one line naming the file, the line and the field, the first bad label of ``images``' label files
    (Ultralytics drops such an image from training with a warning; a pruning run would silently lose it)."""
    for image in images:
        labels = label_path(str(image))
        if os.path.isfile(labels):
            with open(labels, encoding="utf-8") as f:
                for n, line in enumerate(f.read().splitlines(), 1):
                    if line.strip():
                        _annotation(line, labels, n, names, 1, 1)


def _annotation(line: str, where: str, n: int, names: dict[int, str], w: int, h: int) -> dict[str, Any]:
    parts = line.split()
    try:
        cls, values = int(parts[0]), [float(v) for v in parts[1:]]
    except (ValueError, IndexError):
        raise fail(f"{where}:{n}: a label line is 'class x y w h' (or 'class x1 y1 x2 y2 ...'), got {line!r}") from None
    if cls not in names:
        raise fail(f"{where}:{n}: class {cls} is not in the data file's names (0..{len(names) - 1})")
    if len(values) == 4:
        xc, yc, bw, bh = values
        polygon = None
    elif len(values) >= 6 and len(values) % 2 == 0:
        xs, ys = values[0::2], values[1::2]
        xc, yc = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
        bw, bh = max(xs) - min(xs), max(ys) - min(ys)
        polygon = [v * (w if k % 2 == 0 else h) for k, v in enumerate(values)]
    else:
        raise fail(f"{where}:{n}: expected 4 box values or an even number >= 6 of polygon values, got {len(values)}")
    if not all(0 <= v <= 1 for v in values) or bw <= 0 or bh <= 0:
        raise fail(f"{where}:{n}: coordinates must be normalised to [0, 1] with width and height > 0, got {values}")
    box = [(xc - bw / 2) * w, (yc - bh / 2) * h, bw * w, bh * h]
    ann = {"category_id": cls, "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
    if polygon is not None:
        ann["segmentation"] = [polygon]
    return ann


def write_yolo_coco(out: Path, images: Sequence[str], shapes: Sequence[tuple[int, int]], names: dict[int, str]) -> Path:
    """``out/annotations.json``, ``out/yolo_images.csv`` and ``out/yolo_objects.csv``; returns the json's path."""
    coco, rows = yolo_to_coco(images, shapes, names)
    path = write_json(out / "annotations.json", coco, indent=None)
    write_csv(out / "yolo_images.csv", ("image_id", "path"), ((im["id"], im["file_name"]) for im in coco["images"]))
    write_csv(out / "yolo_objects.csv", ("ann_id", "image_id", "label_file", "line"), rows)
    return path
