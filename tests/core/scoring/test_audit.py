import csv
import io
import json

import numpy as np
import pytest
import torch

from prune_hooks.cli import main as cli
from prune_hooks.core.data.coco import load_coco
from prune_hooks.core.errors import PruneHooksError
from prune_hooks.core.outputs.rundir import write_run
from prune_hooks.core.scoring.audit import RECENT_PASSES, AuditThresholds, LabelAudit, label_issues
from prune_hooks.core.scoring.scores import VPSAccumulator
from prune_hooks.core.scoring.softlabels import SoftLabels

# tiny_coco's objects in index order: 13 (image 3, cat 1, xyxy 5,5,25,15), 10 (image 1, cat 1, 0,0,10,10),
# 11 (image 1, cat 2, 20,20,30,30); image 2 has none. Image positions: 3 -> 0, 1 -> 1, 2 -> 2.
NO_CANDIDATES = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0))


def candidates(*rows):
    """(image position, category id, [x0, y0, x1, y1], score) rows -> the arrays LabelAudit.add_pass takes."""
    if not rows:
        return NO_CANDIDATES
    return (
        np.array([r[0] for r in rows]),
        np.array([r[1] for r in rows]),
        np.array([r[2] for r in rows], dtype=np.float64),
        np.array([r[3] for r in rows], dtype=np.float64),
    )


def add(audit, boxes, conf=(0.9, 0.9, 0.9), cands=NO_CANDIDATES):
    """One pass in which the model put objects 13, 10, 11 at ``boxes`` with scores ``conf``."""
    audit.add_pass(torch.arange(3), torch.tensor(conf), torch.tensor(boxes).float(), cands)


def kinds(rows):
    return [(r[0], r[1] if r[1] != "" else r[2]) for r in rows]


GOOD = [[5, 5, 25, 15], [0, 0, 10, 10], [20, 20, 30, 30]]


def test_bad_location_needs_consistent_confident_boxes_off_the_annotation(coco_file):
    index = load_coco(coco_file)
    shifted = [[11, 5, 31, 15], [0, 0, 10, 10], [20, 20, 30, 30]]  # object 13: IoU 14/26 = 0.54 with its box
    further = [[13, 5, 33, 15], [0, 0, 10, 10], [20, 20, 30, 30]]  # 12/28 = 0.43
    audit = LabelAudit(index.obj_boxes)
    for _ in range(RECENT_PASSES - 1):
        add(audit, further)
    assert label_issues(index, audit.arrays(), None, None) == []  # fewer passes than the window
    add(audit, further)
    rows = label_issues(index, audit.arrays(), None, None)
    assert kinds(rows) == [("bad_location", 13)]
    kind, ann, image, cat, bbox, sug_cat, sug_box, score = rows[0]
    assert (image, cat, sug_cat) == (3, 1, 1) and json.loads(bbox) == [5, 5, 20, 10]
    assert json.loads(sug_box) == [13, 5, 20, 10] and score == pytest.approx(0.9 * (1 - 12 / 28), rel=1e-3)  # fp16 conf
    # the same boxes with IoU 0.54 pass at loc_iou 0.5 and are flagged at 0.6
    audit = LabelAudit(index.obj_boxes)
    for _ in range(RECENT_PASSES):
        add(audit, shifted)
    assert label_issues(index, audit.arrays(), None, None) == []
    assert kinds(label_issues(index, audit.arrays(), None, None, AuditThresholds(loc_iou=0.6))) == [
        ("bad_location", 13)
    ]
    # not flagged: one pass without a prediction of its class near it, low confidence, boxes that disagree
    for change in (
        dict(conf=(0.0, 0.9, 0.9), boxes=[[0, 0, 0, 0], GOOD[1], GOOD[2]]),
        dict(conf=(0.3, 0.9, 0.9)),
        dict(boxes=[[5, 15, 25, 25], GOOD[1], GOOD[2]]),
    ):
        audit = LabelAudit(index.obj_boxes)
        for _ in range(RECENT_PASSES - 1):
            add(audit, further)
        add(audit, **{"boxes": further, **change})
        assert label_issues(index, audit.arrays(), None, None) == [], change
    audit = LabelAudit(index.obj_boxes)
    for _ in range(RECENT_PASSES):
        add(audit, [[30, 30, 40, 40], GOOD[1], GOOD[2]])  # IoU 0 with object 13: another object, not a fix
    assert label_issues(index, audit.arrays(), None, None) == []


