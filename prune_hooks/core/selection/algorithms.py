"""How many images to keep, and which: ratio arithmetic, top-k of a ranking, the random baseline."""

from __future__ import annotations

import math

import numpy as np

from ..errors import PruneHooksError
from ..io import progress

__all__ = ["herding", "kcenter_greedy", "keep_count", "random_order", "random_per_class", "subset_record"]


def keep_count(
    n_total: int,
    keep: float | None = None,
    prune: float | None = None,
    count: int | None = None,
) -> tuple[int, float]:
    """Number of images to keep out of ``n_total``, from exactly one of keep ratio, prune ratio, count.

    A ratio k keeps ``max(1, floor(k * n_total + 0.5))`` images (docs/methods.md, "Words");
    ``prune=p`` means ``keep=1-p``.

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


def _class_images(
    image_ids: np.ndarray, obj_image_ids: np.ndarray, obj_category_ids: np.ndarray
) -> dict[int, np.ndarray]:
    """Category id -> sorted ids of the images holding it."""
    pairs = (
        np.unique(np.stack([obj_category_ids, obj_image_ids], axis=1), axis=0)
        if len(obj_image_ids)
        else np.zeros((0, 2), np.int64)
    )
    out: dict[int, np.ndarray] = {}
    for c in np.unique(pairs[:, 0]):
        out[int(c)] = pairs[pairs[:, 0] == c, 1]
    return out


def random_per_class(
    image_ids: np.ndarray,
    obj_image_ids: np.ndarray,
    obj_category_ids: np.ndarray,
    n: int,
    seed: int,
    proportional: bool,
) -> np.ndarray:
    """The CSOD paper's class-aware random baselines (§4.3): ``n`` distinct images, seeded.

    ``proportional=False`` (random_uniform): classes take turns in ascending id order, each drawing one
    image holding it that is not chosen yet. ``proportional=True`` (random_ratio): each draw first picks
    a class with probability proportional to its number of images (among classes with images left),
    then one of its images. Classes without images left are skipped; when no class has any left, the
    rest is a seeded random order of the remaining (objectless) images.
    """
    rng = np.random.default_rng(seed)
    per_class = _class_images(image_ids, obj_image_ids, obj_category_ids)
    classes = sorted(per_class)
    weights = np.array([len(per_class[c]) for c in classes], dtype=np.float64)
    pools = {c: list(rng.permutation(per_class[c])) for c in classes}
    chosen: list[int] = []
    taken: set[int] = set()

    def draw(c: int) -> bool:
        pool = pools[c]
        while pool:
            i = int(pool.pop())
            if i not in taken:
                taken.add(i)
                chosen.append(i)
                return True
        return False

    if proportional:
        alive = np.ones(len(classes), dtype=bool)
        while len(chosen) < n and alive.any():
            w = weights * alive
            k = int(rng.choice(len(classes), p=w / w.sum()))
            if not draw(classes[k]):
                alive[k] = False
    else:
        while len(chosen) < n:
            progressed = False
            for c in classes:
                if len(chosen) >= n:
                    break
                progressed |= draw(c)
            if not progressed:
                break
    if len(chosen) < n:
        rest = np.setdiff1d(np.asarray(image_ids, dtype=np.int64), np.array(chosen, dtype=np.int64))
        chosen.extend(int(i) for i in rng.permutation(rest)[: n - len(chosen)])
    return np.array(chosen, dtype=np.int64)


def kcenter_greedy(features: np.ndarray, n: int, seed: int, device: str | None = None) -> np.ndarray:
    """k-center greedy on rows of ``features`` (L2 distance): a seeded first center, then the row farthest
    from all centers so far (ties: lowest row). Returns row indices in pick order."""
    import torch

    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    first = int(np.random.default_rng(seed).integers(x.shape[0]))
    picks = [first]
    sq = (x * x).sum(1)
    dist = (sq - 2 * (x @ x[first]) + sq[first]).clamp_(min=0)
    dist[first] = -1
    for _ in progress(range(n - 1), desc="kcenter", unit="pick"):
        j = int(torch.argmax(dist))
        picks.append(j)
        dist = torch.minimum(dist, (sq - 2 * (x @ x[j]) + sq[j]).clamp_(min=0))  # centers so far stay at -1
        dist[j] = -1
    return np.array(picks, dtype=np.int64)


def herding(features: np.ndarray, n: int, device: str | None = None) -> np.ndarray:
    """Herding (Welling 2009) on rows of ``features``: repeatedly take the row that brings the mean of
    the chosen rows closest to the mean of all rows (ties: lowest row). Returns row indices in pick order."""
    import torch

    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    mu = x.mean(0)
    total = torch.zeros_like(mu)
    sq = (x * x).sum(1)
    available = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    picks: list[int] = []
    for t in progress(range(1, n + 1), desc="herding", unit="pick"):
        # || mu - (total + x_i) / t ||^2 up to terms constant in i
        cost = (sq - 2 * (x @ (t * mu - total))) / (t * t)
        cost[~available] = float("inf")
        j = int(torch.argmin(cost))
        picks.append(j)
        available[j] = False
        total += x[j]
    return np.array(picks, dtype=np.int64)
