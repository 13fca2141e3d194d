"""TFDP shape complexity: hand-computed shapes, the windowed rasterization against a full-image one,
class balance, image sums, and the run directory / CLI path."""

import json
import math

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from pycocotools import mask as mask_utils  # noqa: E402

from prune_hooks.cli import main as cli  # noqa: E402
from prune_hooks.core.data.coco import CocoIndex  # noqa: E402
from prune_hooks.core.data.rundir import read_images_csv  # noqa: E402
from prune_hooks.core.errors import PruneHooksError  # noqa: E402
from prune_hooks.core.scoring.shape import contour_shape, instance_shape, shape_scores  # noqa: E402


def square(x, y, s):
    """Polygon whose fill covers exactly the s x s pixels from (x, y)."""
    return [x, y, x + s - 1, y, x + s - 1, y + s - 1, x, y + s - 1]


def full_image_shape(segmentation, h, w):
    """The naive reference: every polygon filled on a full-image canvas, contour found there."""
    mask = np.zeros((h, w), np.uint8)
    for p in segmentation:
        cv2.fillPoly(mask, [np.asarray(p, np.float64).reshape(-1, 2).astype(np.int32)], 1)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 0.0, 0.0
    best = max(contours, key=cv2.contourArea)
    return cv2.contourArea(best), cv2.arcLength(best, True)


@pytest.mark.parametrize("s", [2, 3, 10, 57])
def test_filled_square_contour_runs_through_pixel_centres(s):
    mask = np.zeros((80, 80), np.uint8)
    mask[5 : 5 + s, 7 : 7 + s] = 1
    assert contour_shape(mask) == (float((s - 1) ** 2), float(4 * (s - 1)))
    assert instance_shape([square(7, 5, s)], 80, 80) == (float((s - 1) ** 2), float(4 * (s - 1)))


def test_single_pixel_and_lines_are_degenerate():
    assert instance_shape([square(3, 3, 1)], 20, 20)[0] == 0.0  # one pixel: area 0
    assert instance_shape([[2, 2, 10, 2, 18, 2]], 20, 20)[0] == 0.0  # collinear: area 0
    assert instance_shape([[50, 50, 60, 50, 60, 60]], 20, 20) == (0.0, 0.0)  # off the image
    assert instance_shape([[1]], 20, 20) == (0.0, 0.0)  # no vertex


def test_disc_is_near_one_whatever_its_size():
    for r in (40, 150):
        mask = np.zeros((2 * r + 10, 2 * r + 10), np.uint8)
        cv2.circle(mask, (r + 5, r + 5), r, 1, -1)
        area, perimeter = contour_shape(mask)
        si = perimeter / (2 * math.sqrt(math.pi * area))
        assert 1.0 < si < 1.1  # a digital disc's 8-connected contour is ~5 % longer than the circle


def test_two_parts_largest_wins_and_holes_are_ignored():
    big, small = square(10, 10, 30), square(60, 60, 5)
    assert instance_shape([small, big], 100, 100) == instance_shape([big], 100, 100)
    # overlapping parts are one region (their union), not cut out by an even-odd fill
    a, b = square(5, 5, 21), square(15, 15, 21)
    mask = np.zeros((50, 50), np.uint8)
    mask[5:26, 5:26] = 1
    mask[15:36, 15:36] = 1
    assert instance_shape([a, b], 50, 50) == contour_shape(mask)
    ring = np.zeros((100, 100), np.uint8)
    ring[10:60, 10:60] = 1
    ring[25:45, 25:45] = 0  # a hole
    rle = mask_utils.encode(np.asfortranarray(ring))
    assert instance_shape(rle, 100, 100) == instance_shape([square(10, 10, 50)], 100, 100)
    uncompressed = {"size": [100, 100], "counts": [int(v) for v in _runs(ring)]}
    assert instance_shape(uncompressed, 100, 100) == instance_shape(rle, 100, 100)


def _runs(mask):
    flat = mask.T.flatten()  # column-major, as COCO counts
    counts, current, n = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(n)
            current, n = v, 0
        n += 1
    counts.append(n)
    return counts


def test_windowed_rasterization_equals_the_full_image_one():
    rng = np.random.default_rng(0)
    h, w = 60, 90
    checked = 0
    for k in range(400):
        n_parts = 1 + int(rng.integers(0, 2))
        seg = []
        for _ in range(n_parts):
            cx, cy = rng.uniform(-10, w + 10), rng.uniform(-10, h + 10)  # many cross the borders
            n = int(rng.integers(3, 12))
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = rng.uniform(1, 30, n)
            seg.append(np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).ravel().tolist())
        want = full_image_shape(seg, h, w)
        assert instance_shape(seg, h, w) == pytest.approx(want, abs=0), (k, seg)
        checked += want[0] > 0
    assert checked > 200


def coco_with_masks(masks=True):
    images = [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 80} for i in (1, 2, 3, 4)]
    anns = [
        # image 1: a 20-square (cat 1) and a thin 40 x 3 bar (cat 2)
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "segmentation": [square(0, 0, 20)]},
        {
            "id": 2,
            "image_id": 1,
            "category_id": 2,
            "bbox": [30, 30, 40, 3],
            "segmentation": [[30, 30, 69, 30, 69, 32, 30, 32]],
        },
        # image 2: a 10-square (cat 1), and a crowd region that never counts
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [5, 5, 10, 10], "segmentation": [square(5, 5, 10)]},
        {
            "id": 4,
            "image_id": 2,
            "category_id": 1,
            "bbox": [0, 0, 50, 50],
            "iscrowd": 1,
            "segmentation": {"size": [80, 100], "counts": [0, 8000]},
        },
        # image 3: a box without a mask
        {"id": 5, "image_id": 3, "category_id": 2, "bbox": [1, 1, 5, 5]},
    ]
    if not masks:
        for a in anns:
            a.pop("segmentation", None)
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


