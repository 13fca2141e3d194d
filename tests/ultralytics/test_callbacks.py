"""The prune callbacks through Ultralytics' own `model.train`: a real tiny YOLO trained from its yaml on CPU."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

ultralytics = pytest.importorskip("ultralytics")

from ultralytics import YOLO  # noqa: E402

from prune_hooks.cli import main as cli  # noqa: E402
from prune_hooks.core.data.rundir import read_images_csv  # noqa: E402
from prune_hooks.core.errors import PruneHooksError  # noqa: E402
from prune_hooks.ultralytics import add_prune_callbacks  # noqa: E402
from prune_hooks.ultralytics.toy import make_toy_yolo  # noqa: E402
from tests.conftest import read_objects  # noqa: E402

# nbs = batch: one optimizer step (and one EMA update) per batch, as a large training has; no downloads,
# no plots, no AMP check (offline)
TRAIN = dict(imgsz=96, batch=4, nbs=4, device="cpu", workers=0, plots=False, amp=False, seed=0, deterministic=True)
TRAIN.update(warmup_epochs=1, exist_ok=True, verbose=False)
METHODS = ["vps_iou", "vps_conf", "entropy", "csod"]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    """One proxy shared by the tests that only read its run: 4 epochs of yolov8n on 16 toy images."""
    root = tmp_path_factory.mktemp("yolo")
    data = make_toy_yolo(root / "data", {"train": 16, "val": 4})
    model = YOLO("yolov8n.yaml")
    callbacks = add_prune_callbacks(model, methods=METHODS, keep_ratio=0.5, dump_detections=True)
    model.train(data=str(data), epochs=4, project=str(root / "runs"), name="proxy", **TRAIN)
    return root, data, root / "runs" / "proxy" / "prune", callbacks


def test_passes_scores_and_outputs(proxy):
    root, data, run, callbacks = proxy
    meta = json.loads((run / "meta.json").read_text())
    assert meta["framework"] == "ultralytics" and meta["passes"] == 4 and meta["methods"] == METHODS
    objects = read_objects(run / "objects.csv")
    assert meta["never_matched"] < len(objects) / 2
    assert all(int(r["passes"]) == 4 for r in objects.values())
    stds = np.array([float(r["iou_std"]) for r in objects.values()])
    assert np.isfinite(stds).all() and stds.max() > 0  # the EMA weights moved between passes
    soft = np.load(run / "soft_labels.npz")
    np.testing.assert_allclose(soft["probs"].sum(1), 1.0, atol=1e-4)
    assert soft["columns"].tolist() == [0, 1, 2, -1]  # the data file's class indices, then background
    protos = np.load(run / "prototypes.npz")
    assert protos["feature"].shape[1] == 64 + 128 + 256 and np.isfinite(protos["feature"]).all()  # v8n's neck
    # stable ids, mapped back to the label files' lines
    coco = json.loads((run / "annotations.json").read_text())
    paths = [im["file_name"] for im in coco["images"]]
    assert paths == sorted(paths) and [im["id"] for im in coco["images"]] == list(range(1, 17))
    rows = (run / "yolo_objects.csv").read_text().splitlines()
    assert rows[0] == "ann_id,image_id,label_file,line" and len(rows) - 1 == len(objects)
    first = rows[1].split(",")
    line = open(first[2]).read().splitlines()[int(first[3]) - 1].split()
    ann = coco["annotations"][0]
    assert int(line[0]) == ann["category_id"] and ann["id"] == int(first[0])
    # objectless images (Ultralytics' backgrounds: no label file) are images without objects
    images = read_images_csv(run)
    assert (images["n_objects"] == 0).any() and images["file_name"][0] == paths[0]


def test_subset_files_equal_cli_reselection_and_retrain(proxy, tmp_path):
    root, data, run, callbacks = proxy
    subset = json.loads((run / "subset.json").read_text())
    assert subset["n_images"] == 8 and subset["method"] == "vps_iou"
    assert cli(["select", str(run), "--method", "vps_iou", "--keep", "0.5", "--out", str(tmp_path / "cli")]) == 0
    assert json.loads((tmp_path / "cli" / "subset.json").read_text())["image_ids"] == subset["image_ids"]
    coco = json.loads((run / "annotations.json").read_text())
    path_of = {im["id"]: im["file_name"] for im in coco["images"]}
    listed = (run / "subset.txt").read_text().split()
    assert listed == [path_of[i] for i in sorted(subset["image_ids"])]
    from ultralytics.utils import YAML

    pruned = YAML.load(run / "data_pruned.yaml")
    original = YAML.load(data)
    assert pruned["train"] == str((run / "subset.txt").resolve()) and pruned["names"] == original["names"]
    retrain = YAML.load(run / "retrain_args.yaml")
    assert retrain["data"] == str(run / "data_pruned.yaml") and retrain["epochs"] == 4 and not retrain["resume"]
    assert retrain["model"] == "yolov8n.yaml" and retrain["name"] == "proxy_retrain"
    # Ultralytics' own command line retrains from it (one epoch here), on the kept images only
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "yolo"), "detect", "train", f"cfg={run / 'retrain_args.yaml'}", "epochs=1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "8 images" in log and (root / "runs" / "proxy_retrain" / "weights" / "last.pt").is_file()
    assert not (root / "runs" / "proxy_retrain" / "prune").exists()


def test_resume_loses_and_double_counts_nothing(tmp_path):
    data = make_toy_yolo(tmp_path / "data", {"train": 8})

    class Stop(Exception):
        pass

    def stop_after_second_epoch(trainer):
        if trainer.epoch == 1:
            raise Stop  # after last.pt and the prune state were written: the process dies here

    model = YOLO("yolov8n.yaml")
    add_prune_callbacks(model, methods=["vps_iou"], dump_detections=True)
    model.add_callback("on_fit_epoch_end", stop_after_second_epoch)
    with pytest.raises(Stop):
        model.train(data=str(data), epochs=4, project=str(tmp_path / "runs"), name="r", **TRAIN)
    run = tmp_path / "runs" / "r" / "prune"
    assert not (run / "meta.json").exists()  # an unfinished proxy writes no run
    resumed = YOLO(str(tmp_path / "runs" / "r" / "weights" / "last.pt"))
    add_prune_callbacks(resumed, methods=["vps_iou"], dump_detections=True)
    resumed.train(resume=True)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["passes"] == 4 and all(int(r["passes"]) == 4 for r in read_objects(run / "objects.csv").values())
    passes = sorted((run / "passes").glob("pass_*.json"))
    assert [p.name for p in passes] == [f"pass_{t:03d}.json" for t in range(1, 5)]
    # the resumed run's objects equal `score vps` over the four dumped passes
    from tests.conftest import assert_matches_cli

    assert_matches_cli(run, {"train": run / "annotations.json"}, passes, tmp_path, 1e-5)


@pytest.mark.parametrize("zoo", ["yolo11n.yaml", "yolov8n-seg.yaml"])
def test_zoo_models(zoo, tmp_path):
    """The model-zoo rows: YOLO11n, and YOLOv8n-seg on segment labels with the TFDP shape score beside VPS."""
    seg = "seg" in zoo
    data = make_toy_yolo(tmp_path / "data", {"train": 8}, polygons=seg)
    model = YOLO(zoo)
    methods = ["cb_scs", "vps_iou", "csod"] if seg else ["vps_iou", "entropy", "csod"]
    add_prune_callbacks(model, methods=methods)
    model.train(data=str(data), epochs=2, project=str(tmp_path / "runs"), name="z", **TRAIN)
    run = tmp_path / "runs" / "z" / "prune"
    meta = json.loads((run / "meta.json").read_text())
    assert meta["passes"] == 2 and meta["never_matched"] < meta["num_objects"] / 2
    images = read_images_csv(run)
    assert np.isfinite(images["vps_iou_max"][images["n_objects"] > 0]).all()
    assert np.isfinite(np.load(run / "prototypes.npz")["feature"]).all()
    if seg:
        assert (
            meta["shape_scored"] == meta["num_objects"]
            and json.loads((run / "subset.json").read_text())["method"] == "cb_scs"
        )


def _train_fails(tmp_path, data, model="yolov8n.yaml", **options):
    m = YOLO(model)
    add_prune_callbacks(m, **options)
    with pytest.raises(PruneHooksError) as e:
        m.train(data=str(data), epochs=1, project=str(tmp_path / "runs"), name="bad", **TRAIN)
    return str(e.value)


def test_bad_inputs_are_one_line(tmp_path):
    data = make_toy_yolo(tmp_path / "data", {"train": 4})
    label = sorted((tmp_path / "data" / "labels" / "train").glob("*.txt"))[0]
    good = label.read_text()
    label.write_text(good + "7 0.5 0.5 0.1 0.1\n")
    n = len(good.splitlines()) + 1
    assert f"{label}:{n}: class 7 is not in the data file's names (0..2)" in _train_fails(tmp_path, data)
    label.write_text(good + "1 0.5 0.5\n")
    assert f"{label}:{n}: expected 4 box values" in _train_fails(tmp_path, data)
    label.write_text(good)
    msg = _train_fails(tmp_path, "coco8.yaml")
    assert "'coco8.yaml' is not a local data file" in msg and not (tmp_path / "runs" / "bad" / "prune").exists()
    for model in ("yolov8n-cls.yaml", "yolov8n-pose.yaml"):
        assert "the prune callbacks score detection models (tasks ['detect', 'segment'])" in _train_fails(
            tmp_path, data, model
        )
    with pytest.raises(PruneHooksError, match=r"add_prune_callbacks keep_ratio must be in \(0, 1\], got 1.5"):
        add_prune_callbacks(YOLO("yolov8n.yaml"), keep_ratio=1.5)


def test_command_line_route(tmp_path):
    data = make_toy_yolo(tmp_path / "data", {"train": 8})
    argv = [f"{k}={v}" for k, v in TRAIN.items()] + [
        "model=yolov8n.yaml",
        f"data={data}",
        "epochs=2",
        f"project={tmp_path / 'runs'}",
        "name=cli",
        "prune.methods=vps_iou,csod",
        "prune.keep_ratio=0.25",
    ]
    proc = subprocess.run([sys.executable, "-m", "prune_hooks.ultralytics", *argv], capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    subset = json.loads((tmp_path / "runs" / "cli" / "prune" / "subset.json").read_text())
    assert subset["n_images"] == 2 and subset["method"] == "vps_iou"
    bad = subprocess.run(
        [sys.executable, "-m", "prune_hooks.ultralytics", "data=x.yaml"], capture_output=True, text=True
    )
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("[prune_hooks] model= is required")


def test_clean_writes_corrected_yolo_labels_in_a_new_folder(proxy, tmp_path):
    import hashlib
    import shutil

    root, data, run, callbacks = proxy
    work = tmp_path / "run"
    shutil.copytree(run, work)
    coco = json.loads((work / "annotations.json").read_text())
    a, b = coco["annotations"][0], coco["annotations"][1]
    head = "kind,ann_id,image_id,category_id,bbox,suggested_category_id,suggested_bbox,score\n"
    rows = [
        f'wrong_class,{a["id"]},{a["image_id"]},{a["category_id"]},"{a["bbox"]}",{(a["category_id"] + 1) % 3},,0.9',
        f'bad_location,{b["id"]},{b["image_id"]},{b["category_id"]},"{b["bbox"]}",{b["category_id"]},"[1, 1, 5, 5]",.8',
        f'missing_box,,{a["image_id"]},,,2,"[10.0, 20.0, 8.0, 4.0]",0.7',
    ]
    (work / "label_issues.csv").write_text(head + "\n".join(rows) + "\n")
    labels = sorted((root / "data" / "labels" / "train").glob("*.txt"))
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in labels}
    out = tmp_path / "clean"
    assert cli(["clean", str(work), "--relabel", "--ignore-bad-location", "--add-missing", "--out", str(out)]) == 0
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in labels} == before  # the user's files untouched
    objects = {int(r.split(",")[0]): r.split(",") for r in (work / "yolo_objects.csv").read_text().splitlines()[1:]}
    label_a, line_a = objects[a["id"]][2], int(objects[a["id"]][3])
    new_label = out / "yolo" / "labels" / "train" / Path(label_a).name
    new_lines = new_label.read_text().splitlines()
    old_lines = Path(label_a).read_text().splitlines()
    assert new_lines[line_a - 1].split()[0] == str((a["category_id"] + 1) % 3)  # relabelled
    assert new_lines[line_a - 1].split()[1:] == old_lines[line_a - 1].split()[1:]
    w, h = next((im["width"], im["height"]) for im in coco["images"] if im["id"] == a["image_id"])
    assert new_lines[-1] == f"2 {14 / w:.6f} {22 / h:.6f} {8 / w:.6f} {4 / h:.6f}"  # the missing box, added
    removed = objects[b["id"]]
    if removed[2] == label_a:
        assert len(new_lines) == len(old_lines)  # one line removed, one added
    from ultralytics.utils import YAML

    cleaned = YAML.load(out / "yolo" / "data_cleaned.yaml")
    listed = (out / "yolo" / "train.txt").read_text().split()
    assert cleaned["train"] == str((out / "yolo" / "train.txt").resolve()) and len(listed) == 16
    assert all(Path(p).is_symlink() and Path(p).resolve().is_file() for p in listed)


def test_lvis_class_count_most_unused(tmp_path):
    """1,203 names in the data file (LVIS v1's count), three of them in the labels."""
    from ultralytics.utils import YAML

    from tests.conftest import LVIS_CLASSES, assert_top_k_soft_labels

    data = make_toy_yolo(tmp_path / "data", {"train": 8})
    spec = dict(YAML.load(data))
    names = list(spec["names"].values()) if isinstance(spec["names"], dict) else list(spec["names"])
    spec["names"] = names + [f"unused_{i}" for i in range(len(names), LVIS_CLASSES)]
    YAML.save(data, spec)
    model = YOLO("yolov8n.yaml")
    add_prune_callbacks(model, methods=["vps_iou", "entropy"])
    model.train(data=str(data), epochs=1, project=str(tmp_path / "runs"), name="lvis", **TRAIN)
    assert_top_k_soft_labels(tmp_path / "runs" / "lvis" / "prune", LVIS_CLASSES + 1)
