"""The run directory: the files every producer (CLI, hooks) writes and every consumer reads.

RUN/meta.json      framework, annotation file + sha256, categories, passes, version, time
RUN/objects.csv    ann_id,image_id,category_id, then from scoring passes passes,iou_mean,iou_std,
                   conf_mean,conf_std,learned_passes,forget_events,learned_last,entropy, then
                   scores computed without passes (scs,si_scs,cb_scs)
RUN/images.csv     image_id,n_objects,file_name, then <method>_<aggregation> for every registered score
                   method the objects can feed (core.selection.methods), e.g. vps_iou_max,...,entropy_sum
RUN/soft_labels.npz   ann_id[N], columns[C+1] (category ids, -1 = background), probs[N, C+1]; past
                   DEFAULT_TOP_K columns: top_columns[N, k], top_probs[N, k], rest[N] (core.scoring.softlabels)
RUN/audit.npz      the label audit's state after the last pass (core.scoring.audit.LabelAudit.arrays)
RUN/label_issues.csv  kind,ann_id,image_id,category_id,bbox,suggested_category_id,suggested_bbox,score:
                   wrong_class / outlier (soft labels), bad_location / missing_box (audit), see core.scoring.audit
RUN/prototypes.npz image_id[P], category_id[P], feature[P, D] (see core.scoring.prototypes)
DIR/subset.json    method,aggregation,keep_ratio,n_images,n_total,seed,image_ids (best first)
DIR/<stem>_pruned.json   the annotation file restricted to the subset
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..._version import __version__
from ..data.coco import CocoIndex, sha256_file, write_pruned_coco
from ..data.rundir import IMAGE_COLUMNS, LABEL_ISSUE_COLUMNS
from ..errors import PruneHooksError
from ..io import atomic_writer, write_csv, write_json
from ..scoring.audit import LabelAudit, label_issues
from ..scoring.scores import VPSAccumulator, aggregate
from ..scoring.softlabels import SoftLabels, SoftMeans, entropy, save_soft_labels
from ..selection import methods as registry
from ..selection.algorithms import keep_count
from ..selection.inputs import RunInputs
from ..selection.methods import image_score_columns
from ..selection.select import select

__all__ = [
    "VPS_OBJECT_COLUMNS",
    "object_table",
    "write_run",
    "write_label_issues",
    "write_subset",
    "pruned_name",
    "write_hook_run",
]

logger = logging.getLogger("prune_hooks")

VPS_OBJECT_COLUMNS = (
    "passes",
    "iou_mean",
    "iou_std",
    "conf_mean",
    "conf_std",
    "learned_passes",
    "forget_events",
    "learned_last",
    "entropy",
)


def object_table(
    index: CocoIndex,
    acc: VPSAccumulator | None = None,
    soft_mean: SoftMeans | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The columns of objects.csv, ndarray[N] each in ``index`` order: ids, the VPS state of ``acc``
    (with ``entropy`` of ``soft_mean``, NaN without), then ``extra`` (e.g. shape scores)."""
    table: dict[str, np.ndarray] = {
        "ann_id": index.ann_ids,
        "image_id": index.obj_image_ids,
        "category_id": index.obj_category_ids,
    }
    if acc is not None:
        if acc.num_objects != index.num_objects:
            raise PruneHooksError(
                f"accumulator holds {acc.num_objects} objects, the annotation file {index.num_objects}"
            )
        table.update(acc.vps())
        table["entropy"] = entropy(soft_mean) if soft_mean is not None else np.full(index.num_objects, np.nan)
    for name, values in (extra or {}).items():
        if len(values) != index.num_objects:
            raise PruneHooksError(f"object column {name} has {len(values)} values for {index.num_objects} objects")
        table[name] = np.asarray(values)
    return table


