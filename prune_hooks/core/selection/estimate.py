"""What a selection will cost, said before it starts: memory, full scans of its features, and time on this machine.

Score methods need O(images) memory and one sort. The feature methods grow with the data: at Objects365's size
(1.7 M images, ~10 M prototypes of 1,024 values) k-center and herding make one pass over every image feature
per kept image, and CSOD a few hundred passes over the prototypes. :func:`selection_cost` estimates each from
the sizes of the run's files (nothing large is read) and a timed product on a slice of the same shape;
:func:`check_cost` refuses in one line when the memory is not there, and warns when the time is long.

The figures per method come from the code's own arrays (a float32 image feature per image, CSOD's float64
per-row bounds, ...) and from ``tools/bench/bench_select.py`` (CSOD's lazy greedy: 190-270 scans at COCO size).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from ..errors import PruneHooksError

__all__ = ["Cost", "selection_cost", "check_cost", "available_memory"]

logger = logging.getLogger("prune_hooks")

CSOD_SCANS = 270  # lazy greedy, tools/bench/bench_select.py at COCO size (186-265 measured)
LONG = 3600.0  # seconds from which the estimate is a warning
SLICE = 65536  # rows of the slice timed here


@dataclass(frozen=True)
class Cost:
    """A selection's estimate: ``ram`` bytes it allocates, ``scans`` passes over ``scan_bytes`` of features,
    ``seconds`` at the speed measured here; ``mapped`` bytes of a memory-mapped file it reads in place."""

    what: str
    ram: float
    scans: float
    scan_bytes: float
    seconds: float
    mapped: float = 0.0

    def describe(self) -> str:
        out = f"{self.what}: ≈ {_gb(self.ram)} of memory, {self.scans:,.0f} scans of {_gb(self.scan_bytes)}"
        return out + f" (≈ {_duration(self.seconds)} on this machine)"


def _gb(b: float) -> str:
    return f"{b / 1e9:.1f} GB"


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 2 * 3600:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.0f} days"


def _best_seconds(fn) -> float:
    """The shortest of three timed calls of ``fn``."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _matvec_seconds_per_byte(rows: int, dim: int) -> float:
    """Seconds per byte of a float32 matrix-vector product here (a slice of at most 64k of the ``rows``)."""
    import torch

    x = torch.randn(max(1, min(rows, SLICE)), max(dim, 1))
    v = torch.randn(max(dim, 1))
    return _best_seconds(lambda: x @ v) / (x.numel() * 4)


def _block_seconds_per_kept_row(kept_rows: int, dim: int) -> float:
    """Seconds per kept image of one --dedup block: 1,024 candidates against the kept features (a timed product
    on at most 64k of the ``kept_rows``)."""
    import torch

    f, kept = torch.randn(1024, max(dim, 1)), torch.randn(max(1, min(kept_rows, SLICE)), max(dim, 1))
    return _best_seconds(lambda: (f @ kept.T).max(dim=1)) / len(kept)


def _pick_seconds(method: str, images: int, dim: int) -> float:
    """Seconds of one k-center / herding pick over ``images`` rows: the algorithm itself timed on a slice of at
    most 64k rows (8 picks, its setup counted in: a slight overestimate), scaled by the rows."""
    from .algorithms import herding, kcenter_greedy

    rows = max(2, min(images, SLICE))
    x = np.random.default_rng(0).standard_normal((rows, max(dim, 1)), dtype=np.float32)
    run = (lambda n: kcenter_greedy(x, n, 0)) if method == "kcenter" else (lambda n: herding(x, n))
    run(2)  # warm-up: the first call pays the allocations
    t = time.perf_counter()
    run(8)
    return (time.perf_counter() - t) / 8 * images / rows


def selection_cost(
    method: str, *, images: int, rows: int, dim: int, classes: int, n_keep: int, dedup: bool = False
) -> list[Cost]:
    """The costs of ``method`` (and of ``--dedup``) on ``images`` images with ``rows`` prototypes of ``dim``
    values over ``classes`` classes, keeping ``n_keep``. Empty for methods whose cost does not grow with features."""
    costs = []
    feats = 4.0 * images * dim  # image_features: one float32 row an image
    gather = 24.0 * rows  # image_features: ids, inverse and order of every prototype row
    if method in ("kcenter", "herding"):
        scans = float(min(n_keep, images))
        seconds = scans * _pick_seconds(method, images, dim)
        costs.append(Cost(method, feats + gather + 16.0 * images, scans, feats, seconds))
    elif method == "csod":
        per_byte = _matvec_seconds_per_byte(rows, dim)  # bench_select: one CSOD scan ≈ one float32 product
        ram = 80.0 * rows + 24.0 * images + 32.0 * classes * dim  # float64 bounds per row, per-class sums
        scan = 2.0 * rows * dim  # the float16 file, memory-mapped
        costs.append(Cost(method, ram, CSOD_SCANS, scan, CSOD_SCANS * scan * 2 * per_byte, mapped=scan))
    if dedup:
        n = min(n_keep, images)
        kept = 4.0 * n * dim
        # every block of 1,024 candidates against the images kept so far: on average half the kept matrix
        scans = n / 1024.0 / 2
        ram = feats + gather + kept + 120.0 * images  # + the image -> feature map
        costs.append(Cost("--dedup", ram, scans, kept, n / 1024.0 * n / 2 * _block_seconds_per_kept_row(n, dim)))
    return costs


def available_memory() -> float | None:
    """Bytes the kernel reports as available (Linux ``MemAvailable``), None where it is not known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_cost(costs: list[Cost], available: float | None = None) -> None:
    """Refuse (one line, with the estimate) a selection whose memory exceeds what is available; log every
    estimate, as a warning when it would take more than an hour."""
    available = available_memory() if available is None else available
    for c in costs:
        if available is not None and c.ram > available:
            raise PruneHooksError(
                f"{c.describe()}: this machine has {_gb(available)} available. Use a score method "
                "(O(images) memory), a larger machine, or fewer images"
            )
        slow = c.seconds > LONG
        note = ""
        if c.mapped and available is not None and c.mapped > available:
            note = f"; its {_gb(c.mapped)} feature file does not fit in memory: each scan reads the disk"
        (logger.warning if slow or note else logger.info)("%s%s", c.describe(), note)
