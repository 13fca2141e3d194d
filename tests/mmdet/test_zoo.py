"""Model-zoo compatibility matrix (MMDetection): the zoo's own configs, through mmdet's train script.

Each entry is a config shipped inside the installed mmdet (``mmdet/.mim/configs``), architecture
unchanged; only sizes and sample counts shrink: 64-pixel toy images (every scale, crop and pad of the
pipelines and batch augments set to 64), 8 images, 2 epochs at a small learning rate, no pretrained
weights (so ResNet's BN — frozen statistics of nothing — becomes GroupNorm, SyncBN becomes BN: one
process), no validation. Wrappers stay: YOLOX's mosaic/mixup ``MultiImageMixDataset`` as shipped, and
Faster R-CNN's set wrapped in ``RepeatDataset`` by the test. Each entry must end in a full run
directory with every method the model supports; DETR (no dense head, no RoI head) gets VPS only, and
asking it for csod is refused in one line before training.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

mmdet = pytest.importorskip("mmdet")

from mmengine.config import Config  # noqa: E402

from prune_hooks.toy import CLASSES, make_toy_coco  # noqa: E402
from tests.conftest import assert_zoo_run  # noqa: E402

ZOO = Path(mmdet.__file__).parent / ".mim" / "configs"
TRAIN_PY = Path(mmdet.__file__).parent / ".mim" / "tools" / "train.py"
ALL = ["vps_iou", "vps_conf", "forgetting", "entropy", "csod", "kcenter", "herding"]
VPS = ["vps_iou", "vps_conf", "forgetting"]

# zoo config -> methods the hook must deliver for it
MATRIX = {
    "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py": ALL,
    "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py+RepeatDataset": ALL,
    "mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py": ALL,
    "cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py": ALL,
    "retinanet/retinanet_r50_fpn_1x_coco.py": ALL,
    "fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py": ALL,
    "yolox/yolox_tiny_8xb8-300e_coco.py": ALL,
    "rtmdet/rtmdet_tiny_8xb32-300e_coco.py": ALL,
    "detr/detr_r50_8xb2-150e_coco.py": VPS,
}
SIZE = 64
SIZE_KEYS = {"scale": (SIZE, SIZE), "img_scale": (SIZE, SIZE), "size": (SIZE, SIZE), "crop_size": (SIZE, SIZE)}


def shrink(node):
    """Every image size in pipelines / batch augments -> 64 px; SyncBN -> BN; no pretrained weights."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in SIZE_KEYS and isinstance(v, (tuple, list)) and len(v) == 2:
                v = SIZE_KEYS[k]
            elif k == "scales" and isinstance(v, list):
                v = [(SIZE, SIZE)]
            elif k == "random_size_range":
                v = (SIZE, SIZE)
            elif k == "border" and isinstance(v, (tuple, list)):
                v = (-SIZE // 2, -SIZE // 2)
            elif k == "init_cfg" and isinstance(v, dict) and v.get("type") == "Pretrained":
                v = None
            elif k == "type" and v == "SyncBN":
                v = "BN"
            elif k == "allowed_border":  # at 64 px few anchors lie wholly inside the image
                v = -1
            elif k == "num_classes":
                v = len(CLASSES)
            out[k] = shrink(v)
        return out
    if isinstance(node, (list, tuple)) and not (len(node) == 2 and all(isinstance(x, int) for x in node)):
        return type(node)(shrink(x) for x in node)
    return node


def innermost(dataset):
    while "dataset" in dataset:
        dataset = dataset["dataset"]
    return dataset


def zoo_config(entry, root, out, methods, capture="pass"):
    name, _, wrap = entry.partition("+")
    cfg = Config.fromfile(str(ZOO / name))
    d = shrink(cfg.to_dict())
    d.pop("val_dataloader", None), d.pop("val_evaluator", None), d.pop("val_cfg", None)
    d.pop("auto_scale_lr", None)
    d["test_evaluator"] = dict(type="CocoMetric", ann_file=str(root / "annotations" / "instances_train.json"))
    d["load_from"] = None
    d["randomness"] = dict(seed=0)  # unseeded, RTMDet from scratch once output no detection at all in 16 iterations
    backbone = d["model"]["backbone"]
    if backbone["type"] == "ResNet":
        backbone.update(norm_cfg=dict(type="GN", num_groups=32, requires_grad=True), norm_eval=False, frozen_stages=-1)
    data = dict(data_root=str(root) + "/", ann_file="annotations/instances_train.json", data_prefix=dict(img="train/"))
    data["metainfo"] = dict(classes=tuple(CLASSES))
    if wrap:
        d["train_dataloader"]["dataset"] = dict(type=wrap, times=2, dataset=d["train_dataloader"]["dataset"])
    innermost(d["train_dataloader"]["dataset"]).update(data)
    d["train_dataloader"].update(batch_size=2, num_workers=0, persistent_workers=False)
    d["test_dataloader"].update(batch_size=2, num_workers=0, persistent_workers=False)
    innermost(d["test_dataloader"]["dataset"]).update(data)
    d["train_cfg"] = dict(type="EpochBasedTrainLoop", max_epochs=2, val_interval=100)
    d["optim_wrapper"]["optimizer"]["lr"] = 1e-4
    d["param_scheduler"] = []  # constant lr: the zoo's warm-ups (up to 1000 iterations) would leave lr ~1e-7 here
    d["default_hooks"]["checkpoint"] = dict(type="CheckpointHook", interval=100)
    d["default_hooks"]["logger"] = dict(type="LoggerHook", interval=1)
    d["custom_hooks"] = [
        h for h in d.get("custom_hooks", []) if h["type"] != "PipelineSwitchHook" and h["type"] != "YOLOXModeSwitchHook"
    ]
    d["custom_hooks"].append(dict(type="PruneHook", methods=methods, keep_ratio=0.5, capture=capture))
    d["custom_imports"] = dict(imports=["prune_hooks.compat", "prune_hooks.mmdet"], allow_failed_imports=False)
    d["work_dir"] = str(out)
    path = out.parent / "proxy.py"
    Config(d).dump(str(path))
    return path


def train(config, out):
    proc = subprocess.run(
        [sys.executable, str(TRAIN_PY), str(config), "--work-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
    )
    return proc


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo_toy")
    return root, make_toy_coco(root, {"train": 8}, size=SIZE)


@pytest.mark.parametrize("entry", list(MATRIX))
def test_zoo_config(entry, toy, tmp_path):
    root, files = toy
    out = tmp_path / "work"
    proc = train(zoo_config(entry, root, out, MATRIX[entry]), out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = out / "prune"
    assert_zoo_run(run, files["train"], MATRIX[entry], 4)
    retrain = (run / "retrain.py").read_text()
    assert "instances_train_pruned.json" in retrain
    # the retraining config keeps the user's wrappers and points the innermost dataset at the pruned file
    cfg = Config.fromfile(str(run / "retrain.py"))
    dataset = cfg.train_dataloader.dataset
    assert innermost(dataset)["ann_file"].endswith("instances_train_pruned.json")
    if "+" in entry or "yolox" in entry:
        assert dataset["type"] in ("RepeatDataset", "MultiImageMixDataset")


def test_detr_refuses_csod_in_one_line(toy, tmp_path):
    root, _ = toy
    out = tmp_path / "work"
    proc = train(zoo_config("detr/detr_r50_8xb2-150e_coco.py", root, out, ["vps_iou", "csod"]), out)
    assert proc.returncode != 0
    assert "[prune_hooks] PruneHook methods ['csod'] need GT-box RoI features" in proc.stderr + proc.stdout
    assert not (out / "prune").exists()


# in-loop capture on each head kind: RoI (cascade: its final stage) and dense; the zoo's own pipelines
IN_LOOP = ["cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py", "retinanet/retinanet_r50_fpn_1x_coco.py"]


@pytest.mark.parametrize("entry", IN_LOOP)
def test_zoo_config_in_loop(entry, toy, tmp_path):
    root, files = toy
    out = tmp_path / "work"
    methods = ["vps_iou", "vps_conf", "entropy", "csod"]
    proc = train(zoo_config(entry, root, out, methods, capture="in_loop"), out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_zoo_run(out / "prune", files["train"], methods, 4)
    assert json.loads((out / "prune" / "meta.json").read_text())["capture"] == "in_loop"
    log = proc.stdout + proc.stderr
    assert log.count(" 0 skipped") == 2  # the zoo's resize + flip undone on every image
    head = "RetinaHead" if "retinanet" in entry else "RPNHead"  # no batch norm: taken from the step
    assert f"training step's features and {head}'s outputs" in log


def test_zoo_mosaic_pipeline_refuses_in_loop(toy, tmp_path):
    root, _ = toy
    out = tmp_path / "work"
    proc = train(zoo_config("yolox/yolox_tiny_8xb8-300e_coco.py", root, out, ["vps_iou"], capture="in_loop"), out)
    assert proc.returncode != 0
    assert "the train pipeline has ['Mosaic', 'RandomAffine']" in proc.stderr + proc.stdout  # yolox-tiny: no MixUp
