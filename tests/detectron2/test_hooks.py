"""The detectron2 PruneHook through `python -m prune_hooks.detectron2.train_net`: a real tiny Faster R-CNN on CPU."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

import prune_hooks.detectron2  # noqa: F401,E402
from prune_hooks.cli import main as cli  # noqa: E402
from prune_hooks.core.data.coco import load_coco  # noqa: E402
from prune_hooks.core.data.rundir import read_images_csv  # noqa: E402
from prune_hooks.core.outputs.rundir import pruned_name  # noqa: E402
from prune_hooks.core.selection.inputs import RunInputs  # noqa: E402
from prune_hooks.detectron2.toy import toy_config  # noqa: E402
from prune_hooks.toy import make_toy_coco, toy_config_file  # noqa: E402
from tests.conftest import assert_matches_cli, assert_same_weights, read_objects  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TRAIN_NET = ["-m", "prune_hooks.detectron2.train_net"]  # the installed entry point


def train_net(*args, check=True):
    proc = subprocess.run([sys.executable, *TRAIN_NET, *map(str, args)], capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def make_config(tmp_path, **prune):
    files = make_toy_coco(tmp_path / "toy", {"train": 8, "val": 4})
    cfg = toy_config(files, tmp_path / "toy", tmp_path / "out")
    cfg.SOLVER.IMS_PER_BATCH = 2  # one epoch = 4 iterations
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.SOLVER.WARMUP_ITERS = 12, (6,), 2
    cfg.SOLVER.CHECKPOINT_PERIOD = 4
    cfg.TEST.EVAL_PERIOD = 0
    cfg.PRUNE.ENABLED = True
    cfg.PRUNE.DUMP_DETECTIONS = True
    for k, v in prune.items():
        setattr(cfg.PRUNE, k, v)
    path = tmp_path / "proxy.yaml"
    path.write_text(cfg.dump())
    return path, files, cfg


def test_proxy_run_writes_run_directory_and_retrains(tmp_path):
    config, files, cfg = make_config(tmp_path, METHODS=["vps_iou", "vps_conf", "csod"])
    train_net("--config-file", config)
    run = tmp_path / "out" / "prune"
    passes = sorted((run / "passes").glob("pass_*.json"))
    assert len(passes) == 3  # 12 iterations, one pass per 4-iteration epoch
    assert_matches_cli(run, files, passes, tmp_path, 1e-5)
    stds = np.array([float(r["iou_std"]) for r in read_objects(run / "objects.csv").values()])
    assert np.isfinite(stds).all() and stds.max() > 0  # the proxy really moved between passes

    subset = json.loads((run / "subset.json").read_text())
    assert subset["n_images"] == 4 and subset["n_total"] == 8 and subset["method"] == "vps_iou"
    pruned = json.loads((run / "instances_train_pruned.json").read_text())
    assert sorted(i["id"] for i in pruned["images"]) == sorted(subset["image_ids"])
    meta = json.loads((run / "meta.json").read_text())
    assert meta["framework"] == "detectron2" and meta["passes"] == 3 and meta["soft_labels"]

    # soft labels: one distribution per object over the file's categories + background, every pass
    soft = np.load(run / "soft_labels.npz")
    gt = json.loads(Path(files["train"]).read_text())
    objects = [a for a in gt["annotations"] if not a["iscrowd"]]
    assert soft["probs"].shape == (len(objects), len(gt["categories"]) + 1)
    np.testing.assert_allclose(soft["probs"].sum(1), 1.0, atol=1e-5)
    assert soft["columns"].tolist() == sorted(c["id"] for c in gt["categories"]) + [-1]
    issues = (run / "label_issues.csv").read_text()
    assert issues.startswith("kind,ann_id,image_id,category_id,bbox,suggested_category_id,suggested_bbox,score\n")
    # prototypes of the final model: one row per (image, class) present, box-head width
    protos = np.load(run / "prototypes.npz")
    pairs = sorted({(a["image_id"], a["category_id"]) for a in objects})
    assert sorted(zip(protos["image_id"].tolist(), protos["category_id"].tolist())) == pairs
    assert (
        protos["feature"].shape == (len(pairs), cfg.MODEL.ROI_BOX_HEAD.FC_DIM) and np.isfinite(protos["feature"]).all()
    )
    import torch

    state = torch.load(run / "state.pt", weights_only=True)
    assert state["vps"]["passes"] == 3 and state["soft_labels"]["num_columns"] == soft["probs"].shape[1]
    assert int(state["soft_labels"]["count"].max()) == 3  # the soft labels' state: top-k columns, every pass
    assert cli(["select", str(run), "--method", "all", "--keep", "0.5", "--out", str(tmp_path / "all")]) == 0
    inputs = RunInputs(run, load_coco(files["train"]))
    for m in ("vps_iou", "csod", "entropy", "forgetting", "kcenter", "random_ratio"):
        made = tmp_path / "all" / "subsets" / f"{m}_keep0.5" / "subset.json"
        if inputs.uninformative(m):  # e.g. forgetting: 12 toy iterations may learn no object at all
            assert not made.exists()
            continue
        assert json.loads(made.read_text())["n_images"] == 4

    text = (run / "retrain.yaml").read_text()
    from detectron2.config import get_cfg

    from prune_hooks.detectron2 import add_prune_config

    re = add_prune_config(get_cfg())
    re.merge_from_file(str(run / "retrain.yaml"))
    assert re.SOLVER.MAX_ITER == 6 and tuple(re.SOLVER.STEPS) == (3,) and re.SOLVER.WARMUP_ITERS == 2
    assert re.SOLVER.CHECKPOINT_PERIOD == 2 and not re.PRUNE.ENABLED
    assert re.DATASETS.TRAIN == ("toy_train_instances_train_pruned",)
    assert "schedule scaled by 0.5" in text
    train_net("--config-file", run / "retrain.yaml")
    retrain_out = Path(re.OUTPUT_DIR)
    assert (retrain_out / "model_final.pth").exists()

    # label audit: the cleaned file and the retraining config pointed at its subset, trained as written
    assert cli(["clean", str(run), "--relabel", "--ignore-bad-location", "--add-missing"]) == 0
    n_changes = len((run / "changes.csv").read_text().splitlines()) - 1
    flagged = [line.split(",")[0] for line in issues.splitlines()[1:]]
    assert n_changes == sum(k in ("wrong_class", "bad_location", "missing_box") for k in flagged)
    cleaned = json.loads((run / "instances_train_cleaned_pruned.json").read_text())
    assert sorted(i["id"] for i in cleaned["images"]) == sorted(subset["image_ids"])
    rc = add_prune_config(get_cfg())
    rc.merge_from_file(str(run / "retrain_cleaned.yaml"))
    assert rc.PRUNE.COCO_DATASETS[-1][1] == str((run / "instances_train_cleaned_pruned.json").resolve())
    assert rc.OUTPUT_DIR == re.OUTPUT_DIR + "_cleaned" and rc.SOLVER.MAX_ITER == 6
    train_net("--config-file", run / "retrain_cleaned.yaml")
    assert (Path(rc.OUTPUT_DIR) / "model_final.pth").exists()
    assert (retrain_out / "inference" / "coco_instances_results.json").exists()


def test_scoring_passes_leave_the_training_unchanged(tmp_path):
    """At a fixed seed, a proxy with scoring passes trains the same weights as the same run without
    the hook: the pass draws nothing from the training's random streams (the pass after iteration 4
    comes before four more steps that sample proposals)."""
    import torch

    config, _, _ = make_config(tmp_path, METHODS=["vps_iou"])
    fixed = ("SOLVER.MAX_ITER", 8, "SEED", 7)
    log = train_net("--config-file", config, *fixed, "OUTPUT_DIR", tmp_path / "hooked")
    assert "scoring pass 2 after iteration 8" in log.stdout + log.stderr
    train_net("--config-file", config, *fixed, "PRUNE.ENABLED", False, "OUTPUT_DIR", tmp_path / "plain")
    hooked, plain = (
        torch.load(tmp_path / d / "model_final.pth", map_location="cpu", weights_only=False)["model"]
        for d in ("hooked", "plain")
    )
    assert_same_weights(hooked, plain)


@pytest.mark.parametrize("first_world", [1, 2])
def test_resume_continues_statistics(tmp_path, first_world):
    config, files, cfg = make_config(tmp_path)
    # First run: stops after pass 2 (iteration 8), where the checkpoint holds both passes; on two processes it
    # holds the whole state gathered from both ranks' shards, which one process resumes.
    train_net("--config-file", config, "--num-gpus", first_world, "--dist-url", "auto", "SOLVER.MAX_ITER", 8)
    run = tmp_path / "out" / "prune"
    first = sorted((run / "passes").glob("pass_*.json"))
    assert [p.name for p in first] == ["pass_001.json", "pass_002.json"]
    saved = {p.name: p.read_bytes() for p in first}
    train_net("--config-file", config, "--resume", "SOLVER.MAX_ITER", 16)
    passes = sorted((run / "passes").glob("pass_*.json"))
    assert [p.name for p in passes] == [f"pass_{k:03d}.json" for k in range(1, 5)]
    assert {p.name: p.read_bytes() for p in passes[:2]} == saved  # resumed run did not redo passes 1-2
    assert json.loads((run / "meta.json").read_text())["passes"] == 4
    assert_matches_cli(run, files, passes, tmp_path, 1e-6)


@pytest.mark.parametrize(
    "opts,msg",
    [
        (["PRUNE.METHODS", "['vps_size']"], "PRUNE.METHODS: unknown method 'vps_size'"),
        (["PRUNE.KEEP_RATIO", "1.5"], r"PRUNE.KEEP_RATIO must be in \(0, 1\], got 1.5"),
        (
            ["DATASETS.TRAIN", "('cityscapes_fine_instance_seg_train',)"],
            "DATASETS.TRAIN 'cityscapes_fine_instance_seg_train' is not COCO-registered",
        ),
        (["PRUNE.PER_GROUP_MAX", "2"], "PRUNE.PER_GROUP_MAX needs PRUNE.GROUP_BY"),
        (["PRUNE.GROUP_BY", "video_id"], "PRUNE.GROUP_BY 'video_id': no image has a matching 'video_id' field"),
        (["PRUNE.METHODS", "['csod']", "PRUNE.STRATIFY", "True"], "PRUNE.STRATIFY needs a score method first"),
        (["PRUNE.DEDUP", "1.5"], r"PRUNE.DEDUP must be a cosine in \[-1, 1\], got 1.5"),
        (["PRUNE.PASS_BATCH", "-2"], r"PRUNE.PASS_BATCH must be an integer >= 0 \(0: the training batch per rank\)"),
    ],
)
def test_bad_config_fails_at_start(tmp_path, opts, msg):
    config, _, _ = make_config(tmp_path)
    proc = train_net("--config-file", config, *opts, check=False)
    assert proc.returncode != 0
    import re as _re

    assert _re.search(r"\[prune_hooks\] " + msg, proc.stderr), proc.stderr[-2000:]


def test_coverage_options_shape_the_hooks_subset_as_the_cli_does(tmp_path):
    group_by = "file_name:_0000(0[1-4])"  # images 1-4: groups of their own; 5-8: one each as well (no match)
    options = dict(METHODS=["vps_iou"], STRATIFY=True, GROUP_BY=group_by, PER_GROUP_MAX=1, DEDUP=0.95)
    config, files, cfg = make_config(tmp_path, **options)
    train_net("--config-file", config)
    run = tmp_path / "out" / "prune"
    subset = json.loads((run / "subset.json").read_text())
    assert subset["stratify"]["strata"] >= 1 and subset["group_by"] == group_by and subset["dedup"] == 0.95
    assert (run / "prototypes.npz").exists()  # dedup reads prototypes: taken although no method needs them
    ref = tmp_path / "ref"
    argv = ["select", str(run), "--method", "vps_iou", "--keep", "0.5", "--out", str(ref), "--stratify"]
    assert cli(argv + ["--group-by", group_by, "--per-group-max", "1", "--dedup", "0.95"]) == 0
    assert subset["image_ids"] == json.loads((ref / "subset.json").read_text())["image_ids"]
    pruned = json.loads((run / pruned_name(files["train"])).read_text())  # streamed from the training file
    assert [im["id"] for im in pruned["images"]] == sorted(subset["image_ids"])


@pytest.mark.parametrize("world", [2, 3])
def test_cpu_processes_equal_one_process_over_the_same_passes(tmp_path, world):
    config, files, cfg = make_config(tmp_path, METHODS=["vps_iou", "csod"])
    # gloo processes, one image per process per step; each rank keeps its range of objects (sharded state)
    proc = train_net("--config-file", config, "--num-gpus", world, "--dist-url", "auto", "SOLVER.IMS_PER_BATCH", world)
    run = tmp_path / "out" / "prune"
    passes = sorted((run / "passes").glob("pass_*.json"))
    assert len(passes) == {2: 3, 3: 4}[world]  # a pass per epoch: 4 iterations of 2 images, 3 of 3 (8 images)
    # each rank scored its shard; the gathered passes hold every image once
    gt = json.loads(Path(files["train"]).read_text())
    for p in passes:
        dets = json.loads(p.read_text())
        assert {d["image_id"] for d in dets} <= {i["id"] for i in gt["images"]}
    assert_matches_cli(run, files, passes, tmp_path, 1e-5)
    protos = np.load(run / "prototypes.npz")
    pairs = sorted({(a["image_id"], a["category_id"]) for a in gt["annotations"] if not a["iscrowd"]})
    assert sorted(zip(protos["image_id"].tolist(), protos["category_id"].tolist())) == pairs
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".") or p.suffix == ".tmp") == []
    log = proc.stdout + proc.stderr
    assert f"World size: {world}" in log
    assert log.count("prune run written to") == 1  # rank 0 alone writes


def test_shape_methods_scored_at_start_beside_vps(tmp_path):
    pytest.importorskip("cv2")  # the shape extra (mmcv brings OpenCV; a detectron2-only install may not)
    config, files, cfg = make_config(tmp_path, METHODS=["cb_scs", "vps_iou"])
    train_net("--config-file", config, "SOLVER.MAX_ITER", 4)
    run = tmp_path / "out" / "prune"
    ref = tmp_path / "shape"
    assert cli(["score", "shape", "--annotations", str(files["train"]), "--out", str(ref), "--no-report"]) == 0
    got, want = (read_images_csv(d) for d in (run, ref))
    assert {"vps_iou_max", "cb_scs_sum", "si_scs_sum", "scs_sum"} <= set(got)  # every method side by side
    np.testing.assert_allclose(got["cb_scs_sum"], want["cb_scs_sum"], equal_nan=True)
    subset = json.loads((run / "subset.json").read_text())
    assert subset["method"] == "cb_scs" and subset["aggregation"] == "sum" and subset["n_images"] == 4
    meta = json.loads((run / "meta.json").read_text())
    assert meta["shape_without_mask"] == 0 and meta["shape_scored"] > 0


def test_shape_methods_on_box_only_data_are_refused_at_start(tmp_path):
    config, files, cfg = make_config(tmp_path, METHODS=["vps_iou", "cb_scs"])
    data = json.loads(Path(files["train"]).read_text())
    for a in data["annotations"]:
        a.pop("segmentation")
    Path(files["train"]).write_text(json.dumps(data))
    proc = train_net("--config-file", config, check=False)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "[prune_hooks]" in line]
    assert lines and "shape scores need instance masks" in lines[-1], proc.stderr[-2000:]
    assert not (tmp_path / "out" / "model_0000003.pth").exists()


def test_a_proxy_that_diverges_writes_no_run(tmp_path):
    config, files, cfg = make_config(tmp_path, PERIOD=1)
    proc = train_net(
        "--config-file", config, "SOLVER.BASE_LR", "1e9", "SOLVER.CLIP_GRADIENTS.ENABLED", "False", check=False
    )
    assert proc.returncode != 0 and "FloatingPointError" in proc.stderr, proc.stderr[-2000:]
    assert "before its end: no prune run written" in proc.stdout + proc.stderr  # detectron2 logs to stdout
    run = tmp_path / "out" / "prune"
    assert not (run / "subset.json").exists() and not (run / "retrain.yaml").exists()
    assert not (run / "meta.json").exists()


def test_in_loop_capture_scores_each_object_once_per_epoch(tmp_path):
    config, files, cfg = make_config(tmp_path, CAPTURE="in_loop", METHODS=["vps_iou", "csod"])
    assert cfg.INPUT.RANDOM_FLIP == "horizontal"  # half the batches are mirrored: the frame must undo it
    # Without aspect-ratio grouping the batches follow the sampler's permutations of the 7 images
    # detectron2 trains on (image 6 has no object and is filtered); a period is 4 steps of 2 = 8
    # draws, so period 1 holds every image and each image falls into at least 2 of the 3 periods.
    proc = train_net("--config-file", config, "DATALOADER.ASPECT_RATIO_GROUPING", False)
    run = tmp_path / "out" / "prune"
    meta = json.loads((run / "meta.json").read_text())
    assert meta["capture"] == "in_loop" and meta["passes"] == 3
    # no image was skipped (half of them flipped): every object is observed in 2 or 3 periods
    objects = read_objects(run / "objects.csv")
    assert objects and {int(r["passes"]) for r in objects.values()} <= {2, 3}
    assert "in-loop period 1 after iteration 4: 7 images scored" in proc.stdout + proc.stderr
    log = proc.stdout + proc.stderr
    assert log.count(" 0 skipped") == 3 and "scoring pass 1 " not in log  # no pass over the data ran
    assert "in-loop capture runs the inference branch on each training step's features and StandardRPNHead's" in log
    dets = [d for p in sorted((run / "passes").glob("pass_*.json")) for d in json.loads(p.read_text())]
    sizes = {i["id"]: (i["width"], i["height"]) for i in json.loads(Path(files["train"]).read_text())["images"]}
    for d in dets:  # mapped back to the file's images
        x, y, w, h = d["bbox"]
        width, height = sizes[d["image_id"]]
        assert -1e-3 <= x and x + w <= width + 1e-3 and -1e-3 <= y and y + h <= height + 1e-3
    assert (run / "prototypes.npz").is_file()  # from the final model's features-only pass
    assert (run / "subset.json").is_file() and (run / "retrain.yaml").is_file()


@pytest.mark.parametrize(
    "opts,msg",
    [
        (["INPUT.CROP.ENABLED", "True"], "PRUNE.CAPTURE in_loop needs the batch's boxes"),
        (["PRUNE.CAPTURE", "every_step"], r"PRUNE.CAPTURE must be one of \['pass', 'in_loop'\]"),
    ],
)
def test_in_loop_refusals(tmp_path, opts, msg):
    config, _, _ = make_config(tmp_path, CAPTURE="in_loop")
    proc = train_net("--config-file", config, *opts, check=False)
    assert proc.returncode != 0
    import re as _re

    assert _re.search(r"\[prune_hooks\] " + msg, proc.stderr), proc.stderr[-2000:]


def test_hook_takes_the_start_check_instead_of_reading_the_files_again(tmp_path, monkeypatch):
    import prune_hooks.detectron2.config as d2config
    from prune_hooks.detectron2 import PruneHook, check_prune_config, insert_prune_hooks, register_coco_datasets

    _, files, cfg = make_config(tmp_path)
    register_coco_datasets(cfg)
    reads = []
    monkeypatch.setattr(d2config, "load_coco", lambda path: reads.append(path) or load_coco(path))
    setup = check_prune_config(cfg)  # what the train script does before the trainer is built
    assert setup.dataset == cfg.DATASETS.TRAIN[0] and setup.n_train == setup.index.num_images == 8
    hook = PruneHook(cfg, setup)
    (inserted,) = insert_prune_hooks([], cfg, setup=setup)
    assert len(reads) == 1 and hook.setup is setup and inserted.setup is setup
    assert PruneHook(cfg).setup.index is not setup.index and len(reads) == 2  # no set-up given: read here


@pytest.mark.parametrize(
    "zoo", ["COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml", "COCO-Detection/retinanet_R_50_FPN_1x.yaml"]
)
def test_in_loop_takes_the_training_forwards_head_outputs_and_scores_the_same(tmp_path, zoo):
    """The inference branch on a training step's features gives the same detections and class
    distributions from the step's RPN / dense head outputs as when it runs that head itself."""
    import torch
    from detectron2 import model_zoo
    from detectron2.data import build_detection_train_loader
    from detectron2.modeling import build_model
    from detectron2.structures import ImageList
    from detectron2.utils.events import EventStorage

    from prune_hooks.core.scoring.inloop import HeadReplay
    from prune_hooks.detectron2 import register_coco_datasets
    from prune_hooks.detectron2.model import _heads, _replay_heads

    dense = "retinanet" in zoo
    files = make_toy_coco(tmp_path / "toy", {"train": 4})
    cfg = toy_config(files, tmp_path / "toy", tmp_path / "out", prefix=f"replay_{'dense' if dense else 'rpn'}")
    if dense:  # the zoo's RetinaNet, shrunk by the toy's overrides (R18, GroupNorm, 128 px)
        train = cfg.DATASETS.TRAIN
        cfg.merge_from_file(model_zoo.get_config_file(zoo))
        cfg.merge_from_file(str(toy_config_file("detectron2")))
        cfg.DATASETS.TRAIN, cfg.MODEL.RETINANET.NUM_CLASSES = train, 3
    cfg.MODEL.DEVICE, cfg.SOLVER.IMS_PER_BATCH = "cpu", 2
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0  # an untrained model
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    register_coco_datasets(cfg)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    replay = HeadReplay(_replay_heads(model))
    head = replay.heads["head"]
    assert type(head).__name__ == ("RetinaNetHead" if dense else "StandardRPNHead")
    conv = next(m for m in head.modules() if isinstance(m, torch.nn.Conv2d))
    computed = []
    conv.register_forward_hook(lambda *_: computed.append(1))
    kept = {}
    model.backbone.register_forward_hook(lambda m, args, out: kept.update(tensor=args[0], features=out))
    batch = next(iter(build_detection_train_loader(cfg)))
    replay.start()
    with EventStorage():
        model(batch)  # the training step's forward (losses)
    images = ImageList(kept["tensor"].detach(), [tuple(x["image"].shape[-2:]) for x in batch])
    features = {k: v.detach() for k, v in kept["features"].items()}
    gt = [x["instances"].gt_boxes.tensor for x in batch]
    model.eval()
    with torch.no_grad():
        computed.clear()
        with replay.replaying():
            taken = _heads(model, images, features, gt)
        assert not computed  # the head did not run again
        recomputed = _heads(model, images, features, gt)
        assert computed
    for a, b in zip(taken[0], recomputed[0]):
        assert len(a) > 0
        torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
        torch.testing.assert_close(a.scores, b.scores)
        assert torch.equal(a.pred_classes, b.pred_classes)
    for a, b in zip(taken[1], recomputed[1]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "zoo",
    [
        "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml",
        "COCO-Detection/faster_rcnn_R_50_C4_1x.yaml",
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
    ],
)
def test_gt_boxes_ride_with_the_proposals_and_change_nothing(tmp_path, zoo, monkeypatch):
    """The pass's one box-head call on proposals + GT boxes gives the detections (masks included), class
    distributions and features of the model's own forward followed by a separate call on the GT boxes."""
    import torch
    from detectron2 import model_zoo
    from detectron2.modeling import build_model

    from prune_hooks.detectron2 import model as d2model

    cfg = model_zoo.get_config(zoo)
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS, cfg.MODEL.ROI_HEADS.NUM_CLASSES = "cpu", "", 3
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS, cfg.MODEL.RESNETS.NORM = 18, 64, "GN"
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST, cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 0.0, 50  # an untrained model
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    kind = d2model._gt_kind(model)
    assert kind == ("res5" if "C4" in zoo else "box_head") and d2model._stock_inference(model.roi_heads, kind)
    g = torch.Generator().manual_seed(0)
    batch = [{"image": torch.randint(0, 255, (3, 128, 160), generator=g).float()} for _ in range(2)]
    gt = [torch.tensor([[4.0, 8.0, 60.0, 90.0], [30.0, 20.0, 150.0, 120.0]]), torch.zeros(0, 4)]
    with torch.no_grad():
        images = model.preprocess_image(batch)
        features = model.backbone(images.tensor)
        merged = d2model._heads(model, images, features, gt)
        monkeypatch.setattr(d2model, "_stock_inference", lambda roi, kind: False)
        separate = d2model._heads(model, images, features, gt)
    for a, b in zip(merged[0], separate[0]):
        assert len(a) > 0
        torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
        torch.testing.assert_close(a.scores, b.scores)
        assert torch.equal(a.pred_classes, b.pred_classes)
        if "mask" in zoo:
            torch.testing.assert_close(a.pred_masks, b.pred_masks)
    assert [len(p) for p in merged[1]] == [2, 0]
    for part in (1, 2):
        for a, b in zip(merged[part], separate[part]):
            torch.testing.assert_close(a, b)


