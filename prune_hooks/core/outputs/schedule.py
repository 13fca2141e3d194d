"""Linear scaling of an iteration-based schedule to the kept fraction of the data set.

See docs/methods.md, "Retraining schedule".
"""

from __future__ import annotations

import math
from typing import Any, Iterable, MutableMapping

from ..errors import PruneHooksError

__all__ = ["scale_iters", "scale_schedule", "describe_changes", "drop_late_milestones"]


def scale_iters(value: int, fraction: float) -> int:
    """``max(1, round_half_up(value * fraction))``; 0 stays 0 (a disabled period stays disabled)."""
    if value == 0:
        return 0
    return max(1, math.floor(value * fraction + 0.5))


def _walk(cfg: Any, key: str) -> tuple[Any, Any] | None:
    """(container, last key) for a dotted path whose segments are mapping keys or list indices."""
    parts = key.split(".")
    node = cfg
    for part in parts[:-1]:
        node = _child(node, part)
        if node is None:
            return None
    last: Any = parts[-1]
    if isinstance(node, (list, tuple)):
        if not last.isdigit() or int(last) >= len(node):
            return None
        return node, int(last)
    if hasattr(node, "__contains__") and hasattr(node, "__getitem__") and last in node:
        return node, last
    return None


def _child(node: Any, part: str) -> Any:
    if isinstance(node, (list, tuple)):
        return node[int(part)] if part.isdigit() and int(part) < len(node) else None
    try:
        return node[part] if part in node else None
    except TypeError:
        return None


def scale_schedule(cfg: MutableMapping, keys: Iterable[str], fraction: float) -> list[tuple[str, Any, Any]]:
    """Scale, in place, the iteration counts of ``cfg`` found at the dotted ``keys``.

    A value may be an int or a list/tuple of ints (e.g. LR steps); keys absent from ``cfg`` are
    skipped. Works for nested dicts, detectron2 ``CfgNode`` and mmengine ``Config`` alike.

    Returns:
        [(key, old, new), ...] for the keys that were present.
    """
    if not (math.isfinite(fraction) and 0 < fraction <= 1):
        raise PruneHooksError(f"schedule fraction must be in (0, 1], got {fraction}")
    changes = []
    for key in keys:
        found = _walk(cfg, key)
        if found is None:
            continue
        node, last = found
        old = node[last]
        if isinstance(old, bool) or not (
            isinstance(old, int) or (isinstance(old, (list, tuple)) and all(isinstance(v, int) for v in old))
        ):
            raise PruneHooksError(f"{key} must be an iteration count or a list of them, got {old!r}")
        new = scale_iters(old, fraction) if isinstance(old, int) else type(old)(scale_iters(v, fraction) for v in old)
        node[last] = new
        changes.append((key, old, new))
    return changes


def drop_late_milestones(
    cfg: MutableMapping, key: str, end: int, changes: list[tuple[str, Any, Any]]
) -> list[tuple[str, Any, Any]]:
    """Drop, in place, the milestones at ``key`` that a scaled schedule no longer reaches (>= ``end``):
    detectron2 refuses a milestone at or beyond MAX_ITER, and one that is never reached only misleads.
    The change is recorded in ``changes`` (returned)."""
    found = _walk(cfg, key)
    if found is None:
        return changes
    node, last = found
    old = node[last]
    kept = type(old)(v for v in old if v < end)
    if len(kept) != len(old):
        node[last] = kept
        changes.append((f"{key} (at or beyond {end}, dropped)", old, kept))
    return changes


def cap_warmup(cfg: MutableMapping, key: str, end: int, changes: list[tuple[str, Any, Any]]) -> list:
    """Keep the warm-up at ``key`` as it is (it is a number of optimizer steps the model needs to settle,
    not a share of the data), but at most half of the scaled schedule ``end``: scaling it with the data
    shortened it to 15 steps at keep 0.3 in the benchmark, and subsets then blew up. Recorded in ``changes``."""
    found = _walk(cfg, key)
    if found is None:
        return changes
    node, last = found
    old = node[last]
    if isinstance(old, int) and not isinstance(old, bool) and old > end // 2:
        node[last] = end // 2
        changes.append((f"{key} (warm-up kept, at most half the schedule)", old, end // 2))
    return changes


def describe_changes(changes: list[tuple[str, Any, Any]], fraction: float) -> str:
    """One log line, e.g. ``schedule scaled by 0.5: SOLVER.MAX_ITER 1000 -> 500, ...``."""
    parts = ", ".join(f"{k} {_short(o)} -> {_short(n)}" for k, o, n in changes)
    return f"schedule scaled by {fraction:.4g}: {parts or 'no iteration settings found'}"


def _short(v: Any) -> str:
    return str(list(v)) if isinstance(v, tuple) else str(v)
