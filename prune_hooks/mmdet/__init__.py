"""MMDetection 3.x adapter of prune_hooks: ``PruneHook``, an mmengine hook.

    custom_imports = dict(imports=['prune_hooks.mmdet'], allow_failed_imports=False)
    custom_hooks = [dict(type='PruneHook', methods=['vps_iou', 'vps_conf', 'csod'], keep_ratio=0.5)]

With the hook in the config, ``--resume`` reads the run's own checkpoints under torch >= 2.6 (see
:func:`~prune_hooks.mmdet.checkpoint.trust_own_checkpoints`).
"""

from __future__ import annotations

from .. import compat  # noqa: F401  (mmdet imports detectron2 when it is installed)
from .checkpoint import trust_own_checkpoints
from .hook import PruneHook
from .retrain import write_retrain_config

__all__ = ["PruneHook", "trust_own_checkpoints", "write_retrain_config"]
