"""Detectron2's usual train script with the prune hooks, installed with the package.

    python -m prune_hooks.detectron2.train_net --config-file X.yaml [--resume] [--num-gpus N] [KEY VALUE ...]

It is detectron2's ``tools/train_net.py`` with what ``docs/detectron2_train_net.diff`` adds to a copy of it
(``add_prune_config(cfg)`` before the yaml is merged, ``register_coco_datasets(cfg)``, the prune hooks
inserted before the checkpointer), plus three things a pip install needs: the config checked before any data
is loaded, the COCO evaluator's python implementation where detectron2 was built without its C++ ops, and,
on a machine without CUDA, ``--num-gpus N`` as N CPU processes joined by gloo (:func:`launch`). The
generated ``retrain.yaml`` runs with the same command.
"""

from __future__ import annotations

import os
import sys

from .. import compat  # noqa: F401  (detectron2 v0.6 aliases, before detectron2.data)

# isort: split

from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup
from detectron2.evaluation import COCOEvaluator

from ..core.errors import PruneHooksError
from .config import PruneSetup, add_prune_config, check_prune_config, register_coco_datasets
from .hook import insert_prune_hooks
from .launch import fast_coco_eval_available, launch

__all__ = ["Trainer", "main", "setup"]


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` with the prune hooks; ``prune_setup``: the config's checked set-up (else checked here)."""

    def __init__(self, cfg, prune_setup: PruneSetup | None = None) -> None:
        self.prune_setup = prune_setup  # read by build_hooks, which DefaultTrainer.__init__ calls
        super().__init__(cfg)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=fast_coco_eval_available())

    def build_hooks(self):
        return insert_prune_hooks(super().build_hooks(), self.cfg, setup=self.prune_setup)


def setup(args):
    """The config (``PRUNE`` node added, yaml and overrides merged, frozen) and its checked prune set-up."""
    cfg = get_cfg()
    add_prune_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    register_coco_datasets(cfg)
    prune_setup = check_prune_config(cfg) if cfg.PRUNE.ENABLED else None  # fail before any data is loaded
    default_setup(cfg, args)
    return cfg, prune_setup


def main(args):
    cfg, prune_setup = setup(args)
    if args.eval_only:
        from detectron2.checkpoint import DetectionCheckpointer

        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg, prune_setup)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv: list[str] | None = None) -> int:
    args = default_argument_parser().parse_args(argv)
    try:
        _check_config_file(args.config_file, args.opts)
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except PruneHooksError as e:  # a bad config: one line, no traceback
        print(str(e), file=sys.stderr)
        return 1
    return 0


def _check_config_file(path: str, opts: list[str]) -> None:
    """A config file that exists, parses, and has a ``PRUNE`` section (or ``PRUNE.*`` overrides)."""
    from detectron2.config import CfgNode

    if not os.path.isfile(path):
        raise PruneHooksError(f"[prune_hooks] --config-file {path!r}: file not found")
    try:
        raw = CfgNode.load_yaml_with_base(path, allow_unsafe=True)
    except Exception as e:  # yaml errors, a missing _BASE_
        raise PruneHooksError(f"[prune_hooks] --config-file {path!r}: not a readable detectron2 config ({e})") from None
    if "PRUNE" not in (raw or {}) and not any(str(k).startswith("PRUNE.") for k in opts[::2]):
        raise PruneHooksError(
            f"[prune_hooks] --config-file {path!r} has no PRUNE section: add 'PRUNE: {{ENABLED: True}}' (or the "
            "option PRUNE.ENABLED True) to prune; a config without it trains with detectron2's own train_net.py"
        )


if __name__ == "__main__":
    sys.exit(cli())
