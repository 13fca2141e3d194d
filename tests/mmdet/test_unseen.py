"""tools/unseen.py with MMDetection: two fold proxies and one refill step through mmdet's train script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

mmdet = pytest.importorskip("mmdet")

from prune_hooks.core.data.rundir import read_images_csv  # noqa: E402
from prune_hooks.toy import make_toy_coco, toy_config_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_two_fold_loop(tmp_path):
    make_toy_coco(tmp_path / "toy", {"train": 8, "val": 4})
    config = tmp_path / "user.py"
    config.write_text(
        f"_base_ = {str(toy_config_file('mmdet'))!r}\n"
        "train_cfg = dict(max_epochs=2, val_interval=2)\n"
        "default_hooks = dict(checkpoint=dict(interval=1))\n"
    )
    work = tmp_path / "work"
    env = dict(os.environ, PRUNE_TOY_ROOT=str(tmp_path / "toy") + "/")
    cmd = [
        sys.executable,
        str(ROOT / "tools" / "unseen.py"),
        "--framework",
        "mmdet",
        "--config",
        str(config),
        "--k",
        "2",
        "--steps",
        "1",
        "--keep",
        "0.5",
        "--work",
        str(work),
        "--method",
        "vps_conf",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for i, other in ((1, 2), (2, 1)):
        run = work / f"fold_{i}" / "prune"
        scored = set(read_images_csv(run)["image_id"].tolist())
        want = {im["id"] for im in json.loads((work / "folds" / f"fold_{other}_train.json").read_text())["images"]}
        assert scored == want and not (run / "retrain.py").exists()
    subset = json.loads((work / "final_keep0.5" / "subset.json").read_text())
    assert subset["n_images"] == 4 and subset["method"] == "vps_conf" and subset["unseen"]["added"] == [2, 2]
    text = (work / "final_keep0.5" / "retrain.py").read_text()
    assert "instances_train_pruned.json" in text and "epochs kept" in text
    assert (work / "step_1_keep0.5" / "prune" / "images.csv").exists()
