"""CSOD: class-rotating greedy submodular selection on per-image per-class prototypes (docs/methods.md, "CSOD").

For class c (ascending id, round after round) pick, among images holding c not chosen yet,
argmax_i  s_i = lam * sum_{p in P_c} cos(p_ic, p) - sum_{q in Q_c} cos(p_ic, q); ties: lowest image id.
With unit vectors u, sum_j cos(p_i, p_j) = u_i . sum_j u_j, so the state is two running sums per class
(unchosen, chosen) and one score is one dot product.

Plain path (features with negative entries, or ``lazy=False``): each class turn rescores that class's
candidates in one contiguous mat-vec, about one full scan over all prototypes per round of classes.

Lazy evaluation (the default for non-negative features): choosing image j changes the score of a
class-c candidate i by -(lam + 1) u_i . u_j.
When no feature is negative every cosine is >= 0, scores only decrease, and a score computed earlier
is an upper bound of the current one. Each class then keeps its last computed scores; a pick takes the
best stale score, recomputes it (with the next best bounds, ``LAZY_BATCH`` rows in one mat-vec) and
accepts it when it is still the best (exact, the classic lazy greedy). A pick that needs more than
``LAZY_ROUNDS`` batches rescores the whole class in one mat-vec instead.

Precision: scans run in float32, the sums are kept in float64. Candidates within 1e-5 (relative) of
the best are rescored in float64 before the pick, so the picks equal the float64 formula even at
lam = 1e10, where ties in the lam term are structural (two candidates left: both lam terms are
1 + cos(u_1, u_2)) and only the chosen-set term decides. Scores within ``TIE_RTOL`` of each other
count as tied (lowest image id wins): such ties are exact in real arithmetic, not in floating point.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import PruneHooksError

__all__ = ["CSODResult", "csod_select"]

logger = logging.getLogger("prune_hooks")
LAZY_BATCH = 32  # stale bounds rescored together (at least; 1/256 of a large class)
LAZY_ROUNDS = 4  # batches before a pick rescores its whole class
# Scores closer than this (relative to lam * |sum P| + |sum Q|) are ties, broken by the lowest image id.
TIE_RTOL = 1e-12


@dataclass
class CSODResult:
    image_ids: np.ndarray  # chosen images in pick order
    n_greedy: int  # how many of them the greedy chose; the rest is the documented fill
    rows_scored: int = 0  # prototype rows whose score was computed (P rows = one full scan)
    stats: dict = field(default_factory=dict)


def csod_select(
    image_id: np.ndarray,
    category_id: np.ndarray,
    feature: np.ndarray,
    n: int,
    lam: float,
    all_image_ids: np.ndarray | None = None,
    device: torch.device | str | None = None,
    lazy: bool | None = None,
    bias: np.ndarray | None = None,
) -> CSODResult:
    """Choose ``n`` images by CSOD.

    Args:
        image_id, category_id: ndarray[P] int, one prototype per (image, class).
        feature: ndarray[P, D] raw features (normalized here).
        n: images to choose.
        lam: lambda of Eq. 4, > 0.
        all_image_ids: every image of the annotation file. When ``n`` exceeds the images holding a
            prototype, the rest is filled with the remaining images in ascending id order (a warning
            says so); without it the result stops short.
        device: where the features and sums live (default: CUDA when available).
        lazy: the lazy greedy (exact for non-negative features, which every post-ReLU box head
            emits; refused otherwise). Default: lazy when no feature is negative. At COCO scale it
            scores 2.6x fewer rows than the plain scan (tools/results/bench_select.md).
        bias: ndarray[P] finite, a constant added to each prototype row's score (the ``vps_csod``
            hybrid: the image's VPS). Constant per row, so scores still only decrease and the lazy
            greedy stays exact.
    """
    if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam > 0):
        raise PruneHooksError(f"csod lambda must be a finite number > 0, got {lam}")
    image_id = np.asarray(image_id, dtype=np.int64)
    category_id = np.asarray(category_id, dtype=np.int64)
    p = image_id.shape[0]
    if n < 1:
        raise PruneHooksError(f"csod: number of images to choose must be >= 1, got {n}")
    device = (
        torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    feature = np.asarray(feature)

    images, img_of_row = np.unique(image_id, return_inverse=True)  # ascending ids
    classes, cls_of_row = np.unique(category_id, return_inverse=True)
    # Rows grouped by class (each class one contiguous block, scanned without a copy), within a class
    # by image id, so "first maximum" = lowest image id.
    order = np.lexsort((image_id, cls_of_row))
    bounds = np.searchsorted(cls_of_row[order], np.arange(len(classes) + 1))
    local_of_row = np.empty(p, dtype=np.int64)
    local_of_row[order] = np.arange(p) - bounds[cls_of_row[order]]
    class_img = [img_of_row[order[bounds[c] : bounds[c + 1]]] for c in range(len(classes))]
    by_image = np.argsort(img_of_row, kind="stable")
    img_bounds = np.searchsorted(img_of_row[by_image], np.arange(len(images) + 1))
    u = torch.from_numpy(np.ascontiguousarray(feature[order], dtype=np.float32)).to(device)
    nonneg = bool((u >= 0).all())
    lazy = nonneg if lazy is None else lazy
    if lazy and not nonneg:
        raise PruneHooksError(
            "csod: the lazy greedy is exact only for non-negative features; these have negative entries"
        )
    u.div_(u.norm(dim=1, keepdim=True))
    if bias is None:
        bias_o = np.zeros(p)
    else:
        bias = np.asarray(bias, dtype=np.float64)
        if bias.shape != (p,) or not np.isfinite(bias).all():
            raise PruneHooksError(f"csod: bias must be {p} finite numbers, one per prototype row")
        bias_o = bias[order]
    bias_scale = float(np.abs(bias_o).max(initial=0.0))

    # Running sums per class (unchosen, chosen) in float64, so no drift; scans use a float32 copy.
    sums64 = np.zeros((len(classes), 2, feature.shape[1] if p else 0))
    for start in range(0, p, 32768):
        part = order[start : start + 32768]
        np.add.at(sums64[:, 0], cls_of_row[part], _unit64(feature[part]))
    sums = torch.as_tensor(sums64, dtype=torch.float32, device=device)
    chosen = np.zeros(len(images), dtype=bool)
    # Per class: last computed score of each row (-inf once its image is chosen) and whether it is current.
    stale = [np.full(bounds[c + 1] - bounds[c], np.inf) for c in range(len(classes))]
    fresh = [np.zeros(bounds[c + 1] - bounds[c], dtype=bool) for c in range(len(classes))]
    rows_scored = 0
    refreshes = 0
    rechecks = 0
    picks: list[int] = []

    def score(c: int, local: np.ndarray | slice) -> np.ndarray:
        nonlocal rows_scored
        block = u[bounds[c] : bounds[c + 1]]
        if not isinstance(local, slice):
            block = block[torch.as_tensor(local, device=device)]
        pq = sums[c] @ block.T  # [2, k]: u . sum P, u . sum Q (one pass over the block)
        rows_scored += int(block.shape[0])
        b = bias_o[bounds[c] : bounds[c + 1]][local]
        return (lam * pq[0].double() - pq[1].double()).cpu().numpy() + b

    def refresh(c: int) -> None:
        nonlocal refreshes
        refreshes += 1
        s = score(c, slice(None))
        s[chosen[class_img[c]]] = -np.inf
        stale[c][:] = s
        fresh[c][:] = True

    def settle(c: int, best: int) -> int:
        """Float32 scores are close to exact, not exact: rescore the near-ties of ``best`` in float64."""
        nonlocal rechecks
        scale = lam * float(np.linalg.norm(sums64[c, 0])) + float(np.linalg.norm(sums64[c, 1])) + bias_scale
        tol = 1e-5 * scale
        near = np.flatnonzero(stale[c] >= stale[c][best] - tol)
        if len(near) == 1:
            return best
        stale_near = near[~fresh[c][near]]
        if len(stale_near):
            stale[c][stale_near] = score(c, stale_near)
            fresh[c][stale_near] = True
            near = np.flatnonzero(stale[c] >= stale[c][best] - tol)
        rechecks += 1
        u64 = _unit64(feature[order[bounds[c] + near]])
        exact = lam * (u64 @ sums64[c, 0]) - u64 @ sums64[c, 1] + bias_o[bounds[c] + near]
        # Ties within float64 noise are ties (e.g. the last two candidates of a class score
        # lam * (1 + cos) both); near is ascending, so the first one is the lowest image id.
        top = np.flatnonzero(exact >= exact.max() - TIE_RTOL * scale)
        return int(near[top[0]])

    def pick(c: int) -> int | None:
        """Local row index (within class c) of the best candidate, or None."""
        if not lazy:
            refresh(c)
        batch = max(LAZY_BATCH, len(stale[c]) // 256)
        for _ in range(LAZY_ROUNDS):
            best = int(np.argmax(stale[c]))
            if stale[c][best] == -np.inf:
                return None
            if fresh[c][best]:
                return settle(c, best)
            # rescore the best stale bounds in one mat-vec
            if batch >= len(stale[c]):
                break
            top = np.argpartition(-stale[c], batch)[:batch]
            top = top[~fresh[c][top] & (stale[c][top] > -np.inf)]
            stale[c][top] = score(c, top)
            fresh[c][top] = True
        refresh(c)
        best = int(np.argmax(stale[c]))
        return None if stale[c][best] == -np.inf else settle(c, best)

    if lazy:
        for c in range(len(classes)):
            refresh(c)
    while len(picks) < n:
        progressed = False
        for c in range(len(classes)):
            if len(picks) >= n:
                break
            best = pick(c)
            if best is None:
                continue
            img = int(class_img[c][best])
            chosen[img] = True
            picks.append(img)
            progressed = True
            rows = by_image[img_bounds[img] : img_bounds[img + 1]]
            u64 = _unit64(feature[rows])
            for r, cc, vec in zip(rows, cls_of_row[rows], u64):
                sums64[cc, 0] -= vec
                sums64[cc, 1] += vec
                sums[cc] = torch.as_tensor(sums64[cc], dtype=torch.float32, device=device)
                fresh[cc][:] = False
                stale[cc][local_of_row[r]] = -np.inf
        if not progressed:
            break
    ids = images[np.asarray(picks, dtype=np.int64)]
    n_greedy = len(ids)
    if n_greedy < n and all_image_ids is not None:
        rest = np.setdiff1d(np.asarray(all_image_ids, dtype=np.int64), ids)[: n - n_greedy]
        logger.warning(
            "csod: %d images requested but only %d hold an object prototype; the other %d are the "
            "remaining images in ascending id order",
            n,
            n_greedy,
            len(rest),
        )
        ids = np.concatenate([ids, rest])
    return CSODResult(
        ids, n_greedy, rows_scored, {"refreshes": refreshes, "rechecks": rechecks, "lazy": lazy, "prototypes": p}
    )


def _unit64(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)
