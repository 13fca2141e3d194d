"""An ImageNet-pretrained MobileNetV2-FPN backbone for detectron2, used by tools/bench/bench_quality.py.

Importing this module registers ``build_mobilenet_v2_fpn_backbone`` in detectron2's BACKBONE_REGISTRY:
the trunk of tools/bench/mobilenet_v2.py (ImageNet weights, BatchNorm and the blocks up to stride 8 frozen)
under detectron2's FPN. Use RGB input with torchvision's normalisation: ``INPUT.FORMAT: RGB``,
``PIXEL_MEAN: [123.675, 116.28, 103.53]``, ``PIXEL_STD: [58.395, 57.12, 57.375]``
(tools/bench/configs/bench_MNV2_FPN_overrides.yaml).
"""

from __future__ import annotations

import prune_hooks.detectron2  # noqa: F401  (before detectron2: v0.6 compatibility aliases)

# isort: split

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from mobilenet_v2 import STAGES, tap, trunk


class MobileNetV2(Backbone):
    def __init__(self):
        super().__init__()
        self.features = trunk()
        self._out_features = list(STAGES)
        self._out_feature_channels = {k: c for k, (_, c, _) in STAGES.items()}
        self._out_feature_strides = {k: s for k, (_, _, s) in STAGES.items()}

    def forward(self, x):
        return dict(zip(STAGES, tap(self.features, x)))


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