def test_bad_location_suggestion_must_fit_its_own_object_best(coco_file):
    index = load_coco(coco_file)
    audit = LabelAudit(index.obj_boxes)
    # object 10 (0,0,10,10) matched to a box that is mostly object 11's (20,20,30,30)
    for _ in range(RECENT_PASSES):
        add(audit, [GOOD[0], [8, 8, 28, 28], GOOD[2]])
    assert label_issues(index, audit.arrays(), None, None) == []


def test_missing_box_recurs_at_one_place_and_class_over_the_window(coco_file):
    index = load_coco(coco_file)
    audit = LabelAudit(index.obj_boxes)
    elsewhere = (0, 5, [0, 30, 8, 40], 0.9)
    for k in range(RECENT_PASSES):
        jitter = [10 + k, 10, 30 + k, 30]
        add(
            audit,
            GOOD,
            cands=candidates(
                (2, 1, jitter, 0.6 + 0.1 * k),  # image 2 (no objects): the same place, moving a little
                (1, 2, [30, 0, 40, 8], 0.9) if k != 1 else elsewhere,  # image 1: gone in the middle pass
                (0, k + 1, [30, 30, 40, 40], 0.9),  # image 3: another class every pass
            ),
        )
    rows = label_issues(index, audit.arrays(), None, None)
    assert kinds(rows) == [("missing_box", 2)]
    _, ann, image, cat, _, sug_cat, sug_box, score = rows[0]
    assert (ann, image, cat, sug_cat) == ("", 2, "", 1)
    assert json.loads(sug_box) == [11, 10, 20, 20] and score == pytest.approx(0.7)
    assert kinds(label_issues(index, audit.arrays(), None, None, AuditThresholds(miss_conf=0.75))) == []
    # bounded: a track unseen for the whole window is dropped
    for _ in range(RECENT_PASSES):
        add(audit, GOOD)
    assert len(audit.tracks["image"]) == 0


def test_state_round_trip_and_thresholds_checked(coco_file):
    index = load_coco(coco_file)
    a = LabelAudit(index.obj_boxes)
    add(a, GOOD, cands=candidates((2, 1, [10, 10, 30, 30], 0.8)))
    b = LabelAudit(index.obj_boxes)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)  # checkpoints are read with weights_only=True: tensors only
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    add(a, GOOD)
    add(b, GOOD)
    for k, v in a.arrays().items():
        assert np.array_equal(v, b.arrays()[k]), k
    with pytest.raises(PruneHooksError, match=r"label audit threshold loc_iou must be in \(0, 1\], got 1.5"):
        AuditThresholds(loc_iou=1.5)
    with pytest.raises(PruneHooksError, match="state has shape"):
        LabelAudit(np.zeros((5, 4))).load_state_dict(a.state_dict())


def test_earlier_float32_state_resumes_and_boxes_stay_within_fp16_of_the_objects_size(coco_file):
    """Checkpoints of earlier versions hold float32 confidences and absolute boxes: they load into the
    float16 relative layout; decoded boxes are within ~1e-3 of the object's size of what was recorded."""
    index = load_coco(coco_file)
    a = LabelAudit(index.obj_boxes)
    moved = [[6, 5, 26, 16], [1, 0, 11, 10], [20, 21, 30, 31]]  # off each object's box
    add(a, moved, conf=(0.31, 0.52, 0.93))
    got = a.arrays()
    np.testing.assert_allclose(got["box"][-1], np.array(moved, np.float32), atol=20 * 2**-10)
    np.testing.assert_allclose(got["conf"][-1], [0.31, 0.52, 0.93], atol=1e-3)
    old = a.state_dict()
    old = {**old, "conf": old["conf"].float(), "box": torch.as_tensor(got["box"])[[2, 0, 1]]}  # ring order
    del old["box_rel"]
    b = LabelAudit(index.obj_boxes)
    b.load_state_dict(old)
    for k, v in a.arrays().items():
        np.testing.assert_allclose(v, b.arrays()[k], atol=1e-2, err_msg=k)


