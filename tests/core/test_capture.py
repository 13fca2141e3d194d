import pytest
import torch

from prune_hooks.core import PruneHooksError, VPSCapture, cipa_pass, load_coco
from prune_hooks.core.coco import Detections


def test_capture_equals_cli_path_and_counts_shared_images_once(coco_file):
    idx = load_coco(coco_file)
    preds = {1: ([[0, 0, 10, 10], [20, 20, 30, 25]], [0.8, 0.6], [1, 2]), 3: ([[5, 5, 25, 15]], [0.9], [2])}

    def rank_capture(images):
        cap = VPSCapture(idx, record=True)
        for i in images:
            boxes, scores, cats = preds.get(i, ([], [], []))
            cap.add_image(i, torch.tensor(boxes, dtype=torch.float32).view(-1, 4), torch.tensor(scores), torch.tensor(cats, dtype=torch.long))
        return cap

    # Two "ranks" whose shards overlap on image 1 (a padded sampler); gather = list of both parts.
    a, b = rank_capture([1, 3]), rank_capture([1, 2])
    part_b = ((lambda p: tuple(torch.cat(t).cpu() for t in zip(*p)))(b._pending), b.results)
    results = a.end_pass(all_gather=lambda local: [local, part_b])
    assert a.acc.passes == 1 and a.acc.stats.count.tolist() == [1, 1, 1]
    assert sorted({r["image_id"] for r in results}) == [1, 3] and len(results) == 3

    ref = Detections.from_results(results, idx)
    iou, conf = cipa_pass(idx, ref)
    vps = a.acc.vps()
    assert vps["iou_mean"].tolist() == pytest.approx(iou.tolist(), abs=1e-6)
    assert vps["conf_mean"].tolist() == pytest.approx(conf.tolist(), abs=1e-6)


def test_capture_rejects_unknown_image(coco_file):
    cap = VPSCapture(load_coco(coco_file))
    with pytest.raises(PruneHooksError, match="image id 42"):
        cap.add_image(42, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
