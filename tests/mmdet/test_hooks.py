"""The mmdet PruneHook through MMDetection's own train script, on a real tiny Faster R-CNN on CPU."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

mmdet = pytest.importorskip("mmdet")

from prune_hooks.cli import main as cli  # noqa: E402
from prune_hooks.core.data.rundir import read_images_csv  # noqa: E402
from prune_hooks.toy import make_toy_coco, toy_config_file  # noqa: E402
from tests.conftest import assert_matches_cli, assert_same_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TRAIN_PY = Path(mmdet.__file__).parent / ".mim" / "tools" / "train.py"
TOY = toy_config_file("mmdet")


def write_config(tmp_path, epochs=3, hook=None, extra=""):
    files = make_toy_coco(tmp_path / "toy", {"train": 8, "val": 4})
    hook = (
        hook or "dict(type='PruneHook', methods=['vps_iou', 'vps_conf', 'csod'], keep_ratio=0.5, dump_detections=True)"
    )
    path = tmp_path / "proxy.py"
    path.write_text(
        f"_base_ = {str(TOY)!r}\n"
        "custom_imports = dict(imports=['prune_hooks.mmdet'], allow_failed_imports=False)\n"
        f"custom_hooks = [{hook}]\n"
        f"train_cfg = dict(max_epochs={epochs}, val_interval={epochs})\n"
        "default_hooks = dict(checkpoint=dict(interval=1))\n" + extra
    )
    return path, files


def train(config, tmp_path, *args, check=True):
    env = dict(os.environ, PRUNE_TOY_ROOT=str(tmp_path / "toy") + "/")
    cmd = [sys.executable, str(TRAIN_PY), str(config), *map(str, args)]
    if "--work-dir" not in args:
        cmd += ["--work-dir", str(tmp_path / "work")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def test_proxy_run_retrain_and_same_schema_as_detectron2(tmp_path):
    config, files = write_config(tmp_path)
    train(config, tmp_path)
    run = tmp_path / "work" / "prune"
    passes = sorted((run / "passes").glob("pass_*.json"))
    assert len(passes) == 3  # one per epoch
    assert_matches_cli(run, files, passes, tmp_path, 1e-5)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["framework"] == "mmdet" and meta["passes"] == 3 and meta["soft_labels"]
    soft = np.load(run / "soft_labels.npz")
    np.testing.assert_allclose(soft["probs"].sum(1), 1.0, atol=1e-5)
    gt = json.loads(Path(files["train"]).read_text())
    pairs = sorted({(a["image_id"], a["category_id"]) for a in gt["annotations"] if not a["iscrowd"]})
    protos = np.load(run / "prototypes.npz")
    assert sorted(zip(protos["image_id"].tolist(), protos["category_id"].tolist())) == pairs
    assert protos["feature"].shape[1] == 1024 and np.isfinite(protos["feature"]).all()
    subset = json.loads((run / "subset.json").read_text())
    assert subset["n_images"] == 4 and subset["method"] == "vps_iou"

    # retrain.py: inherits the proxy config, pruned file, no PruneHook, epochs kept
    text = (run / "retrain.py").read_text()
    assert f"_base_ = {str(config.resolve())!r}" in text and "epochs kept" in text
    from mmengine.config import Config

    os.environ["PRUNE_TOY_ROOT"] = str(tmp_path / "toy") + "/"
    re_cfg = Config.fromfile(str(run / "retrain.py"))
    assert re_cfg.custom_hooks == [] and re_cfg.train_cfg.max_epochs == 3
    assert re_cfg.train_dataloader.dataset.ann_file == str((run / "instances_train_pruned.json").resolve())
    train(run / "retrain.py", tmp_path, "--work-dir", tmp_path / "work_retrain")
    assert (tmp_path / "work_retrain" / "epoch_3.pth").exists()
    (scalars,) = (tmp_path / "work_retrain").glob("*/vis_data/scalars.json")
    assert any("coco/bbox_mAP" in json.loads(line) for line in scalars.read_text().splitlines())
    # label audit: retrain_cleaned.py is retrain.py pointed at the cleaned subset
    cleaned = tmp_path / "cleaned"
    assert cli(["clean", str(run), "--relabel", "--add-missing", "--out", str(cleaned)]) == 0
    cl_cfg = Config.fromfile(str(cleaned / "retrain_cleaned.py"))
    assert cl_cfg.train_dataloader.dataset.ann_file == str((cleaned / "instances_train_cleaned_pruned.json").resolve())
    assert cl_cfg.work_dir == re_cfg.work_dir + "_cleaned" and cl_cfg.train_cfg.max_epochs == 3

    # the detectron2 adapter on the same data writes the same files with the same columns
    pytest.importorskip("detectron2")
    from prune_hooks.detectron2.toy import toy_config

    cfg = toy_config(files, tmp_path / "toy", tmp_path / "d2")
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.TEST.EVAL_PERIOD = 4, 4, (), 0
    cfg.PRUNE.ENABLED, cfg.PRUNE.METHODS = True, ["vps_iou", "vps_conf", "csod"]
    (tmp_path / "d2.yaml").write_text(cfg.dump())
    proc = subprocess.run(
        [sys.executable, "-m", "prune_hooks.detectron2.train_net", "--config-file", str(tmp_path / "d2.yaml")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    d2run = tmp_path / "d2" / "prune"
    skip = {"retrain.py", "retrain.yaml", "passes"}
    assert sorted(p.name for p in run.iterdir() if p.name not in skip) == sorted(
        p.name for p in d2run.iterdir() if p.name not in skip
    )
    for name in ("objects.csv", "images.csv", "label_issues.csv"):
        assert (run / name).read_text().splitlines()[0] == (d2run / name).read_text().splitlines()[0]
    for name in ("prototypes.npz", "soft_labels.npz", "audit.npz"):
        a, b = np.load(run / name), np.load(d2run / name)
        assert sorted(a.files) == sorted(b.files)
        assert all(a[k].dtype == b[k].dtype and a[k].ndim == b[k].ndim for k in a.files)
    common = (
        "framework",
        "annotations",
        "annotations_sha256",
        "categories",
        "num_images",
        "num_objects",
        "passes",
        "soft_labels",
        "label_audit",
    )
    for meta in (json.loads((run / "meta.json").read_text()), json.loads((d2run / "meta.json").read_text())):
        assert all(k in meta for k in common)


def test_scoring_passes_leave_the_training_unchanged(tmp_path):
    """At a fixed seed, a proxy with scoring passes trains the same weights as the same run without
    the hook: the pass after epoch 1 draws nothing from the random streams epoch 2 trains with."""
    import torch

    hooked, _ = write_config(tmp_path, epochs=2, hook="dict(type='PruneHook', methods=['vps_iou'])")
    plain = tmp_path / "plain.py"
    plain.write_text(hooked.read_text().replace("custom_hooks = [dict(type='PruneHook', methods=['vps_iou'])]", ""))
    assert "PruneHook" not in plain.read_text()
    for config, work in ((hooked, "hooked"), (plain, "plain")):
        train(config, tmp_path, "--work-dir", tmp_path / work, "--cfg-options", "randomness.seed=7")
    assert json.loads((tmp_path / "hooked" / "prune" / "meta.json").read_text())["passes"] == 2
    weights = [
        torch.load(tmp_path / d / "epoch_2.pth", map_location="cpu", weights_only=False)["state_dict"]
        for d in ("hooked", "plain")
    ]
    assert_same_weights(*weights)


def test_resume_continues_statistics(tmp_path):
    config, files = write_config(tmp_path, epochs=2)
    train(config, tmp_path)
    run = tmp_path / "work" / "prune"
    first = {p.name: p.read_bytes() for p in sorted((run / "passes").glob("pass_*.json"))}
    assert sorted(first) == ["pass_001.json", "pass_002.json"]
    proc = train(config, tmp_path, "--resume", "--cfg-options", "train_cfg.max_epochs=4", "train_cfg.val_interval=4")
    assert "resumed prune state: 2 scoring passes" in proc.stdout + proc.stderr
    passes = sorted((run / "passes").glob("pass_*.json"))
    assert [p.name for p in passes] == [f"pass_{k:03d}.json" for k in range(1, 5)]
    assert {p.name: p.read_bytes() for p in passes[:2]} == first
    assert json.loads((run / "meta.json").read_text())["passes"] == 4
    assert_matches_cli(run, files, passes, tmp_path, 1e-6)


@pytest.mark.parametrize(
    "hook,extra,msg",
    [
        ("dict(type='PruneHook', methods=['vps_size'])", "", "PruneHook methods: unknown method 'vps_size'"),
        ("dict(type='PruneHook', keep_ratio=1.5)", "", r"PruneHook keep_ratio must be in \(0, 1\], got 1.5"),
        (
            None,
            "_toy = {{_base_.train_dataloader.dataset}}\n"
            "train_dataloader = dict(dataset=dict(_delete_=True, type='ConcatDataset', datasets=[_toy, _toy]))\n",
            r"train_dataloader.dataset is a ConcatDataset of 2 datasets: PruneHook prunes one COCO file",
        ),
        ("dict(type='PruneHook', group_by='video_id')", "", "PruneHook group_by 'video_id': no image has a matching"),
        ("dict(type='PruneHook', methods=['csod'], stratify=True)", "", "PruneHook stratify needs a score method"),
        ("dict(type='PruneHook', pass_batch_size=0)", "", "PruneHook pass_batch_size must be an integer >= 1"),
    ],
)
def test_bad_config_fails_at_start(tmp_path, hook, extra, msg):
    config, _ = write_config(tmp_path, hook=hook, extra=extra)
    proc = train(config, tmp_path, check=False)
    assert proc.returncode != 0
    assert re.search(r"\[prune_hooks\] " + msg, proc.stderr + proc.stdout), (proc.stdout + proc.stderr)[-2000:]
    assert not (tmp_path / "work" / "epoch_1.pth").exists()


def test_coverage_options_shape_the_hooks_subset_as_the_cli_does(tmp_path):
    hook = "dict(type='PruneHook', methods=['vps_conf'], stratify=True, group_by='file_name:(train)_', dedup=0.9)"
    config, files = write_config(tmp_path, hook=hook)
    train(config, tmp_path)
    run = tmp_path / "work" / "prune"
    subset = json.loads((run / "subset.json").read_text())
    assert subset["stratify"]["strata"] >= 1 and subset["group_by"] == "file_name:(train)_" and subset["dedup"] == 0.9
    assert (run / "prototypes.npz").exists()  # dedup reads prototypes: taken although no method needs them
    ref = tmp_path / "ref"
    argv = ["select", str(run), "--method", "vps_conf", "--keep", "0.5", "--out", str(ref), "--stratify"]
    assert cli(argv + ["--group-by", "file_name:(train)_", "--dedup", "0.9"]) == 0
    assert subset["image_ids"] == json.loads((ref / "subset.json").read_text())["image_ids"]


@pytest.mark.parametrize("world", [2, 3])
def test_cpu_processes_equal_one_process_over_the_same_passes(tmp_path, world):
    """Each rank keeps its range of objects (sharded state); the run holds the one-process statistics of the
    passes, and one process resumes the state the ranks wrote (another world size)."""
    config, files = write_config(tmp_path, epochs=2)
    env = dict(os.environ, PRUNE_TOY_ROOT=str(tmp_path / "toy") + "/")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(world),
        "--master_port",
        str(port),
        str(ROOT / "tools" / "train_mmdet.py"),
        str(config),
        "--launcher",
        "pytorch",
        "--work-dir",
        str(tmp_path / "work"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert "Distributed training: True" in log and f"GPU number: {world}" in log  # mmengine counts processes as GPUs
    run = tmp_path / "work" / "prune"
    passes = sorted((run / "passes").glob("pass_*.json"))
    assert len(passes) == 2
    assert_matches_cli(run, files, passes, tmp_path, 1e-5)
    gt = json.loads(Path(files["train"]).read_text())
    pairs = sorted({(a["image_id"], a["category_id"]) for a in gt["annotations"] if not a["iscrowd"]})
    protos = np.load(run / "prototypes.npz")
    assert sorted(zip(protos["image_id"].tolist(), protos["category_id"].tolist())) == pairs
    assert log.count("prune run written to") == 1  # rank 0 alone writes
    if world == 3:
        more = ("--cfg-options", "train_cfg.max_epochs=3", "train_cfg.val_interval=3")
        proc = train(config, tmp_path, "--resume", *more)
        assert "resumed prune state: 2 scoring passes" in proc.stdout + proc.stderr
        passes = sorted((run / "passes").glob("pass_*.json"))
        assert len(passes) == 3
        assert_matches_cli(run, files, passes, tmp_path, 1e-5)


def test_shape_methods_scored_at_start_beside_vps(tmp_path):
    config, files = write_config(
        tmp_path, epochs=1, hook="dict(type='PruneHook', methods=['cb_scs', 'vps_iou'], keep_ratio=0.5)"
    )
    train(config, tmp_path)
    run = tmp_path / "work" / "prune"
    ref = tmp_path / "shape"
    assert cli(["score", "shape", "--annotations", str(files["train"]), "--out", str(ref), "--no-report"]) == 0
    got, want = (read_images_csv(d) for d in (run, ref))
    assert {"vps_iou_max", "cb_scs_sum"} <= set(got)
    np.testing.assert_allclose(got["cb_scs_sum"], want["cb_scs_sum"], equal_nan=True)
    subset = json.loads((run / "subset.json").read_text())
    assert subset["method"] == "cb_scs" and subset["n_images"] == 4
    assert (run / "retrain.py").exists()


def test_in_loop_capture_scores_each_object_once_per_epoch(tmp_path):
    hook = (
        "dict(type='PruneHook', methods=['vps_iou', 'csod'], keep_ratio=0.5, capture='in_loop', dump_detections=True)"
    )
    config, files = write_config(tmp_path, hook=hook)
    proc = train(config, tmp_path)
    run = tmp_path / "work" / "prune"
    meta = json.loads((run / "meta.json").read_text())
    assert meta["capture"] == "in_loop" and meta["passes"] == 3
    # DefaultSampler: every image once per epoch; RandomFlip 0.5 mirrors half of them, none is skipped,
    # so every object has one observation per epoch
    with open(run / "objects.csv") as f:
        header = f.readline().strip().split(",")
        passes = {int(line.split(",")[header.index("passes")]) for line in f}
    assert passes == {3}
    log = proc.stdout + proc.stderr
    assert log.count(" 0 skipped") == 3 and "scoring pass 1 " not in log
    assert "in-loop capture runs the inference branch on each training step's features and RPNHead's" in log
    assert (run / "prototypes.npz").is_file() and (run / "retrain.py").is_file()


def test_in_loop_refuses_pipelines_that_move_boxes(tmp_path):
    hook = "dict(type='PruneHook', capture='in_loop')"
    extra = (
        "train_dataloader = dict(dataset=dict(pipeline=[dict(type='LoadImageFromFile'), "
        "dict(type='LoadAnnotations', with_bbox=True), dict(type='RandomCrop', crop_size=(48, 48)), "
        "dict(type='PackDetInputs')]))\n"
    )
    config, _ = write_config(tmp_path, hook=hook, extra=extra)
    proc = train(config, tmp_path, check=False)
    assert proc.returncode != 0
    assert "[prune_hooks] PruneHook capture in_loop needs the batch's boxes" in proc.stderr + proc.stdout
    assert "['RandomCrop']" in proc.stderr + proc.stdout


def test_in_loop_takes_the_training_forwards_rpn_outputs_and_scores_the_same(tmp_path, monkeypatch):
    """The inference branch on a training step's features gives the same detections and class
    distributions from the step's RPN head outputs as when it runs the RPN head itself."""
    import torch
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    from prune_hooks.core.scoring.inloop import HeadReplay
    from prune_hooks.mmdet.model import _heads, _replay_heads

    make_toy_coco(tmp_path / "toy", {"train": 4})
    monkeypatch.setenv("PRUNE_TOY_ROOT", str(tmp_path / "toy") + "/")
    init_default_scope("mmdet")
    from mmdet.registry import DATASETS, MODELS

    cfg = Config.fromfile(str(TOY))
    cfg.model.test_cfg.rcnn.score_thr = 0.0  # an untrained model
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    replay = HeadReplay(_replay_heads(model))
    head = replay.heads["head"]
    assert type(head).__name__ == "RPNHead"
    computed = []
    head.rpn_conv.register_forward_hook(lambda *_: computed.append(1))
    kept = {}
    model.neck.register_forward_hook(lambda m, args, out: kept.update(features=out))
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    data = model.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), training=True)
    replay.start()
    model(**data, mode="loss")  # the training step's forward
    x = tuple(t.detach() for t in kept["features"])
    samples = data["data_samples"]
    gt = [
        s.gt_instances.bboxes.tensor if hasattr(s.gt_instances.bboxes, "tensor") else s.gt_instances.bboxes
        for s in samples
    ]
    model.eval()
    with torch.no_grad():
        computed.clear()
        with replay.replaying():
            taken = _heads(model, x, samples, gt, rescale=False)
        assert not computed  # the RPN head did not run again
        recomputed = _heads(model, x, samples, gt, rescale=False)
        assert computed
    for a, b in zip(taken[0], recomputed[0]):
        assert len(a) > 0
        torch.testing.assert_close(a.bboxes, b.bboxes)
        torch.testing.assert_close(a.scores, b.scores)
        assert torch.equal(a.labels, b.labels)
    for a, b in zip(taken[1], recomputed[1]):
        torch.testing.assert_close(a, b)


def test_lvis_class_count_most_unused(tmp_path):
    """1,203 categories (LVIS v1's count), three of them used, through mmdet's train script."""
    from tests.conftest import LVIS_CLASSES, add_unused_categories, assert_top_k_soft_labels

    config, files = write_config(tmp_path, epochs=1, hook="dict(type='PruneHook', methods=['vps_iou', 'entropy'])")
    names = add_unused_categories(files)
    meta = f"dict(classes={tuple(names)!r})"
    config.write_text(
        config.read_text() + f"model = dict(roi_head=dict(bbox_head=dict(num_classes={LVIS_CLASSES})))\n"
        f"train_dataloader = dict(dataset=dict(metainfo={meta}))\n"
        f"val_dataloader = dict(dataset=dict(metainfo={meta}))\n"
    )
    train(config, tmp_path)
    assert_top_k_soft_labels(tmp_path / "work" / "prune", LVIS_CLASSES + 1)
