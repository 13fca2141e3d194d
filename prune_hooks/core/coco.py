"""COCO annotation and detection-result files: validation, the object table, the pruned file."""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .errors import PruneHooksError
from .io import no_gc, read_json, write_json

__all__ = ["CocoIndex", "Detections", "load_coco", "load_detections", "write_pruned_coco", "sha256_file"]

logger = logging.getLogger("prune_hooks")


def _is_int(v: Any) -> bool:
    return type(v) is int or (isinstance(v, (int, np.integer)) and not isinstance(v, bool))


_PLAIN = (int, float)  # exact types: bool is neither
_finite = math.isfinite


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _check_bbox(where: str, bbox: Any) -> tuple[float, float, float, float]:
    if type(bbox) is list and len(bbox) == 4:  # the usual case, checked fast (COCO files hold ~1M boxes)
        x, y, w, h = bbox
        if type(x) in _PLAIN and type(y) in _PLAIN and type(w) in _PLAIN and type(h) in _PLAIN:
            x, y, w, h = float(x), float(y), float(w), float(h)
            if _finite(x) and _finite(y) and _finite(w) and _finite(h):
                return x, y, w, h
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise PruneHooksError(f"{where}: bbox must be [x, y, width, height] numbers, got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise PruneHooksError(f"{where}: bbox values must be finite, got {list(bbox)}")
    return x, y, w, h


@dataclass
class CocoIndex:
    """A validated COCO instances file as arrays.

    Objects are the non-crowd boxes, grouped by image in the file's image order and, within an
    image, in annotation file order; ``offsets`` delimits them: objects of ``image_ids[i]`` are rows
    ``offsets[i]:offsets[i + 1]``.

    Attributes:
        dataset: the parsed JSON (unchanged).
        image_ids: ndarray[I] int64, file order.
        category_ids: ndarray[C] int64, ascending.
        ann_ids, obj_image_ids, obj_category_ids: ndarray[N] int64.
        obj_boxes: ndarray[N, 4] float64, xyxy.
        obj_rows: ndarray[N] int64, each object's position in ``dataset["annotations"]``.
        offsets: ndarray[I + 1] int64.
    """

    path: str | None
    dataset: dict
    image_ids: np.ndarray
    category_ids: np.ndarray
    ann_ids: np.ndarray
    obj_image_ids: np.ndarray
    obj_category_ids: np.ndarray
    obj_boxes: np.ndarray
    offsets: np.ndarray
    obj_rows: np.ndarray

    @property
    def num_images(self) -> int:
        return int(self.image_ids.shape[0])

    @property
    def num_objects(self) -> int:
        return int(self.ann_ids.shape[0])

    @property
    def categories(self) -> list[dict]:
        return [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in self.dataset["categories"]]

    def image_position(self) -> dict[int, int]:
        return {int(i): p for p, i in enumerate(self.image_ids)}

    def objects_per_image(self) -> np.ndarray:
        """ndarray[I] int64, non-crowd objects of each image."""
        return np.diff(self.offsets)

    @classmethod
    def from_dataset(cls, dataset: Any, path: str | None = None) -> CocoIndex:
        src = path or "annotations"
        if not isinstance(dataset, dict):
            raise PruneHooksError(f"{src}: not a COCO file: top level must be an object, got {type(dataset).__name__}")
        for key in ("images", "annotations", "categories"):
            if key not in dataset:
                raise PruneHooksError(f"{src}: not a COCO file: missing '{key}'")
            if not isinstance(dataset[key], list):
                raise PruneHooksError(f"{src}: '{key}' must be a list, got {type(dataset[key]).__name__}")

        image_ids: list[int] = []
        seen: set[int] = set()
        for k, img in enumerate(dataset["images"]):
            iid = img.get("id") if isinstance(img, dict) else None
            if not _is_int(iid):
                raise PruneHooksError(f"{src}: images[{k}].id must be an integer, got {iid!r}")
            if iid in seen:
                raise PruneHooksError(f"{src}: images[{k}].id {iid} is a duplicate image id")
            seen.add(int(iid))
            image_ids.append(int(iid))

        cat_ids: set[int] = set()
        for k, cat in enumerate(dataset["categories"]):
            cid = cat.get("id") if isinstance(cat, dict) else None
            if not _is_int(cid):
                raise PruneHooksError(f"{src}: categories[{k}].id must be an integer, got {cid!r}")
            if cid in cat_ids:
                raise PruneHooksError(f"{src}: categories[{k}].id {cid} is a duplicate category id")
            cat_ids.add(int(cid))

        pos = {iid: p for p, iid in enumerate(image_ids)}
        ann_seen: set[int] = set()
        rows: list[tuple[int, int, int, int, float, float, float, float]] = []
        for k, ann in enumerate(dataset["annotations"]):
            if not isinstance(ann, dict):
                raise PruneHooksError(f"{src}: annotations[{k}] must be an object, got {type(ann).__name__}")
            aid = ann.get("id")
            if not _is_int(aid):
                raise PruneHooksError(f"{src}: annotations[{k}].id must be an integer, got {aid!r}")
            where = f"{src}: annotations[{k}] (id {aid})"
            if aid in ann_seen:
                raise PruneHooksError(f"{where}: duplicate annotation id")
            ann_seen.add(int(aid))
            iid, cid = ann.get("image_id"), ann.get("category_id")
            if not _is_int(iid) or int(iid) not in pos:
                raise PruneHooksError(f"{where}: image_id {iid!r} is not in 'images'")
            if not _is_int(cid) or int(cid) not in cat_ids:
                raise PruneHooksError(f"{where}: category_id {cid!r} is not in 'categories'")
            x, y, w, h = _check_bbox(where, ann.get("bbox"))
            crowd = ann.get("iscrowd", 0)
            if crowd not in (0, 1, False, True):
                raise PruneHooksError(f"{where}: iscrowd must be 0 or 1, got {crowd!r}")
            if crowd:
                continue  # crowd regions are never objects (docs/methods.md, "Words"); the pruned file keeps them
            if w <= 0 or h <= 0:
                raise PruneHooksError(f"{where}: bbox width and height must be > 0, got width {w} height {h}")
            rows.append((pos[int(iid)], k, int(aid), int(cid), x, y, x + w, y + h))

        rows.sort(key=lambda r: (r[0], r[1]))
        n = len(rows)
        arr = np.array([r[:4] for r in rows], dtype=np.int64).reshape(n, 4)
        boxes = np.array([r[4:] for r in rows], dtype=np.float64).reshape(n, 4)
        img_arr = np.array(image_ids, dtype=np.int64)
        counts = np.bincount(arr[:, 0], minlength=len(image_ids)) if n else np.zeros(len(image_ids), np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(
            path=path,
            dataset=dataset,
            image_ids=img_arr,
            category_ids=np.array(sorted(cat_ids), dtype=np.int64),
            ann_ids=arr[:, 2].copy(),
            obj_image_ids=img_arr[arr[:, 0]] if n else np.zeros(0, np.int64),
            obj_category_ids=arr[:, 3].copy(),
            obj_boxes=boxes,
            offsets=offsets,
            obj_rows=arr[:, 1].copy() if n else np.zeros(0, np.int64),
        )


def load_coco(path: str | os.PathLike) -> CocoIndex:
    """Read and validate a COCO instances file; every problem is a PruneHooksError naming the field."""
    path = str(path)
    dataset = read_json(path, "annotation file")
    with no_gc():
        return CocoIndex.from_dataset(dataset, path=path)


@dataclass
class Detections:
    """Detections of one scoring pass, grouped like the ``CocoIndex`` they were checked against.

    Detections of ``index.image_ids[i]`` are rows ``offsets[i]:offsets[i + 1]`` of
    ``boxes`` ndarray[M, 4] (xyxy float64), ``scores`` ndarray[M], ``category_ids`` ndarray[M] int64.
    """

    boxes: np.ndarray
    scores: np.ndarray
    category_ids: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_results(cls, results: Any, index: CocoIndex, src: str = "detections") -> Detections:
        """Validate COCO results (``[{image_id, category_id, bbox: [x, y, w, h], score}, ...]``).

        Zero-width or zero-height boxes are skipped with a warning (some detectors emit them for
        degenerate proposals); everything else that is malformed raises.
        """
        if not isinstance(results, list):
            raise PruneHooksError(f"{src}: COCO results must be a list of detections, got {type(results).__name__}")
        pos = index.image_position()
        cats = set(index.category_ids.tolist())
        rows: list[tuple[int, int, float, float, float, float, float, int]] = []
        skipped = 0
        for k, det in enumerate(results):
            if not isinstance(det, dict):
                raise PruneHooksError(f"{src}: [{k}] must be an object, got {type(det).__name__}")
            iid, cid, score = det.get("image_id"), det.get("category_id"), det.get("score")
            if not _is_int(iid) or int(iid) not in pos:
                raise PruneHooksError(f"{src}: [{k}].image_id {iid!r} is not an image of the annotation file")
            if not _is_int(cid) or int(cid) not in cats:
                raise PruneHooksError(f"{src}: [{k}].category_id {cid!r} is not a category of the annotation file")
            if not _is_number(score) or not math.isfinite(float(score)):
                raise PruneHooksError(f"{src}: [{k}].score must be a finite number, got {score!r}")
            x, y, w, h = _check_bbox(f"{src}: [{k}]", det.get("bbox"))
            if w < 0 or h < 0:
                raise PruneHooksError(f"{src}: [{k}]: bbox width and height must be >= 0, got width {w} height {h}")
            if w == 0 or h == 0:
                skipped += 1
                continue
            rows.append((pos[int(iid)], k, x, y, x + w, y + h, float(score), int(cid)))
        if skipped:
            logger.warning("%s: skipped %d zero-area detection box(es)", src, skipped)
        rows.sort(key=lambda r: (r[0], r[1]))
        m = len(rows)
        data = np.array([r[2:7] for r in rows], dtype=np.float64).reshape(m, 5)
        where = np.array([r[0] for r in rows], dtype=np.int64)
        counts = np.bincount(where, minlength=index.num_images) if m else np.zeros(index.num_images, np.int64)
        return cls(
            boxes=data[:, :4].copy(),
            scores=data[:, 4].copy(),
            category_ids=np.array([r[7] for r in rows], dtype=np.int64),
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        )


def load_detections(path: str | os.PathLike, index: CocoIndex) -> Detections:
    return Detections.from_results(read_json(path, "detections file"), index, src=str(path))


def write_pruned_coco(dataset: dict, keep_image_ids: Iterable[int], path: str | os.PathLike) -> Path:
    """Write the COCO file restricted to ``keep_image_ids``.

    Kept: those images (file order), all their annotations (crowd regions included), every category,
    and every other top-level key (``info``, ``licenses``, ...) unchanged.
    """
    keep = {int(i) for i in keep_image_ids}
    out = {k: v for k, v in dataset.items() if k not in ("images", "annotations")}
    out["images"] = [img for img in dataset["images"] if int(img["id"]) in keep]
    out["annotations"] = [a for a in dataset["annotations"] if int(a["image_id"]) in keep]
    # Same key order as the source file, for people who diff the two.
    ordered = {k: out[k] for k in dataset}
    return write_json(path, ordered, indent=None)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
