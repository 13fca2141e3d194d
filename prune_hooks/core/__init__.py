"""Framework-free core: matching, accumulators, scores, the method registry (``methods``), the hook
lifecycle (``lifecycle``), selection, schedule scaling, file writers.

Imports numpy, torch and the standard library (torchvision's RoI ops in ``dense``, which only the
adapters import); the framework adapters turn their objects into plain tensors and call these functions.
"""

from .capture import VPSCapture
from .coco import CocoIndex, Detections, load_coco, load_detections, write_pruned_coco
from .errors import PruneHooksError
from .matching import cipa_match
from .rundir import read_images_csv, read_meta, write_run, write_subset
from .schedule import describe_changes, scale_iters, scale_schedule
from .scores import AGGREGATIONS, VPSAccumulator, aggregate, cipa_pass, rank_images
from .selection import keep_count, random_order, subset_record
from .welford import Welford

__all__ = [
    "AGGREGATIONS",
    "CocoIndex",
    "Detections",
    "PruneHooksError",
    "VPSAccumulator",
    "VPSCapture",
    "Welford",
    "aggregate",
    "cipa_match",
    "cipa_pass",
    "describe_changes",
    "keep_count",
    "load_coco",
    "load_detections",
    "random_order",
    "rank_images",
    "read_images_csv",
    "read_meta",
    "scale_iters",
    "scale_schedule",
    "subset_record",
    "write_pruned_coco",
    "write_subset",
    "write_run",
]
