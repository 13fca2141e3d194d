#!/usr/bin/env python
"""Detectron2's usual train script, with prune_hooks added.

    python tools/train_net.py --config-file X.yaml [--resume] [--num-gpus N] [KEY VALUE ...]

Differences from detectron2's tools/train_net.py: ``add_prune_config(cfg)`` before the yaml is merged,
``PRUNE.COCO_DATASETS`` registered, the prune hooks inserted before the checkpointer, and the COCO
evaluator using the python implementation where detectron2 was built without its C++ ops, and on a
machine without CUDA ``--num-gpus N`` starts N CPU processes joined by gloo (prune_hooks' ``launch``).
"""

from __future__ import annotations

import importlib.util
import os

import prune_hooks.detectron2  # noqa: F401  (before detectron2.data: v0.6 compatibility aliases)

# isort: split

from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup
from detectron2.evaluation import COCOEvaluator

from prune_hooks.detectron2 import (
    add_prune_config,
    check_prune_config,
    insert_prune_hooks,
    launch,
    register_coco_datasets,
)


def fast_coco_eval_available() -> bool:
    spec = importlib.util.find_spec("detectron2._C")
    return bool(spec and spec.origin and not spec.origin.endswith(".py"))


class Trainer(DefaultTrainer):
    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=fast_coco_eval_available())

    def build_hooks(self):
        return insert_prune_hooks(super().build_hooks(), self.cfg)


def setup(args):
    cfg = get_cfg()
    add_prune_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    register_coco_datasets(cfg)
    if cfg.PRUNE.ENABLED:
        check_prune_config(cfg)  # fail before any data is loaded
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        from detectron2.checkpoint import DetectionCheckpointer

        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
