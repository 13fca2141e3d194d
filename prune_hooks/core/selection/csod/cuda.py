"""CSOD's greedy on a CUDA device: every pick inside one cooperative kernel (numba-cuda).

Why one kernel: at COCO scale the greedy makes ~59,000 picks, each a mat-vec over one class's rows
(~4,100 on average) and a few small updates. On a GPU the arithmetic of all picks together is a few
hundred milliseconds; what costs is the round trip per pick (launches, copies, host decisions), tens to
hundreds of microseconds with framework calls. Here the picks follow each other on the device, with one
grid-wide barrier per pick and nothing returned to the host until the end.

The greedy is the plain one of ``csod.csod_select`` (each class turn scores all of its candidates), in
exact arithmetic: every score is the source row . w summed in float64, times the row's float64 inverse
norm, plus its bias; the best within ``tie_rtol`` of the score scale with the lowest image id wins;
the sums are updated with the same float64 unit rows as the CPU greedies, so the picks are theirs.

Per pick:
  A. every warp of the grid scores rows of the turn's class c, one row at a time (lanes summed by warp
     shuffles); rows of chosen images score -inf. Each block writes its best score.    -- grid barrier
  B. every block takes the same decision from the same data: the best score M, the lowest class-order
     row with score >= M - tol (looked for only among the rows of blocks whose best reaches it), its
     image; the next class in rotation that still has a candidate, and its w for the next pass A.
     The grid shares writing the state after the pick.
No second barrier: the state (class sums, candidates left per class, scores, block bests) has two
buffers by pick parity. Pass B of pick k reads buffers [k % 2] and writes [1 - k % 2], which hold the
state of two picks ago: it rewrites there the classes of this pick's and of the last pick's image.
Nobody reads [1 - k % 2] before the barrier of pick k + 1, and nobody writes [k % 2] before it either.
The rows of the last pick's image are written dead during pass A of the next, which recognises them by
image.

Block reductions go through shared memory in a fixed tree order, so every block reaches the same
decision. numba's CUDA simulator (no warp shuffles; its grid barrier is a block barrier) runs the kernel
with the lanes summed through shared memory, one block: that is how the tests check it on a CPU.

Its speed on a device: docs/benchmarks/bench_select_gpu.md.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from numba import config, cuda, float64, int64

from ....compat import numba_cuda_aliases

numba_cuda_aliases()

# Static shared memory per block (48 KiB at most): w (MAXD float64), four reduction arrays of MAX_THREADS
# and three small LIST-sized ones (~34.5 KiB).
MAXD, MAX_THREADS = 2048, 512  # widest feature, most threads per block
THREADS = 256
BLOCKS = None  # grid size; None: what the device keeps resident, at most four blocks per multiprocessor
NEG = -math.inf
FULL = 0xFFFFFFFF  # every lane of a warp
# Blocks whose best reaches the tie cut, looked at one by one (more: every row of the class); also the rows
# of an image staged in shared memory (more: read from device memory).
LIST = 64
_SIM = bool(config.ENABLE_CUDASIM)


@cuda.jit(device=True)
def _block_reduce(a, b, c, i, tid, nt):
    """Over the block's shared ``a`` (max), ``b``, ``c`` (sums) and ``i`` (min) in a fixed tree order;
    the results land in slot 0. nt a power of two; every thread of the block calls it."""
    half = nt // 2
    while half > 0:
        if tid < half:
            a[tid] = max(a[tid], a[tid + half])
            b[tid] += b[tid + half]
            c[tid] += c[tid + half]
            i[tid] = min(i[tid], i[tid + half])
        cuda.syncthreads()
        half //= 2


@cuda.jit(device=True)
def _row_dot(x, w, r, lane, dim):
    """This lane's share of row r . w in float64 (lanes stride the row; eight loads in flight)."""
    a0, a1, a2, a3, a4, a5, a6, a7 = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    d = lane
    while d + 224 < dim:
        a0 += float64(x[r, d]) * w[d]
        a1 += float64(x[r, d + 32]) * w[d + 32]
        a2 += float64(x[r, d + 64]) * w[d + 64]
        a3 += float64(x[r, d + 96]) * w[d + 96]
        a4 += float64(x[r, d + 128]) * w[d + 128]
        a5 += float64(x[r, d + 160]) * w[d + 160]
        a6 += float64(x[r, d + 192]) * w[d + 192]
        a7 += float64(x[r, d + 224]) * w[d + 224]
        d += 256
    while d < dim:
        a0 += float64(x[r, d]) * w[d]
        d += 32
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@cuda.jit(device=True)
def _at(staged, slot, j, j0, whole, ni):
    """Entry j of an image's ni rows (or of their classes): staged in shared memory where they fit
    (ni <= LIST), else read from ``whole``."""
    return staged[slot, j] if ni <= staged.shape[1] else whole[j0 + j]


