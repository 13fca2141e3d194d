"""A real tiny Faster R-CNN trains and evaluates through MMDetection's own train script on CPU."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

mmdet = pytest.importorskip("mmdet")

from prune_hooks.toy import make_toy_coco, toy_config_file  # noqa: E402

TRAIN_PY = Path(mmdet.__file__).parent / ".mim" / "tools" / "train.py"


def test_tiny_faster_rcnn_trains_with_mmdet_train_script(tmp_path):
    make_toy_coco(tmp_path / "toy", {"train": 8, "val": 4})
    work = tmp_path / "work"
    env = dict(os.environ, PRUNE_TOY_ROOT=str(tmp_path / "toy") + "/")
    cmd = [
        sys.executable,
        str(TRAIN_PY),
        str(toy_config_file("mmdet")),
        "--work-dir",
        str(work),
        "--cfg-options",
        "train_cfg.max_epochs=1",
        "train_cfg.val_interval=1",
        "default_hooks.checkpoint.interval=1",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (work / "epoch_1.pth").exists()
    (scalars,) = work.glob("*/vis_data/scalars.json")
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses and all(math.isfinite(v) for v in losses)
    evals = [r for r in records if "coco/bbox_mAP" in r]
    assert evals and 0.0 <= evals[-1]["coco/bbox_mAP"] <= 1.0
