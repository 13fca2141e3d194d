"""CSOD: class-rotating greedy submodular selection on per-image per-class prototypes (docs/methods.md, "CSOD").

For class c (ascending id, round after round) pick, among images holding c not chosen yet,
argmax_i  s_i = lam * sum_{p in P_c} cos(p_ic, p) - sum_{q in Q_c} cos(p_ic, q); ties: lowest image id.
With unit vectors u, sum_j cos(p_i, p_j) = u_i . sum_j u_j, so the state is two running sums per class
(unchosen, chosen) and one score is one dot product.

Three greedies, the same picks:
- lazy (the default for non-negative features, which every post-ReLU box head emits): choosing an
  image lowers every other score of its classes (all cosines >= 0), so scores computed earlier are
  upper bounds; a pick rescores only the rows whose bound could still win, and the class is rescanned
  only when too many could. Compiled (``csod_kernels.py``, numba), on the CPU; it reads the rows where
  they are (the memory-mapped file: no normalised copy), a class's rows one contiguous block when the
  file is in the order the hooks write (by category, then image id).
- plain (features with negative entries, or ``lazy=False``): each class turn rescores that class's
  candidates in one contiguous mat-vec (torch, on ``device``), about one full scan over all prototypes
  per round of classes.
- CUDA (``device`` a CUDA device and numba-cuda installed; not with ``lazy=True``): the plain greedy's
  turns, every pick inside one cooperative kernel (``csod_cuda.py``), every score in float64. On a GPU
  a full scan costs a fraction of a millisecond; what the other two would pay there is the round trip
  of each of the ~59,000 picks at COCO scale.

Precision: the lazy greedy's scores are exact unit rows (source row times its float64 inverse norm)
summed in float64; the plain greedy scans float32 unit rows; the sums are kept in float64. Candidates
within 1e-5 (relative) of the best are rescored in float64, summed in order, before the pick (the lazy
greedy only stops once no bound it did not rescore is within that band), so the picks equal the
float64 formula even at lam = 1e10, where ties in the lam term are structural (two candidates left:
both lam terms are 1 + cos(u_1, u_2)) and only the chosen-set term decides. Scores within
``TIE_RTOL`` of each other count as tied (lowest image id
wins): such ties are exact in real arithmetic, not in floating point.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ...errors import PruneHooksError

__all__ = ["CSODResult", "Layout", "csod_select"]

logger = logging.getLogger("prune_hooks")
# Lazy greedy: a pick that would rescore more than max(PREFIX, class rows / RESCAN_DIV) rows rescans the class.
RESCAN_DIV, PREFIX = 8, 64
# Scores closer than this (relative to lam * |sum P| + |sum Q|) are ties, broken by the lowest image id.
TIE_RTOL = 1e-12
# The plain greedy runs on one CPU thread; only products over at least SMALL_ROWS rows (big classes) use
# every intra-op thread. Where another process holds a core (a training beside it, dataloader workers at
# the end of a proxy run), torch's threads wait for each other on every small product.
SMALL_ROWS = 4096
CUDA_MAXD = 2048  # csod_cuda.MAXD: wider features stay on the CPU


@dataclass
class CSODResult:
    image_ids: np.ndarray  # chosen images in pick order
    n_greedy: int  # how many of them the greedy chose; the rest is the documented fill
    rows_scored: int = 0  # prototype rows whose score was computed (P rows = one full scan)
    stats: dict = field(default_factory=dict)


@dataclass
class Layout:
    """The prototypes arranged for the greedies, built once by :func:`csod_select` (one object instead of a dozen
    arrays per call). Rows are in file order or in *class order* (grouped by class, each class one contiguous
    block, by image id within it).

    Attributes:
        order, where: ndarray[P] int64, class-order place -> file row, and back.
        cls_of_row: ndarray[P] int64, file row -> class index (ascending category id).
        by_image, img_bounds: file rows grouped by image index; image i's are
            ``by_image[img_bounds[i]:img_bounds[i + 1]]``.
        img_o: ndarray[P] int64, class-order place -> image index (ascending image id).
        bounds: ndarray[C + 1] int64, each class's block of the class order.
        bias_o, bias_scale: ndarray[P] float64 added to each class-order row's score; its largest magnitude.
        inv64: ndarray[P] float64, each file row's inverse norm (a unit row is the row times it).
        sums64: ndarray[C, 2, D] float64, per class the sums of unchosen and chosen unit rows; the greedies
            update it as they pick.
    """

    order: np.ndarray
    where: np.ndarray
    cls_of_row: np.ndarray
    by_image: np.ndarray
    img_bounds: np.ndarray
    img_o: np.ndarray
    bounds: np.ndarray
    bias_o: np.ndarray
    bias_scale: float
    inv64: np.ndarray
    sums64: np.ndarray


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
        device: default CUDA when available. On CUDA with numba-cuda installed the greedy runs as
            one kernel on the device (features up to 2048-d); otherwise the lazy greedy runs on the
            CPU and the plain one (signed features) in torch on ``device``.
        lazy: the lazy greedy on the CPU (exact for non-negative features, which every post-ReLU box
            head emits; refused otherwise). Default: the CUDA kernel where it runs, else lazy when no
            feature is negative. At COCO scale it
            scores ~13x fewer rows than the plain greedy (docs/benchmarks/bench_select.md).
        bias: ndarray[P] finite, a constant added to each prototype row's score (the ``vps_csod``
            hybrid: the image's VPS). Constant per row, so scores still only decrease and the lazy
            greedy stays exact.
    """
    _check_lam(lam)
    if n < 1:
        raise PruneHooksError(f"csod: number of images to choose must be >= 1, got {n}")
    res = _greedy(image_id, category_id, feature, n, lam, device, lazy, bias)
    return _filled(res, n, all_image_ids)


