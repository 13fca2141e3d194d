"""The run directory: the files every producer (CLI, hooks) writes and every consumer reads.

RUN/meta.json      framework, annotation file + sha256, categories, passes, version, time
RUN/objects.csv    ann_id,image_id,category_id, then from scoring passes passes,iou_mean,iou_std,
                   conf_mean,conf_std,learned_passes,forget_events,learned_last,entropy, then
                   scores computed without passes (scs,si_scs,cb_scs)
RUN/images.csv     image_id,n_objects, then <method>_<aggregation> for every registered score
                   method the objects can feed (core.methods), e.g. vps_iou_max,...,entropy_sum
RUN/soft_labels.npz   ann_id[N], columns[C+1] (category ids, -1 = background), probs[N, C+1]
RUN/audit.npz      the label audit's state after the last pass (core.audit.LabelAudit.arrays)
RUN/label_issues.csv  kind,ann_id,image_id,category_id,bbox,suggested_category_id,suggested_bbox,score:
                   wrong_class / outlier (soft labels), bad_location / missing_box (audit), see core.audit
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
from .audit import LABEL_ISSUE_COLUMNS, LabelAudit, label_issues
from .coco import CocoIndex, sha256_file, write_pruned_coco
from .errors import PruneHooksError
from .io import atomic_write_bytes, read_json, write_csv, write_json
from .methods import image_score_columns
from .scores import VPSAccumulator, aggregate
from .softlabels import SoftLabels, entropy

__all__ = [
    "VPS_OBJECT_COLUMNS",
    "object_table",
    "write_run",
    "read_meta",
    "read_images_csv",
    "read_objects_csv",
    "read_label_issues",
    "write_label_issues",
    "write_subset",
    "pruned_name",
]

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
    soft_mean: np.ndarray | None = None,
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
    audit.npz, and with either label_issues.csv (core.audit).

    Args:
        acc: VPS state of the scoring passes (None: a run scored without passes, e.g. shape scores).
        objects: further per-object score columns, ndarray[N] each in ``index`` order.

    Returns:
        the image-score columns written to images.csv, ndarray[I] each (NaN: no scored object):
        ``<method>_<aggregation>`` for every registered score method the objects table can feed.
    """
    run = Path(run)
    soft_mean = soft.means() if soft is not None else None
    table = object_table(index, acc, soft_mean, objects)
    header = [c for c in ("ann_id", "image_id", "category_id", *VPS_OBJECT_COLUMNS) if c in table]
    header += [c for c in table if c not in header]
    write_csv(run / "objects.csv", header, zip(*(table[c].tolist() for c in header)))
    scores: dict[str, np.ndarray] = {}
    for method, values in image_score_columns(table):
        if values is None:
            continue
        for how, column in zip(method.aggregations, method.columns):
            scores[column] = aggregate(values, index.offsets, how)
    if soft_mean is not None:
        columns = np.concatenate([index.category_ids, [-1]]).astype(np.int64)
        buf = io.BytesIO()
        np.savez(buf, ann_id=index.ann_ids, columns=columns, probs=soft_mean.astype(np.float32))
        atomic_write_bytes(run / "soft_labels.npz", buf.getvalue())
    audit_arrays = audit.arrays() if audit is not None and audit.passes else None
    if audit_arrays is not None:
        buf = io.BytesIO()
        np.savez(buf, ann_id=index.ann_ids, **audit_arrays)
        atomic_write_bytes(run / "audit.npz", buf.getvalue())
    if soft_mean is not None or audit_arrays is not None:
        write_label_issues(run, label_issues(index, audit_arrays, soft_mean, table.get("learned_passes")))
    write_csv(
        run / "images.csv",
        ("image_id", "n_objects", *scores),
        zip(index.image_ids.tolist(), index.objects_per_image().tolist(), *(v.tolist() for v in scores.values())),
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


def write_label_issues(run: str | os.PathLike, rows: list[tuple]) -> Path:
    return write_csv(Path(run) / "label_issues.csv", LABEL_ISSUE_COLUMNS, rows)


def read_label_issues(run: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of RUN/label_issues.csv as dicts of strings."""
    path = Path(run) / "label_issues.csv"
    if not path.is_file():
        raise PruneHooksError(
            f"{path} not found: the run has no label audit (it is written by the hooks and `score vps`)"
        )
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if set(LABEL_ISSUE_COLUMNS) - set(reader.fieldnames or ()):
            raise PruneHooksError(f"{path}: expected the columns {','.join(LABEL_ISSUE_COLUMNS)}")
        return list(reader)


def read_meta(run: str | os.PathLike) -> dict[str, Any]:
    run = Path(run)
    if not run.is_dir():
        raise PruneHooksError(f"run directory not found: {run}")
    meta = read_json(run / "meta.json", "run metadata")
    if not isinstance(meta, dict):
        raise PruneHooksError(f"{run / 'meta.json'}: expected an object, got {type(meta).__name__}")
    return meta


def _read_table(path: Path, what: str, ints: tuple[str, ...], first: list[str]) -> dict[str, np.ndarray]:
    """A run CSV as columns: ``ints`` int64, the others float64 (empty = NaN); the header starts with ``first``."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise PruneHooksError(f"{what} not found: {path}") from None
    if not rows or rows[0][: len(first)] != first:
        raise PruneHooksError(f"{path}: expected a header starting with {','.join(first)}, got {rows[:1]}")
    header, body = rows[0], rows[1:]
    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        col = [r[j] for r in body]
        try:
            if name in ints:
                out[name] = np.array([int(v) for v in col], dtype=np.int64)
            else:
                out[name] = np.array([float(v) if v != "" else np.nan for v in col], dtype=np.float64)
        except ValueError as e:
            raise PruneHooksError(f"{path}: column {name}: {e}") from None
    return out


def read_objects_csv(run: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of RUN/objects.csv: ids int64, score columns float64 (NaN = none)."""
    ids = ("ann_id", "image_id", "category_id")
    return _read_table(Path(run) / "objects.csv", "objects", ids, list(ids))


def read_images_csv(run: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of RUN/images.csv: ``image_id``/``n_objects`` int64, score columns float64 (NaN = none)."""
    ids = ("image_id", "n_objects")
    return _read_table(Path(run) / "images.csv", "image scores", ids, list(ids))


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
