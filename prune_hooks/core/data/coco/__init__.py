"""COCO files: the streamed reader (``stream``), the validated object table (``index``), detection results
(``results``) and the pruned file (``writer``).
"""

from .index import CocoIndex, load_coco, sha256_file
from .results import Detections, load_detections
from .writer import write_pruned_coco

__all__ = ["CocoIndex", "Detections", "load_coco", "load_detections", "sha256_file", "write_pruned_coco"]
