"""Fixtures and helpers shared by the tests: a tiny COCO file, and the checks the integration tests
of both frameworks make on a run directory."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from prune_hooks.cli import main as cli
from prune_hooks.core.data.rundir import read_images_csv


def tiny_coco():
    """Three images: two objects + a crowd region, one object, none."""
    return {
        "info": {"description": "tiny"},
        "licenses": [{"id": 1, "name": "CC0"}],
        "images": [
            {"id": 3, "file_name": "c.png", "width": 40, "height": 40},
            {"id": 1, "file_name": "a.png", "width": 40, "height": 40},
            {"id": 2, "file_name": "b.png", "width": 40, "height": 40},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [20, 20, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 2, "bbox": [0, 20, 5, 5], "area": 25, "iscrowd": 1},
            {"id": 13, "image_id": 3, "category_id": 1, "bbox": [5, 5, 20, 10], "area": 200, "iscrowd": 0},
        ],
    }


@pytest.fixture
def coco_file(tmp_path):
    path = tmp_path / "instances_train.json"
    path.write_text(json.dumps(tiny_coco()))
    return path


def read_objects(path):
    """objects.csv rows keyed by annotation id."""
    with open(path, newline="") as f:
        return {int(r["ann_id"]): r for r in csv.DictReader(f)}


def assert_matches_cli(run, files, passes, tmp_path, tol):
    """A hook's objects.csv equals `prune-hooks score vps` over the passes it dumped, keyed by COCO ann id."""
    ref = tmp_path / "ref"
    assert (
        cli(
            ["score", "vps", "--annotations", str(files["train"]), "--detections", *map(str, passes), "--out", str(ref)]
        )
        == 0
    )
    got, want = read_objects(run / "objects.csv"), read_objects(ref / "objects.csv")
    gt = json.loads(Path(files["train"]).read_text())
    assert sorted(got) == sorted(want) == sorted(a["id"] for a in gt["annotations"] if not a["iscrowd"])
    for aid in got:
        assert int(got[aid]["passes"]) == len(passes)
        for col in ("iou_mean", "iou_std", "conf_mean", "conf_std", "learned_passes", "forget_events"):
            assert float(got[aid][col]) == pytest.approx(float(want[aid][col]), abs=tol), (aid, col)
    # the label audit's state: the last passes' matches and the tracks of unexplained detections
    a, b = np.load(run / "audit.npz"), np.load(ref / "audit.npz")
    assert int(a["passes"]) == int(b["passes"]) == len(passes)
    for k in ("ann_id", "valid"):
        assert np.array_equal(a[k], b[k]), k
    for k in ("conf", "box"):
        assert np.allclose(a[k], b[k], atol=max(tol, 1e-3)), k
    tracks = [
        sorted(zip(z["track_image"].tolist(), z["track_category_id"].tolist(), z["track_hits"].tolist()))
        for z in (a, b)
    ]
    assert tracks[0] == tracks[1]


def assert_zoo_run(run, train_json, methods, n_images):
    """What every model-zoo matrix entry must end in: a full run directory with ``methods``."""
    meta = json.loads((run / "meta.json").read_text())
    assert meta["passes"] == 2 and meta["methods"] == methods
    # the pass lowered the model's threshold: barely trained, it still matched most objects
    n_objects = sum(not a["iscrowd"] for a in json.loads(Path(train_json).read_text())["annotations"])
    assert meta["never_matched"] < n_objects / 2, meta["never_matched"]
    images = read_images_csv(run)
    has = images["n_objects"] > 0
    for col in ("vps_iou_max", "vps_conf_max", *(["entropy_max"] if "entropy" in methods else [])):
        assert np.isfinite(images[col][has]).all(), col
    if "csod" in methods:
        protos = np.load(run / "prototypes.npz")
        assert np.isfinite(protos["feature"]).all() and protos["feature"].shape[1] > 0
    if "entropy" in methods:
        soft = np.load(run / "soft_labels.npz")
        np.testing.assert_allclose(soft["probs"].sum(1), 1.0, atol=1e-4)
    assert json.loads((run / "subset.json").read_text())["n_images"] == n_images


def assert_same_weights(hooked, plain):
    """Two state dicts (the proxy with the hook, the same run without it) hold equal tensors."""
    import torch

    assert hooked.keys() == plain.keys()
    moved = [k for k in plain if not torch.equal(hooked[k], plain[k])]
    assert not moved, moved[:5]


LVIS_CLASSES = 1203


def add_unused_categories(files, total=LVIS_CLASSES):
    """Give the toy annotation files ``total`` categories (LVIS v1's count), all but the toy's three unused;
    returns every category name in id order."""
    for path in files.values():
        data = json.loads(Path(path).read_text())
        known = len(data["categories"])
        data["categories"] += [{"id": i, "name": f"unused_{i}"} for i in range(known + 1, total + 1)]
        Path(path).write_text(json.dumps(data))
    return [c["name"] for c in data["categories"]]


def assert_top_k_soft_labels(run, n_columns):
    """A run over more classes than the soft labels keep: the top-k form, each row's mass whole."""
    soft = np.load(run / "soft_labels.npz")
    assert "probs" not in soft.files and len(soft["columns"]) == n_columns
    assert soft["top_columns"].shape == soft["top_probs"].shape and soft["top_columns"].shape[1] < n_columns
    np.testing.assert_allclose(soft["top_probs"].sum(1) + soft["rest"], 1.0, atol=1e-4)
    images = read_images_csv(run)
    has = images["n_objects"] > 0
    assert np.isfinite(images["entropy_max"][has]).all()
    assert (run / "label_issues.csv").is_file()
