"""Dataset pruning for object detection, as training hooks for Detectron2 and MMDetection."""

__version__ = "0.1.0"
