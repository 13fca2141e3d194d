"""The CUDA greedy (core/selection/csod/cuda.py) against the literal Eq. 4, in numba's CUDA simulator on the CPU.

The simulator runs one block (its grid barrier is a block barrier), so this checks the kernel's logic —
class rotation, scores, the tie rule, the pick's updates, the end — not its behaviour across blocks;
tools/bench/bench_select_gpu.py checks that on a device (same picks as the CPU greedy at COCO scale)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba_cuda")

SCRIPT = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from test_csod import direct_eq4, random_instance
from prune_hooks.core.selection.csod import cuda as csod_cuda
from prune_hooks.core.selection.csod import csod_select

csod_cuda.THREADS = 64  # two warps: rows of a block turn shared between warps, fewer simulated threads
out, staged = [], csod_cuda.LIST
for seed, lam, kind in json.loads(sys.argv[2]):
    csod_cuda.LIST = 1 if kind.endswith("unstaged") else staged  # the simulator reads it as the kernel runs
    kind = kind.removesuffix(" unstaged")
    rng = np.random.default_rng(seed)
    ids, cats, feat = random_instance(rng, 14, 3, 6, nonneg=kind != "signed")
    bias = None
    if kind == "float16":
        feat = feat.astype(np.float16)
    if kind == "duplicates":  # identical prototypes: ties only the image id breaks
        feat[1::2] = feat[0::2][: len(feat[1::2])]
    if kind == "bias":
        bias = rng.normal(size=len(ids))
    n = int(rng.integers(4, 13))
    want = direct_eq4(ids, cats, feat, n, lam, bias)
    got = csod_select(ids, cats, feat, n, lam, device="cuda", bias=bias)
    out.append([got.stats["cuda"], got.image_ids.tolist(), want, got.rows_scored])
print(json.dumps(out))
"""
CASES = [  # "unstaged": images of 2+ rows read from device memory, not staged in shared memory
    (0, 0.05, "float32"),
    (1, 1e-10, "signed"),
    (2, 1e10, "float32 unstaged"),
    (3, 0.0125, "float16"),
    (4, 1.0, "duplicates unstaged"),
    (5, 0.05, "bias"),
]


def test_cuda_greedy_in_simulator_equals_direct_eq4():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(Path(__file__).parent), json.dumps(CASES)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for (seed, lam, kind), (on_cuda, got, want, rows) in zip(CASES, json.loads(proc.stdout.splitlines()[-1])):
        assert on_cuda, "the CUDA greedy did not run"
        assert got == want, (seed, lam, kind)
        assert rows > len(got)  # every turn scored its class's candidates


def test_cuda_greedy_on_a_device_across_blocks_equals_direct_eq4(monkeypatch):
    """On a real device (skipped without one): classes spread over several blocks of two warps."""
    np = pytest.importorskip("numpy")
    from numba import cuda

    from prune_hooks.core.selection.csod import cuda as csod_cuda

    if not csod_cuda.available() or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        pytest.skip("no CUDA device")
    from prune_hooks.core.selection.csod.greedy import csod_select

    from .test_csod import direct_eq4, random_instance

    monkeypatch.setattr(csod_cuda, "THREADS", 64)
    # a second kernel that looks at no more than one block's rows for the tie rule: with ties across
    # blocks (identical prototypes) it takes the way through every row of the class
    one_hit = cuda.jit(max_registers=64)(csod_cuda._greedy.py_func)
    staged = csod_cuda.LIST
    for blocks, kernel in ((1, csod_cuda._greedy), (3, csod_cuda._greedy), (7, csod_cuda._greedy), (7, one_hit)):
        monkeypatch.setattr(csod_cuda, "BLOCKS", blocks)
        monkeypatch.setattr(csod_cuda, "LIST", 1 if kernel is one_hit else staged)
        monkeypatch.setattr(csod_cuda, "_greedy", kernel)
        for seed, lam, kind in CASES:
            kind = kind.removesuffix(" unstaged")
            rng = np.random.default_rng(seed)
            ids, cats, feat = random_instance(rng, 60, 3, 6, nonneg=kind != "signed")
            bias = rng.normal(size=len(ids)) if kind == "bias" else None
            if kind == "float16":
                feat = feat.astype(np.float16)
            if kind == "duplicates":
                feat[1::2] = feat[0::2][: len(feat[1::2])]
            n = 45
            got = csod_select(ids, cats, feat, n, lam, device="cuda", bias=bias)
            assert got.stats["cuda"]
            assert got.image_ids.tolist() == direct_eq4(ids, cats, feat, n, lam, bias), (blocks, seed, kind)
