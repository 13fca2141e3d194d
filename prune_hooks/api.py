"""What the CLI does, as functions: score, select, audit, clean, compare, report, UNSEEN's folds and merge.

Every option is keyword-only and named as the CLI's (``--keep`` → ``keep=``); every function returns an
object a notebook can use and writes only where it is told to (``out=``). The ``prune-hooks`` command is a
thin layer over these. Bad input raises :class:`~prune_hooks.core.errors.PruneHooksError` with one line.

    import prune_hooks as ph

    run = ph.open_run("output/prune")
    scores = run.image_scores()                      # {image_id: {"vps_iou_max": 0.12, ...}}
    subset = ph.select(run.path, method="csod", keep=0.3)
    subset.image_ids[:5], subset.n_keep              # best first
    ph.select(run.path, method="vps_iou", keep=0.5, dedup=0.95, out="output/vps_50")  # + subset.json, pruned file
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .core.data.coco import CocoIndex, load_coco, load_detections, sha256_file
from .core.data.rundir import read_images_csv, read_label_issues, read_meta, read_objects_csv
from .core.errors import PruneHooksError
from .core.io import progress
from .core.selection.coverage import DEFAULT_STRATA
from .core.selection.select import DEFAULT_LAMBDA

__all__ = [
    "Cleaned",
    "Run",
    "Subset",
    "audit",
    "clean",
    "compare",
    "open_run",
    "report",
    "score_detections",
    "score_shape",
    "select",
    "unseen_folds",
    "unseen_merge",
]

logger = logging.getLogger("prune_hooks")


@dataclass(frozen=True)
class Run:
    """A run directory (``docs/run_directory.md``): its metadata, and its tables read on demand."""

    path: Path
    meta: dict[str, Any]

    def image_scores(self) -> dict[int, dict[str, float]]:
        """images.csv keyed by image id: ``{image_id: {column: value}}`` (NaN: no score)."""
        return _by_id(read_images_csv(self.path), "image_id")

    def object_scores(self) -> dict[int, dict[str, float]]:
        """objects.csv keyed by annotation id: ``{ann_id: {column: value}}``."""
        return _by_id(read_objects_csv(self.path), "ann_id")

    def label_issues(self) -> list[dict[str, str]]:
        """label_issues.csv as rows of strings (``bbox`` a JSON list)."""
        return read_label_issues(self.path)


@dataclass(frozen=True)
class Subset:
    """A selection: ``image_ids`` best first, ``record`` as subset.json holds it; the paths where written."""

    method: str
    image_ids: list[int]
    n_total: int
    record: dict[str, Any]
    subset_path: Path | None = None
    pruned_path: Path | None = None

    @property
    def n_keep(self) -> int:
        return len(self.image_ids)


@dataclass(frozen=True)
class Cleaned:
    """What ``clean`` wrote: the cleaned annotation file, changes.csv, the change rows, and for a YOLO run the
    cleaned data file (its labels under ``out/yolo``)."""

    path: Path
    changes_path: Path
    changes: list[tuple] = field(default_factory=list)
    yolo_data: Path | None = None


def open_run(run: str | os.PathLike) -> Run:
    """The run directory ``run`` (refused with one line when it does not exist or has no readable meta.json)."""
    return Run(Path(run), read_meta(run))


def score_detections(
    *, annotations: str | os.PathLike, detections: Iterable[str | os.PathLike], out: str | os.PathLike
) -> Run:
    """VPS, forgetting and the label audit from one COCO results file per scoring pass (in pass order) of any
    detector; writes the run directory ``out``."""
    import torch

    from .core.outputs.rundir import write_run
    from .core.scoring.audit import LabelAudit
    from .core.scoring.scores import VPSAccumulator, cipa_pass

    detections = [Path(p) for p in detections]
    if not detections:
        raise PruneHooksError("detections: give at least one COCO results file (one per scoring pass)")
    index = load_coco(annotations)
    acc, audit_state = VPSAccumulator(index.num_objects), LabelAudit(index.obj_boxes)
    everything = torch.arange(index.num_objects)
    for t, path in enumerate(progress(detections, desc="scoring passes", unit="pass"), 1):
        m = cipa_pass(index, load_detections(path, index))
        acc.update(everything, *(torch.from_numpy(v) for v in (m.iou, m.conf, m.learned)))
        acc.end_pass()
        audit_state.add_pass(everything, torch.from_numpy(m.near_conf), torch.from_numpy(m.near_box), m.candidates)
    meta = {"detections": [str(p.resolve()) for p in detections]}
    write_run(out, index, acc, framework="coco-results", audit=audit_state, extra_meta=meta)
    return open_run(out)


def score_shape(
    *,
    annotations: str | os.PathLike,
    out: str | os.PathLike,
    workers: int | None = None,
    image_root: str | None = None,
    report: bool = True,
) -> Run:
    """TFDP shape complexity of every instance mask (no training); writes the run directory ``out`` (and its
    report unless ``report=False``). ``workers``: processes (default every CPU this process may use)."""
    from .core.io import no_gc
    from .core.outputs.rundir import write_run
    from .core.scoring.shape import shape_scores

    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise PruneHooksError(f"workers must be an integer >= 1, got {workers!r}")
    with no_gc():  # a COCO-sized file is millions of objects: the collector would rescan them all the time
        index = load_coco(annotations)
        shapes = shape_scores(index, workers=workers)
        meta = {"scorer": "shape", **shapes.meta(), "image_root": image_root}
        write_run(out, index, framework="annotations", extra_meta=meta, objects=shapes.columns)
    if report:
        from .core.outputs.report import report_or_warn

        report_or_warn(Path(out), image_root)
    return open_run(out)


class _Selector:
    """A run directory and its annotation file, read once, for any number of selections (the CLI's loop)."""

    def __init__(self, run: str | os.PathLike, annotations: str | os.PathLike | None) -> None:
        from .core.selection.inputs import RunInputs

        run = Path(run)
        if not run.is_dir():
            raise PruneHooksError(f"run directory not found: {run}")
        # a directory with only prototypes.npz (no meta.json) works with annotations=
        meta = read_meta(run) if (run / "meta.json").is_file() else {}
        ann = annotations or meta.get("annotations")
        if not ann:
            raise PruneHooksError(
                f"{run} records no annotation file (no meta.json, or none in it): give it (--annotations GT.json)"
            )
        self.index: CocoIndex = load_coco(ann)
        if annotations is None and meta.get("annotations_sha256") not in (None, sha256_file(ann)):
            logger.warning("%s changed since the run was scored (sha256 differs from meta.json)", ann)
        self.run, self.inputs = run, RunInputs(run, self.index)

    def budget(
        self, keep: float | None = None, prune: float | None = None, count: int | None = None
    ) -> tuple[int, float]:
        from .core.selection.algorithms import keep_count

        given = {k: v for k, v in (("keep", keep), ("prune", prune), ("count", count)) if v is not None}
        if len(given) != 1:
            raise PruneHooksError(f"give exactly one of keep, prune, count; got {sorted(given) or 'none'}")
        return keep_count(self.index.num_images, **given)

    def skip_reason(self, method: str, aggregation: str | None) -> str | None:
        """Why ``method`` cannot select from this run (for selections over every method), or None."""
        from .core.selection import methods as registry

        m = registry.get(method)
        why = self.inputs.missing(m) or self.inputs.uninformative(
            method, aggregation if aggregation in m.aggregations else None
        )
        if not why and m.is_score and aggregation and aggregation not in m.aggregations:
            why = f"it aggregates by {', '.join(m.aggregations)} only"
        return why

    def select(self, method: str, n_keep: int, ratio: float, out: str | os.PathLike | None, **options: Any) -> Subset:
        from .core.outputs.rundir import write_subset
        from .core.selection.select import select as select_record

        dedup = options.pop("dedup", None)
        record = select_record(method, self.inputs, n_keep=n_keep, keep_ratio=ratio, dedup_threshold=dedup, **options)
        paths: tuple[Path | None, Path | None] = (None, None)
        if out is not None:
            paths = write_subset(out, record, self.index)
        return Subset(method, list(record["image_ids"]), self.index.num_images, record, *paths)


def select(
    run: str | os.PathLike,
    *,
    method: str,
    keep: float | None = None,
    prune: float | None = None,
    count: int | None = None,
    aggregation: str | None = None,
    seed: int | None = None,
    lam: float = DEFAULT_LAMBDA,
    drop_mislabeled: bool = False,
    stratify: bool = False,
    beta: float | None = None,
    strata: int = DEFAULT_STRATA,
    group_by: str | None = None,
    per_group_max: int | None = None,
    dedup: float | None = None,
    annotations: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
) -> Subset:
    """Choose a subset from the run directory ``run`` with ``method`` (any registered one: docs/methods.md).

    Budget: exactly one of ``keep`` (fraction kept, in (0, 1]), ``prune`` (fraction dropped) or ``count``.
    Coverage (any method): ``stratify`` (+ ``beta``, ``strata``), ``group_by`` (+ ``per_group_max``),
    ``dedup`` (a cosine); ``drop_mislabeled`` ranks images with a wrong_class flag last. ``annotations``: the
    file to prune (default: the run's). ``out``: also write ``out/subset.json`` and the pruned COCO file.
    """
    sel = _Selector(run, annotations)
    n_keep, ratio = sel.budget(keep, prune, count)
    options = dict(
        aggregation=aggregation,
        seed=seed,
        lam=lam,
        drop_mislabeled=drop_mislabeled,
        stratify=stratify,
        beta=beta,
        strata=strata,
        group_by=group_by,
        per_group_max=per_group_max,
        dedup=dedup,
    )
    return sel.select(method, n_keep, ratio, out, **options)


def audit(run: str | os.PathLike, *, out: str | os.PathLike | None = None, **thresholds: float) -> list[dict[str, Any]]:
    """The label audit's flags again at other ``thresholds`` (``tau``, ``loc_iou``, ``loc_conf``, ``loc_agree``,
    ``miss_conf``, ``near_uniform``; docs/methods.md, "Label audit"), from the run's saved state, no training.
    Writes ``out/label_issues.csv`` (default: replaces the run's own). Returns the rows as dicts."""
    from dataclasses import fields

    from .core.data.rundir import LABEL_ISSUE_COLUMNS
    from .core.outputs.clean import audit_run
    from .core.scoring.audit import AuditThresholds

    known = [f.name for f in fields(AuditThresholds)]
    unknown = sorted(set(thresholds) - set(known))
    if unknown:
        raise PruneHooksError(f"audit: unknown thresholds {unknown}; choose from {known}")
    rows = audit_run(run, AuditThresholds(**thresholds), out=out)
    return [dict(zip(LABEL_ISSUE_COLUMNS, r)) for r in rows]


def clean(
    run: str | os.PathLike,
    *,
    relabel: bool = False,
    ignore_bad_location: bool = False,
    add_missing: bool = False,
    out: str | os.PathLike | None = None,
) -> Cleaned:
    """The annotation file with the flagged issues you ask to fix (nothing changes without a flag), written to
    ``out`` (default: the run directory) beside changes.csv; never over the source file."""
    from .core.outputs.clean import clean_run

    path, changes_path, changes = clean_run(
        run, out, relabel=relabel, ignore_bad_location=ignore_bad_location, add_missing=add_missing
    )
    yolo = None
    if open_run(run).meta.get("framework") == "ultralytics":  # the changes as YOLO label files too
        from .ultralytics.clean import write_cleaned_labels

        yolo = write_cleaned_labels(run, changes_path, Path(out) if out is not None else Path(run))
    return Cleaned(path, changes_path, changes, yolo)


def compare(run_a: str | os.PathLike, run_b: str | os.PathLike) -> list[dict[str, Any]]:
    """Per image-score column both runs have: Spearman and Kendall correlation, and the overlap of the subsets
    each selects at keep 0.1 / 0.3 / 0.5 / 0.7 (the stability of a score between two proxies)."""
    from .core.outputs.unseen import compare_runs

    return compare_runs(run_a, run_b)


def report(
    run: str | os.PathLike,
    *,
    subset: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    image_root: str | None = None,
) -> Path:
    """Plots and report.md of a run (default ``run/report/``); returns the report.md path."""
    from .core.outputs.report import write_report

    return write_report(run, subset=subset, out=out, image_root=image_root)


def unseen_folds(
    *, annotations: str | os.PathLike, k: int, out: str | os.PathLike, seed: int = 0
) -> list[tuple[Path, Path]]:
    """UNSEEN's K seeded folds: (fold_<i>_train.json, fold_<i>_score.json) for each fold proxy."""
    from .core.outputs.unseen import write_folds

    return write_folds(annotations, k, seed, out)


def unseen_merge(runs: Iterable[str | os.PathLike], *, annotations: str | os.PathLike, out: str | os.PathLike) -> Run:
    """One run directory from the fold proxies' runs (each score the mean over the runs that scored it)."""
    from .core.outputs.unseen import merge_runs

    merge_runs(list(runs), annotations, out)
    return open_run(out)


def _by_id(table: dict[str, np.ndarray], key: str) -> dict[int, dict[str, float]]:
    ids = table[key].tolist()
    columns = {c: v.tolist() for c, v in table.items() if c != key}
    return {i: {c: v[j] for c, v in columns.items()} for j, i in enumerate(ids)}
