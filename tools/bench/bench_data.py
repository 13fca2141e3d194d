#!/usr/bin/env python
"""Benchmark data for tools/bench/bench_quality.py: real objects on real photos with exact boxes and
masks, and real aerial tiles.

    python tools/bench/bench_data.py fashion OUT [--train 600] [--val 150] [--size 256] [--seed 0]
    python tools/bench/bench_data.py deepforest OUT [--tile 400]

``fashion``: Fashion-MNIST photos (Debian ``dataset-fashion-mnist``: ``apt-get install dataset-fashion-mnist``;
train images from its train split, val from its t10k split) cut out by their silhouette and pasted onto
crops of ``skimage.data`` photos and textures. Longest side 10-100 px (log-uniform), tinted, contrast
0.35-1.2 against the background, occlusion by later objects and by background patches (objects less than
25% visible are not annotated), truncation at the border, global blur and sensor noise, long-tailed class
frequencies (T-shirt ... Ankle boot 22% ... 3%; T-shirt/Pullover/Coat/Shirt are naturally confusable),
unlabeled distractors (pieces of other photos), ~20% of train images in near-duplicate groups of 2-4
(the same scene shifted by a few pixels, re-exposed, re-noised), and in train only ~7% label noise per
object: class flips (to a look-alike class where there is one), jittered boxes, missing boxes. Val is clean.
Every instance has its exact visible mask as polygons (one in 25 as RLE), for the shape scores.
Every image's generation factors are written to ``factors.json``.

``deepforest``: the four aerial photos with Pascal VOC "Tree" boxes shipped in the ``deepforest`` wheel
(fetched with ``pip download --no-deps``), cut into tiles; boxes cut by a tile edge are clipped and kept
when at least half of them lies inside.

Both write ``OUT/annotations/instances_{train,val}.json`` and images under ``OUT/{train,val}/``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FREQ = np.array([0.22, 0.15, 0.12, 0.10, 0.08, 0.09, 0.05, 0.10, 0.06, 0.03])
LOOK_ALIKE = {0: (2, 4, 6), 2: (0, 4, 6), 4: (0, 2, 6), 6: (0, 2, 4), 5: (7, 9), 7: (5, 9), 9: (5, 7)}
BACKGROUNDS = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "rocket",
    "text",
    "clock",
    "colorwheel",
)
DUP_START = 0.077  # P(a new train scene starts a group of 2-4): ~20% of train images in groups
NOISE = {"flip": 0.03, "jitter": 0.02, "missing": 0.02}
RLE_EVERY = 25  # one instance in 25 is written as RLE instead of polygons
RARE, RARE_EVERY = (8, 9), 10  # video: Bag and Ankle boot only in every 10th sequence


def _idx(path: Path) -> np.ndarray:
    if not path.is_file():
        raise SystemExit(f"Fashion-MNIST file missing: {path} (apt-get install dataset-fashion-mnist)")
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    return _idx(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz"), _idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz")


def load_backgrounds() -> dict[str, np.ndarray]:
    try:
        import skimage.data
    except ImportError as e:
        raise SystemExit("background photos: pip install scikit-image (or the 'bench' extra)") from e

    out = {}
    for name in BACKGROUNDS:
        a = np.asarray(getattr(skimage.data, name)())
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        out[name] = a[..., :3].astype(np.float32)
    return out


def _resize(a: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image

    if a.ndim == 2:
        return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
    return np.stack([_resize(a[..., c], w, h) for c in range(a.shape[2])], axis=2)


def _crop(rng, bg: np.ndarray, w: int, h: int) -> np.ndarray:
    H, W = bg.shape[:2]
    side = int(rng.uniform(0.3, 1.0) * min(H, W))
    y, x = int(rng.integers(0, H - side + 1)), int(rng.integers(0, W - side + 1))
    return _resize(bg[y : y + side, x : x + side], w, h)


def _silhouette(photo: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    mask = ndimage.binary_fill_holes(ndimage.binary_closing(photo > 12, iterations=1))
    return mask.astype(np.float32)


def render_scene(rng, size: int, photos: np.ndarray, by_class: list[np.ndarray], bgs: dict, freq: np.ndarray = FREQ):
    """One image and its objects: [{cls, box (x, y, w, h), ...factors}] in paste order, visible ones only;
    ``freq``: the class frequencies to draw from."""
    names = list(bgs)
    bg_name = names[int(rng.integers(len(names)))]
    img = _crop(rng, bgs[bg_name], size, size) * rng.uniform(0.7, 1.2, 3)
    owner = np.full((size, size), -1, np.int32)
    objs, masks = [], []
    for _ in range(int(rng.integers(0, 4))):  # unlabeled distractors: pieces of other photos, elliptic
        s = int(np.exp(rng.uniform(np.log(10), np.log(60))))
        other = bgs[names[int(rng.integers(len(names)))]]
        patch = _crop(rng, other, s, s)
        yy, xx = np.mgrid[:s, :s]
        m = ((yy - s / 2) / (s / 2)) ** 2 + ((xx - s / 2) / (s / 2)) ** 2 <= 1
        y, x = int(rng.integers(0, size - s)), int(rng.integers(0, size - s))
        img[y : y + s, x : x + s][m] = patch[m]
    for _ in range(int(rng.integers(1, 7))):
        cls = int(rng.choice(len(CLASSES), p=freq))
        photo = photos[by_class[cls][int(rng.integers(len(by_class[cls])))]].astype(np.float32)
        sil = _silhouette(photo)
        ys, xs = np.nonzero(sil)
        if len(ys) < 20:
            continue
        photo, sil = (
            photo[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1],
            sil[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1],
        )
        side = float(np.exp(rng.uniform(np.log(10), np.log(100))))
        scale = side / max(photo.shape)
        w, h = max(3, round(photo.shape[1] * scale)), max(3, round(photo.shape[0] * scale))
        gray, alpha = _resize(photo, w, h) / 255.0, _resize(sil, w, h) > 0.5
        x0, y0 = int(rng.integers(-w // 4, size - 3 * w // 4)), int(rng.integers(-h // 4, size - 3 * h // 4))
        sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(size, x0 + w), min(size, y0 + h)
        region = img[sy0:sy1, sx0:sx1]
        g, a = gray[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0], alpha[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
        if a.sum() < 0.25 * alpha.sum():
            continue
        contrast = float(rng.uniform(0.35, 1.2))
        tint = rng.uniform(0.35, 1.0, 3) * 255
        local = region[a].mean(axis=0) if a.any() else np.full(3, 128.0)
        colour = local + contrast * (g[..., None] * tint - local)
        region[a] = np.clip(colour[a], 0, 255)
        ys, xs = np.nonzero(a)
        k = len(objs)
        owner[sy0:sy1, sx0:sx1][a] = k
        full = np.zeros((size, size), bool)
        full[sy0:sy1, sx0:sx1] = a
        masks.append(full)
        objs.append(
            {
                "cls": cls,
                "box": [
                    float(sx0 + xs.min()),
                    float(sy0 + ys.min()),
                    float(xs.max() - xs.min() + 1),
                    float(ys.max() - ys.min() + 1),
                ],
                "size": round(side, 1),
                "contrast": round(contrast, 3),
                "truncated": bool(x0 < 0 or y0 < 0 or x0 + w > size or y0 + h > size),
            }
        )
    if objs and rng.random() < 0.3:  # an occluding background patch over part of one object
        x, y, w, h = objs[int(rng.integers(len(objs)))]["box"]
        pw, ph = int(rng.uniform(0.3, 0.7) * w) + 1, int(rng.uniform(0.3, 0.7) * h) + 1
        px, py = int(x + rng.uniform(-0.2, 1.0) * w - pw / 2), int(y + rng.uniform(-0.2, 1.0) * h - ph / 2)
        px, py = min(max(px, 0), size - pw), min(max(py, 0), size - ph)
        img[py : py + ph, px : px + pw] = _crop(rng, bgs[names[int(rng.integers(len(names)))]], pw, ph)
        owner[py : py + ph, px : px + pw] = -2
    blur, noise = float(rng.uniform(0, 1.5)), float(rng.uniform(0, 8))
    if blur > 0.2:
        from scipy import ndimage

        img = ndimage.gaussian_filter(img, sigma=(blur, blur, 0))
    visible = []
    for k, (o, m) in enumerate(zip(objs, masks)):
        o["occlusion"] = round(1.0 - float((owner[m] == k).sum()) / float(m.sum()), 3)
        if o["occlusion"] <= 0.75:
            o["mask"] = owner == k  # the exact visible silhouette: the instance mask
            visible.append(o)
    return (
        img,
        visible,
        {"background": bg_name, "blur": round(blur, 3), "noise": round(noise, 2), "hidden": len(objs) - len(visible)},
    )


def _near_copy(rng, img: np.ndarray, objs: list[dict]):
    """The same scene shifted by up to 4 px and re-exposed (the caller adds fresh noise); boxes follow the shift."""
    dx, dy = (int(v) for v in rng.integers(-4, 5, 2))
    size = img.shape[0]
    out = np.roll(img, (dy, dx), axis=(0, 1)) * rng.uniform(0.92, 1.08)
    moved = []
    for o in objs:
        x, y, w, h = o["box"]
        x0, y0, x1, y1 = max(0.0, x + dx), max(0.0, y + dy), min(float(size), x + w + dx), min(float(size), y + h + dy)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            mask = np.zeros_like(o["mask"])  # shifted without wrapping: what wraps in the image is unlabeled
            src = o["mask"][max(0, -dy) : size - max(0, dy), max(0, -dx) : size - max(0, dx)]
            mask[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
            moved.append({**o, "box": [x0, y0, x1 - x0, y1 - y0], "mask": mask})
    return out, moved


def _label_noise(rng, o: dict, size: int):
    u = rng.random()
    if u < NOISE["flip"]:
        choices = LOOK_ALIKE.get(o["cls"]) or tuple(c for c in range(len(CLASSES)) if c != o["cls"])
        return {**o, "cls": int(rng.choice(choices)), "noise": "flip"}
    if u < NOISE["flip"] + NOISE["jitter"]:
        x, y, w, h = o["box"]
        w2, h2 = w * rng.uniform(0.75, 1.25), h * rng.uniform(0.75, 1.25)
        x2, y2 = x + rng.normal(0, 0.25 * w), y + rng.normal(0, 0.25 * h)
        x2, y2 = min(max(0.0, x2), size - 2.0), min(max(0.0, y2), size - 2.0)
        return {**o, "box": [x2, y2, min(w2, size - x2), min(h2, size - y2)], "noise": "jitter"}
    if u < sum(NOISE.values()):
        return None
    return o


def segmentation(mask: np.ndarray, rle: bool = False):
    """COCO segmentation of a binary mask: polygons (OpenCV's external contours through the boundary
    pixels' centres, one per part of 3+ vertices), or compressed RLE when ``rle`` or when no part
    has 3 vertices."""
    import cv2
    from pycocotools import mask as mask_utils

    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if not rle:
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        polys = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
        if polys:
            return polys
    enc = mask_utils.encode(np.asfortranarray(m))
    return {"size": [int(v) for v in enc["size"]], "counts": enc["counts"].decode("ascii")}


def _annotate(rng, objs: list[dict], noisy: bool, size: int, image_id: int, ann_id: int, anns: list):
    """Append the COCO annotations of one image's objects to ``anns`` (train: label noise first); returns the
    next annotation id and the objects' factors (``noise``: flip / jitter / missing / "", the true box)."""
    per_obj = []
    for o in objs:
        o = _label_noise(rng, o, size) if noisy else o
        if o is None:
            per_obj.append("missing")
            continue
        per_obj.append(o.get("noise", ""))
        x, y, w, h = (round(v, 2) for v in o["box"])
        anns.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": o["cls"] + 1,
                "bbox": [x, y, w, h],
                "area": round(w * h, 2),
                "iscrowd": 0,
                "segmentation": segmentation(o["mask"], rle=ann_id % RLE_EVERY == 0),
            }
        )
        ann_id += 1
    factors = [
        {k: o[k] for k in ("cls", "size", "contrast", "occlusion", "truncated")}
        | {"noise": n, "box": [round(v, 2) for v in o["box"]]}  # the true box, before noise
        for o, n in zip(objs, per_obj)
    ]
    return ann_id, factors


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def make_fashion(
    root: Path,
    n_train: int,
    n_val: int,
    size: int = 256,
    seed: int = 0,
    photos: dict | None = None,
    backgrounds: dict | None = None,
) -> dict[str, Path]:
    """``photos`` ({split: (images N×28×28 uint8, labels N)}) and ``backgrounds`` ({name: H×W×3}) default
    to Fashion-MNIST and ``skimage.data``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    bgs = backgrounds if backgrounds is not None else load_backgrounds()
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    files, factors, image_id, ann_id = {}, {}, 1, 1
    for split, count in (("train", n_train), ("val", n_val)):
        photos_, labels = photos[split] if photos is not None else load_fashion(split)
        by_class = [np.nonzero(labels == c)[0] for c in range(len(CLASSES))]
        (root / split).mkdir(parents=True, exist_ok=True)
        images, anns, k = [], [], 0
        while k < count:
            img, objs, f = render_scene(rng, size, photos_, by_class, bgs)
            copies = min(int(rng.integers(2, 5)), count - k) if split == "train" and rng.random() < DUP_START else 1
            group = image_id if copies > 1 else None
            for c in range(copies):
                scene, scene_objs = (img, objs) if c == 0 else _near_copy(rng, img, objs)
                scene = scene + rng.normal(0, f["noise"] + 1.0, scene.shape)
                name = f"{split}_{image_id:06d}.jpg"
                Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8)).save(root / split / name, quality=92)
                images.append({"id": image_id, "file_name": name, "width": size, "height": size})
                ann_id, objects = _annotate(rng, scene_objs, split == "train", size, image_id, ann_id, anns)
                factors[str(image_id)] = {
                    **f,
                    "split": split,
                    "dup_group": group,
                    "n_objects": len(scene_objs),
                    "objects": objects,
                }
                image_id += 1
                k += 1
        files[split] = root / "annotations" / f"instances_{split}.json"
        _write_json(files[split], {"images": images, "annotations": anns, "categories": cats})
    _write_json(root / "factors.json", factors)
    return files


def _frame(rng, canvas: np.ndarray, objs: list[dict], x: int, y: int, size: int):
    """The ``size`` window of a scene at (x, y), re-exposed; objects at least half inside, masks and boxes cropped."""
    img = canvas[y : y + size, x : x + size] * rng.uniform(0.92, 1.08)
    inside = []
    for o in objs:
        m = o["mask"][y : y + size, x : x + size]
        if m.sum() < max(20, 0.5 * o["mask"].sum()):
            continue
        ys, xs = np.nonzero(m)
        box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        inside.append({**o, "box": box, "mask": m, "truncated": o["truncated"] or bool(m.sum() < o["mask"].sum())})
    return img, inside


def make_video(
    root: Path,
    n_train: int,
    n_val: int,
    size: int = 256,
    seed: int = 0,
    photos: dict | None = None,
    backgrounds: dict | None = None,
) -> dict[str, Path]:
    """Redundant train data: sequences of frames of one scene each, the camera panning 1-3 px a frame over a
    scene 1.5x the frame (objects shift, enter and leave), each frame re-exposed and re-noised. Sequence
    lengths are log-normal (median 10, 3 to 60 frames); the two rarest classes (Bag, Ankle boot) appear only
    in every 10th sequence (RARE_EVERY), where their frequency is raised. Label noise as ``fashion``, drawn per
    frame. Val: single frames of fresh scenes (t10k photos), every class at FREQ, clean. Each image has
    ``sequence`` (and ``frame``) fields; factors.json records them."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    bgs = backgrounds if backgrounds is not None else load_backgrounds()
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    common = FREQ * np.isin(np.arange(len(CLASSES)), RARE, invert=True)
    rare = FREQ + np.isin(np.arange(len(CLASSES)), RARE) * 0.15
    canvas_side = size * 3 // 2
    files, factors, image_id, ann_id, sequence = {}, {}, 1, 1, 1
    for split, count in (("train", n_train), ("val", n_val)):
        photos_, labels = photos[split] if photos is not None else load_fashion(split)
        by_class = [np.nonzero(labels == c)[0] for c in range(len(CLASSES))]
        (root / split).mkdir(parents=True, exist_ok=True)
        images, anns, k, n_seq = [], [], 0, 0
        while k < count:
            if split == "train":
                length = int(np.clip(round(rng.lognormal(np.log(10), 0.8)), 3, 60))
                freq = rare if n_seq % RARE_EVERY == RARE_EVERY // 2 else common
            else:
                length, freq = 1, FREQ
            length = min(length, count - k)
            canvas, objs, f = render_scene(rng, canvas_side, photos_, by_class, bgs, freq / freq.sum())
            x, y = (float(v) for v in rng.integers(0, canvas_side - size + 1, 2))
            vx, vy = rng.uniform(1, 3, 2) * rng.choice([-1, 1], 2)
            for frame in range(length):
                img, frame_objs = _frame(rng, canvas, objs, int(x), int(y), size)
                img = img + rng.normal(0, f["noise"] + 1.0, img.shape)
                name = f"{split}_{image_id:06d}.jpg"
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / split / name, quality=92)
                images.append(
                    {"id": image_id, "file_name": name, "width": size, "height": size, "sequence": sequence}
                    | ({"frame": frame} if split == "train" else {})
                )
                ann_id, objects = _annotate(rng, frame_objs, split == "train", size, image_id, ann_id, anns)
                factors[str(image_id)] = {
                    **f,
                    "split": split,
                    "sequence": sequence,
                    "frame": frame,
                    "sequence_length": length,
                    "dup_group": None,
                    "n_objects": len(frame_objs),
                    "objects": objects,
                }
                x, y = x + vx, y + vy
                if not 0 <= x <= canvas_side - size:
                    vx, x = -vx, min(max(x, 0), canvas_side - size)
                if not 0 <= y <= canvas_side - size:
                    vy, y = -vy, min(max(y, 0), canvas_side - size)
                image_id += 1
                k += 1
            sequence += 1
            n_seq += 1
        files[split] = root / "annotations" / f"instances_{split}.json"
        _write_json(files[split], {"images": images, "annotations": anns, "categories": cats})
    _write_json(root / "factors.json", factors)
    return files


