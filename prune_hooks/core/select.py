"""Selection from a run directory: one entry point for the CLI and the hooks.

The methods themselves are registered in :mod:`prune_hooks.core.methods`; this module loads what
they need from a run directory (each file once, so ``--method all`` reuses it), ranks, completes the
order with the images a method cannot rank (ascending id), and builds the subset.json record.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import coverage
from . import methods as registry
from .coco import CocoIndex
from .coverage import DEFAULT_STRATA, default_beta
from .csod import CSODAhead
from .errors import PruneHooksError
from .io import atomic_write_bytes, read_json
from .prototypes import check_prototypes, image_features, load_prototypes
from .rundir import read_images_csv, read_label_issues, write_run, write_subset
from .scores import rank_images
from .selection import keep_count, subset_record

__all__ = ["DEFAULT_LAMBDA", "RunInputs", "select", "start_csod", "write_hook_run"]

logger = logging.getLogger("prune_hooks")

# The CSOD paper tunes lambda per budget (VOC: 0.0125 to 0.0625); this is the middle of that range.
DEFAULT_LAMBDA = 0.05

_FILES = {
    registry.IMAGE_SCORES: "images.csv",
    registry.SOFT_LABELS: "soft_labels.npz",
    registry.PROTOTYPES: "prototypes.npz",
}


def start_csod(run: str | os.PathLike, lam: float) -> CSODAhead | None:
    """CSOD's greedy on the prototypes of ``run``, begun before the annotation file is read (``CSODAhead``;
    ``RunInputs(csod=...)`` hands it to the csod method); None where ``run`` holds no prototypes of one model."""
    path = Path(run) / _FILES[registry.PROTOTYPES]
    if not path.is_file() or _merged(Path(run)):
        return None  # RunInputs says why when the method asks
    protos = load_prototypes(path)
    return CSODAhead(protos["image_id"], protos["category_id"], protos["feature"], lam, prototypes=protos)


def _merged(run: Path) -> bool:
    """``run`` merges the runs of several models (UNSEEN)."""
    meta = run / "meta.json"
    return meta.is_file() and "unseen" in read_json(meta, "run metadata")


class RunInputs:
    """What the methods read from a run directory, each file loaded once (``--method all`` reuses it).
    ``csod``: the csod method's greedy, already begun (``start_csod``); it serves one request with its lambda."""

    def __init__(self, run: str | os.PathLike | None, index: CocoIndex, csod: CSODAhead | None = None) -> None:
        self.run = Path(run) if run is not None else None
        self.index = index
        self.csod = csod
        self._cache: dict[str, Any] = {}

    def missing(self, method: registry.Method) -> str | None:
        """Why ``method`` cannot select from this run directory, or None when it can."""
        for need in method.needs:
            if need == registry.MASKS:
                continue  # columns checked below
            name = _FILES[need]
            if need == registry.PROTOTYPES and self.run is not None and _merged(self.run):
                return (
                    f"method {method.name} needs prototypes of one model: {self.run} merges runs of several "
                    "models (UNSEEN), whose features are not comparable"
                )
            if self.run is None or not (self.run / name).is_file():
                if need == registry.SOFT_LABELS:
                    return (
                        f"method {method.name} needs soft labels: {self.run} has none "
                        "(the hooks record them; detections alone do not)"
                    )
                return f"method {method.name} needs {name} ({need}), not found in {self.run}"
        if method.is_score:
            table = self._images_or_none()
            if table is None or not any(c in table for c in method.columns):
                how = (
                    "shape scores from instance masks (prune-hooks score shape)"
                    if registry.MASKS in method.needs
                    else "image scores from scoring passes (a hook's run or prune-hooks score vps)"
                )
                return f"method {method.name} needs {how}: {self.run}/images.csv has no {method.name}_* columns"
        return None

    def uninformative(self, method: str, aggregation: str | None = None) -> str | None:
        """Why a score method's image column cannot rank images (the same value for every scored image,
        e.g. when no object was ever matched), or None. Picking by it would only sort by image id."""
        m = registry.get(method)
        if not m.is_score:
            return None
        table = self._images_or_none()
        col = None if table is None else table.get(f"{method}_{aggregation or m.aggregations[0]}")
        if col is None:
            return None
        values = col[~np.isnan(col)]
        if len(values) >= 2 and np.all(values == values[0]):
            return (
                f"method {method}: {self.run}/images.csv column {method}_{aggregation or m.aggregations[0]} is "
                f"{values[0]:g} for all {len(values)} scored images, so it cannot rank them (were the objects "
                "ever matched? see the run's meta.json 'never_matched')"
            )
        return None

    def _images_or_none(self) -> dict[str, np.ndarray] | None:
        if self.run is None or not (self.run / "images.csv").is_file():
            return None
        return self.image_scores()

    def image_scores(self) -> dict[str, np.ndarray]:
        if "images" not in self._cache:
            table = read_images_csv(self.run)
            if not np.array_equal(np.sort(table["image_id"]), np.sort(self.index.image_ids)):
                raise PruneHooksError(
                    f"image ids of {self.run}/images.csv do not match the images of {self.index.path}"
                )
            self._cache["images"] = table
        return self._cache["images"]

    def prototypes(self, method: str) -> dict[str, np.ndarray]:
        if "prototypes" not in self._cache:
            self._require(registry.PROTOTYPES, method)
            path = self.run / _FILES[registry.PROTOTYPES]
            if self.csod is not None:  # read by start_csod, before the index
                check_prototypes(path, self.csod.prototypes, self.index)
                self._cache["prototypes"] = self.csod.prototypes
            else:
                self._cache["prototypes"] = load_prototypes(path, self.index)
        return self._cache["prototypes"]

    def _require(self, need: str, method: str) -> None:
        why = self.missing(registry.Method(method, "", needs=(need,), rank=_no_rank))
        if why:
            raise PruneHooksError(why)

    def suspect_images(self) -> np.ndarray:
        """Images holding an object flagged wrong_class in RUN/label_issues.csv."""
        path = self.run / "label_issues.csv" if self.run is not None else None
        if path is None or not path.is_file():
            raise PruneHooksError(f"--drop-mislabeled needs label_issues.csv, not found in {self.run}")
        ids = {int(r["image_id"]) for r in read_label_issues(self.run) if r["kind"] == "wrong_class"}
        return np.array(sorted(ids), dtype=np.int64)


