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

from ..data.coco import CocoIndex
from ..errors import PruneHooksError
from ..io import no_gc, progress

__all__ = ["SHAPE_COLUMNS", "ShapeScores", "contour_shape", "instance_shape", "shape_scores"]

logger = logging.getLogger("prune_hooks")

SHAPE_COLUMNS = ("scs", "si_scs", "cb_scs")


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise PruneHooksError(
            'shape scores need OpenCV, which is not installed: pip install "prune-hooks[shape]"'
        ) from e
    return cv2


def contour_shape(mask: np.ndarray) -> tuple[float, float]:
    """(area, perimeter) of the largest external contour of a binary ``mask`` ndarray[H, W] uint8.

    Largest by ``cv2.contourArea``, the first one on ties; (0, 0) without a contour."""
    cv2 = _cv2()
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 0.0, 0.0
    if len(contours) == 1:
        best, area = contours[0], cv2.contourArea(contours[0])
    else:
        areas = [cv2.contourArea(c) for c in contours]
        k = max(range(len(areas)), key=areas.__getitem__)  # the first of equal maxima
        best, area = contours[k], areas[k]
    return float(area), float(cv2.arcLength(best, True))


def _polygon_shape(polys: list[np.ndarray], height: int, width: int) -> tuple[float, float]:
    """(area, perimeter) of an instance's polygons (int32 arrays [n, 2] of truncated vertices),
    rasterized in the smallest window holding them on the image, with one pixel of zero margin where
    the image allows it."""
    cv2 = _cv2()
    if not polys:
        return 0.0, 0.0  # a segmentation without a vertex: degenerate, score 0
    bx, by, bw, bh = cv2.boundingRect(polys[0] if len(polys) == 1 else np.concatenate(polys))
    x0, y0 = max(bx - 1, 0), max(by - 1, 0)
    x1, y1 = min(bx + bw, width - 1), min(by + bh, height - 1)
    if x0 > x1 or y0 > y1:
        return 0.0, 0.0  # entirely off the image
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    for q in polys:  # one fill each: parts that overlap are a union, as in COCO (not fillPoly's even-odd)
        cv2.fillPoly(mask, [q], 1, offset=(-x0, -y0))
    return contour_shape(mask)


def _truncated(polygon: list) -> list:
    """A polygon's coordinates without an odd trailing one."""
    return polygon if len(polygon) % 2 == 0 else polygon[:-1]


def instance_shape(segmentation: Any, height: int, width: int) -> tuple[float, float] | None:
    """(area, perimeter) of one instance's segmentation (polygons or RLE); None when it has none.

    Polygon vertices are truncated to integers (``astype(int32)``) and all polygons of the instance
    filled into one mask (their union); RLE (compressed or counts list) is decoded with pycocotools."""
    if isinstance(segmentation, list):
        polys = [np.array(_truncated(p), dtype=np.float64).reshape(-1, 2).astype(np.int32) for p in segmentation]
        return _polygon_shape([q for q in polys if len(q)], height, width)
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


class _Packed:
    """Every polygon vertex of the scored instances in one int32 array (truncated like
    ``astype(int32)``), built once in the parent: workers then slice arrays instead of touching
    millions of Python floats (which, after a fork, would copy every page they sit on)."""

    def __init__(self, segs: list[Any], sizes: np.ndarray) -> None:
        import itertools

        poly_lists: list[list] = []
        self.first_poly = np.zeros(len(segs) + 1, dtype=np.int64)  # instance i: polygons first[i]:first[i+1]
        self.other: dict[int, Any] = {}  # RLE instances and instances without a segmentation
        for i, seg in enumerate(segs):
            if isinstance(seg, list):
                poly_lists.extend(_truncated(p) for p in seg)
            else:
                self.other[i] = seg
            self.first_poly[i + 1] = len(poly_lists)
        lengths = np.fromiter((len(p) for p in poly_lists), dtype=np.int64, count=len(poly_lists))
        self.offsets = np.concatenate([[0], np.cumsum(lengths // 2)])  # polygon j: vertices offsets[j]:offsets[j+1]
        flat = np.fromiter(itertools.chain.from_iterable(poly_lists), dtype=np.float64, count=int(lengths.sum()))
        self.xy = flat.astype(np.int32).reshape(-1, 2)
        self.sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.sizes)

    def score(self, a: int, b: int) -> np.ndarray:
        """[scs, si_scs] of instances a:b; NaN rows for instances without a segmentation."""
        out = np.full((b - a, 2), np.nan)
        xy = self.xy
        # plain lists: indexing numpy arrays one element at a time costs more than the work per instance
        off = self.offsets[self.first_poly[a] : self.first_poly[b] + 1].tolist()
        first = (self.first_poly[a : b + 1] - self.first_poly[a]).tolist()
        sizes = self.sizes[a:b].tolist()
        with no_gc():  # in workers too
            for k in range(b - a):
                h, w = sizes[k]
                if a + k in self.other:
                    shape = instance_shape(self.other[a + k], h, w)
                    if shape is None:
                        continue
                else:
                    j0, j1 = first[k], first[k + 1]
                    if j1 - j0 == 1:
                        s, e = off[j0], off[j0 + 1]
                        polys = [xy[s:e]] if e > s else []
                    else:
                        polys = [xy[off[j] : off[j + 1]] for j in range(j0, j1) if off[j + 1] > off[j]]
                    shape = _polygon_shape(polys, h, w)
                out[k] = _scores(*shape)
        return out


class ShapeScores:
    """Per-object shape scores of a :class:`~prune_hooks.core.data.coco.CocoIndex`, ndarray[N] each in
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
    with no_gc():  # ~1M small objects made beside a parsed file of millions: the collector would rescan it
        return _shape_scores(index, workers)


def _shape_scores(index: CocoIndex, workers: int | None) -> ShapeScores:
    images = index.images
    segs = [seg or None for seg in index.object_values("segmentation")]
    hw = np.array([(int(im.get("height", 0) or 0), int(im.get("width", 0) or 0)) for im in images], dtype=np.int64)
    pos = np.repeat(np.arange(index.num_images), np.diff(index.offsets))  # each object's image position
    sizes = hw.reshape(-1, 2)[pos]
    if index.num_objects and all(s is None for s in segs):
        raise PruneHooksError(
            f"{index.path}: shape scores need instance masks, but no annotation has a 'segmentation' "
            "(box-only data); use a score from training (vps_iou, csod, ...) instead"
        )
    for k in np.flatnonzero((sizes <= 0).any(axis=1)).tolist():
        if segs[k] is not None:
            raise PruneHooksError(
                f"{index.path}: image {int(index.obj_image_ids[k])} needs 'height' and 'width' > 0 to rasterize its "
                "masks"
            )
    raw = _run(_Packed(segs, sizes), workers)
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


def _run(packed: _Packed, workers: int | None) -> np.ndarray:
    n = len(packed)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # a pool costs a fork and a merge; below a few thousand instances one process is faster
    if workers <= 1 or n < 4000:
        return packed.score(0, n)
    import multiprocessing as mp

    global _SHARED
    _SHARED = packed
    bounds = np.linspace(0, n, workers * 16 + 1).astype(int)
    ranges = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
    try:
        with mp.get_context("fork").Pool(workers) as pool:
            parts = list(progress(pool.imap(_score_range, ranges), desc="shape", unit="part", total=len(ranges)))
    finally:
        _SHARED = None
    return np.concatenate(parts)


_SHARED: _Packed | None = None


def _score_range(bounds: tuple[int, int]) -> np.ndarray:
    return _SHARED.score(*bounds)
