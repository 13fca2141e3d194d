"""The quality benchmark's difference table (tools/bench/bench_quality.py): what is compared with what."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "bench"))
import bench_quality  # noqa: E402


def rows_of(method: str, ap50: list[float], keep: float = 0.3) -> list[dict]:
    return [{"method": method, "keep": keep, "repeat": r, "AP": v / 2, "AP50": v} for r, v in enumerate(ap50)]


def test_class_balanced_draws_are_compared_with_random_and_random_is_not_compared_with_itself():
    rows = rows_of("random", [10.0, 12.0, 11.0]) + rows_of("random_uniform", [13.0, 14.0, 15.0])
    rows += rows_of("vps_iou:max", [9.0, 12.0, 11.0])
    lines = bench_quality.paired_lines(rows, ["random", "random_uniform", "vps_iou:max"], [0.3])
    named = [line.split("|")[1].strip() for line in lines if line.startswith("| ") and "---" not in line]
    assert named == ["method", "random_uniform", "vps_iou:max"]
    # random_uniform - random per seed: +3, +2, +4 -> mean +3, interval above 0
    mean, low, high, n = bench_quality.paired(rows, "random_uniform", 0.3, "AP50")
    assert (mean, n) == (pytest.approx(3.0), 3)
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) · sd / sqrt(n)
    assert (low, high) == (pytest.approx(3.0 - half), pytest.approx(3.0 + half))
    assert "**better**" in next(line for line in lines if line.startswith("| random_uniform"))
