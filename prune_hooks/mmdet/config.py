"""Reading an mmdet config for the hook: the training set's COCO file under dataset wrappers, the train
pipeline's transforms, and the option labels of ``PruneHook``.
"""

from __future__ import annotations

import os.path as osp

from ..core.errors import fail
from ..core.lifecycle import COVERAGE

__all__ = ["OPTION_LABELS", "WRAPPERS", "check_dataset", "innermost", "pipeline_types", "repeats"]

WRAPPERS = ("RepeatDataset", "ConcatDataset", "ClassBalancedDataset", "MultiImageMixDataset")
OPTION_LABELS = {
    "methods": "PruneHook methods",
    "keep_ratio": "PruneHook keep_ratio",
    "aggregation": "PruneHook aggregation",
    "capture": "PruneHook capture",
    "other_set": "PruneHook score_ann_file",
    **{name: f"PruneHook {name}" for name in COVERAGE},
}


def pipeline_types(node) -> set[str]:
    """Every transform type named in any ``pipeline`` under a dataset config (wrappers included)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pipeline" and isinstance(value, (list, tuple)):
                found |= {t.get("type", "") for t in value if isinstance(t, dict)}
                for t in value:  # RandomChoice / RandomApply nest transforms
                    found |= pipeline_types({"pipeline": t.get("transforms", [])} if isinstance(t, dict) else {})
            else:
                found |= pipeline_types(value)
    elif isinstance(node, (list, tuple)):
        for v in node:
            found |= pipeline_types(v)
    return found


def check_dataset(cfg) -> tuple[str, dict]:
    """The training set's annotation file (data_root applied) and the config of its innermost COCO
    dataset: wrappers (``RepeatDataset``, ``ClassBalancedDataset``, ``MultiImageMixDataset``, a
    ``ConcatDataset`` of one) are looked through, since repeats, mosaic and mixup are training
    augmentations, not data. A ``ConcatDataset`` of several files is refused."""
    dataset, where = innermost(cfg.train_dataloader.get("dataset", {}))
    kind = dataset.get("type", "")
    ann = dataset.get("ann_file")
    if not ann:
        raise fail(f"{where} ({kind or 'no type'}) has no ann_file: PruneHook needs a COCO annotation file to prune")
    path = osp.join(dataset.get("data_root") or "", ann)
    if not osp.isfile(path):
        raise fail(f"{where}.ann_file {path!r} not found")
    return path, dataset


def innermost(dataset, where: str = "train_dataloader.dataset") -> tuple[dict, str]:
    """(innermost dataset config, its dotted path) under the wrappers of :data:`WRAPPERS`."""
    while dataset.get("type", "") in WRAPPERS:
        if dataset["type"] == "ConcatDataset":
            parts = dataset.get("datasets", [])
            if len(parts) != 1:
                raise fail(
                    f"{where} is a ConcatDataset of {len(parts)} datasets: PruneHook prunes one COCO file; "
                    "merge the files into one annotation file for the proxy run (or prune each part in its own run)"
                )
            dataset, where = parts[0], f"{where}.datasets[0]"
        else:
            dataset, where = dataset.get("dataset", {}), f"{where}.dataset"
    return dataset, where


def repeats(dataset) -> int:
    """How many times an epoch of ``dataset`` goes over its innermost images (RepeatDataset.times)."""
    times = 1
    while dataset.get("type", "") in WRAPPERS:
        times *= int(dataset.get("times", 1)) if dataset["type"] == "RepeatDataset" else 1
        dataset = dataset.get("dataset") or (dataset.get("datasets") or [{}])[0]
    return times
