"""``cfg.PRUNE``: the prune_hooks options of a detectron2 config."""

from __future__ import annotations

from detectron2.config import CfgNode as CN

__all__ = ["add_prune_config", "register_coco_datasets"]


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
            raise ValueError(
                f"[prune_hooks] PRUNE.COCO_DATASETS entries are [name, json_file, image_root], got {list(entry)}"
            )
        name, json_file, image_root = entry
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, json_file, image_root)
        names.append(name)
    return names
