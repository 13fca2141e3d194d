"""CSOD: class-rotating greedy submodular selection on per-image per-class prototypes (SPEC.md).

For class c (ascending id, round after round) pick, among images holding c not chosen yet,
argmax_i  s_i = lam * sum_{p in P_c} cos(p_ic, p) - sum_{q in Q_c} cos(p_ic, q); ties: lowest image id.
With unit vectors u, sum_j cos(p_i, p_j) = u_i . sum_j u_j, so the state is two running sums per class
(unchosen, chosen) and one score is one dot product.

Lazy evaluation: choosing image j changes the score of a class-c candidate i by -(lam + 1) u_i . u_j.
When no feature is negative every cosine is >= 0, scores only decrease, and a score computed earlier
is an upper bound of the current one. Each class then keeps its last computed scores; a pick takes the
best stale score, recomputes that one row, and accepts it when it is still the best (exact, the
classic lazy greedy). A pick that needs more than ``LAZY_LIMIT`` recomputations rescores the whole
class in one mat-vec instead. Features with a negative entry take the exact path: every turn rescores
its class.

Precision: scans run in float32, the sums are kept in float64. Candidates within 1e-5 (relative) of
the best are rescored in float64 before the pick, so the picks equal the float64 formula even at
lam = 1e10, where ties in the lam term are structural (two candidates left: both lam terms are
1 + cos(u_1, u_2)) and only the chosen-set term decides.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import PruneHooksError

__all__ = ["CSODResult", "csod_select", "LAZY_LIMIT"]

logger = logging.getLogger("prune_hooks")
LAZY_LIMIT = 64


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
        lazy: force (True) or forbid (False) lazy evaluation; default: lazy iff no feature is negative.
            Forcing it on features with negative entries is not exact.
    """
    if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam > 0):
        raise PruneHooksError(f"csod lambda must be a finite number > 0, got {lam}")
    image_id = np.asarray(image_id, dtype=np.int64)
    category_id = np.asarray(category_id, dtype=np.int64)
    p = image_id.shape[0]
    if n < 1:
        raise PruneHooksError(f"csod: number of images to choose must be >= 1, got {n}")
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    feat = torch.as_tensor(np.asarray(feature), dtype=torch.float32, device=device)
    if lazy is None:
        lazy = bool((feat >= 0).all())
    u = torch.nn.functional.normalize(feat, dim=1) if p else feat

    images, img_of_row = np.unique(image_id, return_inverse=True)  # ascending ids
    classes, cls_of_row = np.unique(category_id, return_inverse=True)
    # rows of each class sorted by image id, so "first maximum" = lowest image id
    order = np.lexsort((image_id, cls_of_row))
    bounds = np.searchsorted(cls_of_row[order], np.arange(len(classes) + 1))
    class_rows = [torch.as_tensor(order[bounds[c]:bounds[c + 1]], device=device) for c in range(len(classes))]
    class_img = [img_of_row[order[bounds[c]:bounds[c + 1]]] for c in range(len(classes))]
    by_image = np.argsort(img_of_row, kind="stable")
    img_bounds = np.searchsorted(img_of_row[by_image], np.arange(len(images) + 1))

    # Running sums per class (unchosen, chosen) in float64, so no drift; scans use a float32 copy.
    feature64 = np.asarray(feature)
    sums64 = np.zeros((len(classes), 2, feature64.shape[1] if p else 0))
    for start in range(0, p, 32768):
        part = order[start:start + 32768]
        np.add.at(sums64[:, 0], cls_of_row[part], _unit64(feature64[part]))
    sums = torch.as_tensor(sums64, dtype=torch.float32, device=device)
    chosen = np.zeros(len(images), dtype=bool)
    # Per class: last computed score of each row (-inf once its image is chosen) and whether it is current.
    stale = [np.full(len(r), np.inf) for r in class_rows]
    fresh = [np.zeros(len(r), dtype=bool) for r in class_rows]
    rows_scored = 0
    refreshes = 0
    rechecks = 0
    picks: list[int] = []

    def score(c: int, local: np.ndarray | slice) -> np.ndarray:
        nonlocal rows_scored
        rows = class_rows[c][local]
        pq = u[rows] @ sums[c].T  # [k, 2]: u . sum P, u . sum Q
        rows_scored += int(rows.numel())
        return (lam * pq[:, 0].double() - pq[:, 1].double()).cpu().numpy()

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
        tol = 1e-5 * (lam * float(np.linalg.norm(sums64[c, 0])) + float(np.linalg.norm(sums64[c, 1])))
        near = np.flatnonzero(stale[c] >= stale[c][best] - tol)
        if len(near) == 1:
            return best
        stale_near = near[~fresh[c][near]]
        if len(stale_near):
            stale[c][stale_near] = score(c, stale_near)
            fresh[c][stale_near] = True
            near = np.flatnonzero(stale[c] >= stale[c][best] - tol)
        rechecks += 1
        u64 = _unit64(feature64[order[bounds[c] + near]])
        exact = lam * (u64 @ sums64[c, 0]) - u64 @ sums64[c, 1]
        return int(near[int(np.argmax(exact))])  # near is ascending: first maximum = lowest image id

    def pick(c: int) -> int | None:
        """Local row index (within class c) of the best candidate, or None."""
        if not lazy:
            refresh(c)
        for _ in range(LAZY_LIMIT + 1):
            best = int(np.argmax(stale[c]))
            if stale[c][best] == -np.inf:
                return None
            if fresh[c][best]:
                return settle(c, best)
            stale[c][best] = score(c, np.array([best]))[0]
            fresh[c][best] = True
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
            rows = by_image[img_bounds[img]:img_bounds[img + 1]]
            u64 = _unit64(feature64[rows])
            for r, cc, vec in zip(rows, cls_of_row[rows], u64):
                sums64[cc, 0] -= vec
                sums64[cc, 1] += vec
                sums[cc] = torch.as_tensor(sums64[cc], dtype=torch.float32, device=device)
                fresh[cc][:] = False
                stale[cc][class_img[cc] == img] = -np.inf
        if not progressed:
            break
    ids = images[np.asarray(picks, dtype=np.int64)]
    n_greedy = len(ids)
    if n_greedy < n and all_image_ids is not None:
        rest = np.setdiff1d(np.asarray(all_image_ids, dtype=np.int64), ids)[: n - n_greedy]
        logger.warning(
            "csod: %d images requested but only %d hold an object prototype; the other %d are the "
            "remaining images in ascending id order", n, n_greedy, len(rest),
        )
        ids = np.concatenate([ids, rest])
    return CSODResult(ids, n_greedy, rows_scored, {"refreshes": refreshes, "rechecks": rechecks, "lazy": lazy, "prototypes": p})


def _unit64(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)
