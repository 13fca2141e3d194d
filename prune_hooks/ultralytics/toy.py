"""The toy shapes set (``prune_hooks.toy``) in Ultralytics' YOLO format: ``images/``, ``labels/``, ``data.yaml``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..toy import make_toy_coco

__all__ = ["make_toy_yolo"]


def make_toy_yolo(root: Path, splits: dict[str, int], size: int = 96, polygons: bool = False) -> Path:
    """Write the toy set as YOLO labels (one ``.txt`` per image holding objects; objectless images have none, as
    Ultralytics' background images); ``polygons``: segment labels from the masks. Returns ``data.yaml``."""
    root = Path(root)
    files = make_toy_coco(root / "coco", splits, size=size)
    for split, ann in files.items():
        data = json.loads(Path(ann).read_text())
        classes = {c["id"]: k for k, c in enumerate(data["categories"])}
        for d in ("images", "labels"):
            (root / d / split).mkdir(parents=True, exist_ok=True)
        for im in data["images"]:
            shutil.copy(root / "coco" / split / im["file_name"], root / "images" / split / im["file_name"])
            w, h, lines = im["width"], im["height"], []
            for a in data["annotations"]:
                if a["image_id"] != im["id"] or a.get("iscrowd"):
                    continue
                if polygons and isinstance(a.get("segmentation"), list) and a["segmentation"]:
                    xy = a["segmentation"][0]
                    coords = " ".join(f"{v / (w if i % 2 == 0 else h):.6f}" for i, v in enumerate(xy))
                else:
                    x, y, bw, bh = a["bbox"]
                    coords = f"{(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}"
                lines.append(f"{classes[a['category_id']]} {coords}")
            if lines:
                (root / "labels" / split / f"{Path(im['file_name']).stem}.txt").write_text("\n".join(lines) + "\n")
    names = [c["name"] for c in data["categories"]]
    yaml = root / "data.yaml"
    val = "images/val" if "val" in splits else "images/train"
    yaml.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: {val}\nnames: {json.dumps(names)}\n")
    return yaml
