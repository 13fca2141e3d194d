"""How many images to keep, and which: ratio arithmetic, top-k of a ranking, the random baseline."""
from __future__ import annotations

import math

import numpy as np

from .errors import PruneHooksError

__all__ = ["keep_count", "random_order", "subset_record"]


def keep_count(
    n_total: int,
    keep: float | None = None,
    prune: float | None = None,
    count: int | None = None,
) -> tuple[int, float]:
    """Number of images to keep out of ``n_total``, from exactly one of keep ratio, prune ratio, count.

    A ratio k keeps ``max(1, floor(k * n_total + 0.5))`` images (SPEC.md); ``prune=p`` means ``keep=1-p``.

    Returns:
        (n_keep, keep_ratio): for ``count`` the ratio is ``count / n_total``.
    """
    given = [name for name, v in (("keep", keep), ("prune", prune), ("count", count)) if v is not None]
    if len(given) != 1:
        raise PruneHooksError(f"give exactly one of keep ratio, prune ratio or count, got {given or 'none'}")
    if n_total < 1:
        raise PruneHooksError(f"the annotation file has no images to select from (n_total={n_total})")
    if count is not None:
        if isinstance(count, bool) or int(count) != count or not 1 <= count <= n_total:
            raise PruneHooksError(f"count must be an integer in [1, {n_total}], got {count}")
        return int(count), int(count) / n_total
    if prune is not None:
        if not (isinstance(prune, (int, float)) and math.isfinite(prune) and 0 <= prune < 1):
            raise PruneHooksError(f"prune ratio must be in [0, 1), got {prune}")
        keep = 1.0 - float(prune)
    assert keep is not None
    if not (isinstance(keep, (int, float)) and math.isfinite(keep) and 0 < keep <= 1):
        raise PruneHooksError(f"keep ratio must be in (0, 1], got {keep}")
    return max(1, math.floor(keep * n_total + 0.5)), float(keep)


def random_order(image_ids: np.ndarray, seed: int) -> np.ndarray:
    """All image ids in a seeded random order (independent of the file's image order)."""
    ids = np.sort(np.asarray(image_ids, dtype=np.int64))
    return ids[np.random.default_rng(seed).permutation(ids.shape[0])]


def subset_record(
    method: str,
    aggregation: str | None,
    keep_ratio: float,
    n_total: int,
    seed: int | None,
    image_ids: np.ndarray,
) -> dict:
    """The ``subset.json`` content; ``image_ids`` in rank order, best first."""
    ids = [int(i) for i in image_ids]
    return {
        "method": method,
        "aggregation": aggregation,
        "keep_ratio": keep_ratio,
        "n_images": len(ids),
        "n_total": int(n_total),
        "seed": seed,
        "image_ids": ids,
    }