def write_run(
    run: str | os.PathLike,
    index: CocoIndex,
    acc: VPSAccumulator | None = None,
    *,
    framework: str,
    extra_meta: dict[str, Any] | None = None,
    soft: SoftLabels | None = None,
    objects: dict[str, np.ndarray] | None = None,
    audit: LabelAudit | None = None,
) -> dict[str, np.ndarray]:
    """Write meta.json, objects.csv and images.csv; with ``soft`` also soft_labels.npz, with ``audit``
    audit.npz, and with either label_issues.csv (core.scoring.audit).

    Args:
        acc: VPS state of the scoring passes (None: a run scored without passes, e.g. shape scores).
        objects: further per-object score columns, ndarray[N] each in ``index`` order.

    Returns:
        the image-score columns written to images.csv, ndarray[I] each (NaN: no scored object):
        ``<method>_<aggregation>`` for every registered score method the objects table can feed.
    """
    run = Path(run)
    soft_mean = soft.top() if soft is not None else None
    table = object_table(index, acc, soft_mean, objects)
    header = [c for c in ("ann_id", "image_id", "category_id", *VPS_OBJECT_COLUMNS) if c in table]
    header += [c for c in table if c not in header]
    write_csv(run / "objects.csv", header, _rows(*(table[c] for c in header)))
    scores: dict[str, np.ndarray] = {}
    for method, values in image_score_columns(table):
        if values is None:
            continue
        for how, column in zip(method.aggregations, method.columns):
            scores[column] = aggregate(values, index.offsets, how)
    if soft_mean is not None:
        columns = np.concatenate([index.category_ids, [-1]]).astype(np.int64)
        save_soft_labels(run / "soft_labels.npz", index.ann_ids, columns, soft_mean)
    audit_arrays = audit.arrays() if audit is not None and audit.passes else None
    if audit_arrays is not None:
        with atomic_writer(run / "audit.npz") as f:
            np.savez(f, ann_id=index.ann_ids, **audit_arrays)
    if soft_mean is not None or audit_arrays is not None:
        write_label_issues(run, label_issues(index, audit_arrays, soft_mean, table.get("learned_passes")))
    write_csv(
        run / "images.csv",
        (*IMAGE_COLUMNS, *scores),
        _rows(
            index.image_ids,
            index.objects_per_image(),
            np.array([str(im.get("file_name", "")) for im in index.images], dtype=object),
            *scores.values(),
        ),
    )
    meta = {
        "framework": framework,
        "annotations": str(Path(index.path).resolve()) if index.path else None,
        "annotations_sha256": sha256_file(index.path) if index.path else None,
        "categories": index.categories,
        "num_images": index.num_images,
        "num_objects": index.num_objects,
        "passes": acc.passes if acc is not None else 0,
        "soft_labels": soft is not None,
        "label_audit": audit_arrays is not None,
        "prune_hooks_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update(extra_meta or {})
    write_json(run / "meta.json", meta)
    return scores


def _rows(*columns: np.ndarray, chunk: int = 1 << 16):
    """The rows of equal-length ``columns`` as Python values, converted ``chunk`` rows at a time (a column of
    millions of values is never one list of Python objects)."""
    n = len(columns[0]) if columns else 0
    for a in range(0, n, chunk):
        yield from zip(*(c[a : a + chunk].tolist() for c in columns))


def write_label_issues(run: str | os.PathLike, rows: list[tuple]) -> Path:
    return write_csv(Path(run) / "label_issues.csv", LABEL_ISSUE_COLUMNS, rows)


def pruned_name(annotations: str | os.PathLike) -> str:
    """``instances_train.json`` -> ``instances_train_pruned.json``."""
    return f"{Path(annotations).stem}_pruned.json"


def write_subset(out: str | os.PathLike, subset: dict, index: CocoIndex) -> tuple[Path, Path]:
    """Write ``subset.json`` and the pruned COCO file into ``out``; returns both paths."""
    out = Path(out)
    subset_path = write_json(out / "subset.json", subset)
    name = pruned_name(index.path or "annotations.json")
    pruned = write_pruned_coco(index, subset["image_ids"], out / name)
    return subset_path, pruned


def write_hook_run(
    run: Path,
    capture: Any,
    framework: str,
    extra_meta: dict[str, Any],
    method: str,
    keep_ratio: float,
    aggregation: str,
    objects: dict[str, np.ndarray] | None = None,
    coverage: dict[str, Any] | None = None,
) -> tuple[dict[str, Any] | None, Path | None, int]:
    """What every hook writes when training ends: the run files, ``state.pt``, the subset of
    ``method`` at ``keep_ratio`` and its pruned COCO file. ``objects``: further per-object columns
    scored without passes (shape scores); ``coverage``: ``select``'s coverage arguments. Returns
    (subset record, pruned file, kept); (None, None, 0) with an error logged when the method's score
    cannot rank the images (constant)."""
    index = capture.index
    write_run(
        run,
        index,
        capture.acc,
        framework=framework,
        soft=capture.soft,
        extra_meta=extra_meta,
        objects=objects,
        audit=capture.audit,
    )
    with atomic_writer(Path(run) / "state.pt") as f:  # streamed: a 25 M-object state is ~3 GB
        torch.save(capture.state_dict(), f)
    n_keep, ratio = keep_count(index.num_images, keep=keep_ratio)
    m = registry.get(method)
    agg = aggregation if m.is_score and aggregation in m.aggregations else None
    inputs = RunInputs(run, index)
    why = inputs.uninformative(method, agg)
    if why:
        logger.error("no subset written: %s", why)
        return None, None, 0
    subset = select(method, inputs, n_keep=n_keep, keep_ratio=ratio, aggregation=agg, **(coverage or {}))
    _, pruned = write_subset(run, subset, index)
    return subset, pruned, n_keep
