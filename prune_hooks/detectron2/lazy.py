"""The prune hook for detectron2's LazyConfig route (``tools/lazyconfig_train_net.py``, the ``new_baselines`` and
ViTDet configs), and the LazyConfig retraining config it writes.

The config gets a ``prune`` entry (the yacs ``PRUNE`` node's keys, lower case)::

    prune = dict(enabled=True, methods=["vps_iou", "vps_conf", "csod"], keep_ratio=0.5)

and the script's ``do_train`` one more hook, before ``PeriodicCheckpointer``
(``docs/detectron2_lazyconfig_train_net.diff``)::

    lazy_prune_hook(cfg, args),

When training ends, ``<train.output_dir>/prune/retrain.py`` is a LazyConfig file that loads the original one with
the same overrides, registers the pruned dataset, trains on it, and scales ``train.max_iter``,
``train.eval_period`` and ``train.checkpointer.period`` to the subset; the unmodified script retrains from it.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm

from ..core.errors import fail
from ..core.io import atomic_write_text
from ..core.outputs.schedule import describe_changes, scale_schedule
from .config import PruneSetup, check_pass_loader, pass_loader, resolve_options

__all__ = ["DEFAULTS", "check_lazy_config", "lazy_prune_hook", "register_coco", "write_lazy_retrain"]

# the prune options of a LazyConfig and their defaults: those of add_prune_config, lower case
DEFAULTS = {
    "enabled": False,
    "methods": ["vps_iou", "vps_conf"],
    "keep_ratio": 0.5,
    "aggregation": "max",
    "stratify": False,
    "group_by": None,
    "per_group_max": None,
    "dedup": None,
    "period": 0,
    "capture": "pass",
    "score_thresh": 0.0,
    "score_dataset": "",
    "score_allow_overlap": False,
    "dump_detections": False,
    "pass_batch": 0,  # images per scoring-pass batch on each rank; 0: the training batch per rank
    "pass_workers": -1,  # scoring-pass loader workers; -1: dataloader.test's num_workers
}
LABELS = {
    "methods": "prune.methods",
    "keep_ratio": "prune.keep_ratio",
    "aggregation": "prune.aggregation",
    "capture": "prune.capture",
    "other_set": "prune.score_dataset",
    "stratify": "prune.stratify",
    "group_by": "prune.group_by",
    "per_group_max": "prune.per_group_max",
    "dedup": "prune.dedup",
    "period": "prune.period",
    "pass_batch": "prune.pass_batch",
    "pass_workers": "prune.pass_workers",
}


def register_coco(name: str, json_file: str, image_root: str) -> str:
    """Register a COCO dataset under ``name`` where no dataset has that name yet; returns ``name``.

    For LazyConfig files, which run when they are loaded: ``dataloader.train.dataset.names = register_coco(...)``.
    """
    if name not in DatasetCatalog.list():
        from detectron2.data.datasets import register_coco_instances

        register_coco_instances(name, {}, json_file, image_root)
    return name


def lazy_prune_hook(cfg: Any, args: argparse.Namespace):
    """The prune hook ``cfg.prune`` asks for, or None (no ``prune`` entry, or ``enabled`` False), which
    ``trainer.register_hooks`` skips. ``args``: the script's arguments (``--config-file`` and the overrides
    are what ``retrain.py`` loads again)."""
    from .hook import PruneHook

    if not dict(cfg.get("prune") or {}).get("enabled", False):
        return None
    return PruneHook(setup=check_lazy_config(cfg, args.config_file, list(args.opts)))


def check_lazy_config(cfg: Any, config_file: str, overrides: list[str]) -> PruneSetup:
    """Validate ``cfg.prune`` and the datasets it names; returns the set-up the hook runs on."""
    options = dict(cfg.get("prune") or {})
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise fail(f"prune: unknown options {unknown}; choose from {sorted(DEFAULTS)}")
    options = {**DEFAULTS, **options}
    names = cfg.dataloader.train.dataset.names
    names = [names] if isinstance(names, str) else list(names)
    if len(names) != 1:
        raise fail(f"dataloader.train.dataset.names must name one COCO dataset to prune, got {names}")
    if options["capture"] == "in_loop" and _crops(cfg.dataloader.train):
        raise fail(
            "prune.capture in_loop needs the batch's boxes to be the file's boxes resized and flipped; the train "
            "mapper's augmentations crop them: use prune.capture 'pass' with crops"
        )
    train = names[0]
    dataset, index, train_index, run_options = resolve_options(options, train, LABELS, "dataloader.train.dataset.names")
    batch = int(cfg.dataloader.train.total_batch_size)
    period = int(options["period"]) or -(-train_index.num_images // batch)
    image_root = getattr(MetadataCatalog.get(dataset), "image_root", "")
    test = copy.deepcopy(cfg.dataloader.test)
    source = (str(Path(config_file).resolve()), list(overrides), train, image_root, dict(cfg.train))
    pass_batch, workers = check_pass_loader(options["pass_batch"], options["pass_workers"], LABELS)
    pass_batch = pass_batch or max(1, batch // comm.get_world_size())
    workers = int(test.get("num_workers", 0)) if workers < 0 else workers

    def test_loader(name: str):
        test.dataset.names = name
        return pass_loader(instantiate(test.dataset), instantiate(test.mapper), pass_batch, workers)

    def retrain(pruned: Path, n_keep: int, n_total: int, run: Path) -> Path:
        return write_lazy_retrain(*source, pruned, n_keep, n_total, run / "retrain.py")

    return PruneSetup(
        dataset,
        index,
        image_root,
        train_index.num_images,
        train,
        {**run_options, "period": period},
        str(cfg.train.device),
        str(cfg.train.output_dir),
        test_loader,
        retrain,
    )


def _crops(train_loader: Any) -> bool:
    augs = ((train_loader.get("mapper") or {}).get("augmentations")) or []
    return any("Crop" in str(getattr(a, "get", lambda *_: "")("_target_", "")) for a in augs)


def write_lazy_retrain(
    config_file: str,
    overrides: list[str],
    dataset: str,
    image_root: str,
    train: dict[str, Any],
    pruned_json: Path,
    n_keep: int,
    n_total: int,
    path: Path,
) -> Path:
    """``retrain.py``: the LazyConfig ``config_file`` with ``overrides``, training on the pruned file (registered
    when the file is loaded), ``train`` scaled by ``n_keep / n_total``, prune disabled.

    ``train.max_iter`` is scaled; the LR multiplier is left as it is: detectron2 calls it with the fraction of
    training done (``LRMultiplier``), so its milestones move with ``max_iter``; its warm-up, a fraction too, is
    stretched so that it keeps its iterations (at most half the new schedule), as the yacs route keeps
    ``WARMUP_ITERS``."""
    fraction = n_keep / n_total
    name = f"{dataset}_{Path(pruned_json).stem}"
    old_max = int(train["max_iter"])
    plain = {
        "train": {
            "max_iter": old_max,
            "eval_period": int(train.get("eval_period") or 0),
            "checkpointer": {"period": int((train.get("checkpointer") or {}).get("period") or 0)},
        }
    }
    changes = scale_schedule(plain, ["train.max_iter", "train.eval_period", "train.checkpointer.period"], fraction)
    values = plain["train"]
    note = describe_changes(changes, fraction)
    text = f"""# generated by prune_hooks: {n_keep}/{n_total} images of {dataset}; {note}
from detectron2.config import LazyConfig

from prune_hooks.detectron2.lazy import register_coco

globals().update(LazyConfig.apply_overrides(LazyConfig.load({config_file!r}), {overrides!r}))
dataloader.train.dataset.names = register_coco({name!r}, {str(Path(pruned_json).resolve())!r}, {str(image_root)!r})
train.output_dir = {str(Path(train["output_dir"]).resolve()) + "_retrain"!r}
train.max_iter = {values["max_iter"]}
train.eval_period = {values["eval_period"]}
train.checkpointer.period = {values["checkpointer"]["period"]}
_warmup = lr_multiplier.get("warmup_length") if hasattr(lr_multiplier, "get") else None
if _warmup:  # a fraction of the schedule: the same iterations, at most half the new schedule
    lr_multiplier.warmup_length = min(_warmup * {old_max} / train.max_iter, 0.5)
prune = dict(enabled=False)
"""
    return atomic_write_text(path, text)
