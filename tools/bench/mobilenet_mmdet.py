"""The benchmark's ImageNet-pretrained MobileNetV2 trunk (tools/bench/mobilenet_v2.py) as an MMDetection backbone.

Importing this module (``custom_imports=dict(imports=['mobilenet_mmdet'])`` with ``tools/bench/`` on
PYTHONPATH) registers ``TorchvisionMobileNetV2`` in mmdet's MODELS registry: outputs at strides
4/8/16/32 with 24/32/96/320 channels (the neck's ``in_channels``). Normalisation: mmdet's default
``DetDataPreprocessor`` (ImageNet mean/std, RGB).
"""

from __future__ import annotations

from mmdet.registry import MODELS
from mmengine.model import BaseModule
from mobilenet_v2 import tap, trunk


@MODELS.register_module()
class TorchvisionMobileNetV2(BaseModule):
    def __init__(self, init_cfg=None):
        super().__init__(init_cfg)
        self.features = trunk()

    def init_weights(self):
        pass  # ImageNet weights were loaded in __init__; mmengine's default init would overwrite them

    def forward(self, x):
        return tuple(tap(self.features, x))
