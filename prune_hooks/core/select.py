"""Every selection method, from a run directory: one entry point for the CLI and the hooks.

    method          needs (in the run directory)         rank
    vps_iou/conf    images.csv                           highest image VPS first (SPEC.md)
    forgetting      images.csv (objects' forget events)  never-learned objects first, then most events
    entropy         images.csv + soft_labels.npz         highest soft-label entropy first
    csod            prototypes.npz                       CSOD greedy pick order (core.csod)
    kcenter/herding prototypes.npz                       greedy order on image features
    random*         nothing                              seeded

Image features (kcenter, herding): the mean of the image's unit-normalized prototypes. Images a
method cannot rank (no objects, no prototypes) come after the ranked ones, in ascending id order.
"""
from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .coco import CocoIndex
from .csod import csod_select
from .errors import PruneHooksError
from .io import atomic_write_bytes
from .prototypes import load_prototypes
from .rundir import read_images_csv, write_subset, write_vps_run
from .scores import AGGREGATIONS, rank_images
from .selection import herding, keep_count, kcenter_greedy, random_order, random_per_class, subset_record

__all__ = ["METHODS", "SCORE_METHODS", "DEFAULT_LAMBDA", "RunInputs", "select", "write_hook_run"]

logger = logging.getLogger("prune_hooks")

SCORE_METHODS = ("vps_iou", "vps_conf", "forgetting", "entropy")
FEATURE_METHODS = ("csod", "kcenter", "herding")
RANDOM_METHODS = ("random", "random_uniform", "random_ratio")
METHODS = SCORE_METHODS + FEATURE_METHODS + RANDOM_METHODS
# The CSOD paper tunes lambda per budget (VOC: 0.0125 to 0.0625); this is the middle of that range.
DEFAULT_LAMBDA = 0.05


class RunInputs:
    """What the methods read from a run directory, each file loaded once (``--method all`` reuses it)."""

    def __init__(self, run: str | os.PathLike | None, index: CocoIndex) -> None:
        self.run = Path(run) if run is not None else None
        self.index = index
        self._cache: dict[str, Any] = {}

    def _file(self, name: str, what: str) -> Path:
        if self.run is None or not (self.run / name).is_file():
            raise PruneHooksError(f"{what} needs {name}, not found in {self.run}")
        return self.run / name

    def image_scores(self, method: str) -> dict[str, np.ndarray]:
        if "images" not in self._cache:
            table = read_images_csv(self._file("images.csv", f"method {method}").parent)
            if not np.array_equal(np.sort(table["image_id"]), np.sort(self.index.image_ids)):
                raise PruneHooksError(f"image ids of {self.run}/images.csv do not match the images of {self.index.path}")
            self._cache["images"] = table
        return self._cache["images"]

    def prototypes(self, method: str) -> dict[str, np.ndarray]:
        if "prototypes" not in self._cache:
            self._cache["prototypes"] = load_prototypes(self._file("prototypes.npz", f"method {method}"), self.index)
        return self._cache["prototypes"]

    def suspect_images(self) -> np.ndarray:
        path = self._file("suspects.csv", "--drop-mislabeled")
        with open(path, newline="", encoding="utf-8") as f:
            return np.array(sorted({int(r["image_id"]) for r in csv.DictReader(f)}), dtype=np.int64)


def _complete(ranked: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    rest = np.setdiff1d(np.asarray(image_ids, dtype=np.int64), ranked)
    return np.concatenate([np.asarray(ranked, dtype=np.int64), rest])


def _image_features(protos: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ids, inverse = np.unique(protos["image_id"], return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    unit = protos["feature"][order]
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    starts = np.searchsorted(inverse[order], np.arange(len(ids)))
    sums = np.add.reduceat(unit, starts, axis=0, dtype=np.float64)
    return ids, (sums / np.bincount(inverse)[:, None]).astype(np.float32)


def select(
    method: str,
    inputs: RunInputs,
    n_keep: int,
    keep_ratio: float,
    aggregation: str = "max",
    seed: int | None = None,
    lam: float = DEFAULT_LAMBDA,
    drop_mislabeled: bool = False,
) -> dict[str, Any]:
    """The subset.json record of ``method`` keeping ``n_keep`` images (best first)."""
    index = inputs.index
    extra: dict[str, Any] = {}
    if method not in METHODS:
        raise PruneHooksError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method in SCORE_METHODS:
        if aggregation not in AGGREGATIONS:
            raise PruneHooksError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
        table = inputs.image_scores(method)
        column = table.get(f"{method}_{aggregation}")
        if column is None:
            raise PruneHooksError(f"{inputs.run}/images.csv has no column {method}_{aggregation}")
        if method == "entropy" and np.isnan(column).all():
            raise PruneHooksError(f"method entropy needs soft labels: {inputs.run} has none (the hooks record them; detections alone do not)")
        ranked = rank_images(table["image_id"], column)
    else:
        aggregation = None
        if method in FEATURE_METHODS:
            protos = inputs.prototypes(method)
            if method == "csod":
                res = csod_select(protos["image_id"], protos["category_id"], protos["feature"], n_keep, lam, all_image_ids=index.image_ids)
                ranked = res.image_ids
                extra = {"lambda": lam, "csod_greedy_images": res.n_greedy}
            else:
                seed = 0 if seed is None else seed
                ids, feats = _image_features(protos)
                k = min(n_keep, len(ids))
                rows = kcenter_greedy(feats, k, seed) if method == "kcenter" else herding(feats, k)
                ranked = ids[rows]
        else:
            seed = 0 if seed is None else seed
            if method == "random":
                ranked = random_order(index.image_ids, seed)
            else:
                ranked = random_per_class(index.image_ids, index.obj_image_ids, index.obj_category_ids, n_keep, seed, proportional=method == "random_ratio")
        if method == "herding":
            seed = None
        ranked = _complete(ranked, index.image_ids)
    if drop_mislabeled:
        bad = inputs.suspect_images()
        ranked = np.concatenate([ranked[~np.isin(ranked, bad)], ranked[np.isin(ranked, bad)]])
        extra["dropped_suspect_images"] = int(len(bad))
        if len(ranked) - len(bad) < n_keep:
            logger.warning("--drop-mislabeled: only %d images without suspects for %d kept", len(ranked) - len(bad), n_keep)
    record = subset_record(method, aggregation, keep_ratio, index.num_images, seed, ranked[:n_keep])
    record.update(extra)
    return record


def write_hook_run(
    run: Path,
    capture: Any,
    framework: str,
    extra_meta: dict[str, Any],
    method: str,
    keep_ratio: float,
    aggregation: str,
) -> tuple[dict[str, Any], Path, int]:
    """What every hook writes when training ends: the run files, ``state.pt``, the subset of
    ``method`` at ``keep_ratio`` and its pruned COCO file. Returns (subset record, pruned file, kept)."""
    index = capture.index
    write_vps_run(run, index, capture.acc, framework=framework, soft=capture.soft, extra_meta=extra_meta)
    buf = io.BytesIO()
    torch.save(capture.state_dict(), buf)
    atomic_write_bytes(Path(run) / "state.pt", buf.getvalue())
    n_keep, ratio = keep_count(index.num_images, keep=keep_ratio)
    subset = select(method, RunInputs(run, index), n_keep, ratio, aggregation=aggregation)
    _, pruned = write_subset(run, subset, index)
    return subset, pruned, n_keep
