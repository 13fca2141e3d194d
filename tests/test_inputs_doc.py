"""docs/inputs.md is the contract of the readers: every case it lists is fed to its reader here and gives the
outcome the table states (error, accepted, skipped); the table lists exactly the cases tested here."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from prune_hooks.core.data.coco import Detections, load_coco
from prune_hooks.core.data.rundir import read_images_csv, read_meta
from prune_hooks.core.errors import PruneHooksError
from prune_hooks.core.scoring.prototypes import load_prototypes
from tests.conftest import tiny_coco

ROOT = Path(__file__).resolve().parents[1]


def _table() -> dict[str, str]:
    text = (ROOT / "docs" / "inputs.md").read_text()
    rows = text.split("<!-- inputs -->")[1].split("<!-- /inputs -->")[0].strip().splitlines()[2:]
    out = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        out[cells[0].strip("`")] = cells[3].split()[0].rstrip(":,")
    return out


def _coco(tmp, change) -> str:
    data = tiny_coco()
    change(data)
    path = tmp / "gt.json"
    path.write_text(json.dumps(data))
    load_coco(path)
    return "accepted"


def _dets(tmp, det) -> str:
    path = tmp / "gt.json"
    path.write_text(json.dumps(tiny_coco()))
    index = load_coco(path)
    base = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}
    d = Detections.from_results([{**base, **det}], index, src="dets.json")
    return "skipped" if len(d.scores) == 0 else "accepted"


def _set(key, k, field, value):
    def change(data):
        data[key][k][field] = value

    return change


def _yolo(tmp, text) -> str:
    pytest.importorskip("ultralytics")
    from prune_hooks.ultralytics.data import yolo_to_coco

    image = tmp / "images" / "train" / "x.jpg"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"")
    if text is not None:
        label = tmp / "labels" / "train" / "x.txt"
        label.parent.mkdir(parents=True)
        label.write_text(text)
    yolo_to_coco([str(image)], [(10, 10)], {0: "a", 1: "b"})
    return "accepted"


def _table_file(tmp, text) -> str:
    (tmp / "images.csv").write_text(text)
    read_images_csv(tmp)
    return "accepted"


def _protos(tmp, cut=False, zero=False) -> str:
    feature = np.ones((2, 3), np.float32)
    if zero:
        feature[1] = 0
    path = tmp / "prototypes.npz"
    np.savez(path, image_id=np.array([1, 3]), category_id=np.array([1, 1]), feature=feature)
    if cut:
        path.write_bytes(path.read_bytes()[:100])
    load_prototypes(path)
    return "accepted"


def _meta(tmp) -> str:
    (tmp / "meta.json").write_text("[1, 2]")
    read_meta(tmp)
    return "accepted"


CASES = {
    "ann_no_positive_size": lambda t: _coco(t, _set("annotations", 0, "bbox", [0, 0, 0, 5])),
    "ann_crowd_zero_size": lambda t: _coco(t, _set("annotations", 2, "bbox", [0, 0, 0, 0])),
    "ann_nan_box": lambda t: _coco(t, _set("annotations", 0, "bbox", [0, 0, float("nan"), 5])),
    "ann_duplicate_image_id": lambda t: _coco(t, _set("images", 1, "id", 3)),
    "ann_duplicate_ann_id": lambda t: _coco(t, _set("annotations", 1, "id", 10)),
    "ann_unknown_image": lambda t: _coco(t, _set("annotations", 0, "image_id", 99)),
    "ann_bool_id": lambda t: _coco(t, _set("annotations", 0, "id", True)),
    "ann_huge_id": lambda t: _coco(t, _set("annotations", 0, "id", 2**64)),
    "ann_category_without_objects": lambda t: _coco(t, lambda d: d["categories"].append({"id": 9, "name": "z"})),
    "ann_odd_polygon": lambda t: _coco(t, _set("annotations", 0, "segmentation", [[0, 0, 5, 0, 5]])),
    "det_score_outside": lambda t: _dets(t, {"score": 7.0}),
    "det_zero_area": lambda t: _dets(t, {"bbox": [1, 1, 0, 3]}),
    "det_unknown_category": lambda t: _dets(t, {"category_id": 5}),
    "run_table_short_row": lambda t: _table_file(t, "image_id,n_objects,vps_iou_max\n1,2,0.5\n2,1\n"),
    "run_table_bad_number": lambda t: _table_file(t, "image_id,n_objects,vps_iou_max\n1,2,abc\n"),
    "run_meta_not_object": _meta,
    "protos_cut": lambda t: _protos(t, cut=True),
    "protos_zero_row": lambda t: _protos(t, zero=True),
    "yolo_class_outside": lambda t: _yolo(t, "5 0.5 0.5 0.1 0.1\n"),
    "yolo_three_values": lambda t: _yolo(t, "1 0.5 0.5\n"),
    "yolo_no_label_file": lambda t: _yolo(t, None),
}


def test_the_table_lists_exactly_the_tested_cases():
    assert sorted(_table()) == sorted(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_case_has_the_documented_outcome(case, tmp_path, caplog):
    want = _table()[case]
    try:
        with caplog.at_level(logging.WARNING, logger="prune_hooks"):
            got = CASES[case](tmp_path)
    except PruneHooksError as e:
        assert "\n" not in str(e)
        got = "error"
    assert got == want, (case, got, want)
    if got == "skipped":
        assert "skipped 1" in caplog.text  # the warning names the count
