"""``cfg.PRUNE``: the prune_hooks options of a detectron2 config, their check, and the data set-up they name."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from detectron2.config import CfgNode as CN
from detectron2.data import MetadataCatalog
from detectron2.utils import comm

from ..core.data.coco import CocoIndex, load_coco
from ..core.errors import PruneHooksError, fail
from ..core.lifecycle import COVERAGE, check_coverage, check_options
from ..core.outputs.unseen import check_score_set

__all__ = [
    "OPTION_LABELS",
    "PruneSetup",
    "add_prune_config",
    "check_prune_config",
    "register_coco_datasets",
    "resolve_options",
]

logger = logging.getLogger("detectron2.prune_hooks")

OPTION_LABELS = {
    "methods": "PRUNE.METHODS",
    "keep_ratio": "PRUNE.KEEP_RATIO",
    "aggregation": "PRUNE.AGGREGATION",
    "capture": "PRUNE.CAPTURE",
    "other_set": "PRUNE.SCORE_DATASET",
    "stratify": "PRUNE.STRATIFY",
    "group_by": "PRUNE.GROUP_BY",
    "per_group_max": "PRUNE.PER_GROUP_MAX",
    "dedup": "PRUNE.DEDUP",
    "period": "PRUNE.PERIOD",
    "pass_batch": "PRUNE.PASS_BATCH",
    "pass_workers": "PRUNE.PASS_WORKERS",
}


def add_prune_config(cfg: CN) -> CN:
    """Add the ``PRUNE`` node (defaults below) to ``cfg``, before merging a yaml that sets it."""
    cfg.PRUNE = CN()
    cfg.PRUNE.ENABLED = False
    # Scores to compute; the first one chooses the subset written at the end (others: the CLI).
    cfg.PRUNE.METHODS = ["vps_iou", "vps_conf"]
    cfg.PRUNE.KEEP_RATIO = 0.5
    cfg.PRUNE.AGGREGATION = "max"
    # Coverage of the subset written at the end (docs/methods.md, "Coverage options"; the CLI's
    # --stratify, --group-by, --per-group-max, --dedup): CCS strata over the first method's score;
    # spread over an image field or FIELD:REGEX (None = off), at most PER_GROUP_MAX per group (None =
    # round robin); skip images whose mean prototype has this cosine with a kept one (None = off).
    cfg.PRUNE.STRATIFY = False
    cfg.PRUNE.GROUP_BY = None
    cfg.PRUNE.PER_GROUP_MAX = None
    cfg.PRUNE.DEDUP = None
    # Iterations between scoring passes; 0 = one epoch = ceil(images / SOLVER.IMS_PER_BATCH).
    cfg.PRUNE.PERIOD = 0
    # How objects are scored each epoch: "pass" (a scoring pass over the training set with the test
    # loader) or "in_loop" (the training batches, from the training step's own backbone features;
    # docs/methods.md, "In-loop capture"). Refused with INPUT.CROP.ENABLED and SCORE_DATASET.
    cfg.PRUNE.CAPTURE = "pass"
    # The scoring pass's loader (the test mapper, every image once across ranks): images per batch on each
    # rank (0 = the training batch per rank, SOLVER.IMS_PER_BATCH / world size; the test loader's is 1) and
    # loader workers (-1 = DATALOADER.NUM_WORKERS).
    cfg.PRUNE.PASS_BATCH = 0
    cfg.PRUNE.PASS_WORKERS = -1
    # Scoring passes keep low-score detections so that every object can be matched.
    cfg.PRUNE.SCORE_THRESH = 0.0
    # Score another COCO dataset than DATASETS.TRAIN (UNSEEN fold proxies: images the model never
    # trains on); its images must not be training images unless SCORE_ALLOW_OVERLAP (then a warning).
    # Such a run writes no retrain.yaml: its subset is not a training plan by itself.
    cfg.PRUNE.SCORE_DATASET = ""
    cfg.PRUNE.SCORE_ALLOW_OVERLAP = False
    # Also write each pass's detections as COCO results under OUTPUT_DIR/prune/passes/.
    cfg.PRUNE.DUMP_DETECTIONS = False
    # COCO datasets the train script registers before building anything:
    # [[name, json_file, image_root], ...]. The generated retrain.yaml lists its pruned set here.
    cfg.PRUNE.COCO_DATASETS = []
    return cfg


def register_coco_datasets(cfg: CN) -> list[str]:
    """Register ``cfg.PRUNE.COCO_DATASETS`` with detectron2 (names already registered are kept)."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

    names = []
    for entry in cfg.PRUNE.COCO_DATASETS:
        if len(entry) != 3:
            raise fail(f"PRUNE.COCO_DATASETS entries are [name, json_file, image_root], got {list(entry)}")
        name, json_file, image_root = entry
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, json_file, image_root)
        names.append(name)
    return names


