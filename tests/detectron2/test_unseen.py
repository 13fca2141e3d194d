"""tools/unseen.py with detectron2: two fold proxies and one refill step through tools/train_net.py, and a
rerun after the driver was killed mid-way."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

import prune_hooks.detectron2  # noqa: F401,E402
from prune_hooks.core.data.rundir import read_images_csv  # noqa: E402
from prune_hooks.detectron2.toy import toy_config  # noqa: E402
from prune_hooks.toy import make_toy_coco  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def user_config(tmp_path):
    files = make_toy_coco(tmp_path / "toy", {"train": 8, "val": 4})
    cfg = toy_config(files, tmp_path / "toy", tmp_path / "user_out")
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.SOLVER.WARMUP_ITERS = 8, (), 2
    cfg.SOLVER.CHECKPOINT_PERIOD, cfg.TEST.EVAL_PERIOD = 2, 0
    path = tmp_path / "user.yaml"
    path.write_text(cfg.dump())
    return path, files


def test_two_fold_loop_resumes_after_a_kill(tmp_path):
    config, files = user_config(tmp_path)
    work = tmp_path / "work"
    cmd = [
        sys.executable,
        str(ROOT / "tools" / "unseen.py"),
        "--framework",
        "detectron2",
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
    ]
    # the command printing mode runs nothing
    out = subprocess.run(cmd + ["--print-commands"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.count("prune_hooks.detectron2.train_net --config-file") == 2, (
        out.stdout + out.stderr
    )
    assert not (work / "fold_1" / "DONE").exists()
    # killed once the first fold proxy is done
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not (work / "fold_1" / "DONE").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at = (work / "fold_1" / "DONE").stat().st_mtime
    assert not (work / "final_keep0.5").exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "fold_1 done, skipped" in rerun.stdout and (work / "fold_1" / "DONE").stat().st_mtime == done_at

    # each fold proxy trained on its fold and scored the other one, with no retrain config
    gt = json.loads(Path(files["train"]).read_text())
    for i, other in ((1, 2), (2, 1)):
        run = work / f"fold_{i}" / "prune"
        scored = set(read_images_csv(run)["image_id"].tolist())
        trained = {im["id"] for im in json.loads((work / "folds" / f"fold_{i}_train.json").read_text())["images"]}
        assert scored == {
            im["id"] for im in json.loads((work / "folds" / f"fold_{other}_train.json").read_text())["images"]
        }
        assert not scored & trained and not (run / "retrain.yaml").exists()
        assert json.loads((run / "meta.json").read_text())["scores_training_set"] is False
    # the final run: 4 of 8 images (2 from the fold scores, 2 from the refill), the original schedule scaled
    final = work / "final_keep0.5"
    subset = json.loads((final / "subset.json").read_text())
    assert subset["n_images"] == 4 and subset["n_total"] == 8 and subset["unseen"]["added"] == [2, 2]
    assert len(set(subset["image_ids"])) == 4 and set(subset["image_ids"]) <= {im["id"] for im in gt["images"]}
    assert sorted(read_images_csv(final)["image_id"].tolist()) == sorted(im["id"] for im in gt["images"])
    text = (final / "retrain.yaml").read_text()
    assert "MAX_ITER: 4" in text and "instances_train_pruned" in text
    assert (final / "report" / "report.md").exists()
