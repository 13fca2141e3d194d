"""The benchmark generator (tools/bench/bench_data.py): exact boxes, noise in train only, near-duplicate groups.

White squares on black backgrounds stand in for Fashion-MNIST and skimage photos, so that an object's
pixels can be found again in the written image and compared with its annotation.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "bench"))
import bench_data  # noqa: E402

SIZE = 128


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(1)
    photos = {}
    for split, n in (("train", 200), ("val", 50)):
        imgs = np.zeros((n, 28, 28), np.uint8)
        for i in range(n):  # a white rectangle of random proportions in each 28x28 "photo"
            h, w = rng.integers(10, 27, 2)
            imgs[i, (28 - h) // 2 : (28 - h) // 2 + h, (28 - w) // 2 : (28 - w) // 2 + w] = 255
        photos[split] = (imgs, np.arange(n) % len(bench_data.CLASSES))
    root = tmp_path_factory.mktemp("fashion")
    files = bench_data.make_fashion(
        root, 260, 60, size=SIZE, seed=3, photos=photos, backgrounds={"black": np.zeros((200, 200, 3), np.float32)}
    )
    coco = {s: json.loads(files[s].read_text()) for s in files}
    factors = json.loads((root / "factors.json").read_text())
    return root, coco, factors


def test_boxes_are_the_objects_pixels(data):
    root, coco, factors = data
    checked = 0
    for split in ("train", "val"):
        by_image = {}
        for a in coco[split]["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
        for im in coco[split]["images"]:
            f = factors[str(im["id"])]
            anns = by_image.get(im["id"], [])
            if f["hidden"] or len(anns) != f["n_objects"] or any(o["noise"] for o in f["objects"]):
                continue  # hidden objects, missing or jittered boxes: nothing exact to compare with
            gray = np.asarray(Image.open(root / split / im["file_name"]).convert("L"), np.float32)
            for a, o in zip(anns, f["objects"]):
                x, y, w, h = a["bbox"]
                assert 0 <= x and 0 <= y and x + w <= SIZE + 1e-6 and y + h <= SIZE + 1e-6 and w > 0 and h > 0
                grown = [x - 4, y - 4, x + w + 4, y + h + 4]
                others = [b["bbox"] for b in anns if b is not a]
                if (
                    o["contrast"] < 0.8
                    or o["occlusion"] > 0
                    or any(
                        bx < grown[2] and bx + bw > grown[0] and by < grown[3] and by + bh > grown[1]
                        for bx, by, bw, bh in others
                    )
                ):
                    continue
                x0, y0, x1, y1 = (int(np.clip(v, 0, SIZE)) for v in grown)
                patch = gray[y0:y1, x0:x1]
                labels, _ = ndimage.label(patch > 0.5 * patch.max())
                biggest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
                ys, xs = np.nonzero(labels == biggest)
                found = [x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1]
                assert np.allclose(found, [x, y, x + w, y + h], atol=2.0), (split, im["file_name"], found, a["bbox"])
                checked += 1
    assert checked >= 50


def test_label_noise_in_train_only(data):
    _, coco, factors = data
    kinds = {"train": [], "val": []}
    for f in factors.values():
        kinds[f["split"]] += [o["noise"] for o in f["objects"]]
    assert set(kinds["val"]) == {""}
    noisy = sum(k != "" for k in kinds["train"]) / len(kinds["train"])
    assert 0.03 <= noisy <= 0.12, noisy
    assert {"flip", "jitter", "missing"} <= set(kinds["train"])
    # a missing box is absent from the annotations: the train file has fewer boxes than objects
    n_boxes = len(coco["train"]["annotations"])
    assert n_boxes == len(kinds["train"]) - kinds["train"].count("missing")


def test_near_duplicate_groups(data):
    root, coco, factors = data
    groups = {}
    for im in coco["train"]["images"]:
        g = factors[str(im["id"])]["dup_group"]
        if g is not None:
            groups.setdefault(g, []).append(im)
    in_groups = sum(len(v) for v in groups.values()) / len(coco["train"]["images"])
    assert 0.1 <= in_groups <= 0.35, in_groups
    assert all(factors[str(im["id"])]["dup_group"] is None for im in coco["val"]["images"])

    def load(im):
        return np.asarray(Image.open(root / "train" / im["file_name"]).convert("L"), np.float32)

    def best_shift_diff(a, b):
        return min(
            np.abs(np.roll(a, (dy, dx), axis=(0, 1)) - b)[8:-8, 8:-8].mean()
            for dy in range(-4, 5)
            for dx in range(-4, 5)
        )

    first = [v for v in groups.values() if len(v) >= 2][:4]
    assert first
    for members in first:  # a copy is its group's scene shifted a few pixels; another scene is not
        same = best_shift_diff(load(members[0]), load(members[1]))
        other = next(
            im
            for im in coco["train"]["images"]
            if factors[str(im["id"])]["dup_group"] != members[0]["id"]
            and len([a for a in coco["train"]["annotations"] if a["image_id"] == im["id"]]) > 0
        )
        assert same < 0.5 * best_shift_diff(load(members[0]), load(other))


def test_masks_are_the_objects_silhouettes(data):
    """Every instance has a segmentation (polygons, one in 25 RLE) that reads back through pycocotools
    and, for unoccluded objects with exact boxes, spans the object's box."""
    from pycocotools import mask as mask_utils

    root, coco, factors = data
    kinds, checked = {"poly": 0, "rle": 0}, 0
    for split in ("train", "val"):
        by_image = {}
        for a in coco[split]["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
            kinds["rle" if isinstance(a["segmentation"], dict) else "poly"] += 1
        for im in coco[split]["images"]:
            f = factors[str(im["id"])]
            anns = by_image.get(im["id"], [])
            if len(anns) != f["n_objects"] or any(o["noise"] for o in f["objects"]):
                continue
            for a, o in zip(anns, f["objects"]):
                seg = a["segmentation"]
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, SIZE, SIZE)) if isinstance(seg, list) else seg
                m = mask_utils.decode(rle)
                if o["occlusion"] > 0 or f["dup_group"] not in (None, im["id"]):
                    continue  # occluded: the mask is the visible part; copies: shifted, maybe cut by the border
                ys, xs = np.nonzero(m)
                x, y, w, h = a["bbox"]
                assert np.allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], [x, y, x + w, y + h], atol=1.0), a
                checked += 1
    assert checked >= 50 and kinds["rle"] >= 5 and kinds["poly"] > 10 * kinds["rle"]
