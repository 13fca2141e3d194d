"""TFDP shape complexity: training-free object scores from instance masks (docs/methods.md, "Shape complexity").

Per non-crowd instance with a segmentation: its mask, the largest external contour, and from it

    scs    = perimeter / area
    si_scs = perimeter / (2 * sqrt(pi * area))          (1 for a disc, whatever its size)
    cb_scs = si_scs / sum of si_scs over the instances of its class in the file

area = ``cv2.contourArea`` of the contour (not the pixel count), perimeter = ``cv2.arcLength`` (closed).
Image score = sum over its instances. No training, no model: a COCO-sized file scores in seconds.

Polygons are rasterized inside the instance's own box (its truncated vertices' extent, one pixel of
margin, clipped to the image), not on a full-image canvas: the contour is the same as on the full
image (tested at the image borders), at a cost proportional to the instance's size.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import numpy as np

from .coco import CocoIndex
from .errors import PruneHooksError

__all__ = ["SHAPE_COLUMNS", "ShapeScores", "contour_shape", "instance_shape", "shape_scores"]

logger = logging.getLogger("prune_hooks")

SHAPE_COLUMNS = ("scs", "si_scs", "cb_scs")


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            'shape scores need OpenCV: pip install opencv-python-headless (or "prune-hooks[shape]")'
        ) from e
    return cv2


def contour_shape(mask: np.ndarray) -> tuple[float, float]:
    """(area, perimeter) of the largest external contour of a binary ``mask`` ndarray[H, W] uint8.

    Largest by ``cv2.contourArea``, the first one on ties; (0, 0) without a contour."""
    cv2 = _cv2()
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 0.0, 0.0
    best, best_area = contours[0], cv2.contourArea(contours[0])
    for c in contours[1:]:
        a = cv2.contourArea(c)
        if a > best_area:
            best, best_area = c, a
    return float(best_area), float(cv2.arcLength(best, True))


def _polygon_mask(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray | None:
    """The instance's polygons filled into the smallest window that holds them on the image, with one
    pixel of zero margin where the image allows it; None when nothing falls on the image."""
    cv2 = _cv2()
    pts = np.concatenate(polygons)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    x0, y0 = max(int(x0) - 1, 0), max(int(y0) - 1, 0)
    x1, y1 = min(int(x1) + 1, width - 1), min(int(y1) + 1, height - 1)
    if x0 > x1 or y0 > y1:
        return None
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    origin = np.array([x0, y0], dtype=np.int32)
    for p in polygons:  # one fill each: parts that overlap are a union, as in COCO (not fillPoly's even-odd)
        cv2.fillPoly(mask, [p - origin], 1)
    return mask


def instance_shape(segmentation: Any, height: int, width: int) -> tuple[float, float] | None:
    """(area, perimeter) of one instance's segmentation (polygons or RLE); None when it has none.

    Polygon vertices are truncated to integers (``astype(int32)``) and all polygons of the instance
    filled into one mask (their union); RLE (compressed or counts list) is decoded with pycocotools."""
    if isinstance(segmentation, list):
        polys = [np.asarray(p, dtype=np.float64) for p in segmentation if len(p) >= 2]
        polys = [p[: len(p) // 2 * 2].reshape(-1, 2).astype(np.int32) for p in polys]
        if not polys:
            return 0.0, 0.0  # a segmentation without a vertex: degenerate, score 0
        mask = _polygon_mask(polys, height, width)
        return (0.0, 0.0) if mask is None else contour_shape(mask)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        from pycocotools import mask as mask_utils

        rle = segmentation
        if isinstance(rle["counts"], list):
            h, w = rle.get("size", (height, width))
            rle = mask_utils.frPyObjects(rle, h, w)
        return contour_shape(np.ascontiguousarray(mask_utils.decode(rle)))
    return None


def _scores(area: float, perimeter: float) -> tuple[float, float]:
    if area <= 0:
        return 0.0, 0.0
    return perimeter / area, perimeter / (2.0 * math.sqrt(math.pi * area))


def _score_rows(args: tuple[list[Any], list[tuple[int, int]]]) -> np.ndarray:
    segmentations, sizes = args
    out = np.full((len(segmentations), 2), np.nan)
    for k, (seg, (h, w)) in enumerate(zip(segmentations, sizes)):
        shape = instance_shape(seg, h, w)
        if shape is not None:
            out[k] = _scores(*shape)
    return out


class ShapeScores:
    """Per-object shape scores of a :class:`~prune_hooks.core.coco.CocoIndex`, ndarray[N] each in
    object order (NaN: the object has no segmentation), and the counts the report and meta quote."""

    def __init__(self, scs: np.ndarray, si_scs: np.ndarray, cb_scs: np.ndarray) -> None:
        self.scs, self.si_scs, self.cb_scs = scs, si_scs, cb_scs

    @property
    def columns(self) -> dict[str, np.ndarray]:
        return {"scs": self.scs, "si_scs": self.si_scs, "cb_scs": self.cb_scs}

    @property
    def num_scored(self) -> int:
        return int(np.isfinite(self.scs).sum())

    @property
    def num_without_mask(self) -> int:
        return int(np.isnan(self.scs).sum())

    @property
    def num_degenerate(self) -> int:
        return int((self.scs == 0).sum())

    def meta(self) -> dict[str, int]:
        return {
            "shape_scored": self.num_scored,
            "shape_without_mask": self.num_without_mask,
            "shape_degenerate": self.num_degenerate,
        }


def shape_scores(index: CocoIndex, workers: int | None = None) -> ShapeScores:
    """Shape scores of every object of ``index``.

    Args:
        workers: processes (default: the CPUs this process may use; 1 = in this process). Workers are
            forked and read the already-parsed file, so nothing large is sent to them.

    Raises:
        PruneHooksError: when no object has a segmentation (box-only data: shape scores need masks).
    """
    anns = index.dataset["annotations"]
    by_id = {int(a["id"]): a for a in anns}
    images = {int(im["id"]): im for im in index.dataset["images"]}
    segs, sizes = [], []
    for aid, iid in zip(index.ann_ids.tolist(), index.obj_image_ids.tolist()):
        seg = by_id[aid].get("segmentation")
        im = images[iid]
        segs.append(seg if seg else None)
        sizes.append((int(im.get("height", 0) or 0), int(im.get("width", 0) or 0)))
    if index.num_objects and all(s is None for s in segs):
        raise PruneHooksError(
            f"{index.path}: shape scores need instance masks, but no annotation has a 'segmentation' "
            "(box-only data); use a score from training (vps_iou, csod, ...) instead"
        )
    for k, (seg, (h, w)) in enumerate(zip(segs, sizes)):
        if seg is not None and (h <= 0 or w <= 0):
            raise PruneHooksError(
                f"{index.path}: image {int(index.obj_image_ids[k])} needs 'height' and 'width' > 0 to rasterize its "
                "masks"
            )
    raw = _run(segs, sizes, workers)
    scs, si = raw[:, 0].copy(), raw[:, 1].copy()
    cb = np.full_like(si, np.nan)
    for c in np.unique(index.obj_category_ids):
        rows = (index.obj_category_ids == c) & ~np.isnan(si)
        total = si[rows].sum()
        cb[rows] = si[rows] / total if total > 0 else 0.0
    result = ShapeScores(scs, si, cb)
    if result.num_without_mask:
        logger.warning(
            "%d of %d objects have no segmentation: they get no shape score", result.num_without_mask, index.num_objects
        )
    return result


def _run(segs: list[Any], sizes: list[tuple[int, int]], workers: int | None) -> np.ndarray:
    n = len(segs)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # a pool costs a fork and a merge; below a few thousand instances one process is faster
    if workers <= 1 or n < 4000:
        return _score_rows((segs, sizes)) if n else np.zeros((0, 2))
    import multiprocessing as mp

    global _SHARED
    _SHARED = (segs, sizes)
    bounds = np.linspace(0, n, workers * 4 + 1).astype(int)
    try:
        with mp.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_score_range, list(zip(bounds[:-1], bounds[1:])))
    finally:
        _SHARED = None
    return np.concatenate(parts)


_SHARED: tuple[list[Any], list[tuple[int, int]]] | None = None


def _score_range(bounds: tuple[int, int]) -> np.ndarray:
    a, b = bounds
    segs, sizes = _SHARED
    return _score_rows((segs[a:b], sizes[a:b]))
