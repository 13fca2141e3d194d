"""A real tiny Faster R-CNN trains and predicts through detectron2 on CPU (no mocks)."""

import math

import pytest

pytestmark = pytest.mark.integration

import prune_hooks.detectron2  # noqa: F401,E402  (applies the v0.6 compatibility aliases first)

# isort: split

from detectron2 import model_zoo  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.datasets import register_coco_instances  # noqa: E402
from detectron2.engine import DefaultTrainer  # noqa: E402
from detectron2.evaluation import COCOEvaluator  # noqa: E402

from prune_hooks.toy import make_toy_coco, toy_config_file  # noqa: E402


def register(name, json_file, image_root):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, str(json_file), str(image_root))


def test_tiny_faster_rcnn_trains_and_evaluates(tmp_path):
    files = make_toy_coco(tmp_path / "toy", {"train": 8, "val": 4})
    register("smoke_train", files["train"], tmp_path / "toy" / "train")
    register("smoke_val", files["val"], tmp_path / "toy" / "val")

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    cfg.merge_from_file(str(toy_config_file("detectron2")))
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("smoke_train",), ("smoke_val",)
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.SOLVER.WARMUP_ITERS = 3, (), 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.OUTPUT_DIR = str(tmp_path / "out")

    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == cfg.SOLVER.MAX_ITER  # detectron2 leaves iter one past the last step
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) >= 1 and all(math.isfinite(v) for v, _ in losses)

    results = DefaultTrainer.test(
        cfg, trainer.model, [COCOEvaluator("smoke_val", output_dir=str(tmp_path / "eval"), use_fast_impl=False)]
    )
    assert set(results["bbox"]) >= {"AP", "AP50", "AP75"}
    assert (tmp_path / "eval" / "coco_instances_results.json").exists()