def _deepforest_wheel(dest: Path) -> Path:
    wheels = sorted(dest.glob("deepforest-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "deepforest", "--no-deps", "-q", "-d", str(dest)], check=True
        )
        wheels = sorted(dest.glob("deepforest-*.whl"))
    return wheels[-1]


def make_deepforest(root: Path, tile: int = 400, val_every: int = 5) -> dict[str, Path]:
    """Tiles of deepforest's annotated aerial photos; every ``val_every``-th tile goes to val."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    wheel = _deepforest_wheel(root / "download")
    split_data = {s: ([], []) for s in ("train", "val")}
    image_id, ann_id, n = 1, 1, 0
    with zipfile.ZipFile(wheel) as z:
        xmls = sorted(p for p in z.namelist() if p.startswith("deepforest/data/") and p.endswith(".xml"))
        for xml in xmls:
            png = xml[:-4] + ".png"
            if png not in z.namelist():
                continue
            tree = ET.fromstring(z.read(xml))
            boxes = np.array(
                [
                    [float(o.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
                    for o in tree.iter("object")
                ]
            )
            with z.open(png) as f:
                photo = np.asarray(Image.open(f).convert("RGB"))
            H, W = photo.shape[:2]
            for y in range(0, max(1, H - tile // 2), tile):
                for x in range(0, max(1, W - tile // 2), tile):
                    crop = photo[y : y + tile, x : x + tile]
                    cb = boxes - [x, y, x, y]
                    clipped = np.clip(cb, 0, [crop.shape[1], crop.shape[0]] * 2)
                    area = (cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])
                    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
                    keep = (area > 0) & (inside >= 0.5 * area)
                    if not keep.any():
                        continue
                    split = "val" if n % val_every == val_every - 1 else "train"
                    n += 1
                    name = f"{Path(png).stem.replace(' ', '_')}_{x}_{y}.jpg"
                    (root / split).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(crop).save(root / split / name, quality=92)
                    images, anns = split_data[split]
                    images.append(
                        {"id": image_id, "file_name": name, "width": int(crop.shape[1]), "height": int(crop.shape[0])}
                    )
                    for x0, y0, x1, y1 in clipped[keep]:
                        anns.append(
                            {
                                "id": ann_id,
                                "image_id": image_id,
                                "category_id": 1,
                                "iscrowd": 0,
                                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                                "area": float((x1 - x0) * (y1 - y0)),
                            }
                        )
                        ann_id += 1
                    image_id += 1
    files = {}
    for split, (images, anns) in split_data.items():
        files[split] = root / "annotations" / f"instances_{split}.json"
        _write_json(files[split], {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "Tree"}]})
    return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="kind", required=True)
    f = sub.add_parser("fashion")
    f.add_argument("out")
    f.add_argument("--train", type=int, default=600)
    f.add_argument("--val", type=int, default=150)
    f.add_argument("--size", type=int, default=256)
    f.add_argument("--seed", type=int, default=0)
    v = sub.add_parser("video")
    v.add_argument("out")
    v.add_argument("--train", type=int, default=400)
    v.add_argument("--val", type=int, default=150)
    v.add_argument("--size", type=int, default=256)
    v.add_argument("--seed", type=int, default=0)
    d = sub.add_parser("deepforest")
    d.add_argument("out")
    d.add_argument("--tile", type=int, default=400)
    args = ap.parse_args(argv)
    if args.kind == "fashion":
        files = make_fashion(Path(args.out), args.train, args.val, args.size, args.seed)
    elif args.kind == "video":
        files = make_video(Path(args.out), args.train, args.val, args.size, args.seed)
    else:
        files = make_deepforest(Path(args.out), args.tile)
    for split, path in files.items():
        data = json.loads(path.read_text())
        print(f"{split}: {len(data['images'])} images, {len(data['annotations'])} boxes -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
