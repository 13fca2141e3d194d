"""UNSEEN: scores from models that never saw the image (docs/methods.md, "UNSEEN").

    folds(...)        K disjoint image folds of an annotation file: fold_<i>_train.json / fold_<i>_score.json
    merge_runs(...)   one run directory over every image: each score the mean over the runs that scored it
    compare_runs(...) rank correlations and subset overlaps of two run directories (stability)

The proxies themselves are ordinary hook runs whose scored set is not their training set (detectron2
``PRUNE.SCORE_DATASET``, mmdet ``PruneHook(score_ann_file=...)``); ``tools/unseen.py`` drives the loop.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..._version import __version__
from ..data.coco import CocoIndex, load_coco, sha256_file, write_pruned_coco
from ..data.rundir import (
    IMAGE_COLUMNS,
    LABEL_ISSUE_COLUMNS,
    read_images_csv,
    read_label_issues,
    read_meta,
    read_objects_csv,
)
from ..errors import PruneHooksError
from ..io import read_json, write_csv, write_json
from ..scoring.audit import ISSUE_KINDS
from ..scoring.scores import rank_images
from ..scoring.softlabels import SoftLabels, SoftMeans, load_soft_labels, save_soft_labels
from .rundir import write_label_issues

__all__ = ["FOLD_KEY", "SUBSET_RATIOS", "check_score_set", "compare_runs", "fold_split", "merge_runs", "write_folds"]

FOLD_KEY = "prune_hooks_fold"  # in the fold files' "info": where they come from
SUBSET_RATIOS = (0.1, 0.3, 0.5, 0.7)


def check_score_set(train: CocoIndex, scored: CocoIndex, allow_overlap: bool, what: str, warn=None) -> int:
    """Refuse a scored set that shares images (by id) with the training set, or with
    ``allow_overlap`` warn naming how many; returns the number shared."""
    shared = int(np.isin(scored.image_ids, train.image_ids).sum())
    if shared and not allow_overlap:
        raise PruneHooksError(
            f"{what} {scored.path} shares {shared} of its {scored.num_images} images with the training set "
            f"{train.path}: UNSEEN scores images the model never trained on (allow it explicitly to score them anyway)"
        )
    if shared and warn is not None:
        warn(f"{what}: {shared} of {scored.num_images} scored images are also training images (overlap allowed)")
    return shared


def fold_split(image_ids: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """K disjoint folds of ``image_ids`` (a seeded permutation cut into sizes differing by at most
    one), each sorted ascending."""
    image_ids = np.asarray(image_ids, dtype=np.int64)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 2 <= k <= len(image_ids):
        raise PruneHooksError(f"--k must be an integer in [2, {len(image_ids)}] (the number of images), got {k}")
    perm = np.random.default_rng(seed).permutation(image_ids)
    return [np.sort(part) for part in np.array_split(perm, k)]


def write_folds(annotations: str | os.PathLike, k: int, seed: int, out: str | os.PathLike) -> list[tuple[Path, Path]]:
    """``out/fold_<i>_train.json`` (the images of fold i) and ``out/fold_<i>_score.json`` (all other
    images), i = 1..K, each with its images' annotations (crowd regions too) and every category; their
    ``info`` records the source file's sha256, K, the seed and the fold."""
    index = load_coco(annotations)
    source = sha256_file(annotations)
    parts = fold_split(index.image_ids, k, seed)
    written = []
    for i, part in enumerate(parts, 1):
        rest = np.setdiff1d(index.image_ids, part)
        pair = []
        for role, ids in (("train", part), ("score", rest)):
            info = dict(index.header.get("info") or {})
            info[FOLD_KEY] = {"source_sha256": source, "k": k, "seed": seed, "fold": i, "role": role}
            out_file = Path(out) / f"fold_{i}_{role}.json"
            pair.append(write_pruned_coco(index, ids.tolist(), out_file, replace={"info": info}))
        written.append((pair[0], pair[1]))
    return written


