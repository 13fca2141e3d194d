"""Model-zoo compatibility matrix (detectron2): the zoo's own configs, through tools/train_net.py.

Each entry is a config shipped inside the installed detectron2 (``model_zoo.get_config_file``) with
its architecture unchanged (R-50 and all); only sizes and sample counts shrink: 64-pixel toy images,
8 of them, 8 iterations at a small learning rate, fewer proposals. No pretrained weights, so the
backbone's FrozenBN (an identity without ImageNet statistics: activations explode through 50
layers) becomes GroupNorm, the one change of a layer. Each must end in a full run directory
with every method the model supports, and the README's matrix lists the same.
"""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

import prune_hooks.detectron2  # noqa: F401,E402  (before detectron2: v0.6 aliases)

# isort: split

from detectron2 import model_zoo  # noqa: E402

from prune_hooks.toy import make_toy_coco  # noqa: E402
from tests.conftest import assert_zoo_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ALL = ["vps_iou", "vps_conf", "forgetting", "entropy", "csod", "kcenter", "herding"]

# zoo config -> methods the hook must deliver for it
MATRIX = {
    "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml": ALL,
    "COCO-Detection/faster_rcnn_R_50_C4_1x.yaml": ALL,
    "COCO-Detection/retinanet_R_50_FPN_1x.yaml": ALL,
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml": ALL,
    "Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml": ALL,
}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo_toy")
    return root, make_toy_coco(root, {"train": 8}, size=64)


@pytest.mark.parametrize("zoo", list(MATRIX))
def test_zoo_config(zoo, toy, tmp_path):
    run, files = run_zoo(zoo, toy, tmp_path, MATRIX[zoo])
    assert_zoo_run(run, files["train"], MATRIX[zoo], 4)
    assert "MAX_ITER: 4" in (run / "retrain.yaml").read_text()


# in-loop capture on each head kind but the plain FPN box head (tests/detectron2/test_hooks.py)
IN_LOOP = [
    "COCO-Detection/faster_rcnn_R_50_C4_1x.yaml",
    "COCO-Detection/retinanet_R_50_FPN_1x.yaml",
    "Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml",
]


@pytest.mark.parametrize("zoo", IN_LOOP)
def test_zoo_config_in_loop(zoo, toy, tmp_path):
    methods = ["vps_iou", "vps_conf", "entropy", "csod"]
    run, files = run_zoo(zoo, toy, tmp_path, methods, {"PRUNE.CAPTURE": "in_loop"})
    assert_zoo_run(run, files["train"], methods, 4)
    log = (run.parent / "log.txt").read_text()
    assert log.count(" 0 skipped") == 2 and "scoring pass 1 " not in log
    head = "RetinaNetHead" if "retinanet" in zoo else "StandardRPNHead"  # no batch norm: taken from the step
    assert f"training step's features and {head}'s outputs" in log


def run_zoo(zoo, toy, tmp_path, methods, extra=None):
    """Train the zoo config ``zoo`` on the toy set through tools/train_net.py; (run directory, toy files)."""
    root, files = toy
    out = tmp_path / "out"
    config = tmp_path / "proxy.yaml"
    config.write_text(f"_BASE_: {model_zoo.get_config_file(zoo)}\n")
    opts = {
        "MODEL.DEVICE": "cpu",
        "MODEL.WEIGHTS": "",
        "MODEL.ROI_HEADS.NUM_CLASSES": 3,
        "MODEL.RETINANET.NUM_CLASSES": 3,
        "MODEL.RESNETS.NORM": "GN",
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 300,
        "MODEL.RPN.POST_NMS_TOPK_TRAIN": 100,
        "MODEL.RPN.PRE_NMS_TOPK_TEST": 300,
        "MODEL.RPN.POST_NMS_TOPK_TEST": 100,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 64,
        "INPUT.MIN_SIZE_TRAIN": "(64,)",
        "INPUT.MAX_SIZE_TRAIN": 64,
        "INPUT.MIN_SIZE_TEST": 64,
        "INPUT.MAX_SIZE_TEST": 64,
        "DATALOADER.NUM_WORKERS": 0,
        "SEED": 0,  # reproducible: from scratch, an unlucky init can leave a detector with no output
        "SOLVER.IMS_PER_BATCH": 2,  # one epoch = 4 iterations
        "SOLVER.BASE_LR": 1e-4,
        "SOLVER.MAX_ITER": 8,
        "SOLVER.STEPS": "(6,)",
        "SOLVER.WARMUP_ITERS": 2,
        "SOLVER.CHECKPOINT_PERIOD": 100,
        "TEST.EVAL_PERIOD": 0,
        "DATASETS.TRAIN": "('zoo_train',)",
        "DATASETS.TEST": "()",
        "OUTPUT_DIR": out,
        "PRUNE.ENABLED": True,
        "PRUNE.METHODS": str(methods),
        "PRUNE.COCO_DATASETS": str([["zoo_train", str(files["train"]), str(root / "train")]]),
        **(extra or {}),
    }
    argv = [x for k, v in opts.items() for x in (k, str(v))]
    proc = subprocess.run(
        [sys.executable, "-m", "prune_hooks.detectron2.train_net", "--config-file", str(config), *argv],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "prune", files
