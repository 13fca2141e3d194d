"""Selection that survives high pruning rates and redundant data (docs/methods.md, "Coverage options").

Each function takes a method's ranking of every image (best first) and returns another ranking of the
same images; ``select`` keeps its first ``n_keep``. They apply to every method, in this order:
``stratify`` (score methods), ``spread_groups``, ``dedup``.
"""

from __future__ import annotations

import re

import numpy as np

from ..data.coco import CocoIndex
from ..errors import PruneHooksError

__all__ = ["allocate", "default_beta", "stratify", "group_labels", "spread_groups", "dedup", "DEFAULT_STRATA"]

DEFAULT_STRATA = 50  # CCS's default number of strata


def default_beta(keep_ratio: float) -> float:
    """The hardest fraction dropped before stratified sampling: 0.5·(0.7 − keep), at least 0.

    keep 0.1 -> 0.3, 0.3 -> 0.2, 0.5 -> 0.1, >= 0.7 -> 0: the fewer images kept, the more the very
    hardest (often noisy or ambiguous) images cost, the trend CCS reports for classification."""
    return max(0.0, 0.5 * (0.7 - float(keep_ratio)))


def stratify(
    ranked: np.ndarray,
    score_of: dict[int, float],
    n_keep: int,
    beta: float,
    strata: int = DEFAULT_STRATA,
    seed: int = 0,
) -> np.ndarray:
    """Coverage-centric selection (CCS): drop the hardest ``beta`` of the scored images, split the rest's
    score range into ``strata`` equal-width strata and fill ``n_keep`` evenly across them (the smallest
    stratum first; within a stratum a seeded uniform draw).

    Args:
        ranked: every image id, best (highest score) first; images without a score at the end.
        score_of: image id -> finite score (the images that have one).

    Returns:
        the chosen images in their ``ranked`` order, then every other image in its ``ranked`` order.
    """
    if not 0 <= beta < 1:
        raise PruneHooksError(f"--beta must be in [0, 1), got {beta}")
    if isinstance(strata, bool) or int(strata) != strata or strata < 1:
        raise PruneHooksError(f"--strata must be an integer >= 1, got {strata}")
    ranked = np.asarray(ranked, dtype=np.int64)
    scored = np.array([i for i in ranked.tolist() if i in score_of], dtype=np.int64)
    if n_keep >= len(scored):  # nothing to choose among the scored images
        return ranked
    # drop the hardest beta, but never so many that the budget cannot be met
    drop = min(int(np.floor(beta * len(scored))), len(scored) - n_keep)
    pool = scored[drop:]
    s = np.array([score_of[int(i)] for i in pool])
    lo, hi = float(s.min()), float(s.max())
    k = (
        np.zeros(len(s), dtype=np.int64)
        if hi == lo
        else np.minimum(((s - lo) / (hi - lo) * strata).astype(int), strata - 1)
    )
    groups = [pool[k == j] for j in range(strata) if (k == j).any()]
    rng = np.random.default_rng(seed)
    takes = allocate([len(g) for g in groups], n_keep)
    chosen = [rng.choice(g, size=t, replace=False) if t < len(g) else g for g, t in zip(groups, takes)]
    picked = np.isin(ranked, np.concatenate(chosen))
    return np.concatenate([ranked[picked], ranked[~picked]])


