"""Detectron2's LazyConfig training loop with the prune hook, installed with the package.

    python -m prune_hooks.detectron2.lazy_train_net --config-file X.py [--resume] [--num-gpus N] [key=value ...]

The loop of detectron2's ``tools/lazyconfig_train_net.py`` (model, optimizer and loaders instantiated from the
config; a ``SimpleTrainer`` or ``AMPTrainer``; the usual hooks) with :func:`lazy_prune_hook` before the
checkpointer, which is what ``docs/detectron2_lazyconfig_train_net.diff`` adds to a copy of that script. The
generated ``retrain.py`` runs with the same command; on a machine without CUDA ``--num-gpus N`` starts N CPU
processes joined by gloo (:func:`~prune_hooks.detectron2.launch.launch`).
"""

from __future__ import annotations

import logging
import os
import sys

from .. import compat  # noqa: F401  (detectron2 v0.6 aliases, before detectron2.data)

# isort: split

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import AMPTrainer, SimpleTrainer, default_argument_parser, default_setup, default_writers, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

from ..core.errors import PruneHooksError
from .launch import fast_coco_eval_available, launch
from .lazy import lazy_prune_hook

__all__ = ["main"]

logger = logging.getLogger("detectron2")


def evaluate(cfg, model):
    """COCO metrics of ``model`` on ``cfg.dataloader.test`` where the config has an evaluator."""
    if "evaluator" in cfg.dataloader:
        evaluator = cfg.dataloader.evaluator
        if "COCOEvaluator" in str(evaluator.get("_target_", "")) and not fast_coco_eval_available():
            evaluator.use_fast_impl = False  # a python-only detectron2 build has no C++ evaluator
        result = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(evaluator))
        print_csv_format(result)
        return result
    return None


def train(args, cfg) -> None:
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    loader = instantiate(cfg.dataloader.train)
    prune = lazy_prune_hook(cfg, args)  # checked before the model is wrapped and any step runs
    model = create_ddp_model(model, **cfg.train.ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, loader, optimizer)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    main = comm.is_main_process()
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            prune,  # before the checkpointer: a checkpoint at an epoch end holds that epoch's pass
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if main else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: evaluate(cfg, model)),
            hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), cfg.train.log_period)
            if main
            else None,
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start, cfg.train.max_iter)


def main(args) -> None:
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    default_setup(cfg, args)
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        DetectionCheckpointer(create_ddp_model(model)).load(cfg.train.init_checkpoint)
        print(evaluate(cfg, model))
    else:
        train(args, cfg)


def cli(argv: list[str] | None = None) -> int:
    args = default_argument_parser().parse_args(argv)
    if not os.path.isfile(args.config_file):
        print(f"[prune_hooks] --config-file {args.config_file!r}: file not found", file=sys.stderr)
        return 1
    try:
        launch(main, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url, args=(args,))
    except PruneHooksError as e:  # a bad config: one line, no traceback
        print(str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
