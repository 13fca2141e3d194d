"""Dataset pruning for object detection, as training hooks for Detectron2, MMDetection and Ultralytics."""

from ._version import __version__

__all__ = ["__version__"]