def _mean_by_key(keys_per_run: list[np.ndarray], values_per_run: list[np.ndarray], keys: np.ndarray) -> np.ndarray:
    """For each of ``keys``: the mean of the finite values the runs hold for it (NaN if none)."""
    pos = {int(k): p for p, k in enumerate(keys)}
    total = np.zeros(len(keys))
    count = np.zeros(len(keys))
    for ks, vs in zip(keys_per_run, values_per_run):
        rows = np.array([pos[int(k)] for k in ks], dtype=np.int64)
        ok = np.isfinite(vs) | np.isposinf(vs)  # forgetting's +inf (never learned) counts
        np.add.at(total, rows[ok], vs[ok])
        np.add.at(count, rows[ok], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _merge_label_issues(runs: list[Path]) -> list[tuple] | None:
    """The runs' label_issues.csv rows (each fold model flags the images it never trained on), an object
    flagged by several runs once per kind (the highest score), each kind sorted by score."""
    rows = [r for run in runs if (run / "label_issues.csv").is_file() for r in read_label_issues(run)]
    if not any((run / "label_issues.csv").is_file() for run in runs):
        return None
    best: dict[tuple, dict[str, str]] = {}
    for k, r in enumerate(rows):
        key = (r["kind"], r["ann_id"]) if r["ann_id"] else (r["kind"], "", k)
        if key not in best or float(r["score"]) > float(best[key]["score"]):
            best[key] = r
    order = sorted(best.values(), key=lambda r: (ISSUE_KINDS.index(r["kind"]), -float(r["score"])))
    return [tuple(r[c] for c in LABEL_ISSUE_COLUMNS) for r in order]


def merge_runs(runs: list[str | os.PathLike], annotations: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """One run directory over every image of ``annotations`` from runs that each scored a part of it
    (UNSEEN's fold proxies): every image-score column of images.csv and every score column of
    objects.csv is the mean over the runs that scored that image / object; soft labels likewise;
    label_issues.csv holds every run's flags.

    Refused: runs of different methods, runs whose fold files come from another annotation file
    (sha256), runs that scored images outside ``annotations``, images no run scored.
    """
    if len(runs) < 1:
        raise PruneHooksError("unseen merge needs at least one run directory")
    index = load_coco(annotations)
    source = sha256_file(annotations)
    metas = [read_meta(r) for r in runs]
    methods = [sorted(m.get("methods") or []) for m in metas]
    for r, m in zip(runs[1:], methods[1:]):
        if m != methods[0]:
            raise PruneHooksError(
                f"unseen merge: {r} scored methods {m}, {runs[0]} scored {methods[0]}: runs of different methods"
            )
    tables, objects, seen = [], [], set()
    for r, meta in zip(runs, metas):
        fold = _fold_info(meta)
        if fold is not None and fold.get("source_sha256") != source:
            raise PruneHooksError(
                f"unseen merge: {r} scored folds of another annotation file (sha256 "
                f"{fold.get('source_sha256', '?')[:12]}…, "
                f"{annotations} is {source[:12]}…)"
            )
        table = read_images_csv(r)
        outside = np.setdiff1d(table["image_id"], index.image_ids)
        if outside.size:
            raise PruneHooksError(
                f"unseen merge: {r} scored {outside.size} images not in {annotations} (e.g. {outside[:3].tolist()})"
            )
        tables.append(table)
        objects.append(read_objects_csv(r))
        seen.update(table["image_id"].tolist())
    missing = np.setdiff1d(index.image_ids, np.array(sorted(seen), dtype=np.int64))
    if missing.size:
        raise PruneHooksError(
            f"unseen merge: {missing.size} images of {annotations} were scored by no run (e.g. {missing[:3].tolist()})"
        )
    out = Path(out)
    columns = [c for c in tables[0] if c not in IMAGE_COLUMNS and all(c in t for t in tables)]
    image_cols = {
        c: _mean_by_key([t["image_id"] for t in tables], [t[c] for t in tables], index.image_ids) for c in columns
    }
    times_scored = _count_by_key([t["image_id"] for t in tables], index.image_ids)
    write_csv(
        out / "images.csv",
        (*IMAGE_COLUMNS, *columns, "unseen_runs"),
        zip(
            index.image_ids.tolist(),
            index.objects_per_image().tolist(),
            [str(im.get("file_name", "")) for im in index.images],
            *(image_cols[c].tolist() for c in columns),
            times_scored.tolist(),
        ),
    )
    obj_cols = [
        c for c in objects[0] if c not in ("ann_id", "image_id", "category_id") and all(c in o for o in objects)
    ]
    obj_means = {
        c: _mean_by_key([o["ann_id"] for o in objects], [o[c] for o in objects], index.ann_ids) for c in obj_cols
    }
    write_csv(
        out / "objects.csv",
        ("ann_id", "image_id", "category_id", *obj_cols),
        zip(
            index.ann_ids.tolist(),
            index.obj_image_ids.tolist(),
            index.obj_category_ids.tolist(),
            *(obj_means[c].tolist() for c in obj_cols),
        ),
    )
    soft = _merge_soft_labels([Path(r) for r in runs], index)
    if soft is not None:
        save_soft_labels(out / "soft_labels.npz", index.ann_ids, *soft)
    issues = _merge_label_issues([Path(r) for r in runs])
    if issues is not None:
        write_label_issues(out, issues)
    meta = {
        "framework": "unseen-merge",
        "annotations": str(Path(annotations).resolve()),
        "annotations_sha256": source,
        "categories": index.categories,
        "num_images": index.num_images,
        "num_objects": index.num_objects,
        "passes": int(sum(m.get("passes", 0) for m in metas)),
        "soft_labels": soft is not None,
        "methods": metas[0].get("methods"),
        "unseen": {
            "runs": [str(Path(r).resolve()) for r in runs],
            "frameworks": sorted({m.get("framework") for m in metas}),
        },
        "prune_hooks_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(out / "meta.json", meta)
    return meta


def _fold_info(meta: dict[str, Any]) -> dict[str, Any] | None:
    path = meta.get("annotations")
    if not path or not Path(path).is_file():
        return None
    info = read_json(path, "annotation file").get("info") or {}
    return info.get(FOLD_KEY) if isinstance(info, dict) else None


def _count_by_key(keys_per_run: list[np.ndarray], keys: np.ndarray) -> np.ndarray:
    pos = {int(k): p for p, k in enumerate(keys)}
    count = np.zeros(len(keys), dtype=np.int64)
    for ks in keys_per_run:
        np.add.at(count, np.array([pos[int(k)] for k in ks], dtype=np.int64), 1)
    return count


def _merge_soft_labels(runs: list[Path], index: CocoIndex) -> tuple[np.ndarray, SoftMeans] | None:
    """The runs' soft labels averaged per object over the runs that recorded it: (columns, soft labels)."""
    parts = []
    for r in runs:
        path = r / "soft_labels.npz"
        if not path.is_file():
            return None
        parts.append(load_soft_labels(path))
    columns = parts[0][1]
    if any(not np.array_equal(c, columns) for _, c, _ in parts):
        return None
    k = max(p[2].cols.shape[1] for p in parts)
    total = SoftLabels(index.num_objects, len(columns), top_k=k)
    pos = {int(a): p for p, a in enumerate(index.ann_ids)}
    for ann, _, soft in parts:
        rows = np.array([pos[int(a)] for a in ann], dtype=np.int64)
        aligned = SoftMeans(
            np.full((index.num_objects, soft.cols.shape[1]), -1, np.int64),
            np.full((index.num_objects, soft.cols.shape[1]), np.nan),
            np.full(index.num_objects, np.nan),
            len(columns),
        )
        aligned.cols[rows], aligned.probs[rows], aligned.rest[rows] = soft.cols, soft.probs, soft.rest
        total.merge(SoftLabels.of_means(aligned, k))
    return columns, total.top()


def compare_runs(run_a: str | os.PathLike, run_b: str | os.PathLike, ratios=SUBSET_RATIOS) -> list[dict[str, Any]]:
    """Per image-score column the two run directories share: Spearman and Kendall (tau-b) rank
    correlation over the images both scored (with a score in both), and the overlap |A ∩ B| / k of
    the top-k subsets each would select (the project's ranking rule) at each keep ratio."""
    from scipy.stats import kendalltau, spearmanr

    a, b = read_images_csv(run_a), read_images_csv(run_b)
    common, ia, ib = np.intersect1d(a["image_id"], b["image_id"], return_indices=True)
    if common.size == 0:
        raise PruneHooksError(f"compare: {run_a} and {run_b} scored no image in common")
    shared = [c for c in a if c not in (*IMAGE_COLUMNS, "unseen_runs") and c in b]
    if not shared:
        raise PruneHooksError(f"compare: {run_a} and {run_b} share no image-score column")
    out = []
    for c in shared:
        va, vb = a[c][ia], b[c][ib]
        ok = ~np.isnan(va) & ~np.isnan(vb)
        row: dict[str, Any] = {"column": c, "images": int(ok.sum())}
        fa, fb = (
            np.nan_to_num(va[ok], posinf=np.finfo(np.float64).max),
            np.nan_to_num(vb[ok], posinf=np.finfo(np.float64).max),
        )
        if ok.sum() >= 3 and np.ptp(fa) > 0 and np.ptp(fb) > 0:
            row["spearman"] = float(spearmanr(fa, fb).statistic)
            row["kendall"] = float(kendalltau(fa, fb).statistic)
        else:
            row["spearman"] = row["kendall"] = float("nan")  # constant scores carry no ranking
        ra, rb = rank_images(common, va), rank_images(common, vb)
        for k in ratios:
            n = max(1, int(np.floor(k * len(common) + 0.5)))
            row[f"overlap@{k:g}"] = float(len(np.intersect1d(ra[:n], rb[:n])) / n)
        out.append(row)
    return out
