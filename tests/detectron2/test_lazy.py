"""The LazyConfig route: the model zoo's new_baselines Mask R-CNN (LSJ), shrunk, through
`python -m prune_hooks.detectron2.lazy_train_net`; the generated retrain.py trains with the same command."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

from detectron2.config import LazyConfig  # noqa: E402

import prune_hooks.detectron2  # noqa: F401,E402  (before detectron2: v0.6 aliases)
from prune_hooks.toy import make_toy_coco  # noqa: E402
from tests.conftest import assert_zoo_run  # noqa: E402

ZOO = "new_baselines/mask_rcnn_R_50_FPN_50ep_LSJ.py"
METHODS = ["vps_iou", "vps_conf", "entropy", "csod"]
# the zoo's config as it is, shrunk as the yacs zoo tests shrink theirs: CPU, GroupNorm from scratch, 64 px
CONFIG = """
from detectron2 import model_zoo
from detectron2.config import LazyConfig
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from prune_hooks.detectron2 import register_coco

globals().update(LazyConfig.load(model_zoo.get_config_file({zoo!r})))
dataloader.train.dataset.names = register_coco("lazy_toy_train", {train!r}, {root!r})
dataloader.train.mapper.augmentations = [
    L(T.ResizeScale)(min_scale=0.5, max_scale=1.5, target_height=64, target_width=64),
    L(T.FixedSizeCrop)(crop_size=(64, 64)),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.total_batch_size = 4  # one epoch of the 8 toy images = 2 iterations
dataloader.train.num_workers = 0
dataloader.test.dataset.names = "lazy_toy_train"
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=64, max_size=64)]
dataloader.test.num_workers = 0
model.backbone.bottom_up.stem.norm = model.backbone.bottom_up.stages.norm = model.backbone.norm = "GN"
model.roi_heads.box_head.conv_norm = model.roi_heads.mask_head.conv_norm = "GN"
model.roi_heads.num_classes = 3
model.roi_heads.batch_size_per_image = 64
model.proposal_generator.pre_nms_topk = (300, 300)
model.proposal_generator.post_nms_topk = (100, 100)
train.device = "cpu"
train.amp.enabled = False
train.ddp.fp16_compression = False
train.max_iter = 4
train.eval_period = 0
train.checkpointer.period = 2
train.output_dir = {out!r}
optimizer.lr = 1e-4
prune = dict(enabled=True, methods={methods!r}, keep_ratio=0.5)
"""


def lazy_train_net(config, *opts):
    proc = subprocess.run(
        [sys.executable, "-m", "prune_hooks.detectron2.lazy_train_net", "--config-file", str(config), *opts],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_lazy_config_proxy_and_retrain_from_the_generated_config(tmp_path):
    root = tmp_path / "toy"
    files = make_toy_coco(root, {"train": 8}, size=64)
    config = tmp_path / "proxy.py"
    out = tmp_path / "out"
    config.write_text(
        CONFIG.format(zoo=ZOO, train=str(files["train"]), root=str(root / "train"), out=str(out), methods=METHODS)
    )
    lazy_train_net(config, "train.seed=0")
    run = out / "prune"
    assert_zoo_run(run, files["train"], METHODS, 4)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["train_dataset"] == "lazy_toy_train" and meta["period"] == 2 and meta["iterations"] == 4

    # retrain.py: the original config with its overrides, on the pruned file, schedule scaled to the subset
    retrain = run / "retrain.py"
    assert "train.seed=0" in retrain.read_text()
    cfg = LazyConfig.load(str(retrain))
    assert cfg.train.max_iter == 2 and cfg.train.checkpointer.period == 1 and cfg.train.eval_period == 0
    assert cfg.train.output_dir == str(out.resolve()) + "_retrain" and not cfg.prune.enabled
    assert cfg.dataloader.train.dataset.names == "lazy_toy_train_instances_train_pruned"
    assert cfg.model.roi_heads.num_classes == 3  # everything else is the proxy's
    warmup = LazyConfig.load(str(config)).lr_multiplier.warmup_length
    assert cfg.lr_multiplier.warmup_length == pytest.approx(min(warmup * 2, 0.5))
    lazy_train_net(retrain)
    assert (out.parent / "out_retrain" / "model_final.pth").is_file()
    assert not (out.parent / "out_retrain" / "prune").exists()


def test_lazy_config_refuses_bad_options_in_one_line(tmp_path):
    root = tmp_path / "toy"
    files = make_toy_coco(root, {"train": 4}, size=64)
    config = tmp_path / "proxy.py"
    text = CONFIG.format(zoo=ZOO, train=str(files["train"]), root=str(root / "train"), out=str(tmp_path), methods=[])
    config.write_text(text.replace("methods=[]", "methods=['vps_size']"))
    proc = subprocess.run(
        [sys.executable, "-m", "prune_hooks.detectron2.lazy_train_net", "--config-file", str(config)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1 and "[prune_hooks] prune.methods: unknown method 'vps_size'" in proc.stderr
    assert "Traceback" not in proc.stderr
