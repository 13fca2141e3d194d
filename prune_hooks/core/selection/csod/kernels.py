"""CSOD's compiled parts (numba): one pass over the source features for their norms and class sums
(``row_norms``) and the lazy greedy of ``csod.csod_select`` for non-negative features (``lazy_greedy``).

Why compiled: at COCO scale the greedy makes ~59,000 picks. Each pick rescores only the rows whose
bound could still win, so in Python the picks cost more in interpreter and per-call overhead
(~0.4 ms each) than their arithmetic. Here a pick costs what its arithmetic costs.

Rows are read where they are (the memory-mapped ``prototypes.npz``, or the caller's array): no
normalised copy is made. A unit row is its source row times its float64 inverse norm, and a score is
that row . w accumulated in float64 from the exact source values, in every scan, recheck and sum.
The hooks write the prototypes class by class, so a class's rows are one contiguous block of the file
(other orders are read row by row, at some cost per scan).

The state and the bounds, per class c (docs/methods.md, "CSOD"):
- ``sums[c, 0]`` / ``sums[c, 1]``: float64 sums of the unit rows of c's unchosen / chosen images;
  the scores of c's candidates are u . w + bias with w = lam * sums[c, 0] - sums[c, 1].
- A *rescan* scores every row of c; each score is the row's bound. Choosing image j lowers every
  c-candidate's score by (lam + 1) u . u_j >= 0: bounds stay bounds, and a chosen image's rows get -inf.
- ``moved``: since the rescan w moved by -(lam + 1) D. With u = a g + u' (g: c's mean direction,
  a >= 0 its component, |u'| <= r = sqrt(1 - a^2)), u . D >= a (g . D) - r |D'|: each pick lowers
  every bound of c to at most its rescan score minus that much (two numbers per row, no row read).
- A pick rescores the row of highest bound, then, highest bound first, every row whose bound is
  within ``tol`` of the best score so far: the rows left cannot win nor tie. Near ties are rechecked
  without reassociation; ties go to the lowest image id. When more rows than max(prefix, class rows /
  rescan_div) would need rescoring, the class is rescanned instead.

float16 sources (what the hooks write) are passed as their bits: numba has no float16 on the CPU.
Their exponent and mantissa shifted into a float32 give the value times 2^-112 exactly (subnormal
halves included), so a row is decoded with integer shifts in SIMD and the sum scaled back once.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

NEG = -np.inf
HALF_SCALE = 2.0**112  # a float16's bits << 13, read as float32, are its value / 2^112


def _jit(**opts):
    """njit, its machine code cached beside the module (or in the user's cache); without a writable
    place, compiled in every process (numba refuses the cache at decoration then)."""

    def wrap(fn):
        try:
            return njit(cache=True, **opts)(fn)
        except RuntimeError:
            return njit(**opts)(fn)

    return wrap


def _values(src, r, buf):
    """(values, factor): source row ``r`` is values * factor, exactly. float16 bits are decoded into
    ``buf`` (uint32[D]); other rows are returned as they are."""


def _nonneg_values(src, r, buf):
    """``_values`` of a row without negative values (a -0 is read as +0): the sign costs ~40 % of a
    float16 scan, and the lazy greedy only reads non-negative rows."""


def _decoder(signed):
    def impl_for(src, r, buf):
        if not isinstance(src.dtype, types.Integer):
            return lambda src, r, buf: (src[r], 1.0)
        low, sign = np.uint32(0x7FFF), np.uint32(0x8000 if signed else 0)

        def impl(src, r, buf):  # float16 bits: exponent and mantissa << 13 (and the sign << 16) in a float32
            row = src[r]
            for k in range(row.shape[0]):
                h = np.uint32(row[k])
                buf[k] = ((h & low) << np.uint32(13)) | ((h & sign) << np.uint32(16))
            return buf.view(np.float32), HALF_SCALE

        return impl

    return impl_for


overload(_values)(_decoder(signed=True))
overload(_nonneg_values)(_decoder(signed=False))


def _finite(src, r):
    """Whether source row r has no inf or NaN bits (float rows: their norm tells)."""


@overload(_finite)
def _finite_impl(src, r):
    if isinstance(src.dtype, types.Integer):  # float16 bits: exponent all ones is inf or NaN
        return lambda src, r: not np.any((src[r] & np.uint16(0x7C00)) == np.uint16(0x7C00))
    return lambda src, r: True


@_jit(nogil=True, fastmath={"reassoc"})  # the norm's sum vectorised; no contraction: x * inv is rounded once
def row_norms(block, start, cls_of_row, inv64, sums):
    """Rows ``start`` .. of the source (``block``: float rows, or float16 rows as their bits) into their
    float64 inverse norms and each class's sum of unit rows (``sums[c, 0]``). An exact unit row is
    x * inv64, here and wherever the greedies read one. Returns (no value negative, first row that is
    not finite or is zero, or -1)."""
    nonneg, bad = True, -1
    buf = np.empty(block.shape[1], np.uint32)
    for r in range(block.shape[0]):
        fr = start + r
        x, f = _values(block, r, buf)
        acc, neg = 0.0, 0
        for k in range(x.shape[0]):
            v = np.float64(x[k]) * f
            acc += v * v
            neg += v < 0
        nonneg = nonneg and neg == 0
        if not (0.0 < acc < math.inf and _finite(block, r)):
            bad = fr if bad < 0 else bad
            continue
        inv = 1.0 / math.sqrt(acc)
        inv64[fr] = inv
        total = sums[cls_of_row[fr], 0]
        for k in range(x.shape[0]):
            total[k] += (np.float64(x[k]) * f) * inv
    return nonneg, bad


@_jit(fastmath={"reassoc", "contract"})
def _dot(src, r, w, buf):
    """Non-negative source row r . w (float64 accumulator; vectorised: reassociation allowed)."""
    x, f = _nonneg_values(src, r, buf)
    acc = 0.0
    for k in range(w.shape[0]):
        acc += np.float64(x[k]) * w[k]
    return acc * f


@_jit()
def _exact_dot(src, r, inv, w, buf):
    """Exact non-negative unit row r . w, summed in order (the plain greedy's float64 unit rows)."""
    x, f = _nonneg_values(src, r, buf)
    acc = 0.0
    for k in range(w.shape[0]):
        acc += ((np.float64(x[k]) * f) * inv) * w[k]
    return acc


@_jit()
def _lower_bounds(bound, then, along, across, lo, hi, l_a, l_r):
    """Lower the bounds of rows lo..hi to their rescan score minus what they surely lost (``moved``);
    returns the first row with the highest (lo when every bound is -inf)."""
    top, arg = NEG, lo
    for i in range(lo, hi):
        b = min(bound[i], then[i] - max(along[i] * l_a - across[i] * l_r, 0.0))
        bound[i] = b
        if b > top:
            top, arg = b, i
    return arg


@_jit()
def lazy_greedy(
    src, inv64, order, where, cls_of_row, by_image, img_bounds, img_o, bounds, bias_o, sums, n, lam, bias_scale,
    rescan_div, prefix, tie_rtol,
):  # fmt: skip
    """Pick up to ``n`` images; returns (picks: image indices in pick order, counts [rows scored,
    rescans, float64 rechecks]). ``sums`` is updated in place.

    src / inv64: the source rows (float16 ones as their bits) and their float64 inverse norms (file
    order); order / where: class order -> file row and back; cls_of_row: file row -> class index;
    by_image / img_bounds: each image's file rows; img_o: class order -> image index; bounds: each
    class's block of the class order; bias_o: per class-order row, added to its score. A pick that would rescore
    more than max(prefix, class rows / rescan_div) rows rescans the class instead."""
    p, d = src.shape
    inv_o = inv64[order]  # class order
    buf = np.empty(d, np.uint32)  # a float16 row's decoded bits
    n_cls = bounds.shape[0] - 1
    n_img = img_bounds.shape[0] - 1
    counts = np.zeros(3, np.int64)
    chosen = np.zeros(n_img, np.bool_)
    left = np.diff(bounds)
    picks = np.empty(n_img, np.int64)
    n_picks = 0

    # Mean directions and every row's (a, r) = (u . g lowered by a margin over rounding, sqrt(1 - a^2)).
    g = np.empty((n_cls, d))
    along = np.empty(p)
    across = np.empty(p)
    for c in range(n_cls):
        g[c] = sums[c, 0] / math.sqrt(np.sum(sums[c, 0] ** 2))
        for i in range(bounds[c], bounds[c + 1]):
            a = min(max(_dot(src, order[i], g[c], buf) * inv_o[i] - 1e-5, 0.0), 1.0)
            along[i] = a
            across[i] = math.sqrt(1.0 - a * a)
    counts[0] += p

    then = np.empty(p)  # each row's score at its class's last rescan
    bound = np.empty(p)  # an upper bound of its current score (-inf: chosen)
    scanned = np.zeros(n_cls, np.bool_)
    w_then = np.zeros((n_cls, d))
    biggest = int(np.max(np.diff(bounds))) if n_cls else 0
    cand_idx = np.empty(biggest, np.int64)  # rows (class order) this pick scored, and their scores
    cand_s = np.empty(biggest)
    queue = np.empty(biggest, np.int64)
    w = np.empty(d)  # the turn's w (no array allocated per pick)

    while n_picks < n:
        progressed = False
        for c in range(n_cls):
            if n_picks >= n:
                break
            if left[c] == 0:
                continue
            lo, hi = bounds[c], bounds[c + 1]
            s0, s1 = 0.0, 0.0
            for k in range(d):
                w[k] = lam * sums[c, 0, k] - sums[c, 1, k]
                s0 += sums[c, 0, k] * sums[c, 0, k]
                s1 += sums[c, 1, k] * sums[c, 1, k]
            scale = lam * math.sqrt(s0) + math.sqrt(s1) + bias_scale
            tol = 1e-5 * scale
            limit = max(prefix, (hi - lo) // rescan_div)

            n_cand = -1  # -1: only a rescan can decide
            if scanned[c]:
                # Every bound lowered by what its row surely lost since the rescan (moved); the best one.
                g_d, dd2 = 0.0, 0.0
                for k in range(d):
                    dd = (w_then[c, k] - w[k]) / (lam + 1.0)
                    g_d += g[c, k] * dd
                    dd2 += dd * dd
                rest_d = math.sqrt(max(dd2 - g_d * g_d, 0.0))
                l_a, l_r = (lam + 1.0) * g_d, (lam + 1.0) * rest_d
                top = _lower_bounds(bound, then, along, across, lo, hi, l_a, l_r)
                # The best bound's row first; then, best bound first, every row whose bound is within tol
                # of the best score so far (a row whose bound is not cannot win, nor tie).
                best = _dot(src, order[top], w, buf) * inv_o[top] + bias_o[top]
                bound[top] = best  # fresh, and scores only decrease: its bound from now on
                cand_idx[0], cand_s[0] = top, best
                n_cand, n_queue = 1, 0
                for i in range(lo, hi):
                    if i != top and bound[i] >= best - tol:
                        if n_queue == limit:
                            n_queue = -1
                            break
                        queue[n_queue] = i
                        n_queue += 1
                if n_queue < 0:
                    n_cand = -1  # too many rows could still win: a rescan is cheaper
                else:
                    for q in range(n_queue):  # in row order: the reads run forward through the class's block
                        i = queue[q]
                        if bound[i] < best - tol:
                            continue
                        s = _dot(src, order[i], w, buf) * inv_o[i] + bias_o[i]
                        bound[i] = s
                        cand_idx[n_cand], cand_s[n_cand] = i, s
                        n_cand += 1
                        best = max(best, s)
                    counts[0] += n_cand

            if n_cand < 0:  # rescan: every current score of the class
                counts[1] += 1
                n_cand = 0
                for i in range(lo, hi):
                    if chosen[img_o[i]]:
                        then[i] = bound[i] = NEG
                    else:
                        then[i] = bound[i] = _dot(src, order[i], w, buf) * inv_o[i] + bias_o[i]
                        cand_idx[n_cand], cand_s[n_cand] = i, then[i]
                        n_cand += 1
                counts[0] += n_cand
                scanned[c] = True
                w_then[c, :] = w

            best = NEG
            for j in range(n_cand):
                best = max(best, cand_s[j])
            if best == NEG:
                continue
            win, n_near = -1, 0
            for j in range(n_cand):
                if cand_s[j] >= best - tol:
                    n_near += 1
                    win = cand_idx[j]
            if n_near > 1:  # near ties: the exact float64 scores decide, then the lowest image id
                counts[2] += 1
                exact_best = NEG
                for j in range(n_cand):
                    if cand_s[j] >= best - tol:
                        i = cand_idx[j]
                        cand_s[j] = _exact_dot(src, order[i], inv_o[i], w, buf) + bias_o[i]
                        exact_best = max(exact_best, cand_s[j])
                    else:
                        cand_s[j] = NEG
                win = hi
                for j in range(n_cand):
                    if cand_s[j] >= exact_best - tie_rtol * scale:
                        win = min(win, cand_idx[j])  # rows of a class are in image id order
            img = img_o[win]
            chosen[img] = True
            picks[n_picks] = img
            n_picks += 1
            progressed = True
            for t in range(img_bounds[img], img_bounds[img + 1]):
                fr = by_image[t]
                cc = cls_of_row[fr]
                bound[where[fr]] = NEG
                x, f = _nonneg_values(src, fr, buf)
                for k in range(d):
                    v = (np.float64(x[k]) * f) * inv64[fr]
                    sums[cc, 0, k] -= v
                    sums[cc, 1, k] += v
                left[cc] -= 1
        if not progressed:
            break
    return picks[:n_picks], counts
