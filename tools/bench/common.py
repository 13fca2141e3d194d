"""What the demo and the benchmarks share: run a training in a subprocess, read its COCO AP, write results."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["last_ap", "mmdet_ap", "train", "write_result"]


def train(cmd: list[str], log: Path, env: dict | None = None) -> float:
    """Run ``python *cmd`` with its output in ``log``; its wall seconds, or exit with the log's tail."""
    start = time.time()
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, *map(str, cmd)], stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        print("".join(log.read_text().splitlines(keepends=True)[-40:]), file=sys.stderr)
        raise SystemExit(f"training failed ({proc.returncode}), see {log}")
    return time.time() - start


def last_ap(output_dir: Path) -> dict:
    """The last COCO bbox metrics detectron2 logged to OUTPUT_DIR/metrics.json."""
    records = [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines() if line.strip()]
    evals = [r for r in records if "bbox/AP" in r]
    return {k: evals[-1][f"bbox/{k}"] if evals else math.nan for k in ("AP", "AP50", "AP75")}


def mmdet_ap(work_dir: Path) -> dict:
    """The last COCO bbox metrics mmengine logged under work_dir (in percent, like detectron2's)."""
    records = []
    for scalars in sorted(work_dir.glob("*/vis_data/scalars.json")):
        records += [json.loads(line) for line in scalars.read_text().splitlines() if line.strip()]
    evals = [r for r in records if "coco/bbox_mAP" in r]
    keys = (("AP", "mAP"), ("AP50", "mAP_50"), ("AP75", "mAP_75"))
    return {k: 100 * evals[-1][f"coco/bbox_{m}"] if evals else math.nan for k, m in keys}


def write_result(out: Path, stem: str, result: dict, lines: list[str]) -> None:
    """OUT/STEM.json (the numbers) and OUT/STEM.md (the table), and the table printed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