def _no_rank(inputs: RunInputs, req: registry.Request) -> tuple[np.ndarray, dict[str, Any]]:
    raise AssertionError("not a method")


def _complete(ranked: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    rest = np.setdiff1d(np.asarray(image_ids, dtype=np.int64), ranked)
    return np.concatenate([np.asarray(ranked, dtype=np.int64), rest])


def select(
    method: str,
    inputs: RunInputs,
    *,
    n_keep: int,
    keep_ratio: float,
    aggregation: str | None = None,
    seed: int | None = None,
    lam: float = DEFAULT_LAMBDA,
    drop_mislabeled: bool = False,
    stratify: bool = False,
    beta: float | None = None,
    strata: int = DEFAULT_STRATA,
    group_by: str | None = None,
    per_group_max: int | None = None,
    dedup_threshold: float | None = None,
) -> dict[str, Any]:
    """The subset.json record of ``method`` keeping ``n_keep`` images (best first).

    Args:
        aggregation: score methods: which image aggregation to rank by (default: the method's first).
        seed: seeded methods (default 0); recorded in the subset for those only.
        lam: CSOD's lambda.
        drop_mislabeled: rank images that hold a wrong_class object (label_issues.csv) last.
        stratify, beta, strata: score methods: coverage-centric selection (core.coverage.stratify); beta
            None = ``default_beta(keep_ratio)``.
        group_by, per_group_max: spread the kept images over groups (core.coverage.spread_groups).
        dedup_threshold: skip images whose feature is this close (cosine) to a kept one (core.coverage.dedup).
    """
    m = registry.get(method)
    why = inputs.missing(m)
    if why:
        raise PruneHooksError(why)
    index = inputs.index
    extra: dict[str, Any] = {}
    if m.is_score:
        aggregation = aggregation or m.aggregations[0]
        if aggregation not in m.aggregations:
            raise PruneHooksError(f"method {method} aggregates by {', '.join(m.aggregations)}, got {aggregation!r}")
        table = inputs.image_scores()
        column = table.get(f"{method}_{aggregation}")
        if column is None:
            raise PruneHooksError(f"{inputs.run}/images.csv has no column {method}_{aggregation}")
        why = inputs.uninformative(method, aggregation)
        if why:
            raise PruneHooksError(why)
        ranked = rank_images(table["image_id"], column)
        seed = None
    else:
        aggregation = None
        seed = (0 if seed is None else seed) if m.seeded else None
        req = registry.Request(n_keep=n_keep, seed=seed or 0, lam=lam)
        ranked, extra = m.rank(inputs, req)
        extra = dict(extra)
        ranked = _complete(ranked, index.image_ids)
    if stratify:
        if not m.is_score:
            raise PruneHooksError(f"--stratify needs a score method, {method} ranks without scores")
        beta = default_beta(keep_ratio) if beta is None else beta
        score_of = {int(i): float(v) for i, v in zip(table["image_id"], column) if np.isfinite(v)}
        ranked = coverage.stratify(ranked, score_of, n_keep, beta, strata, 0 if seed is None else seed)
        extra.update(stratify={"beta": beta, "strata": strata})
    if group_by is not None:
        labels = coverage.group_labels(index, group_by)
        ranked = coverage.spread_groups(ranked, dict(zip(index.image_ids.tolist(), labels)), per_group_max)
        extra.update(group_by=group_by, per_group_max=per_group_max, groups=len(set(labels.tolist())))
    elif per_group_max is not None:
        raise PruneHooksError("--per-group-max needs --group-by")
    if dedup_threshold is not None:
        ids, feats = image_features(inputs.prototypes("--dedup"))
        ranked = coverage.dedup(ranked, dict(zip(ids.tolist(), feats)), dedup_threshold, n_keep)
        extra["dedup"] = dedup_threshold
    if drop_mislabeled:
        bad = inputs.suspect_images()
        ranked = np.concatenate([ranked[~np.isin(ranked, bad)], ranked[np.isin(ranked, bad)]])
        extra["dropped_suspect_images"] = int(len(bad))
        if len(ranked) - len(bad) < n_keep:
            logger.warning(
                "--drop-mislabeled: only %d images without suspects for %d kept", len(ranked) - len(bad), n_keep
            )
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
    buf = io.BytesIO()
    torch.save(capture.state_dict(), buf)
    atomic_write_bytes(Path(run) / "state.pt", buf.getvalue())
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