def audited_run(coco_file, tmp_path):
    """A run directory with every kind of flag: 13 wrong class, 10 badly placed, a missing box in image 2."""
    index = load_coco(coco_file)
    acc, soft, audit = VPSAccumulator(3), SoftLabels(3, 3), LabelAudit(np.zeros((3, 4)))
    soft.update(torch.arange(3), torch.tensor([[0.1, 0.9, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    for _ in range(RECENT_PASSES):
        acc.update(torch.arange(3), torch.full((3,), 0.9), torch.full((3,), 0.9), torch.ones(3, dtype=torch.bool))
        acc.end_pass()
        add(audit, [GOOD[0], [5, 0, 15, 10], GOOD[2]], cands=candidates((2, 1, [10, 10, 30, 30], 0.8)))
    run = tmp_path / "run"
    write_run(run, index, acc, framework="test", soft=soft, audit=audit)
    return run


def read_changes(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_clean_applies_only_what_is_asked_and_lists_each_change(coco_file, tmp_path, capsys):
    run = audited_run(coco_file, tmp_path)
    issues = (run / "label_issues.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in issues[1:]] == ["wrong_class", "bad_location", "missing_box"]
    original = json.loads(coco_file.read_text())

    assert cli(["clean", str(run), "--out", str(tmp_path / "none")]) == 0
    assert "nothing asked" in capsys.readouterr().out
    untouched = json.loads((tmp_path / "none" / "instances_train_cleaned.json").read_text())
    assert untouched["annotations"] == original["annotations"]
    assert read_changes(tmp_path / "none" / "changes.csv") == []

    assert cli(["clean", str(run), "--relabel", "--ignore-bad-location", "--add-missing"]) == 0
    cleaned = json.loads((run / "instances_train_cleaned.json").read_text())
    by_id = {a["id"]: a for a in cleaned["annotations"]}
    assert by_id[13]["category_id"] == 2 and by_id[10]["iscrowd"] == 1
    assert by_id[14] == {
        "id": 14,
        "image_id": 2,
        "category_id": 1,
        "bbox": [10.0, 10.0, 20.0, 20.0],
        "area": 400.0,
        "iscrowd": 0,
        "segmentation": [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]],
    }
    unchanged = [a for a in cleaned["annotations"] if a["id"] in (11, 12)]
    assert unchanged == [a for a in original["annotations"] if a["id"] in (11, 12)]
    assert cleaned["info"]["description"] == "tiny" and cleaned["info"]["prune_hooks_cleaned"]["changes"] == 3
    changes = read_changes(run / "changes.csv")
    assert [(c["change"], c["ann_id"], c["field"], c["old"], c["new"]) for c in changes] == [
        ("relabel", "13", "category_id", "1", "2"),
        ("ignore", "10", "iscrowd", "0", "1"),
        ("add", "14", "annotation", "", '{"category_id": 1, "bbox": [10.0, 10.0, 20.0, 20.0]}'),
    ]
    # the cleaned file loads: our index (13 relabelled, 10 ignored, 14 added) and pycocotools
    index = load_coco(run / "instances_train_cleaned.json")
    assert sorted(index.ann_ids.tolist()) == [11, 13, 14]
    from pycocotools.coco import COCO

    coco = COCO(str(run / "instances_train_cleaned.json"))
    assert coco.getAnnIds(imgIds=[2]) == [14] and coco.getAnnIds(imgIds=[1], iscrowd=False) == [11]
    # select prunes the cleaned file
    sel = [
        "select",
        str(run),
        "--method",
        "random",
        "--count",
        "3",
        "--annotations",
        str(run / "instances_train_cleaned.json"),
    ]
    assert cli([*sel, "--out", str(tmp_path / "sel")]) == 0
    pruned = json.loads((tmp_path / "sel" / "instances_train_cleaned_pruned.json").read_text())
    assert sorted(a["id"] for a in pruned["annotations"]) == [10, 11, 12, 13, 14]
    # audit again at a stricter threshold: the missing box (0.8) goes
    assert cli(["audit", str(run), "--miss-conf", "0.85"]) == 0
    assert "0 missing_box" in capsys.readouterr().out


def test_audit_of_a_run_without_state_keeps_the_flags_it_cannot_recompute(coco_file, tmp_path, capsys):
    run = audited_run(coco_file, tmp_path)
    (run / "audit.npz").unlink()  # like a merged UNSEEN run: soft labels, the folds' flags, no audit state
    assert cli(["audit", str(run), "--tau", "0.95"]) == 0
    assert "0 wrong_class, 1 bad_location, 1 missing_box" in capsys.readouterr().out  # 0.9 < tau now


def test_clean_and_audit_refuse_bad_input(coco_file, tmp_path, capsys):
    run = audited_run(coco_file, tmp_path)

    def err(argv):
        assert cli(argv) == 1
        return capsys.readouterr().err.strip()

    assert "label audit threshold loc_iou must be in (0, 1], got 0.0" in err(["audit", str(run), "--loc-iou", "0"])
    (run / "label_issues.csv").rename(run / "kept.csv")
    assert "label_issues.csv not found: the run has no label audit" in err(["clean", str(run), "--relabel"])
    (run / "kept.csv").rename(run / "label_issues.csv")
    data = json.loads(coco_file.read_text())
    data["annotations"][0]["bbox"] = [1, 1, 9, 9]
    coco_file.write_text(json.dumps(data))
    assert "changed since the run: sha256" in err(["clean", str(run), "--relabel"])
    assert "changed since the run" in err(["audit", str(run)])


def test_cleaned_file_loads_in_both_frameworks(coco_file, tmp_path):
    run = audited_run(coco_file, tmp_path)
    assert cli(["clean", str(run), "--relabel", "--ignore-bad-location", "--add-missing"]) == 0
    cleaned = run / "instances_train_cleaned.json"
    pytest.importorskip("prune_hooks.detectron2")  # detectron2 0.6 with the aliases newer Pillow/numpy need
    import detectron2.data.datasets as d2

    records = {r["image_id"]: r for r in d2.load_coco_json(str(cleaned), str(tmp_path))}
    assert [a["category_id"] for a in records[2]["annotations"]] == [1]  # the added box
    assert sum(a.get("iscrowd", 0) for a in records[1]["annotations"]) == 2  # 10 ignored, 12 a crowd region
    pytest.importorskip("mmdet")
    from mmdet.datasets import CocoDataset

    ds = CocoDataset(ann_file=str(cleaned), data_prefix=dict(img=str(tmp_path)), pipeline=[], filter_cfg=None)
    info = {d["img_id"]: d for d in ds.load_data_list()}
    assert [i["ignore_flag"] for i in info[1]["instances"]] == [1, 0, 1]  # 10 ignored, 11, crowd 12
    assert [i["bbox_label"] for i in info[3]["instances"]] == [1]  # 13 relabelled to category 2 (label 1)


def test_report_shows_each_kind(coco_file, tmp_path):
    from PIL import Image

    from prune_hooks.core.outputs.report import write_report

    run = audited_run(coco_file, tmp_path)
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (40, 40), (90, 90, 90)).save(tmp_path / name)
    report = write_report(run, image_root=str(tmp_path)).read_text()
    assert "1 wrong_class, 1 bad_location, 1 missing_box, 0 outlier" in report
    for kind in ("wrong_class", "bad_location", "missing_box"):
        assert (run / "report" / f"issues_{kind}.png").stat().st_size > 1000
    assert not (run / "report" / "issues_outlier.png").exists()


@pytest.mark.parametrize(
    "fields,flagged",
    [
        ({}, [2, 5]),  # COCO: every category exhaustively labelled, even one with no box in the image
        ({"not_exhaustive_category_ids": [], "neg_category_ids": []}, [2]),  # LVIS: cat 2 labelled here, exhaustive
        ({"not_exhaustive_category_ids": [2], "neg_category_ids": []}, []),  # cat 2 may miss boxes in this image
        ({"not_exhaustive_category_ids": [], "neg_category_ids": [5]}, [2]),  # cat 5 verified absent: the model errs
    ],
)
def test_missing_box_only_where_a_federated_image_is_exhaustive_for_the_class(tmp_path, fields, flagged):
    from tests.conftest import tiny_coco

    data = tiny_coco()
    data["images"][1].update(fields)  # image 1 holds objects 10 (cat 1) and 11 (cat 2)
    data["categories"].append({"id": 5, "name": "fox"})
    for a in data["annotations"]:
        a.pop("iscrowd")  # LVIS files have no iscrowd: every box is an object
    path = tmp_path / "lvis_like.json"
    path.write_text(json.dumps(data))
    index = load_coco(path)
    audit = LabelAudit(index.obj_boxes)
    pos = index.image_position()[1]
    n = index.num_objects
    for _ in range(RECENT_PASSES):
        boxes = torch.tensor([[0, 0, 10, 10]] * n).float()
        cands = candidates((pos, 2, [32, 0, 40, 8], 0.9), (pos, 5, [0, 30, 8, 38], 0.9))
        audit.add_pass(torch.arange(n), torch.full((n,), 0.9), boxes, cands)
    rows = label_issues(index, audit.arrays(), None, None)
    assert sorted(r[5] for r in rows if r[0] == "missing_box") == flagged