def test_entry_point_refuses_a_config_without_prune_or_no_file_in_one_line(tmp_path):
    """`python -m prune_hooks.detectron2.train_net` on a config it cannot prune: one line, exit 1, nothing written."""
    plain = tmp_path / "plain.yaml"
    plain.write_text("MODEL:\n  DEVICE: cpu\nOUTPUT_DIR: " + str(tmp_path / "out") + "\n")
    for config, msg in ((plain, "has no PRUNE section"), (tmp_path / "nope.yaml", "file not found")):
        proc = train_net("--config-file", config, check=False)
        lines = [line for line in proc.stderr.splitlines() if line.strip() and "Warning" not in line]
        lines = [line for line in lines if "warn" not in line and "pkg_resources" not in line]
        assert proc.returncode == 1 and len(lines) == 1 and msg in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def test_lvis_class_count_most_unused(tmp_path):
    """1,203 categories (LVIS v1's count), three of them used: the box head predicts all, the soft labels keep
    their top columns, the run directory is whole."""
    from tests.conftest import LVIS_CLASSES, add_unused_categories, assert_top_k_soft_labels

    config, files, cfg = make_config(tmp_path, METHODS=["vps_iou", "entropy"])
    add_unused_categories(files)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = LVIS_CLASSES
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.PRUNE.DUMP_DETECTIONS = 4, (), False
    config.write_text(cfg.dump())
    train_net("--config-file", config)
    assert_top_k_soft_labels(tmp_path / "out" / "prune", LVIS_CLASSES + 1)


@pytest.mark.parametrize("pass_batch,sizes", [(0, [2, 2, 2, 2]), (3, [3, 3, 2])])
def test_pass_loader_batches_every_image_once(tmp_path, pass_batch, sizes):
    """PRUNE.PASS_BATCH images per batch (0: the training batch, SOLVER.IMS_PER_BATCH = 2 here), each image once."""
    from prune_hooks.detectron2 import check_prune_config, register_coco_datasets

    files = make_toy_coco(tmp_path / "toy", {"train": 8})
    cfg = toy_config(files, tmp_path / "toy", tmp_path / "out", prefix=f"pass_batch_{pass_batch}")
    cfg.SOLVER.IMS_PER_BATCH, cfg.PRUNE.ENABLED, cfg.PRUNE.PASS_BATCH = 2, True, pass_batch
    register_coco_datasets(cfg)
    setup = check_prune_config(cfg)
    batches = list(setup.test_loader(setup.dataset))
    assert [len(b) for b in batches] == sizes
    ids = [d["image_id"] for b in batches for d in b]
    assert sorted(ids) == sorted(im["id"] for im in json.loads(Path(files["train"]).read_text())["images"])