@cuda.jit(device=True)
def _class_row(icls, slot, cc, j0, img_cls, ni):
    """The place among an image's ni rows of its row of class cc, or -1."""
    for j in range(ni):
        if _at(icls, slot, j, j0, img_cls, ni) == cc:
            return j
    return -1


@cuda.jit(**({} if _SIM else {"max_registers": 64}))  # four blocks of 256 per multiprocessor
def _greedy(x, inv, bias, img_o, bounds, img_rows, img_cls, img_bounds, sums, left, dead, sc, bmax, picks, state,
            n, lam, bias_scale, tie_rtol):  # fmt: skip
    grid = cuda.cg.this_grid()
    tid, nt = cuda.threadIdx.x, cuda.blockDim.x
    bid, nb = cuda.blockIdx.x, cuda.gridDim.x
    lane, warp, nw = tid % 32, tid // 32, nt // 32
    w = cuda.shared.array(MAXD, float64)
    part = cuda.shared.array(MAX_THREADS, float64)  # block reductions go through shared memory (block barriers
    part2 = cuda.shared.array(MAX_THREADS, float64)  # only): the same order in every block, and numba's
    part3 = cuda.shared.array(MAX_THREADS, float64)  # simulator runs it
    parti = cuda.shared.array(MAX_THREADS, int64)
    hit = cuda.shared.array(LIST, int64)  # blocks whose best reaches the tie cut
    hits = cuda.shared.array(1, int64)
    irow = cuda.shared.array((2, LIST), int64)  # the rows of this pick's and the last pick's image, and
    icls = cuda.shared.array((2, LIST), int64)  # their classes (slot: pick count % 2)
    n_cls, dim = bounds.shape[0] - 1, x.shape[1]
    c, count, prev, pj0, pni, scored = state[2], 0, -1, 0, 0, 0
    a, b = 0.0, 0.0  # this thread's share of |unchosen sum|^2 and |chosen sum|^2 of class c (the tie scale)
    for d in range(tid, dim if c >= 0 else 0, nt):
        s0, s1 = sums[0, c, 0, d], sums[0, c, 1, d]
        w[d] = lam * s0 - s1
        a += s0 * s0
        b += s1 * s1
    cuda.syncthreads()
    while count < n and c >= 0:
        par = count % 2  # buffers: sums[par]/left[par] hold the state before this pick, [1 - par] gets the next
        lo, hi = bounds[c], bounds[c + 1]

        # A. scores of class c, one row per warp at a time; rows of chosen images score -inf (the last
        # pick's image is written dead during this pass: its rows are recognised by image). Each block
        # writes its best.
        best = NEG
        if _SIM:  # the simulator has no warp shuffles: the block's nw rows summed by its first nw threads
            base = lo + bid * nw
            while base < hi:
                r = base + warp
                live = r < hi and dead[r] == 0 and img_o[r] != prev
                part[tid] = _row_dot(x, w, r, lane, dim) if live else 0.0
                cuda.syncthreads()
                r = base + tid
                if tid < nw and r < hi:
                    s = NEG
                    if dead[r] == 0 and img_o[r] != prev:
                        t = 0.0
                        for i in range(32):
                            t += part[tid * 32 + i]
                        s = t * inv[r] + bias[r]
                    sc[par, r] = s
                    best = max(best, s)
                cuda.syncthreads()
                base += nb * nw
            if tid < nw:
                part2[tid] = best
        else:  # lanes summed by shuffles: no block barrier per row
            r = lo + bid * nw + warp
            while r < hi:
                if dead[r] == 0 and img_o[r] != prev:
                    iv, bs = inv[r], bias[r]
                    acc = _row_dot(x, w, r, lane, dim)
                    for off in (16, 8, 4, 2, 1):
                        acc += cuda.shfl_down_sync(FULL, acc, off)
                    if lane == 0:
                        s = acc * iv + bs
                        sc[par, r] = s
                        best = max(best, s)
                elif lane == 0:
                    sc[par, r] = NEG
                r += nb * nw
            if lane == 0:
                part2[warp] = best
        cuda.syncthreads()
        if tid == 0:
            m = NEG
            for i in range(nw):
                m = max(m, part2[i])
            bmax[par, bid] = m
        grid.sync()  # the only grid barrier of a pick

        # B. every block takes the same decision from the same data: the best score M, the lowest
        # class-order row with score >= M - tol (looked for only in blocks whose best reaches it), its image
        m = NEG
        for i in range(tid, nb, nt):
            m = max(m, bmax[par, i])
        part[tid], part2[tid], part3[tid], parti[tid] = m, a, b, 0
        if tid == 0:
            hits[0] = 0
        cuda.syncthreads()
        _block_reduce(part, part2, part3, parti, tid, nt)
        cut = part[0] - tie_rtol * (lam * math.sqrt(part2[0]) + math.sqrt(part3[0]) + bias_scale)
        for i in range(tid, nb, nt):
            if bmax[par, i] >= cut:
                k = cuda.atomic.add(hits, 0, 1)
                if k < LIST:
                    hit[k] = i
        cuda.syncthreads()
        first = hi
        if hits[0] <= LIST:  # a block's rows: lo + b*nw + (j % nw) + (j // nw)*nb*nw, rising with j in a thread
            for e in range(hits[0]):
                j = tid
                while True:
                    r = lo + hit[e] * nw + j % nw + (j // nw) * nb * nw
                    if r >= min(hi, first):
                        break
                    if sc[par, r] >= cut:
                        first = r
                        break
                    j += nt
        else:  # many near-equal bests (identical prototypes): every row
            for r in range(lo + tid, hi, nt):
                if sc[par, r] >= cut:
                    first = r  # rows of a class are in image id order: a thread's first is its lowest
                    break
        cuda.syncthreads()  # slot 0 read by every thread
        part[tid], part2[tid], part3[tid], parti[tid] = 0.0, 0.0, 0.0, first
        cuda.syncthreads()
        _block_reduce(part, part2, part3, parti, tid, nt)
        img = img_o[parti[0]]
        j0 = img_bounds[img]
        ni = img_bounds[img + 1] - j0
        if ni <= LIST:
            for j in range(tid, ni, nt):
                irow[par, j] = img_rows[j0 + j]
                icls[par, j] = img_cls[j0 + j]
        cuda.syncthreads()

        # The state after this pick into buffers [1 - par], which hold the state of two picks ago: this
        # image's classes = [par] with its unit rows moved from unchosen to chosen (the grid shares the
        # work); the last image's other classes = [par]. Other classes are the same in both.
        for k in range(bid * nt + tid, (ni + pni) * dim, nb * nt):
            j, d = k // dim, k % dim
            if j < ni:
                r = _at(irow, par, j, j0, img_rows, ni)
                cc = _at(icls, par, j, j0, img_cls, ni)
                u = float64(x[r, d]) * inv[r]
                sums[1 - par, cc, 0, d] = sums[par, cc, 0, d] - u
                sums[1 - par, cc, 1, d] = sums[par, cc, 1, d] + u
            else:
                cc = _at(icls, 1 - par, j - ni, pj0, img_cls, pni)
                if _class_row(icls, par, cc, j0, img_cls, ni) < 0:
                    sums[1 - par, cc, 0, d] = sums[par, cc, 0, d]
                    sums[1 - par, cc, 1, d] = sums[par, cc, 1, d]
        if bid == 0:
            for j in range(tid, ni + pni, nt):
                if j < ni:
                    cc = _at(icls, par, j, j0, img_cls, ni)
                    left[1 - par, cc] = left[par, cc] - 1  # an image's rows are of distinct classes
                    dead[_at(irow, par, j, j0, img_rows, ni)] = 1
                else:
                    cc = _at(icls, 1 - par, j - ni, pj0, img_cls, pni)
                    if _class_row(icls, par, cc, j0, img_cls, ni) < 0:
                        left[1 - par, cc] = left[par, cc]
            if tid == 0:
                picks[count] = img
                scored += hi - lo
        # the next class in rotation with a candidate (this pick counted): the smallest step k in 1..n_cls
        nxt = n_cls + 1
        for k in range(1 + tid, n_cls + 1, nt):
            cc = (c + k) % n_cls
            rest = left[par, cc]
            if _class_row(icls, par, cc, j0, img_cls, ni) >= 0:
                rest -= 1
            if rest > 0:
                nxt = k
                break
        cuda.syncthreads()  # slot 0 read
        part[tid], part2[tid], part3[tid], parti[tid] = 0.0, 0.0, 0.0, nxt
        cuda.syncthreads()
        _block_reduce(part, part2, part3, parti, tid, nt)
        c = (c + parti[0]) % n_cls if parti[0] <= n_cls else -1
        count += 1
        prev, pj0, pni = img, j0, ni
        # w of the next turn from [par] and this pick (buffers [1 - par] are still being written)
        a, b = 0.0, 0.0
        jn = _class_row(icls, par, c, j0, img_cls, ni) if c >= 0 and count < n else -1
        rn = _at(irow, par, jn, j0, img_rows, ni) if jn >= 0 else 0
        for d in range(tid, dim if c >= 0 and count < n else 0, nt):
            s0, s1 = sums[par, c, 0, d], sums[par, c, 1, d]
            if jn >= 0:
                u = float64(x[rn, d]) * inv[rn]
                s0 -= u
                s1 += u
            w[d] = lam * s0 - s1
            a += s0 * s0
            b += s1 * s1
        cuda.syncthreads()
    if bid == 0 and tid == 0:
        state[0] = count
        state[1] = scored


def available() -> bool:
    """A CUDA device numba can launch on (numba-cuda installed, a driver, a device)."""
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver setup reads as no device
        return False


def cuda_greedy(x, lay, n: int, lam: float, tie_rtol: float, threads: int | None = None):
    """(picks: image indices in pick order, rows scored, seconds): the plain greedy on the current CUDA device.

    ``x``: the source rows in class order (float16, float32 or float64, as stored), on the device (a torch
    tensor or any CUDA array); ``lay``: the :class:`~prune_hooks.core.selection.csod.greedy.Layout`, whose
    ``sums64`` is updated in place. ``threads``: per block, a power of two >= 32 (default THREADS); the grid:
    ``BLOCKS``. Seconds: from the launch to the picks on the host."""
    inv_o, bias_o, img_o, bounds = lay.inv64[lay.order], lay.bias_o, lay.img_o, lay.bounds
    by_image, img_bounds, where, sums64, bias_scale = (
        lay.by_image,
        lay.img_bounds,
        lay.where,
        lay.sums64,
        lay.bias_scale,
    )
    p, dim = x.shape
    threads = threads or THREADS
    if dim > MAXD or threads > MAX_THREADS or threads < 32 or threads & (threads - 1):
        raise ValueError(
            f"csod on CUDA: {dim}-d features, {threads} threads (at most {MAXD}-d; threads a power of two, 32 to "
            f"{MAX_THREADS})"
        )

    def put(a, dtype):
        return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))

    n_cls = len(bounds) - 1
    sums = put(np.stack([sums64, sums64]), np.float64)  # two buffers: the state before a pick and after it
    per_class = np.diff(bounds)
    cls_o = np.repeat(np.arange(n_cls), per_class)  # class of each class-order row
    img_rows = where[by_image]  # each image's rows, as class-order places
    args = (
        x,
        put(inv_o, np.float64),
        put(bias_o, np.float64),
        put(img_o, np.int64),
        put(bounds, np.int64),
        put(img_rows, np.int64),
        put(cls_o[img_rows], np.int64),
        put(img_bounds, np.int64),
        sums,
        put(np.stack([per_class, per_class]), np.int64),  # unchosen images per class, two buffers
        cuda.to_device(np.zeros(p, dtype=np.int32)),  # dead rows
        cuda.device_array((2, p), dtype=np.float64),  # scores of the turn, two buffers
    )
    scalars = (n, float(lam), float(bias_scale), float(tie_rtol))
    kernel = _greedy.specialize(*args, cuda.device_array((2, 1)), cuda.device_array(1, np.int64),
                                cuda.device_array(3, np.int64), *scalars)  # fmt: skip
    blocks = BLOCKS
    if blocks is None:
        overloads = kernel.overloads
        overload = next(iter(overloads.values()), None) or overloads[()]  # (the simulator keeps none: a stand-in)
        try:
            sms = cuda.get_current_device().MULTIPROCESSOR_COUNT
        except AttributeError:  # the simulator
            sms = 1
        blocks = max(1, min(4 * sms, overload.max_cooperative_grid_blocks(threads)))
    picks = cuda.to_device(np.full(n, -1, dtype=np.int64))
    state = cuda.to_device(np.array([0, 0, 0 if p else -1], dtype=np.int64))  # picks, rows scored, next class
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # x may come from torch's stream
    t = time.perf_counter()
    kernel[blocks, threads](*args, cuda.device_array((2, blocks)), picks, state, *scalars)
    cuda.synchronize()
    count, rows_scored = (int(v) for v in state.copy_to_host()[:2])
    picked = picks.copy_to_host()[:count]
    seconds = time.perf_counter() - t
    sums64[...] = sums.copy_to_host()[count % 2]  # the buffers after the last pick
    return picked, rows_scored, seconds