def test_scores_class_balance_and_image_sums(tmp_path):
    index = CocoIndex.from_dataset(coco_with_masks())
    res = shape_scores(index, workers=1)
    by_ann = dict(zip(index.ann_ids.tolist(), zip(res.scs, res.si_scs, res.cb_scs)))
    assert by_ann[1][0] == pytest.approx(4 * 19 / 19**2)
    assert by_ann[1][1] == pytest.approx(4 * 19 / (2 * math.sqrt(math.pi * 19**2)))
    assert by_ann[3][1] == pytest.approx(by_ann[1][1])  # scale invariant: squares alike
    assert by_ann[1][2] == pytest.approx(0.5) and by_ann[3][2] == pytest.approx(0.5)  # class 1 sums to 1
    assert by_ann[2][2] == pytest.approx(1.0)  # the only scored object of class 2
    assert all(math.isnan(v) for v in by_ann[5])  # no mask: no score
    assert res.num_scored == 3 and res.num_without_mask == 1
    assert 4 not in by_ann  # crowd
    out = tmp_path / "run"
    assert cli(["score", "shape", "--annotations", str(_write(tmp_path, coco_with_masks())), "--out", str(out)]) == 0
    table = read_images_csv(out)
    cols = {c: dict(zip(table["image_id"].tolist(), table[c].tolist())) for c in ("scs_sum", "cb_scs_sum")}
    assert cols["cb_scs_sum"][1] == pytest.approx(1.5) and cols["cb_scs_sum"][2] == pytest.approx(0.5)
    assert math.isnan(cols["scs_sum"][3]) and math.isnan(cols["scs_sum"][4])  # no scored instance: empty
    assert set(table) == {"image_id", "n_objects", "file_name", "scs_sum", "si_scs_sum", "cb_scs_sum"}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["shape_without_mask"] == 1 and meta["passes"] == 0
    assert (out / "report" / "report.md").exists()


def _write(tmp_path, dataset):
    path = tmp_path / "instances_train.json"
    path.write_text(json.dumps(dataset))
    return path


def test_select_by_shape_and_all(tmp_path, capsys):
    ann = _write(tmp_path, coco_with_masks())
    out = tmp_path / "run"
    assert cli(["score", "shape", "--annotations", str(ann), "--out", str(out), "--no-report"]) == 0
    assert cli(["select", str(out), "--method", "cb_scs", "--keep", "0.5", "--out", str(tmp_path / "s")]) == 0
    subset = json.loads((tmp_path / "s" / "subset.json").read_text())
    assert subset["image_ids"] == [1, 2] and subset["aggregation"] == "sum"
    assert cli(["select", str(out), "--method", "all", "--keep", "0.5", "--out", str(tmp_path / "all")]) == 0
    made = sorted(p.name for p in (tmp_path / "all" / "subsets").iterdir())
    assert made == sorted(
        f"{m}_keep0.5" for m in ("scs", "si_scs", "cb_scs", "random", "random_uniform", "random_ratio")
    )
    capsys.readouterr()
    assert cli(["select", str(out), "--method", "cb_scs", "--aggregation", "max", "--keep", "0.5"]) == 1
    assert "method cb_scs aggregates by sum, got 'max'" in capsys.readouterr().err
    assert cli(["select", str(out), "--method", "vps_iou", "--keep", "0.5"]) == 1
    assert "method vps_iou needs image scores from scoring passes" in capsys.readouterr().err
    assert cli(["select", str(out), "--method", "csod", "--keep", "0.5"]) == 1
    assert "csod needs prototypes" in capsys.readouterr().err


def test_box_only_data_is_refused_and_workers_agree(tmp_path, capsys):
    ann = _write(tmp_path, coco_with_masks(masks=False))
    assert cli(["score", "shape", "--annotations", str(ann), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "shape scores need instance masks" in err and len(err.strip().splitlines()) == 1
    # many instances: the process pool gives the serial numbers
    rng = np.random.default_rng(1)
    images = [{"id": i, "file_name": "x", "width": 64, "height": 48} for i in range(1, 501)]
    anns = []
    for k in range(5000):
        x, y, s = (int(v) for v in rng.integers([0, 0, 2], [60, 44, 30]))
        anns.append(
            {
                "id": k + 1,
                "image_id": 1 + k % 500,
                "category_id": 1 + k % 3,
                "bbox": [x, y, s, s],
                "segmentation": [square(x, y, s)],
            }
        )
    index = CocoIndex.from_dataset(
        {"images": images, "annotations": anns, "categories": [{"id": c} for c in (1, 2, 3)]}
    )
    one, two = shape_scores(index, workers=1), shape_scores(index, workers=2)
    for a, b in zip(one.columns.values(), two.columns.values()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(PruneHooksError, match="needs 'height' and 'width'"):
        bad = coco_with_masks()
        del bad["images"][0]["height"]
        shape_scores(CocoIndex.from_dataset(bad))