@dataclass(frozen=True)
class PruneSetup:
    """What a config's prune options resolve to before training, whichever config system wrote them (yacs
    ``cfg.PRUNE``: :func:`check_prune_config`; LazyConfig ``prune``:
    :func:`~prune_hooks.detectron2.lazy.check_lazy_config`); computed once and handed to the hook.

    Attributes:
        dataset: the scored dataset's name: the training set, or the other set the options name.
        index: its annotation file.
        image_root: its image folder (the metadata's ``image_root``).
        n_train: images in the training set.
        train_dataset: the training set's name.
        options: ``ScoringRun``'s keyword arguments (methods, keep_ratio, aggregation, score_thresh, dump,
            capture, coverage) and ``period``: iterations between passes.
        device, output_dir: the model's device; the run is written to ``output_dir/prune``.
        test_loader: ``test_loader(dataset)``, the scoring pass's loader over a dataset (test pipeline).
        write_retrain: ``write_retrain(pruned, n_keep, n_total, run)`` writes the retraining config into ``run``.
    """

    dataset: str
    index: CocoIndex
    image_root: str
    n_train: int
    train_dataset: str
    options: dict[str, Any]
    device: str
    output_dir: str
    test_loader: Callable[[str], Iterable[Any]]
    write_retrain: Callable[[Path, int, int, Path], Path]

    @property
    def coverage(self) -> dict[str, Any]:
        return self.options["coverage"]


def check_prune_config(cfg: CN) -> PruneSetup:
    """Validate ``cfg.PRUNE`` and the datasets it names; returns the set-up the hook runs on.

    The hook calls it when it is built; a train script that calls it before the trainer loads any data
    fails at once on a bad config, and can hand the result to ``insert_prune_hooks(..., setup=...)``.
    """
    from detectron2.data import DatasetMapper, get_detection_dataset_dicts

    from .retrain import write_retrain_config

    if "PRUNE" not in cfg:
        raise fail("the config has no PRUNE node: call add_prune_config(cfg) before merging the yaml")
    p = cfg.PRUNE
    if p.CAPTURE == "in_loop" and cfg.INPUT.CROP.ENABLED:
        raise fail(
            "PRUNE.CAPTURE in_loop needs the batch's boxes to be the file's boxes resized and flipped; "
            "INPUT.CROP.ENABLED True moves them by a random offset: use PRUNE.CAPTURE pass with crops"
        )
    if len(cfg.DATASETS.TRAIN) != 1:
        raise fail(f"DATASETS.TRAIN must name one COCO dataset to prune, got {list(cfg.DATASETS.TRAIN)}")
    options = {k.lower(): v for k, v in p.items()}
    train = cfg.DATASETS.TRAIN[0]
    dataset, index, train_index, run_options = resolve_options(options, train, OPTION_LABELS, "DATASETS.TRAIN")
    period = int(p.PERIOD) or math.ceil(train_index.num_images / cfg.SOLVER.IMS_PER_BATCH)
    image_root = getattr(MetadataCatalog.get(dataset), "image_root", "")
    frozen = cfg.clone()
    batch, workers = check_pass_loader(p.PASS_BATCH, p.PASS_WORKERS, OPTION_LABELS)
    batch = batch or max(1, cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size())
    workers = cfg.DATALOADER.NUM_WORKERS if workers < 0 else workers

    def test_loader(name: str):
        dicts = get_detection_dataset_dicts([name], filter_empty=False)
        return pass_loader(dicts, DatasetMapper(frozen, False), batch, workers)

    def retrain(pruned: Path, n_keep: int, n_total: int, run: Path) -> Path:
        return write_retrain_config(frozen, dataset, pruned, image_root, n_keep, n_total, run / "retrain.yaml")

    return PruneSetup(
        dataset,
        index,
        image_root,
        train_index.num_images,
        train,
        {**run_options, "period": period},
        cfg.MODEL.DEVICE,
        cfg.OUTPUT_DIR,
        test_loader,
        retrain,
    )


