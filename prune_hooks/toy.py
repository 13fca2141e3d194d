"""A small generated COCO detection set (shapes on textured backgrounds) for tests and the demo.

Three classes of filled shapes (square, disc, triangle) of varied size, colour and position on smooth
random textures with pixel noise, 0-4 objects per image, a few objectless images and crowd regions.
Each instance carries its outline as a polygon segmentation (for the shape scores).
Deterministic for a seed; a detector learns it in a few hundred CPU iterations.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

import numpy as np

from .core.io import write_json

__all__ = ["CLASSES", "make_toy_coco", "toy_config_file"]

CLASSES = ("square", "disc", "triangle")
TOY_CONFIGS = {"detectron2": "toy_R18_FPN_overrides.yaml", "mmdet": "toy_faster-rcnn_r18_fpn.py"}


def toy_config_file(framework: str) -> Path:
    """The toy detector config shipped with the package: ``prune_hooks/configs/<framework>/...``
    (detectron2: overrides of the model zoo's Faster R-CNN yaml; mmdet: a config inheriting mmdet's)."""
    if framework not in TOY_CONFIGS:
        raise ValueError(f"framework must be one of {sorted(TOY_CONFIGS)}, got {framework!r}")
    path = importlib.resources.files("prune_hooks") / "configs" / framework / TOY_CONFIGS[framework]
    return Path(str(path))


def _background(rng: np.random.Generator, size: int):
    from PIL import Image

    coarse = rng.integers(40, 215, size=(4, 4, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.float32)
    img += rng.normal(0, 12, size=img.shape)
    return img


def _draw_image(rng: np.random.Generator, size: int, n_obj: int, crowd: bool):
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.clip(_background(rng, size), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    anns = []
    for k in range(n_obj + int(crowd)):
        is_crowd = k == n_obj
        cls = int(rng.integers(len(CLASSES)))
        s = float(rng.uniform(0.15, 0.4) * size)
        w = s * float(rng.uniform(0.8, 1.25))
        x0, y0 = float(rng.uniform(0, size - w - 1)), float(rng.uniform(0, size - s - 1))
        x1, y1 = x0 + w, y0 + s
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if cls == 0:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        elif cls == 1:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        else:
            draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=colour)
        anns.append((cls, [round(x0, 2), round(y0, 2), round(w, 2), round(s, 2)], is_crowd))
    return img, anns


def _outline(cls: int, bbox: list[float]) -> list[float]:
    """The drawn shape as one COCO polygon (x1, y1, x2, y2, ...): the instance mask of the toy set."""
    x0, y0, w, h = bbox
    if cls == 0:
        pts = [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)]
    elif cls == 1:
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        pts = list(zip(x0 + w / 2 * (1 + np.cos(t)), y0 + h / 2 * (1 + np.sin(t))))
    else:
        pts = [(x0 + w / 2, y0), (x0, y0 + h), (x0 + w, y0 + h)]
    return [round(float(v), 2) for p in pts for v in p]


def make_toy_coco(
    root: str | os.PathLike,
    splits: dict[str, int] | None = None,
    size: int = 128,
    seed: int = 0,
) -> dict[str, Path]:
    """Write ``root/<split>/*.png`` and ``root/annotations/instances_<split>.json``.

    Args:
        splits: images per split, default ``{"train": 64, "val": 16}``.
        size: square image side in pixels.

    Returns:
        {split: annotation file path}. Image ids and annotation ids are unique across splits.
    """
    root = Path(root)
    splits = splits or {"train": 64, "val": 16}
    rng = np.random.default_rng(seed)
    out: dict[str, Path] = {}
    image_id, ann_id = 1, 1
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)]
    for split, count in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for k in range(count):
            n_obj = 0 if k % 16 == 5 else int(rng.integers(1, 5))
            img, anns = _draw_image(rng, size, n_obj, crowd=(k % 10 == 3))
            name = f"{split}_{image_id:06d}.png"
            img.save(root / split / name)
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
            for cls, bbox, crowd in anns:
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": cls + 1,
                        "bbox": bbox,
                        "area": round(bbox[2] * bbox[3], 2),
                        "iscrowd": int(crowd),
                        "segmentation": [_outline(cls, bbox)],
                    }
                )
                ann_id += 1
            image_id += 1
        out[split] = write_json(
            root / "annotations" / f"instances_{split}.json",
            {
                "info": {"description": f"prune_hooks toy shapes, seed {seed}"},
                "licenses": [],
                "images": images,
                "annotations": annotations,
                "categories": categories,
            },
            indent=None,
        )
    return out
