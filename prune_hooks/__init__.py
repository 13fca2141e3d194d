"""Dataset pruning for object detection, as training hooks for Detectron2 and MMDetection, a CLI, and the same
as Python functions (:mod:`prune_hooks.api`): ``prune_hooks.select(run, method="csod", keep=0.3)``.

The functions load on first use, so ``import prune_hooks.detectron2`` (which must come before detectron2's data
modules on detectron2 0.6) stays light.
"""

from ._version import __version__

_API = (
    "Cleaned",
    "Run",
    "Subset",
    "audit",
    "clean",
    "compare",
    "open_run",
    "report",
    "score_detections",
    "score_shape",
    "select",
    "unseen_folds",
    "unseen_merge",
)

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'prune_hooks' has no attribute {name!r}")
