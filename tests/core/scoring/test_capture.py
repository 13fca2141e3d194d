import pytest
import torch

from prune_hooks.core.data.coco import Detections, load_coco
from prune_hooks.core.errors import PruneHooksError
from prune_hooks.core.scoring.capture import VPSCapture
from prune_hooks.core.scoring.scores import cipa_pass


def test_capture_equals_cli_path_and_counts_repeated_images_once(coco_file):
    idx = load_coco(coco_file)
    preds = {
        1: ([[0, 0, 10, 10], [20, 20, 30, 25], [30, 0, 40, 8]], [0.8, 0.6, 0.5], [1, 2, 1]),  # 3rd: no GT box
        2: ([[10, 10, 30, 30]], [0.7], [1]),  # an image without objects
        3: ([[5, 5, 25, 15]], [0.9], [2]),
    }

    a = VPSCapture(idx, record=True)
    for i in [1, 3, 1, 2]:  # a padded sampler repeats image 1: counted once
        boxes, scores, cats = preds.get(i, ([], [], []))
        a.add_image(
            i, torch.tensor(boxes, dtype=torch.float32).view(-1, 4), torch.tensor(scores), torch.tensor(cats).long()
        )
    results = a.end_pass()
    assert a.acc.passes == 1 and a.acc.stats.count.tolist() == [1, 1, 1]
    assert sorted({r["image_id"] for r in results}) == [1, 2, 3] and len(results) == 5

    ref = Detections.from_results(results, idx)
    m = cipa_pass(idx, ref)
    vps = a.acc.vps()
    assert vps["iou_mean"].tolist() == pytest.approx(m.iou.tolist(), abs=1e-6)
    assert vps["conf_mean"].tolist() == pytest.approx(m.conf.tolist(), abs=1e-6)
    assert vps["learned_passes"].tolist() == m.learned.astype(int).tolist()
    # the label audit's state: same matches and boxes, and the unexplained detections once each
    audit = a.audit.arrays()
    # the audit keeps confidences in float16 and boxes as float16 offsets from the object's box
    assert audit["valid"][-1].all() and audit["conf"][-1].tolist() == pytest.approx(m.near_conf.tolist(), abs=1e-3)
    assert audit["box"][-1].ravel().tolist() == pytest.approx(m.near_box.ravel().tolist(), abs=1e-2)
    assert m.near_conf.tolist() == pytest.approx([0.0, 0.8, 0.6])  # 13 (no cat-1 box near), 10, 11 (dog at IoU .5)
    assert len(m.candidates[0]) == 2  # image 1's 3rd box (once) and image 2's
    assert sorted(audit["track_image"].tolist()) == sorted(m.candidates[0].tolist())
    assert sorted(audit["track_category_id"].tolist()) == sorted(m.candidates[1].tolist())


def test_soft_labels_reordered_to_file_categories_and_prototypes_per_class(coco_file):
    idx = load_coco(coco_file)
    cap = VPSCapture(idx)
    # the model's outputs in another order than the file's ascending ids, background last
    model_order = list(reversed(idx.category_ids.tolist()))
    cap.set_model_classes(model_order)
    cap.collect_prototypes()
    for image_id in idx.image_ids.tolist():
        a, b = cap.object_slice(image_id)
        probs = torch.zeros(b - a, len(model_order) + 1)
        probs[:, 0] = 0.75  # the model's first class = the file's last category
        probs[:, -1] = 0.25
        feats = torch.arange(b - a, dtype=torch.float32).view(-1, 1).repeat(1, 3) + 1
        cap.add_image(
            image_id, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), probs=probs, features=feats
        )
    cap.end_pass()
    soft = cap.soft.means()
    assert soft.shape == (idx.num_objects, len(idx.category_ids) + 1)
    assert soft[:, len(idx.category_ids) - 1].tolist() == [0.75] * idx.num_objects
    assert soft[:, -1].tolist() == [0.25] * idx.num_objects
    protos = cap.take_prototypes()
    for image_id in idx.image_ids.tolist():
        a, b = cap.object_slice(image_id)
        cats = idx.obj_category_ids[a:b]
        for c in set(cats.tolist()):
            row = [(i, r) for i, r in enumerate(zip(protos["image_id"], protos["category_id"])) if r == (image_id, c)]
            assert len(row) == 1
            expected = [k + 1.0 for k in range(b - a) if cats[k] == c]
            assert protos["feature"][row[0][0]].tolist() == [sum(expected) / len(expected)] * 3
    assert len(protos["image_id"]) == len({(i, c) for i, c in zip(idx.obj_image_ids, idx.obj_category_ids)})


def test_capture_rejects_unknown_image(coco_file):
    cap = VPSCapture(load_coco(coco_file))
    with pytest.raises(PruneHooksError, match="image id 42"):
        cap.add_image(42, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