def check_pass_loader(batch: Any, workers: Any, labels: dict[str, str]) -> tuple[int, int]:
    """The pass loader's options as ints: batch >= 0 (0: the caller's default), workers >= -1 (-1: ditto)."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
        raise fail(f"{labels['pass_batch']} must be an integer >= 0 (0: the training batch per rank), got {batch!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < -1:
        raise fail(f"{labels['pass_workers']} must be an integer >= -1 (-1: the data loader's), got {workers!r}")
    return batch, workers


def pass_loader(dicts: list, mapper: Callable, batch: int, workers: int):
    """The scoring pass's loader: ``mapper`` over ``dicts``, every image once across ranks (detectron2's
    ``InferenceSampler``), ``batch`` images per batch as a list (what the model's inference takes)."""
    import torch.utils.data as tud
    from detectron2.data.build import trivial_batch_collator
    from detectron2.data.common import DatasetFromList, MapDataset
    from detectron2.data.samplers import InferenceSampler

    data = MapDataset(DatasetFromList(dicts, copy=False), mapper)
    sampler = tud.BatchSampler(InferenceSampler(len(data)), batch, drop_last=False)
    return tud.DataLoader(data, batch_sampler=sampler, num_workers=workers, collate_fn=trivial_batch_collator)


def resolve_options(
    options: dict[str, Any], train: str, labels: dict[str, str], train_label: str
) -> tuple[str, CocoIndex, CocoIndex, dict[str, Any]]:
    """Check the prune options (lower-case names of ``PRUNE``'s keys, each named for the user by ``labels``)
    and the datasets they name; returns (scored dataset, its index, the training set's index, ScoringRun's
    keyword arguments)."""
    scored = options.get("score_dataset") or train
    check_options(
        options["methods"],
        options["keep_ratio"],
        options["aggregation"],
        labels,
        options["capture"],
        other_set=scored != train,
    )
    if int(options["period"]) < 0:
        raise fail(f"{labels['period']} must be >= 0 (0 = one epoch), got {options['period']}")
    train_index = _coco_index(train, train_label)
    index = train_index
    if scored != train:
        index = _coco_index(scored, labels["other_set"])
        try:
            allow = bool(options.get("score_allow_overlap"))
            check_score_set(train_index, index, allow, labels["other_set"], warn=logger.warning)
        except PruneHooksError as e:
            raise fail(str(e)) from None
    coverage = {k: options.get(k) for k in COVERAGE}
    run_options = {
        "methods": list(options["methods"]),
        "keep_ratio": options["keep_ratio"],
        "aggregation": options["aggregation"],
        "score_thresh": options["score_thresh"],
        "dump": options["dump_detections"],
        "capture": options["capture"],
        "coverage": check_coverage(coverage, list(options["methods"]), labels, index),
    }
    return scored, index, train_index, run_options


def _coco_index(dataset: str, what: str) -> CocoIndex:
    json_file = getattr(MetadataCatalog.get(dataset), "json_file", None)
    if not json_file:
        raise fail(
            f"{what} {dataset!r} is not COCO-registered (its metadata has no json_file, so there is "
            "no annotation file to prune): register it with register_coco_instances or PRUNE.COCO_DATASETS"
        )
    try:
        return load_coco(json_file)
    except PruneHooksError as e:
        raise fail(str(e)) from None
