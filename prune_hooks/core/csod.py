"""CSOD: class-rotating greedy submodular selection on per-image per-class prototypes (docs/methods.md, "CSOD").

For class c (ascending id, round after round) pick, among images holding c not chosen yet,
argmax_i  s_i = lam * sum_{p in P_c} cos(p_ic, p) - sum_{q in Q_c} cos(p_ic, q); ties: lowest image id.
With unit vectors u, sum_j cos(p_i, p_j) = u_i . sum_j u_j, so the state is two running sums per class
(unchosen, chosen) and one score is one dot product.

Plain path (features with negative entries, or ``lazy=False``): each class turn rescores that class's
candidates in one contiguous mat-vec, about one full scan over all prototypes per round of classes.

Lazy evaluation (the default for non-negative features): choosing image j changes the score of a
class-c candidate i by -(lam + 1) u_i . u_j. When no feature is negative every cosine is >= 0, scores
only decrease, and a score computed earlier is an upper bound of the current one. A class rescan
(one contiguous mat-vec over the class block) scores every candidate and copies the best ``hot`` rows
(1/16 of the class, at least 256) into a contiguous buffer with their scores as bounds; the first row
left out gives the bound of every row outside the buffer. Each bound is also lowered by what every
row has surely lost since the rescan, read from its component along the class's mean direction
(``moved``). A pick rescores the buffer rows of highest bound (64, doubled as needed; the whole
buffer once a quarter of it is needed), keeps each new score as that row's bound for the picks that
follow, and stops as soon as its best current score beats every bound it has not rescored: those rows
can only score less (exact). When a row outside the buffer could still win, or the pick would rescore
more than half the class, the class is rescanned.

Precision: scans run in float32, the sums are kept in float64. Candidates within 1e-5 (relative) of
the best are rescored in float64 before the pick (a pick only stops once no bound it did not rescore
is within that band), so the picks equal the float64 formula even at lam = 1e10, where ties in the lam
term are structural (two candidates left: both lam terms are 1 + cos(u_1, u_2)) and only the
chosen-set term decides. Scores within ``TIE_RTOL`` of each other count as tied (lowest image id
wins): such ties are exact in real arithmetic, not in floating point.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import PruneHooksError
from .prototypes import row_chunks

__all__ = ["CSODResult", "csod_select"]

logger = logging.getLogger("prune_hooks")
PREFIX = 64  # buffer rows a pick rescores first (doubled while not conclusive)
HOT_MIN, HOT_DIV = 256, 16  # hot buffer: the best max(HOT_MIN, class rows / HOT_DIV) rows of a class rescan
GATHER = 4  # a pick gathers k buffer rows to rescore while GATHER * k < buffer rows, else rescores the whole buffer
# Scores closer than this (relative to lam * |sum P| + |sum Q|) are ties, broken by the lowest image id.
TIE_RTOL = 1e-12
# The greedy runs on one CPU thread; only products over at least SMALL_ROWS rows (big class rescans) use
# every intra-op thread. Where another process holds a core (a training beside it, dataloader workers at
# the end of a proxy run), torch's threads wait for each other on every small product: 30,000 images
# took 230 s with two threads and 14 s with one. The price on an idle 2-core machine: 7.7 s -> 10 s.
SMALL_ROWS = 4096


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
    feature = feature if isinstance(feature, np.ndarray) else np.asarray(feature)  # a memmap stays one

    images, img_of_row = np.unique(image_id, return_inverse=True)  # ascending ids
    classes, cls_of_row = np.unique(category_id, return_inverse=True)
    # Rows grouped by class (each class one contiguous block, scanned without a copy), within a class
    # by image id, so "first maximum" = lowest image id.
    order = np.lexsort((image_id, cls_of_row))
    bounds = np.searchsorted(cls_of_row[order], np.arange(len(classes) + 1))
    by_image = np.argsort(img_of_row, kind="stable")
    img_bounds = np.searchsorted(img_of_row[by_image], np.arange(len(images) + 1))
    if bias is None:
        bias_o = np.zeros(p)
    else:
        bias = np.asarray(bias, dtype=np.float64)
        if bias.shape != (p,) or not np.isfinite(bias).all():
            raise PruneHooksError(f"csod: bias must be {p} finite numbers, one per prototype row")
        bias_o = bias[order]
    bias_scale = float(np.abs(bias_o).max(initial=0.0))

    # Unit rows in class order: float32 for the scans, float64 norms for the exact sums and rechecks.
    dim = feature.shape[1] if p else 0
    norm64 = np.empty(p)
    u = torch.empty((p, dim), dtype=torch.float32)
    sums64 = np.zeros((len(classes), 2, dim))  # per class: sum of unchosen, sum of chosen unit rows
    nonneg = True
    where = np.empty_like(order)
    where[order] = np.arange(p)  # each file row's place in class order
    for start, rows in row_chunks(feature, np.float64, 32768):  # file order: a mapped file is read once, in order
        part = slice(start, start + len(rows))
        nonneg = nonneg and bool((rows >= 0).all())
        norm64[part] = np.sqrt(np.einsum("ij,ij->i", rows, rows))
        rows /= norm64[part, None]
        u[torch.from_numpy(where[part])] = torch.from_numpy(rows).float()
        c_part = cls_of_row[part]
        for c in np.unique(c_part):
            sums64[c, 0] += rows[c_part == c].sum(0)
    lazy = nonneg if lazy is None else lazy
    if lazy and not nonneg:
        raise PruneHooksError(
            "csod: the lazy greedy is exact only for non-negative features; these have negative entries"
        )
    u = u.to(device)
    img_o = img_of_row[order]
    left = np.diff(bounds)  # unchosen images per class
    chosen = np.zeros(len(images), dtype=bool)
    rows_scored = 0
    if lazy:
        # Each class's mean direction g (its unit rows summed, normalised) and every row's component
        # along it, a = u . g (lowered by a margin over float32 rounding); the rest of the row is at
        # most sqrt(1 - a^2) long. ``outer``: per class the smallest a and the longest rest.
        g64 = sums64[:, 0] / np.linalg.norm(sums64[:, 0], axis=1, keepdims=True)
        along = np.empty(p)
        for c in range(len(classes)):
            lo, hi = bounds[c], bounds[c + 1]
            along[lo:hi] = (u[lo:hi] @ torch.as_tensor(g64[c], dtype=torch.float32, device=device)).cpu().numpy()
        rows_scored += p
        along = np.clip(along - 1e-5, 0.0, 1.0)
        across = np.sqrt(1.0 - along**2)
        outer = np.array(
            [(along[lo:hi].min(), across[lo:hi].max()) for lo, hi in zip(bounds[:-1], bounds[1:])]
        ).reshape(-1, 2)
    # Per class, from its last rescan: the rescan's w; the hot buffer: class-local rows, their unit rows
    # (contiguous), their (a, rest), their scores then and their bounds since; the best score then
    # of the rows left out (-inf: none left out).
    w_then: list[np.ndarray | None] = [None] * len(classes)
    hot_idx: list[np.ndarray | None] = [None] * len(classes)
    hot_u: list[torch.Tensor | None] = [None] * len(classes)
    hot_ar: list[np.ndarray | None] = [None] * len(classes)
    hot_then: list[np.ndarray | None] = [None] * len(classes)
    hot_bound: list[np.ndarray | None] = [None] * len(classes)
    rest = np.full(len(classes), -np.inf)
    refreshes = 0
    rechecks = 0
    picks: list[int] = []

    def unit64(rows: np.ndarray) -> np.ndarray:
        """Exact unit vectors of prototype rows (original row indices)."""
        return np.asarray(feature[rows], dtype=np.float64) / norm64[rows, None]

    threads = torch.get_num_threads()

    def scores(block: torch.Tensor, w: torch.Tensor, bias_rows: np.ndarray) -> np.ndarray:
        nonlocal rows_scored
        rows_scored += int(block.shape[0])
        big = block.device.type == "cpu" and threads > 1 and block.shape[0] >= SMALL_ROWS
        if big:
            torch.set_num_threads(threads)
        try:
            return (block @ w).cpu().numpy().astype(np.float64) + bias_rows
        finally:
            if big:
                torch.set_num_threads(1)

    def refresh(c: int, w: torch.Tensor, w64: np.ndarray) -> np.ndarray:
        """Rescan class c: every current score (-inf once chosen); refills its hot buffer and rest bound."""
        nonlocal refreshes
        refreshes += 1
        lo, hi = bounds[c], bounds[c + 1]
        s = scores(u[lo:hi], w, bias_o[lo:hi])
        s[chosen[img_o[lo:hi]]] = -np.inf
        if lazy:
            hot = min(hi - lo, max(HOT_MIN, (hi - lo) // HOT_DIV))
            if hot < hi - lo:
                top = np.argpartition(-s, hot)
                rest[c] = s[top[hot]]
                top = np.sort(top[:hot])  # class order: the copy below reads u in order
            else:
                top, rest[c] = np.arange(hi - lo), -np.inf
            top = top[s[top] > -np.inf]
            hot_idx[c], hot_then[c], hot_bound[c] = top, s[top], s[top]
            hot_ar[c] = np.stack([along[lo + top], -across[lo + top]], axis=1)
            hot_u[c] = u[lo + torch.as_tensor(top, device=device)]
            w_then[c] = w64
        return s

    def moved(c: int, w64: np.ndarray) -> tuple[float, float]:
        """(g . D, |D'|) for D, the sum of c's unit rows chosen since c's rescan, D' = D - (g . D) g.

        Since the rescan w moved by -(lam + 1) D, so a row's score fell by (lam + 1) u . D. With
        u = a g + u', u . D >= a (g . D) - |u'| |D'|, and u . D >= 0 for non-negative rows: a bound
        of how much every row lost, from its a alone. Picks move a class's rows together along g,
        which scores kept from the rescan do not see; this bound does."""
        d = (w_then[c] - w64) / (lam + 1)
        along_d = float(g64[c] @ d)
        return along_d, math.sqrt(max(float(d @ d) - along_d * along_d, 0.0))

    def settle(c: int, w: torch.Tensor, w64: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Rescore c's buffer rows of highest bound until no bound left over is within ``tol`` of the best
        current score: (class-local rows, current scores), or None when only a rescan can decide."""
        idx, bound, lo, size = hot_idx[c], hot_bound[c], bounds[c], bounds[c + 1] - bounds[c]
        g_d, rest_d = moved(c, w64)
        loss = hot_ar[c] @ np.array([(lam + 1) * g_d, (lam + 1) * rest_d])
        np.minimum(bound, hot_then[c] - np.maximum(loss, 0.0), out=bound)
        outside = rest[c] - (lam + 1) * max(outer[c, 0] * g_d - outer[c, 1] * rest_d, 0.0)
        open_ = bound.copy()  # bounds of the rows not rescored by this pick
        pos: list[np.ndarray] = []
        got: list[np.ndarray] = []
        best, k, done = -np.inf, PREFIX, 0
        while True:
            top = int(open_.argmax())
            beyond = open_[top]
            if best > -np.inf and best - tol > max(beyond, outside):
                break
            if outside > -np.inf and outside >= beyond or done + k > max(PREFIX, min(len(idx), size // 2)):
                return None  # a row outside the buffer may win, or a rescan is cheaper than going on
            if beyond == -np.inf:
                break  # every candidate of the buffer is chosen and none is left outside
            k = min(k, len(idx) - done)
            if GATHER * k < len(idx):
                take = np.sort(np.argpartition(-open_, k - 1)[:k])  # gathered in buffer order
                take = take[open_[take] > -np.inf]
                block = hot_u[c].index_select(0, torch.from_numpy(take).to(device))
            else:  # a gather copies each row once more: rescore the whole buffer instead
                take, block = np.arange(len(idx)), hot_u[c]
                k = len(idx) - done
                pos.clear()
                got.clear()
            rows = lo + idx[take]
            s = scores(block, w, bias_o[rows])
            s[chosen[img_o[rows]]] = -np.inf
            bound[take] = s  # fresh, and scores only decrease: the row's bound from now on
            open_[take] = -np.inf
            pos.append(take)
            got.append(s)
            best = max(best, s.max(initial=-np.inf))
            done += k
            k *= 2
        if not pos:
            return np.empty(0, dtype=np.int64), np.empty(0)
        take = np.concatenate(pos)
        return idx[take], np.concatenate(got)

    def pick(c: int) -> int | None:
        """Class-local row index of the best candidate of class c, or None when it has none left."""
        nonlocal rechecks
        if not left[c]:
            return None
        w64 = lam * sums64[c, 0] - sums64[c, 1]
        w = torch.from_numpy(w64.astype(np.float32)).to(device)
        scale = lam * math.sqrt(sums64[c, 0] @ sums64[c, 0]) + math.sqrt(sums64[c, 1] @ sums64[c, 1]) + bias_scale
        tol = 1e-5 * scale
        found = settle(c, w, w64, tol) if lazy and hot_idx[c] is not None else None
        if found is None:  # every current score of the class, from one rescan
            full = refresh(c, w, w64)
            found = np.arange(len(full)), full
        idx, s = found
        best = s.max(initial=-np.inf)
        if best == -np.inf:
            return None
        near = np.flatnonzero(s >= best - tol)
        if len(near) == 1:
            return int(idx[near[0]])
        rechecks += 1
        lo = bounds[c]
        exact = unit64(order[lo + idx[near]]) @ w64 + bias_o[lo + idx[near]]
        # Ties within float64 noise are ties (e.g. the last two candidates of a class score
        # lam * (1 + cos) both): the lowest image id wins.
        return int(idx[near[exact >= exact.max() - TIE_RTOL * scale]].min())

    torch.set_num_threads(1)  # the greedy's many small products; big class scans use every thread (SMALL_ROWS)
    try:
        while len(picks) < n:
            progressed = False
            for c in range(len(classes)):
                if len(picks) >= n:
                    break
                best = pick(c)
                if best is None:
                    continue
                img = int(img_o[bounds[c] + best])
                chosen[img] = True
                picks.append(img)
                progressed = True
                rows = by_image[img_bounds[img] : img_bounds[img + 1]]
                for cc, vec in zip(cls_of_row[rows], unit64(rows)):
                    sums64[cc, 0] -= vec
                    sums64[cc, 1] += vec
                    left[cc] -= 1
            if not progressed:
                break
    finally:
        torch.set_num_threads(threads)
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
