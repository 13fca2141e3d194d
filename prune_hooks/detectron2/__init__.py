"""Detectron2 adapter of prune_hooks.

from prune_hooks.detectron2 import add_prune_config, insert_prune_hooks

cfg = get_cfg(); add_prune_config(cfg); cfg.merge_from_file("my.yaml")

class Trainer(DefaultTrainer):
    def build_hooks(self):
        return insert_prune_hooks(super().build_hooks(), self.cfg)
"""

from __future__ import annotations

from .. import compat  # noqa: F401  (detectron2 v0.6 aliases, before detectron2.data)

try:
    import detectron2  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "prune_hooks.detectron2 needs detectron2, which is not on PyPI: install it from its sources "
        '(see the README, "Installation"), then pip install "prune-hooks[detectron2]".'
    ) from e

from .config import PruneSetup, add_prune_config, check_prune_config, register_coco_datasets  # noqa: E402
from .hook import PruneHook, build_prune_hooks, insert_prune_hooks  # noqa: E402
from .launch import launch  # noqa: E402
from .lazy import lazy_prune_hook, register_coco  # noqa: E402
from .retrain import write_retrain_config  # noqa: E402

__all__ = [
    "PruneHook",
    "PruneSetup",
    "add_prune_config",
    "build_prune_hooks",
    "check_prune_config",
    "insert_prune_hooks",
    "launch",
    "lazy_prune_hook",
    "register_coco",
    "register_coco_datasets",
    "write_retrain_config",
]