def _check_lam(lam: float) -> None:
    if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam > 0):
        raise PruneHooksError(f"csod lambda must be a finite number > 0, got {lam}")


def _filled(res: CSODResult, n: int, all_image_ids: np.ndarray | None) -> CSODResult:
    """``res`` cut to ``n`` images; with ``all_image_ids``, filled up to ``n`` where the greedy ran out."""
    ids = res.image_ids[:n]
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
    return CSODResult(ids, n_greedy, res.rows_scored, res.stats)


def _greedy(image_id, category_id, feature, n: int, lam, device, lazy, bias) -> CSODResult:
    """The picks of ``csod_select`` (at most ``n``, not filled)."""
    image_id = np.asarray(image_id, dtype=np.int64)
    category_id = np.asarray(category_id, dtype=np.int64)
    p = image_id.shape[0]
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

    from .kernels import row_norms  # numba, imported when CSOD runs

    # One pass in file order (a mapped file is read once): float64 inverse norms (an exact unit row is
    # its source row times this, wherever it is read) and per class the sums of unit rows. float16 rows
    # go to the compiled code as their bits (numba has no float16 there); a view of a mapped file stays mapped.
    dim = feature.shape[1] if p else 0
    inv64 = np.empty(p)
    sums64 = np.zeros((len(classes), 2, dim))  # per class: sum of unchosen, sum of chosen unit rows
    source = feature.view(np.uint16) if feature.dtype == np.float16 else feature
    nonneg = True
    source = np.asarray(source)  # the greedy reads it all again: its mapped pages are kept (no row_chunks release)
    for start in range(0, p, 32768):
        ok, bad = row_norms(source[start : start + 32768], start, cls_of_row, inv64, sums64)
        nonneg &= ok
        if bad >= 0:
            raise PruneHooksError(
                f"csod: feature row {bad} (image {image_id[bad]}, category {category_id[bad]}) is not finite or "
                "is a zero vector"
            )
    if lazy and not nonneg:
        raise PruneHooksError(
            "csod: the lazy greedy is exact only for non-negative features; these have negative entries"
        )
    where = np.empty_like(order)
    where[order] = np.arange(p)  # each file row's place in class order
    lay = Layout(
        order, where, cls_of_row, by_image, img_bounds, img_of_row[order], bounds, bias_o, bias_scale, inv64, sums64
    )
    extra: dict = {}
    on_gpu = device.type == "cuda" and lazy is not True and 0 < dim <= CUDA_MAXD and _cuda_kernel()
    lazy_cpu = nonneg if lazy is None else lazy  # the CPU's choice, also where the CUDA greedy fails
    lazy = False if on_gpu else lazy_cpu
    if on_gpu:  # every pick in one kernel on the device (cuda.py)
        from .cuda import cuda_greedy

        try:
            picked, rows_scored, kernel_seconds = cuda_greedy(
                _device_rows(feature, order, device), lay, n, lam, TIE_RTOL
            )
        except Exception as e:  # a CUDA setup numba cannot compile or launch for: the CPU greedy
            logger.warning("csod: the CUDA greedy failed (%s: %s); the greedy runs on the CPU", type(e).__name__, e)
            on_gpu, lazy = False, lazy_cpu
        else:
            picks, refreshes, rechecks = picked.tolist(), 0, 0
            extra = {"kernel_seconds": kernel_seconds}
    if lazy and not on_gpu:  # rows read in place: no normalised copy
        picks, rows_scored, refreshes, rechecks = _lazy_greedy(lay, np.asarray(source), n, lam)
    elif not on_gpu:
        picks, rows_scored, refreshes, rechecks = _plain_greedy(
            lay, _unit_rows(feature, order, inv64, device), feature, n, lam
        )
    ids = images[np.asarray(picks, dtype=np.int64)]
    stats = {"refreshes": refreshes, "rechecks": rechecks, "lazy": lazy, "cuda": on_gpu, "prototypes": p, **extra}
    return CSODResult(ids, len(ids), rows_scored, stats)