def allocate(sizes: list[int], budget: int) -> list[int]:
    """How many to take from each stratum: the smallest stratum first gets an even share of what is left
    (or all it has), then the next smallest; sums to ``min(budget, sum(sizes))``."""
    takes = [0] * len(sizes)
    for left, j in enumerate(sorted(range(len(sizes)), key=lambda j: sizes[j])):  # stable on ties
        takes[j] = min(sizes[j], budget // (len(sizes) - left))
        budget -= takes[j]
    return takes


def group_labels(index: CocoIndex, spec: str, option: str = "--group-by") -> np.ndarray:
    """A group label (str) for every image of ``index`` (file order) from ``spec``: an image field
    (``video_id``) or ``FIELD:REGEX`` whose one capture group is the label (``file_name:^(.*)_\\d+\\.jpg$``).
    Images lacking the field, or whose value the regex does not match, are each their own group.
    ``option``: the option's name in error messages (the hooks' config keys, the CLI's flag)."""
    field, _, pattern = spec.partition(":")
    if not field:
        raise PruneHooksError(f"{option}: expected FIELD or FIELD:REGEX, got {spec!r}")
    rx = None
    if pattern:
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise PruneHooksError(f"{option}: bad regular expression {pattern!r}: {e}") from None
        if rx.groups != 1:
            raise PruneHooksError(f"{option}: the regular expression needs exactly one capture group, got {rx.groups}")
    images = {int(im["id"]): im for im in index.images}
    labels, found = [], 0
    for i in index.image_ids.tolist():
        v = images[i].get(field)
        m = rx.search(str(v)) if rx is not None and v is not None else None
        if v is None or (rx is not None and m is None):
            labels.append(f"\0image {i}")  # a group of its own
            continue
        labels.append(m.group(1) if m is not None else str(v))
        found += 1
    if not found:
        raise PruneHooksError(f"{option} {spec!r}: no image has a matching {field!r} field")
    return np.array(labels, dtype=object)


def spread_groups(ranked: np.ndarray, group_of: dict[int, str], per_group_max: int | None = None) -> np.ndarray:
    """Spread the ranking over groups.

    With ``per_group_max`` N: walk the ranking, keep an image while its group has fewer than N kept; the
    skipped images follow in ranking order. Without: round robin — every group's best image (groups in
    the order of their best image), then every group's second best, and so on.
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    if per_group_max is not None:
        if isinstance(per_group_max, bool) or int(per_group_max) != per_group_max or per_group_max < 1:
            raise PruneHooksError(f"--per-group-max must be an integer >= 1, got {per_group_max}")
        seen: dict[str, int] = {}
        keep = np.zeros(len(ranked), dtype=bool)
        for k, i in enumerate(ranked.tolist()):
            g = group_of[i]
            if seen.get(g, 0) < per_group_max:
                seen[g] = seen.get(g, 0) + 1
                keep[k] = True
        return np.concatenate([ranked[keep], ranked[~keep]])
    depth: dict[str, int] = {}
    level = np.empty(len(ranked), dtype=np.int64)
    for k, i in enumerate(ranked.tolist()):
        g = group_of[i]
        level[k] = depth.get(g, 0)
        depth[g] = level[k] + 1
    return ranked[np.argsort(level, kind="stable")]


def dedup(
    ranked: np.ndarray, feature_of: dict[int, np.ndarray], threshold: float, n_keep: int, block: int = 1024
) -> np.ndarray:
    """Walk the ranking and skip an image whose feature has cosine >= ``threshold`` with an image kept
    before it, until ``n_keep`` are kept; then the skipped and the unvisited images in ranking order.
    Images without a feature are never skipped.

    Exact greedy, in blocks: one matrix product against the kept set per block of candidates, then the
    block resolved in order against itself.
    """
    if not -1 <= threshold <= 1:
        raise PruneHooksError(f"--dedup threshold must be a cosine in [-1, 1], got {threshold}")
    ranked = np.asarray(ranked, dtype=np.int64)
    dim = len(next(iter(feature_of.values()))) if feature_of else 0
    kept_feats = np.zeros((min(n_keep, len(ranked)), dim), dtype=np.float32)
    n_feats = 0
    keep = np.zeros(len(ranked), dtype=bool)
    n_kept = 0
    for a in range(0, len(ranked), block):
        if n_kept >= n_keep:
            break
        ids = ranked[a : a + block].tolist()
        has = [i in feature_of for i in ids]
        f = np.zeros((len(ids), dim), dtype=np.float32)
        if any(has):
            f[has] = np.stack([feature_of[i] for i, h in zip(ids, has) if h])
            f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        near = (f @ kept_feats[:n_feats].T).max(axis=1) >= threshold if n_feats else np.zeros(len(ids), dtype=bool)
        inner = f @ f.T
        ok: list[int] = []  # rows of this block kept, with a feature
        for j in range(len(ids)):
            if n_kept >= n_keep:
                break
            if has[j] and (near[j] or (ok and inner[j, ok].max() >= threshold)):
                continue
            keep[a + j] = True
            n_kept += 1
            if has[j]:
                ok.append(j)
        kept_feats[n_feats : n_feats + len(ok)] = f[ok]
        n_feats += len(ok)
    return np.concatenate([ranked[keep], ranked[~keep]])
