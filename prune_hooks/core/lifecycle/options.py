"""The options every hook shares, checked before training, each named as the user wrote it."""

from __future__ import annotations

from typing import Any, Sequence

from ..data.coco import CocoIndex
from ..errors import PruneHooksError, fail
from ..scoring.scores import AGGREGATIONS
from ..selection.methods import REGISTRY

__all__ = ["CAPTURES", "COVERAGE", "check_coverage", "check_options"]

CAPTURES = ("pass", "in_loop")  # scoring passes over the training set / the training batches (core.scoring.inloop)


def check_options(
    methods: Sequence[str] | str,
    keep_ratio: Any,
    aggregation: str,
    labels: dict[str, str],
    capture: str = "pass",
    other_set: bool = False,
) -> list[str]:
    """Validate the options both hooks share; returns ``methods`` as a list.

    ``labels`` names each option as the user wrote it (``{"methods": "PRUNE.METHODS", ...}``), so a
    bad value is reported in the user's own words: ``[prune_hooks] PRUNE.KEEP_RATIO must be in (0, 1], got 1.5``.
    """
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise fail(f"{labels['methods']} is empty")
    for m in methods:
        if m not in REGISTRY:
            raise fail(f"{labels['methods']}: unknown method {m!r}; choose from {list(REGISTRY)}")
    if aggregation not in AGGREGATIONS:
        raise fail(f"{labels['aggregation']} must be one of {list(AGGREGATIONS)}, got {aggregation!r}")
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)) or not 0 < keep_ratio <= 1:
        raise fail(f"{labels['keep_ratio']} must be in (0, 1], got {keep_ratio}")
    if capture not in CAPTURES:
        raise fail(f"{labels['capture']} must be one of {list(CAPTURES)}, got {capture!r}")
    if capture == "in_loop" and other_set:
        raise fail(
            f"{labels['capture']} in_loop scores the training batches; {labels['other_set']} scores another set, "
            "which needs scoring passes (capture 'pass')"
        )
    return methods


COVERAGE = ("stratify", "group_by", "per_group_max", "dedup")  # the hooks' coverage options (docs/methods.md)


def check_coverage(
    coverage: dict[str, Any], methods: Sequence[str], labels: dict[str, str], index: CocoIndex
) -> dict[str, Any]:
    """Validate the hooks' coverage options (``COVERAGE``: ``stratify`` bool, ``group_by`` image field
    or FIELD:REGEX, ``per_group_max`` int, ``dedup`` cosine; None = off) before training, each named
    as the user wrote it (``labels``); returns them as ``select``'s keyword arguments."""
    stratify, group_by = coverage.get("stratify") or False, coverage.get("group_by") or None
    per_group_max, dedup = coverage.get("per_group_max"), coverage.get("dedup")
    if not isinstance(stratify, bool):
        raise fail(f"{labels['stratify']} must be True or False, got {stratify!r}")
    if stratify and not REGISTRY[methods[0]].is_score:
        raise fail(
            f"{labels['stratify']} needs a score method first in {labels['methods']}, {methods[0]} ranks without scores"
        )
    if group_by is not None:
        if not isinstance(group_by, str):
            raise fail(f"{labels['group_by']} must be an image field or FIELD:REGEX, got {group_by!r}")
        from ..selection.coverage import group_labels

        try:
            group_labels(index, group_by, option=labels["group_by"])
        except PruneHooksError as e:
            raise fail(str(e)) from None
    if per_group_max is not None:
        if isinstance(per_group_max, bool) or not isinstance(per_group_max, int) or per_group_max < 1:
            raise fail(f"{labels['per_group_max']} must be an integer >= 1, got {per_group_max!r}")
        if group_by is None:
            raise fail(f"{labels['per_group_max']} needs {labels['group_by']}")
    if dedup is not None and (isinstance(dedup, bool) or not isinstance(dedup, (int, float)) or not -1 <= dedup <= 1):
        raise fail(f"{labels['dedup']} must be a cosine in [-1, 1], got {dedup!r}")
    return {
        "stratify": stratify,
        "group_by": group_by,
        "per_group_max": per_group_max,
        "dedup_threshold": None if dedup is None else float(dedup),
    }
