import pytest
import torch

from prune_hooks.core.scoring.matching import box_iou, cipa_match


def t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


def naive_cipa(gt_boxes, gt_labels, boxes, scores, labels):
    """Direct transcription of docs/methods.md's rule, one object and one prediction at a time."""

    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union

    out = []
    for g, c in zip(gt_boxes, gt_labels):
        if not boxes:
            out.append((0.0, 0.0, -1))
            continue
        cands = [j for j in range(len(boxes)) if labels[j] == c] or list(range(len(boxes)))
        best = None
        for j in cands:
            key = (iou(g, boxes[j]), scores[j], -j)
            if best is None or key > best[0]:
                best = (key, j)
        j = best[1]
        out.append((iou(g, boxes[j]), scores[j], j))
    return out


def test_class_priority_beats_higher_iou_of_other_class():
    gt = t([[0, 0, 10, 10]])
    # prediction 0: other class, perfect box; prediction 1: right class, half the box.
    iou, conf, idx = cipa_match(
        gt, t([1], torch.long), t([[0, 0, 10, 10], [0, 0, 10, 5]]), t([0.9, 0.3]), t([2, 1], torch.long)
    )
    assert idx.tolist() == [1]
    assert iou.item() == pytest.approx(0.5)
    assert conf.item() == pytest.approx(0.3)


def test_fallback_to_best_iou_of_any_class():
    gt = t([[0, 0, 10, 10]])
    boxes = t([[0, 0, 10, 5], [0, 0, 10, 8], [20, 20, 30, 30]])
    iou, conf, idx = cipa_match(gt, t([7], torch.long), boxes, t([0.9, 0.2, 0.99]), t([1, 2, 3], torch.long))
    assert idx.tolist() == [1]
    assert iou.item() == pytest.approx(0.8)
    assert conf.item() == pytest.approx(0.2)


def test_same_class_with_zero_iou_still_beats_other_class():
    iou, conf, idx = cipa_match(
        t([[0, 0, 10, 10]]),
        t([1], torch.long),
        t([[50, 50, 60, 60], [0, 0, 10, 10]]),
        t([0.4, 0.9]),
        t([1, 2], torch.long),
    )
    assert idx.tolist() == [0] and iou.item() == 0.0 and conf.item() == pytest.approx(0.4)


def test_no_predictions_gives_zero_iou_and_confidence():
    iou, conf, idx = cipa_match(
        t([[0, 0, 1, 1], [2, 2, 3, 3]]),
        t([1, 2], torch.long),
        torch.zeros(0, 4),
        torch.zeros(0),
        torch.zeros(0, dtype=torch.long),
    )
    assert iou.tolist() == [0.0, 0.0] and conf.tolist() == [0.0, 0.0] and idx.tolist() == [-1, -1]


def test_ties_prefer_higher_score_then_lower_index():
    gt = t([[0, 0, 10, 10]])
    # Mirrored boxes: identical IoU (0.5) with the object.
    boxes = t([[0, 0, 10, 5], [0, 5, 10, 10], [0, 0, 5, 10]])
    _, conf, idx = cipa_match(gt, t([1], torch.long), boxes, t([0.3, 0.6, 0.6]), t([1, 1, 1], torch.long))
    assert idx.tolist() == [1] and conf.item() == pytest.approx(0.6)
    _, _, idx = cipa_match(gt, t([1], torch.long), boxes, t([0.5, 0.5, 0.5]), t([1, 1, 1], torch.long))
    assert idx.tolist() == [0]


def test_matches_naive_loop_on_random_images():
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        n, m = torch.randint(0, 6, (2,), generator=g).tolist()
        # Coarse integer grid and few score levels, so IoU and score ties really happen.
        xy = torch.randint(0, 6, (n + m, 2), generator=g).float()
        wh = torch.randint(1, 5, (n + m, 2), generator=g).float()
        boxes = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(0, 3, (n + m,), generator=g)
        scores = torch.randint(1, 4, (m,), generator=g).float() / 4
        iou, conf, idx = cipa_match(boxes[:n], labels[:n], boxes[n:], scores, labels[n:])
        want = naive_cipa(
            boxes[:n].tolist(), labels[:n].tolist(), boxes[n:].tolist(), scores.tolist(), labels[n:].tolist()
        )
        assert idx.tolist() == [w[2] for w in want], trial
        assert iou.tolist() == pytest.approx([w[0] for w in want], abs=1e-6)
        assert conf.tolist() == pytest.approx([w[1] for w in want])


def test_box_iou_equals_torchvision():
    from torchvision.ops import box_iou as reference

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(40, 2, generator=g) * 100
    a = torch.cat([xy, xy + torch.rand(40, 2, generator=g) * 50], 1)
    b = torch.cat([a[:10] + 3, a[10:20]])  # overlapping, identical; the rest of a disjoint from some
    torch.testing.assert_close(box_iou(a, b), reference(a, b))
    torch.testing.assert_close(box_iou(a.double(), b.double()), reference(a.double(), b.double()))
    assert box_iou(a, b[:0]).shape == (40, 0)
