"""Ultralytics YOLO adapter of prune_hooks: the prune hooks as callbacks of ``YOLO(...).train``.

from prune_hooks.ultralytics import add_prune_callbacks

model = YOLO("yolov8n.yaml")
add_prune_callbacks(model, methods=["vps_iou", "vps_conf", "csod"], keep_ratio=0.5)
model.train(data="data.yaml", epochs=100)
"""

from __future__ import annotations

try:
    import ultralytics  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError('prune_hooks.ultralytics needs Ultralytics: pip install "prune-hooks[ultralytics]"') from e

from .callbacks import PruneCallbacks, add_prune_callbacks  # noqa: E402
from .retrain import write_subset_files  # noqa: E402

__all__ = ["PruneCallbacks", "add_prune_callbacks", "write_subset_files"]
