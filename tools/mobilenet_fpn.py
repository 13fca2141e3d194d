"""An ImageNet-pretrained MobileNetV2-FPN backbone for detectron2, used by tools/bench_quality.py.

Importing this module registers ``build_mobilenet_v2_fpn_backbone`` in detectron2's BACKBONE_REGISTRY:
torchvision's ``mobilenet_v2().features`` with ImageNet weights, BatchNorm frozen (batches of 4 images
have no useful statistics) and the blocks up to stride 8 frozen (tools/mobilenet_v2.py), under
detectron2's FPN. Use RGB input with torchvision's normalisation: ``INPUT.FORMAT: RGB``,
``PIXEL_MEAN: [123.675, 116.28, 103.53]``, ``PIXEL_STD: [58.395, 57.12, 57.375]``
(configs/detectron2/bench_MNV2_FPN_overrides.yaml).
"""
from __future__ import annotations

import prune_hooks.detectron2  # noqa: F401  (before detectron2: v0.6 compatibility aliases)
import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from mobilenet_v2 import FROZEN_BLOCKS, STAGES, imagenet_weights


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
