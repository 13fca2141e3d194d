"""COCO results files (detections of a scoring pass), checked against the annotation file's index."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import PruneHooksError
from ...io import read_json
from .index import CocoIndex, check_bbox, is_int, is_number

__all__ = ["Detections", "load_detections"]

logger = logging.getLogger("prune_hooks")


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
            if not is_int(iid) or int(iid) not in pos:
                raise PruneHooksError(f"{src}: [{k}].image_id {iid!r} is not an image of the annotation file")
            if not is_int(cid) or int(cid) not in cats:
                raise PruneHooksError(f"{src}: [{k}].category_id {cid!r} is not a category of the annotation file")
            if not is_number(score) or not math.isfinite(float(score)):
                raise PruneHooksError(f"{src}: [{k}].score must be a finite number, got {score!r}")
            if not 0 <= score <= 1:  # VPS_conf averages confidences: a logit or a percentage is not one
                raise PruneHooksError(f"{src}: [{k}].score must be a confidence in [0, 1], got {score!r}")
            x, y, w, h = check_bbox(f"{src}: [{k}]", det.get("bbox"))
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
