import csv
import json
import math

import numpy as np
import pytest
import torch

from prune_hooks.core.data.coco import load_coco
from prune_hooks.core.data.rundir import read_images_csv, read_meta
from prune_hooks.core.errors import PruneHooksError
from prune_hooks.core.outputs.rundir import write_run, write_subset
from prune_hooks.core.scoring.scores import VPSAccumulator
from prune_hooks.core.scoring.softlabels import SoftLabels


def two_passes(index):
    acc = VPSAccumulator(index.num_objects)
    idx = torch.arange(index.num_objects)
    acc.update(idx, torch.tensor([0.2, 0.9, 0.5]), torch.tensor([0.1, 0.8, 0.5]), torch.tensor([False, True, True]))
    acc.end_pass()
    acc.update(idx, torch.tensor([0.6, 0.9, 0.1]), torch.tensor([0.5, 0.8, 0.3]), torch.tensor([True, True, False]))
    acc.end_pass()
    return acc


def test_vps_run_columns_by_hand(coco_file, tmp_path):
    index = load_coco(coco_file)  # objects in file order: 13 (image 3), 10, 11 (image 1); image 2 empty
    acc = two_passes(index)
    scores = write_run(tmp_path, index, acc, framework="test")
    with open(tmp_path / "objects.csv", newline="") as f:
        rows = {int(r["ann_id"]): r for r in csv.DictReader(f)}
    assert list(rows) == [13, 10, 11]
    assert float(rows[13]["iou_std"]) == pytest.approx(0.2)  # population std of 0.2, 0.6
    assert float(rows[11]["iou_std"]) == pytest.approx(0.2)  # 0.5, 0.1
    assert float(rows[10]["iou_std"]) == 0.0
    assert rows[11]["forget_events"] == "1" and rows[13]["forget_events"] == "0"
    assert rows[13]["entropy"] == ""  # no soft labels
    table = read_images_csv(tmp_path)
    assert table["image_id"].tolist() == [3, 1, 2] and table["n_objects"].tolist() == [1, 2, 0]
    # image 1 holds objects 10 (std 0) and 11 (std 0.2)
    assert table["vps_iou_max"][1] == pytest.approx(0.2) and table["vps_iou_mean"][1] == pytest.approx(0.1)
    assert math.isnan(table["vps_iou_max"][2])  # no objects: no score
    assert table["forgetting_sum"][1] == 1.0
    assert set(scores) == {c for c in table if c not in ("image_id", "n_objects", "file_name")}
    assert table["file_name"].tolist() == ["c.png", "a.png", "b.png"]  # the image entries', for pandas users
    meta = read_meta(tmp_path)
    assert meta["passes"] == 2 and not meta["soft_labels"] and meta["num_objects"] == 3
    assert not (tmp_path / "label_issues.csv").exists()  # neither soft labels nor an audit


def test_soft_labels_write_npz_wrong_class_issues_and_entropy(coco_file, tmp_path):
    index = load_coco(coco_file)
    soft = SoftLabels(index.num_objects, 3)
    # columns: category 1, category 2, background; object 13 is cat 1 but looks like cat 2
    soft.update(torch.arange(3), torch.tensor([[0.1, 0.9, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    write_run(tmp_path, index, two_passes(index), framework="test", soft=soft)
    z = np.load(tmp_path / "soft_labels.npz")
    assert z["columns"].tolist() == [1, 2, -1] and z["ann_id"].tolist() == [13, 10, 11]
    lines = (tmp_path / "label_issues.csv").read_text().splitlines()
    assert lines[0] == "kind,ann_id,image_id,category_id,bbox,suggested_category_id,suggested_bbox,score"
    assert lines[1:] == ['wrong_class,13,3,1,"[5.0, 5.0, 20.0, 10.0]",2,,0.899999976']
    table = read_images_csv(tmp_path)
    assert table["entropy_max"][0] == pytest.approx(-(0.1 * math.log(0.1) + 0.9 * math.log(0.9)), rel=1e-6)


def test_run_without_passes_and_bad_inputs(coco_file, tmp_path):
    index = load_coco(coco_file)
    write_run(tmp_path, index, framework="test")
    assert (tmp_path / "objects.csv").read_text().splitlines()[0] == "ann_id,image_id,category_id"
    assert (tmp_path / "images.csv").read_text().splitlines()[0] == "image_id,n_objects,file_name"
    with pytest.raises(PruneHooksError, match="accumulator holds 5 objects"):
        write_run(tmp_path, index, VPSAccumulator(5), framework="test")
    with pytest.raises(PruneHooksError, match="object column x has 2 values"):
        write_run(tmp_path, index, framework="test", objects={"x": np.zeros(2)})
    (tmp_path / "images.csv").write_text("image_id,n_objects,vps_iou_max\n1,1,abc\n")
    with pytest.raises(PruneHooksError, match="column vps_iou_max"):
        read_images_csv(tmp_path)
    with pytest.raises(PruneHooksError, match="run directory not found"):
        read_meta(tmp_path / "nope")


def test_write_subset_writes_the_pruned_file(coco_file, tmp_path):
    index = load_coco(coco_file)
    subset = {"method": "x", "image_ids": [1]}
    subset_path, pruned = write_subset(tmp_path, subset, index)
    assert pruned.name == "instances_train_pruned.json"
    data = json.loads(pruned.read_text())
    assert [i["id"] for i in data["images"]] == [1]
    assert sorted(a["id"] for a in data["annotations"]) == [10, 11, 12]  # the crowd region stays
    assert json.loads(subset_path.read_text()) == subset
