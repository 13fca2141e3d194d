"""CSOD's greedy on a CUDA device: every pick inside one cooperative kernel (numba-cuda).

Why one kernel: at COCO scale the greedy makes ~59,000 picks, each a mat-vec over one class's rows
(~4,100 on average) and a few small updates. On a GPU the arithmetic of all picks together is a few
hundred milliseconds; what costs is the round trip per pick (launches, copies, host decisions), tens to
hundreds of microseconds with framework calls. Here the picks follow each other on the device, with two
grid-wide barriers per pick and nothing returned to the host until the end.

The greedy is the plain one of ``csod.csod_select`` (each class turn scores all of its candidates), in
exact arithmetic: every score is the source row . w summed in float64, times the row's float64 inverse
norm, plus its bias; the best within ``tie_rtol`` of the score scale with the lowest image id wins;
the sums are updated with the same float64 unit rows as the CPU greedies, so the picks are theirs.

Per pick (every thread reads the turn's class from device memory after a barrier):
  A. every warp of the grid scores rows of class c (a chosen image's rows are dead: -inf);
     each block writes its best score.                                                  -- barrier
  B. block 0: the best score M, the lowest class-order row with score >= M - tol, its image; the image's
     rows die and leave their classes' unchosen sums for the chosen ones; the next class in rotation
     that still has a candidate.                                                         -- barrier
Block reductions go through shared memory with block barriers only (no warp shuffles): numba's CUDA
simulator runs the kernel as written (one block), which is how the tests check it on a CPU.

Measured (tools/bench/results/bench_select_gpu.md, H200, COCO scale, 59,000 picks): 3.4 s in the kernel,
~58 us per pick, of which the scans are ~0.3 s (801 full scans of 0.35 ms); the rest is the barriers
and block 0's serial part. More blocks help (132: 5.9 s, 264: 4.1 s, 528: 3.4 s).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from numba import config, cuda, float64, int64

from ..compat import numba_cuda_aliases

numba_cuda_aliases()

# Static shared memory per block (48 KiB at most): w (MAXD float64) and four reduction arrays of MAX_THREADS.
MAXD, MAX_THREADS = 2048, 512  # widest feature, most threads per block
THREADS = 256
BLOCKS = None  # grid size; None: what the device keeps resident, at most four blocks per multiprocessor
NEG = -math.inf


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


@cuda.jit(**({} if config.ENABLE_CUDASIM else {"max_registers": 64}))  # four blocks of 256 per multiprocessor
def _greedy(x, inv, bias, img_o, cls_pos, bounds, img_rows, img_bounds, sums, left, dead, sc, bmax, picks, state,
            n, lam, bias_scale, tie_rtol):  # fmt: skip
    grid = cuda.cg.this_grid()
    tid, nt = cuda.threadIdx.x, cuda.blockDim.x
    bid, nb = cuda.blockIdx.x, cuda.gridDim.x
    lane, warp, nw = tid % 32, tid // 32, nt // 32
    w = cuda.shared.array(MAXD, float64)
    part = cuda.shared.array(MAX_THREADS, float64)  # block reductions go through shared memory (block barriers
    part2 = cuda.shared.array(MAX_THREADS, float64)  # only): the same order whatever the grid, and numba's
    part3 = cuda.shared.array(MAX_THREADS, float64)  # simulator runs it
    parti = cuda.shared.array(MAX_THREADS, int64)
    n_cls, dim = bounds.shape[0] - 1, x.shape[1]
    while state[0] < n and state[2] >= 0:
        c = state[2]  # this turn's class (block 0 chose it last turn; the same in every thread)
        lo, hi = bounds[c], bounds[c + 1]
        for d in range(tid, dim, nt):
            w[d] = lam * sums[c, 0, d] - sums[c, 1, d]
        cuda.syncthreads()

        # A. scores of class c: each warp one row at a time (its lanes stride the row, four loads in
        # flight), the block's nw rows summed by its first nw threads, 32 lane partials in lane order
        best = NEG
        base = lo + bid * nw
        while base < hi:
            r = base + warp
            acc = 0.0
            if r < hi and dead[r] == 0:
                a0, a1, a2, a3 = 0.0, 0.0, 0.0, 0.0
                d = lane
                while d + 96 < dim:
                    a0 += float64(x[r, d]) * w[d]
                    a1 += float64(x[r, d + 32]) * w[d + 32]
                    a2 += float64(x[r, d + 64]) * w[d + 64]
                    a3 += float64(x[r, d + 96]) * w[d + 96]
                    d += 128
                while d < dim:
                    a0 += float64(x[r, d]) * w[d]
                    d += 32
                acc = (a0 + a1) + (a2 + a3)
            part[tid] = acc
            cuda.syncthreads()
            r = base + tid
            if tid < nw and r < hi:
                s = NEG
                if dead[r] == 0:
                    t = 0.0
                    for i in range(32):
                        t += part[tid * 32 + i]
                    s = t * inv[r] + bias[r]
                sc[r] = s
                best = max(best, s)
            cuda.syncthreads()
            base += nb * nw
        part2[tid] = best
        cuda.syncthreads()
        if tid == 0:
            m = NEG
            for i in range(nw):
                m = max(m, part2[i])
            bmax[bid] = m
        grid.sync()

        # B. block 0 decides and applies the pick, and chooses the next turn's class
        if bid == 0:
            m, a, b = NEG, 0.0, 0.0
            for i in range(tid, nb, nt):
                m = max(m, bmax[i])
            for d in range(tid, dim, nt):
                a += sums[c, 0, d] * sums[c, 0, d]
                b += sums[c, 1, d] * sums[c, 1, d]
            part[tid], part2[tid], part3[tid], parti[tid] = m, a, b, 0
            cuda.syncthreads()
            _block_reduce(part, part2, part3, parti, tid, nt)
            cut = part[0] - tie_rtol * (lam * math.sqrt(part2[0]) + math.sqrt(part3[0]) + bias_scale)
            first = hi
            for r in range(lo + tid, hi, nt):
                if sc[r] >= cut:
                    first = r  # rows of a class are in image id order: a thread's first is its lowest
                    break
            cuda.syncthreads()  # slot 0 read by every thread
            part[tid], part2[tid], part3[tid], parti[tid] = 0.0, 0.0, 0.0, first
            cuda.syncthreads()
            _block_reduce(part, part2, part3, parti, tid, nt)
            img = img_o[parti[0]]
            j0, j1 = img_bounds[img], img_bounds[img + 1]
            for k in range(tid, (j1 - j0) * dim, nt):  # the image's rows (one per class) x dims
                r = img_rows[j0 + k // dim]
                d = k % dim
                u = float64(x[r, d]) * inv[r]
                cc = cls_pos[r]
                sums[cc, 0, d] -= u
                sums[cc, 1, d] += u
            if tid < j1 - j0:
                r = img_rows[j0 + tid]
                dead[r] = 1
                left[cls_pos[r]] -= 1  # an image's rows are of distinct classes
            cuda.syncthreads()  # left[] final, slot 0 read
            # next class in rotation with a candidate: the smallest step k in 1..n_cls (n_cls: c again)
            nxt = n_cls + 1
            for k in range(1 + tid, n_cls + 1, nt):
                cc = (c + k) % n_cls
                if left[cc] > 0:
                    nxt = k
                    break
            part[tid], part2[tid], part3[tid], parti[tid] = 0.0, 0.0, 0.0, nxt
            cuda.syncthreads()
            _block_reduce(part, part2, part3, parti, tid, nt)
            if tid == 0:
                picks[state[0]] = img
                state[0] += 1
                state[1] += hi - lo  # rows scored
                state[2] = (c + parti[0]) % n_cls if parti[0] <= n_cls else -1
        grid.sync()


def available() -> bool:
    """A CUDA device numba can launch on (numba-cuda installed, a driver, a device)."""
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver setup reads as no device
        return False


def cuda_greedy(x, inv_o, bias_o, img_o, bounds, by_image, img_bounds, where, sums64, n, lam, bias_scale, tie_rtol,
                threads: int | None = None):  # fmt: skip
    """(picks: image indices in pick order, rows scored, seconds): the plain greedy on the current CUDA device.

    ``x``: float32 source rows in class order, on the device (a torch tensor or any CUDA array);
    ``inv_o``/``bias_o``/``img_o``: per class-order row; ``where``: each file row's class-order place;
    ``by_image``/``img_bounds``: file rows grouped by image; ``sums64``: per class, float64 sums of unit
    rows (unchosen, chosen), updated in place. ``threads``: per block, a power of two >= 32 (default
    THREADS); the grid: ``BLOCKS``. Seconds: from the launch to the picks on the host."""
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
    sums = put(sums64, np.float64)
    args = (
        x,
        put(inv_o, np.float64),
        put(bias_o, np.float64),
        put(img_o, np.int64),
        put(np.repeat(np.arange(n_cls), np.diff(bounds)), np.int64),  # class of each class-order row
        put(bounds, np.int64),
        put(where[by_image], np.int64),  # each image's rows, as class-order places
        put(img_bounds, np.int64),
        sums,
        put(np.diff(bounds), np.int64),  # unchosen images per class
        cuda.to_device(np.zeros(p, dtype=np.int32)),  # dead rows
        cuda.device_array(p, dtype=np.float64),  # scores of the turn
    )
    scalars = (n, float(lam), float(bias_scale), float(tie_rtol))
    kernel = _greedy.specialize(*args, cuda.device_array(1), cuda.device_array(1, np.int64),
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
    kernel[blocks, threads](*args, cuda.device_array(blocks), picks, state, *scalars)
    cuda.synchronize()
    count, rows_scored = (int(v) for v in state.copy_to_host()[:2])
    picked = picks.copy_to_host()[:count]
    seconds = time.perf_counter() - t
    sums64[...] = sums.copy_to_host()
    return picked, rows_scored, seconds
