#!/usr/bin/env python
"""CSOD selection on a CUDA device at COCO scale, against the CPU greedy on the same instance.

    python tools/bench/bench_select_gpu.py [--images 118000] [--regimes separated overlapping duplicates]

bench_select.py's instances (make_instance, 1024-d post-ReLU prototypes, 80 long-tailed classes), stored
as prune-hooks stores them (float16 unit rows by class, then image). Per regime: the CPU lazy greedy
(the picks of reference), then ``csod_select(device="cuda")`` twice (the first call compiles the kernel),
the same picks asserted; the row pass on the CPU and the kernel timed apart; one full float32 mat-vec
scan over all prototypes on the device (cuBLAS) as the unit. Needs a CUDA device and numba-cuda.
Writes bench_select_gpu.json and .md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from common import REGIMES, RESULTS, as_stored, make_instance, write_result  # this folder is sys.path[0]

from prune_hooks.core.selection.csod import cuda as csod_cuda  # noqa: E402
from prune_hooks.core.selection.csod.greedy import csod_select  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def instance_and_reference(images: int, regime: str, keep: float, lam: float):
    """The stored instance and the CPU lazy greedy's picks on it (with its seconds)."""
    _, ids, cats, feat = make_instance(images, regime=regime)
    ids, cats, feat = as_stored(ids, cats, feat)
    t = time.perf_counter()
    ref = csod_select(ids, cats, feat, int(images * keep), lam, device="cpu")
    return ids, cats, feat, ref.image_ids, time.perf_counter() - t


def gpu_scan_seconds(feature16: np.ndarray, repeats: int = 20) -> float:
    """The fastest of ``repeats`` float32 mat-vec scans over every row on the device."""
    u = torch.from_numpy(feature16).cuda().float()
    v = u.sum(0)
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        (u @ v).sum().item()
        times.append(time.perf_counter() - t)
    del u
    return float(np.min(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=118_000)
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--lam", type=float, default=0.05)
    ap.add_argument("--regimes", nargs="+", choices=REGIMES, default=list(REGIMES))
    ap.add_argument("--blocks", type=int, nargs="*", default=[], help="extra grid sizes to time (first regime)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if not (torch.cuda.is_available() and csod_cuda.available()):
        raise SystemExit("bench_select_gpu: needs a CUDA device that torch and numba-cuda both see")
    name = torch.cuda.get_device_name()
    n = int(args.images * args.keep)
    rows = []
    t = time.perf_counter()
    k = len(args.regimes)  # instances and CPU references side by side, one process each
    with ProcessPoolExecutor(k, mp_context=multiprocessing.get_context("spawn")) as pool:
        instances = list(
            pool.map(instance_and_reference, [args.images] * k, args.regimes, [args.keep] * k, [args.lam] * k)
        )
    print(f"instances and CPU references in {time.perf_counter() - t:.0f}s", flush=True)
    for regime, (ids, cats, feat, ref_ids, cpu) in zip(args.regimes, instances):
        scan = gpu_scan_seconds(feat)
        calls = []
        for _ in range(2):
            torch.cuda.synchronize()
            t = time.perf_counter()
            got = csod_select(ids, cats, feat, n, args.lam, device="cuda")
            calls.append(time.perf_counter() - t)
            assert got.stats["cuda"], "the CUDA greedy did not run"
            assert got.image_ids.tolist() == ref_ids.tolist(), f"{regime}: CUDA and CPU picks differ"
        row = {
            "regime": regime,
            "prototypes": int(len(ids)),
            "cpu_lazy_seconds": round(cpu, 2),
            "cuda_first_call_seconds": round(calls[0], 2),
            "cuda_seconds": round(calls[1], 2),
            "kernel_seconds": round(got.stats["kernel_seconds"], 3),
            "rows_scored_in_scans": round(got.rows_scored / len(ids), 1),
            "gpu_scan_ms": round(scan * 1000, 3),
            "kernel_in_scans": round(got.stats["kernel_seconds"] / scan, 1),
            "same_picks": True,
        }
        print(row, flush=True)
        if regime == args.regimes[0]:
            for b in args.blocks:
                csod_cuda.BLOCKS = b
                r = csod_select(ids, cats, feat, n, args.lam, device="cuda")
                csod_cuda.BLOCKS = None
                if r.stats["cuda"]:
                    assert r.image_ids.tolist() == ref_ids.tolist(), f"{b} blocks: picks differ"
                    row[f"kernel_seconds_{b}_blocks"] = round(r.stats["kernel_seconds"], 3)
                print(b, "blocks:", r.stats.get("kernel_seconds"), flush=True)
        rows.append(row)
    del instances
    result = {
        "device": name,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "images": args.images,
        "keep": args.keep,
        "lambda": args.lam,
        "regimes": rows,
    }
    lines = [
        "# CSOD selection on a GPU at COCO scale",
        "",
        f"`python tools/bench/bench_select_gpu.py {' '.join(sys.argv[1:])}` — {name}, torch {torch.__version__}. "
        f"{args.images} images, keep {args.keep}, lambda {args.lam}; bench_select.py's instances, stored as "
        "prune-hooks stores them (float16 unit rows by class, then image).",
        "",
        "| regime | prototypes | csod_select on CUDA (s) | of which the kernel (s) | first call, compiling (s) | "
        "CPU lazy greedy, same machine, one core (s) | rows scored, in scans | one scan on the GPU (ms) | "
        "kernel, in scans |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['regime']} | {r['prototypes']} | {r['cuda_seconds']} | {r['kernel_seconds']} | "
            f"{r['cuda_first_call_seconds']} | {r['cpu_lazy_seconds']} | {r['rows_scored_in_scans']} | "
            f"{r['gpu_scan_ms']} | {r['kernel_in_scans']} |"
        )
    extra = {k: v for k, v in rows[0].items() if k.startswith("kernel_seconds_")}
    lines += [
        "",
        "Same picks in the same order as the CPU greedy in every regime (asserted). The csod_select time holds the "
        "row pass on the CPU (norms and class sums, one compiled pass over the float16 file), the copy of the rows "
        "to the device and the kernel (every pick in one cooperative launch).",
    ]
    if extra:
        lines.append(f"Kernel seconds at other grid sizes ({rows[0]['regime']}): {extra}.")
    write_result(Path(args.out), "bench_select_gpu", result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
