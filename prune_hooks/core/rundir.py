"""The run directory: the files every producer (CLI, hooks) writes and every consumer reads.

    RUN/meta.json      framework, annotation file + sha256, categories, passes, version, time
    RUN/objects.csv    ann_id,image_id,category_id,passes,iou_mean,iou_std,conf_mean,conf_std,
                       learned_passes,forget_events,learned_last,entropy
    RUN/images.csv     image_id,n_objects,vps_iou_max,...,vps_conf_sum,forgetting_max,...,entropy_sum
    RUN/soft_labels.npz   ann_id[N], columns[C+1] (category ids, -1 = background), probs[N, C+1]
    RUN/suspects.csv   ann_id,image_id,category_id,suspected_category_id,mean_prob (soft labels only)
    RUN/outliers.csv   ann_id,image_id,category_id,entropy: never learned, soft label near uniform
    RUN/prototypes.npz image_id[P], category_id[P], feature[P, D] (see core.prototypes)
    DIR/subset.json    method,aggregation,keep_ratio,n_images,n_total,seed,image_ids (best first)
    DIR/<stem>_pruned.json   the annotation file restricted to the subset
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .coco import CocoIndex, sha256_file, write_pruned_coco
from .errors import PruneHooksError
from .io import atomic_write_bytes, read_json, write_csv, write_json
from .scores import AGGREGATIONS, VPSAccumulator, aggregate, forgetting_scores, vps_image_scores
from .softlabels import SUSPECT_COLUMNS, SoftLabels, entropy, outliers, suspects

__all__ = [
    "OBJECT_COLUMNS",
    "IMAGE_SCORE_COLUMNS",
    "write_vps_run",
    "read_meta",
    "read_images_csv",
    "write_subset",
    "pruned_name",
]

OBJECT_COLUMNS = (
    "ann_id", "image_id", "category_id", "passes", "iou_mean", "iou_std", "conf_mean", "conf_std",
    "learned_passes", "forget_events", "learned_last", "entropy",
)
# image score columns: {score}_{aggregation}; select's --method names the score
SCORES = ("vps_iou", "vps_conf", "forgetting", "entropy")
IMAGE_SCORE_COLUMNS = tuple(f"{k}_{a}" for k in SCORES for a in AGGREGATIONS)


def write_vps_run(
    run: str | os.PathLike,
    index: CocoIndex,
    acc: VPSAccumulator,
    framework: str,
    extra_meta: dict[str, Any] | None = None,
    soft: SoftLabels | None = None,
) -> dict[str, np.ndarray]:
    """Write meta.json, objects.csv and images.csv for ``acc`` (objects in ``index`` order), and with
    ``soft`` also soft_labels.npz and suspects.csv.

    Returns:
        the image-score columns written to images.csv, ndarray[I] each (NaN: no objects).
    """
    run = Path(run)
    if acc.num_objects != index.num_objects:
        raise PruneHooksError(f"accumulator holds {acc.num_objects} objects, the annotation file {index.num_objects}")
    vps = acc.vps()
    soft_mean = soft.means() if soft is not None else None
    ent = entropy(soft_mean) if soft_mean is not None else np.full(index.num_objects, np.nan)
    write_csv(
        run / "objects.csv",
        OBJECT_COLUMNS,
        zip(
            index.ann_ids.tolist(),
            index.obj_image_ids.tolist(),
            index.obj_category_ids.tolist(),
            vps["passes"].tolist(),
            vps["iou_mean"].tolist(),
            vps["iou_std"].tolist(),
            vps["conf_mean"].tolist(),
            vps["conf_std"].tolist(),
            vps["learned_passes"].tolist(),
            vps["forget_events"].tolist(),
            vps["learned_last"].tolist(),
            ent.tolist(),
        ),
    )
    scores = vps_image_scores(index, vps)
    forget = forgetting_scores(vps)
    for how in AGGREGATIONS:
        scores[f"forgetting_{how}"] = aggregate(forget, index.offsets, how)
        scores[f"entropy_{how}"] = aggregate(ent, index.offsets, how)
    if soft_mean is not None:
        columns = np.concatenate([index.category_ids, [-1]]).astype(np.int64)
        buf = io.BytesIO()
        np.savez(buf, ann_id=index.ann_ids, columns=columns, probs=soft_mean.astype(np.float32))
        atomic_write_bytes(run / "soft_labels.npz", buf.getvalue())
        odd = outliers(soft_mean, vps["learned_passes"])
        write_csv(
            run / "outliers.csv",
            ("ann_id", "image_id", "category_id", "entropy"),
            zip(index.ann_ids[odd].tolist(), index.obj_image_ids[odd].tolist(), index.obj_category_ids[odd].tolist(), ent[odd].tolist()),
        )
        rows, cats, probs = suspects(soft_mean, index.obj_category_ids, index.category_ids)
        write_csv(
            run / "suspects.csv",
            SUSPECT_COLUMNS,
            zip(index.ann_ids[rows].tolist(), index.obj_image_ids[rows].tolist(), index.obj_category_ids[rows].tolist(), cats.tolist(), probs.tolist()),
        )
    write_csv(
        run / "images.csv",
        ("image_id", "n_objects", *IMAGE_SCORE_COLUMNS),
        zip(
            index.image_ids.tolist(),
            index.objects_per_image().tolist(),
            *(scores[c].tolist() for c in IMAGE_SCORE_COLUMNS),
        ),
    )
    meta = {
        "framework": framework,
        "annotations": str(Path(index.path).resolve()) if index.path else None,
        "annotations_sha256": sha256_file(index.path) if index.path else None,
        "categories": index.categories,
        "num_images": index.num_images,
        "num_objects": index.num_objects,
        "passes": acc.passes,
        "soft_labels": soft is not None,
        "prune_hooks_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update(extra_meta or {})
    write_json(run / "meta.json", meta)
    return scores


def read_meta(run: str | os.PathLike) -> dict[str, Any]:
    run = Path(run)
    if not run.is_dir():
        raise PruneHooksError(f"run directory not found: {run}")
    meta = read_json(run / "meta.json", "run metadata")
    if not isinstance(meta, dict):
        raise PruneHooksError(f"{run / 'meta.json'}: expected an object, got {type(meta).__name__}")
    return meta


def read_images_csv(run: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of RUN/images.csv: ``image_id``/``n_objects`` int64, score columns float64 (NaN = none)."""
    path = Path(run) / "images.csv"
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise PruneHooksError(f"image scores not found: {path}") from None
    if not rows or rows[0][:2] != ["image_id", "n_objects"]:
        raise PruneHooksError(f"{path}: expected a header starting with image_id,n_objects, got {rows[:1]}")
    header, body = rows[0], rows[1:]
    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        col = [r[j] for r in body]
        try:
            if name in ("image_id", "n_objects"):
                out[name] = np.array([int(v) for v in col], dtype=np.int64)
            else:
                out[name] = np.array([float(v) if v != "" else np.nan for v in col], dtype=np.float64)
        except ValueError as e:
            raise PruneHooksError(f"{path}: column {name}: {e}") from None
    return out


def pruned_name(annotations: str | os.PathLike) -> str:
    """``instances_train.json`` -> ``instances_train_pruned.json``."""
    return f"{Path(annotations).stem}_pruned.json"


def write_subset(out: str | os.PathLike, subset: dict, index: CocoIndex) -> tuple[Path, Path]:
    """Write ``subset.json`` and the pruned COCO file into ``out``; returns both paths."""
    out = Path(out)
    subset_path = write_json(out / "subset.json", subset)
    name = pruned_name(index.path or "annotations.json")
    pruned = write_pruned_coco(index.dataset, subset["image_ids"], out / name)
    return subset_path, pruned
