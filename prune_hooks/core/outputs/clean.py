"""The label audit on a run directory: flags again at other thresholds, and the cleaned annotation file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..data.coco import CocoIndex, load_coco, sha256_file, write_pruned_coco
from ..data.rundir import LABEL_ISSUE_COLUMNS, read_label_issues, read_meta, read_objects_csv
from ..errors import PruneHooksError
from ..io import atomic_write_text, read_json, write_csv, write_json
from ..scoring.audit import CHANGE_COLUMNS, ISSUE_KINDS, AuditThresholds, clean_dataset, label_issues
from ..scoring.softlabels import load_soft_labels
from .rundir import pruned_name, write_label_issues

__all__ = ["audit_run", "clean_run"]

CLEAN_KEY = "prune_hooks_cleaned"  # in the cleaned file's "info": where it comes from


def _run_annotations(run: Path) -> tuple[dict[str, Any], CocoIndex]:
    """The run's annotation file, refused when it changed since the run (the flags name its objects)."""
    meta = read_meta(run)
    ann = meta.get("annotations")
    if not ann:
        raise PruneHooksError(f"{run / 'meta.json'}: annotations is not set: no annotation file to audit")
    if not Path(ann).is_file():
        raise PruneHooksError(f"{run / 'meta.json'}: annotations {ann!r} not found")
    digest, recorded = sha256_file(ann), meta.get("annotations_sha256")
    if recorded and digest != recorded:
        raise PruneHooksError(
            f"{ann} changed since the run: sha256 {digest[:12]}… but meta.json annotations_sha256 {recorded[:12]}…"
        )
    return meta, load_coco(ann)


def audit_run(run: str | os.PathLike, th: AuditThresholds, out: str | os.PathLike | None = None) -> list[tuple]:
    """The label issues at the thresholds ``th`` from RUN's audit.npz, soft_labels.npz and objects.csv, written
    to OUT/label_issues.csv (OUT defaults to RUN: the run's own file is replaced)."""
    run = Path(run)
    _, index = _run_annotations(run)
    audit = soft = None
    if (run / "audit.npz").is_file():
        with np.load(run / "audit.npz") as z:
            audit = {k: z[k] for k in z.files}
        if not np.array_equal(audit.pop("ann_id"), index.ann_ids):
            raise PruneHooksError(f"{run / 'audit.npz'}: its objects are not those of {index.path}")
    if (run / "soft_labels.npz").is_file():
        ann, _, soft = load_soft_labels(run / "soft_labels.npz")
        if not np.array_equal(ann, index.ann_ids):
            raise PruneHooksError(f"{run / 'soft_labels.npz'}: its objects are not those of {index.path}")
    if audit is None and soft is None:
        raise PruneHooksError(f"{run} has neither audit.npz nor soft_labels.npz: nothing to audit")
    learned = read_objects_csv(run).get("learned_passes")
    rows = label_issues(index, audit, soft, learned, th)
    if audit is None and (run / "label_issues.csv").is_file():
        # a merged UNSEEN run: the folds' bad_location / missing_box flags have no state here; keep them
        kept = [r for r in read_label_issues(run) if r["kind"] in ("bad_location", "missing_box")]
        rows += [tuple(r[c] for c in LABEL_ISSUE_COLUMNS) for r in kept]
        rows.sort(key=lambda r: ISSUE_KINDS.index(r[0]))  # stable: each kind keeps its score order
    write_label_issues(run if out is None else Path(out), rows)
    return rows


def clean_run(
    run: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    relabel: bool = False,
    ignore_bad_location: bool = False,
    add_missing: bool = False,
) -> tuple[Path, Path, list[tuple]]:
    """Write ``OUT/<stem>_cleaned.json`` and ``OUT/changes.csv`` (OUT defaults to RUN) from RUN/label_issues.csv.

    Where RUN holds a subset and a retraining config, also ``OUT/<stem>_cleaned_pruned.json`` (the same
    images) and ``OUT/retrain_cleaned.yaml`` / ``.py``: the config pointed at it, output dir ``…_retrain_cleaned``.

    Returns:
        (cleaned file, changes.csv, change rows).
    """
    run = Path(run)
    out = Path(out) if out is not None else run
    _, index = _run_annotations(run)
    issues = read_label_issues(run)
    cleaned, changes = clean_dataset(
        index.dataset, issues, relabel=relabel, ignore_bad_location=ignore_bad_location, add_missing=add_missing
    )
    info = dict(cleaned.get("info") or {})
    info[CLEAN_KEY] = {"source_sha256": sha256_file(index.path), "changes": len(changes)}
    cleaned["info"] = info
    CocoIndex.from_dataset(cleaned, "cleaned annotations")  # what we write must load
    path = write_json(out / f"{Path(index.path).stem}_cleaned.json", cleaned, indent=None)
    changes_path = write_csv(out / "changes.csv", CHANGE_COLUMNS, changes)
    _retrain_cleaned(run, out, index, cleaned, path)
    return path, changes_path, changes


def _retrain_cleaned(run: Path, out: Path, index: CocoIndex, cleaned: dict, cleaned_path: Path) -> None:
    configs = [run / n for n in ("retrain.yaml", "retrain.py") if (run / n).is_file()]
    if not (run / "subset.json").is_file() or not configs:
        return
    ids = read_json(run / "subset.json", "subset")["image_ids"]
    pruned = write_pruned_coco(cleaned, ids, out / pruned_name(cleaned_path))
    old = str((run / pruned_name(index.path)).resolve())
    for config in configs:
        text = config.read_text(encoding="utf-8")
        if old not in text:
            raise PruneHooksError(f"{config} does not name {old}: cannot point it at the cleaned subset")
        text = text.replace(old, str(pruned.resolve()))
        # detectron2: OUTPUT_DIR: /x_retrain ; mmdet: work_dir = '/x_retrain'
        text = re.sub(r"^((?:OUTPUT_DIR: |work_dir = ).*_retrain)(['\"]?)$", r"\1_cleaned\2", text, flags=re.M)
        atomic_write_text(out / f"retrain_cleaned{config.suffix}", text)