def _cuda_kernel() -> bool:
    """The CUDA greedy can run: numba's CUDA target imports and sees a device. Said once when it cannot."""
    global _CUDA_NOTE
    try:
        from .cuda import available
    except ImportError as e:  # numba-cuda not installed
        ok, why = False, f"numba's CUDA target is not importable ({e}); pip install numba-cuda"
    else:
        ok, why = available(), "numba sees no CUDA device"
    if not ok and not _CUDA_NOTE:
        logger.info("csod: %s; the greedy runs on the CPU", why)
        _CUDA_NOTE = True
    return ok


_CUDA_NOTE = False


def _device_rows(feature: np.ndarray, order: np.ndarray, device: torch.device):
    """The source rows in class order on ``device`` (torch tensor), as stored: float16, float32 and float64
    keep their values (the kernel reads exactly the CPU greedy's numbers), other types become float32.
    Copied in chunks; gathered on the host only when the file is not in class order. Without torch CUDA
    (numba's simulator): host rows."""
    identity = bool(np.array_equal(order, np.arange(len(order))))
    dtype = feature.dtype if feature.dtype in (np.float16, np.float32, np.float64) else np.dtype(np.float32)
    if not torch.cuda.is_available():
        return np.ascontiguousarray(np.asarray(feature if identity else feature[order], dtype=dtype))
    x = torch.empty((len(order), feature.shape[1]), dtype=getattr(torch, dtype.name), device=device)
    for a in range(0, len(order), 65536):
        rows = slice(a, a + 65536) if identity else order[a : a + 65536]
        x[a : a + 65536] = torch.from_numpy(np.ascontiguousarray(feature[rows], dtype=dtype)).to(device)
    return x


def _unit_rows(feature: np.ndarray, order: np.ndarray, inv64: np.ndarray, device: torch.device) -> torch.Tensor:
    """float32 unit rows in class order on ``device`` (the plain greedy's scans): x * inv64, rounded once."""
    u = torch.empty((len(order), feature.shape[1] if len(order) else 0), dtype=torch.float32, device=device)
    for a in range(0, len(order), 8192):
        rows = order[a : a + 8192]
        block = np.asarray(feature[rows], dtype=np.float64) * inv64[rows, None]
        u[a : a + len(rows)] = torch.from_numpy(block.astype(np.float32)).to(device)
    return u


