"""The tiny detectron2 config of the demo and the tests: the model zoo's Faster R-CNN, shrunk."""

from __future__ import annotations

from pathlib import Path

from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg

from ..toy import toy_config_file
from .config import add_prune_config

__all__ = ["toy_config"]


def toy_config(annotations: dict[str, Path], data_root: Path, output_dir: Path, prefix: str = "toy") -> CfgNode:
    """COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml + the package's configs/detectron2/toy_R18_FPN_overrides.yaml.

    ``annotations`` is what :func:`prune_hooks.toy.make_toy_coco` returns; the splits are listed in
    ``PRUNE.COCO_DATASETS`` as ``<prefix>_<split>`` so that the train script registers them.
    """
    cfg = get_cfg()
    add_prune_config(cfg)
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    cfg.merge_from_file(str(toy_config_file("detectron2")))
    cfg.PRUNE.COCO_DATASETS = [
        [f"{prefix}_{split}", str(Path(path).resolve()), str((Path(data_root) / split).resolve())]
        for split, path in annotations.items()
    ]
    cfg.DATASETS.TRAIN = (f"{prefix}_train",)
    cfg.DATASETS.TEST = (f"{prefix}_val",) if "val" in annotations else ()
    cfg.OUTPUT_DIR = str(output_dir)
    return cfg