def _lazy_greedy(lay: Layout, source: np.ndarray, n: int, lam: float) -> tuple[list[int], int, int, int]:
    """The compiled lazy greedy (kernels.lazy_greedy) on ``source``, the rows as stored (float16 as their bits).
    Returns (picks: image indices, rows scored, class rescans, float64 rechecks)."""
    from .kernels import lazy_greedy  # numba, imported when CSOD runs

    arrays = (lay.inv64, lay.order, lay.where, lay.cls_of_row, lay.by_image, lay.img_bounds, lay.img_o, lay.bounds)
    picked, counts = lazy_greedy(source, *arrays, lay.bias_o, lay.sums64, int(n), float(lam), lay.bias_scale,
                                 RESCAN_DIV, PREFIX, TIE_RTOL)  # fmt: skip
    rows_scored, refreshes, rechecks = (int(x) for x in counts)
    return picked.tolist(), rows_scored, refreshes, rechecks


def _plain_greedy(
    lay: Layout, u: torch.Tensor, feature: np.ndarray, n: int, lam: float
) -> tuple[list[int], int, int, int]:
    """Every class turn rescores all of the class's candidates (one contiguous mat-vec on u's device).
    Returns (picks: image indices, rows scored, class scans, float64 rechecks)."""
    lam = float(lam)
    inv64, order, cls_of_row, by_image, img_bounds = lay.inv64, lay.order, lay.cls_of_row, lay.by_image, lay.img_bounds
    img_o, bounds, bias_o, bias_scale, sums64 = lay.img_o, lay.bounds, lay.bias_o, lay.bias_scale, lay.sums64
    chosen = np.zeros(len(img_bounds) - 1, dtype=bool)
    left = np.diff(bounds)  # unchosen images per class
    picks: list[int] = []
    rows_scored = rechecks = scans = 0
    threads = torch.get_num_threads()

    def unit64(rows: np.ndarray) -> np.ndarray:
        """Exact unit vectors of prototype rows (file row indices)."""
        return np.asarray(feature[rows], dtype=np.float64) * inv64[rows, None]

    def pick(c: int) -> int | None:
        """Class-local row index of the best candidate of class c, or None when it has none left."""
        nonlocal rows_scored, rechecks, scans
        if not left[c]:
            return None
        lo, hi = bounds[c], bounds[c + 1]
        w64 = lam * sums64[c, 0] - sums64[c, 1]
        w = torch.from_numpy(w64.astype(np.float32)).to(u.device)
        big = u.device.type == "cpu" and threads > 1 and hi - lo >= SMALL_ROWS
        if big:
            torch.set_num_threads(threads)
        try:
            s = (u[lo:hi] @ w).cpu().numpy().astype(np.float64) + bias_o[lo:hi]
        finally:
            if big:
                torch.set_num_threads(1)
        rows_scored += hi - lo
        scans += 1
        s[chosen[img_o[lo:hi]]] = -np.inf
        best = s.max(initial=-np.inf)
        if best == -np.inf:
            return None
        scale = lam * math.sqrt(sums64[c, 0] @ sums64[c, 0]) + math.sqrt(sums64[c, 1] @ sums64[c, 1]) + bias_scale
        near = np.flatnonzero(s >= best - 1e-5 * scale)
        if len(near) == 1:
            return int(near[0])
        rechecks += 1
        exact = unit64(order[lo + near]) @ w64 + bias_o[lo + near]
        # Ties within float64 noise are ties (e.g. the last two candidates of a class score
        # lam * (1 + cos) both): the lowest image id wins.
        return int(near[exact >= exact.max() - TIE_RTOL * scale].min())

    torch.set_num_threads(1)  # the greedy's many small products; big class scans use every thread (SMALL_ROWS)
    try:
        while len(picks) < n:
            progressed = False
            for c in range(len(bounds) - 1):
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
    return picks, rows_scored, scans, rechecks
