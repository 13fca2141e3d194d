"""GT-box outputs of dense (one-stage) detectors, read from their feature pyramid and class maps.

Two-stage detectors run their box head on the GT boxes; a one-stage detector has no box head, so
both quantities are read from what its head already computes (docs/methods.md, "One-stage detectors"):

- **prototype feature**: RoIAlign of the GT box on the pyramid level its size maps to (FPN's rule:
  level ``floor(4 + log2(sqrt(w h) / 224))``, clamped to the levels the head uses), 7 x 7 bins,
  mean over the bins: a vector of the pyramid's width.
- **class distribution**: the classification maps of the same level, RoIAlign'ed over the box the
  same way; per class, the highest sigmoid score over the bins and anchors (``p_k``); background
  mass ``1 - max_k p_k``; normalised to sum 1. Only for heads with sigmoid class scores.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torchvision.ops import roi_align

__all__ = ["fpn_levels", "pyramid_gt_outputs"]

BINS = 7


def fpn_levels(boxes: torch.Tensor, strides: Sequence[int]) -> torch.Tensor:
    """Index into ``strides`` of the level each xyxy box maps to by FPN's rule (canonical 224 px at level 4)."""
    levels = torch.tensor([math.log2(s) for s in strides], device=boxes.device)
    size = ((boxes[:, 2] - boxes[:, 0]).clamp(min=1e-6) * (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6)).sqrt()
    target = torch.floor(4 + torch.log2(size / 224)).clamp(levels.min(), levels.max())
    return (target[:, None] - levels[None, :]).abs().argmin(dim=1)


def pyramid_gt_outputs(
    maps: Sequence[torch.Tensor],
    strides: Sequence[int],
    boxes: Sequence[torch.Tensor],
    cls_maps: Sequence[torch.Tensor] | None = None,
    num_classes: int = 0,
) -> tuple[list[torch.Tensor] | None, list[torch.Tensor]]:
    """Per image: (class distributions Tensor[n, K + 1] or None, features Tensor[n, C]).

    Args:
        maps: the pyramid, one Tensor[N, C, H, W] per level, finest first, ``strides`` its strides.
        boxes: per image, Tensor[n, 4] xyxy GT boxes in the network input's coordinates.
        cls_maps: per level, Tensor[N, A * K, H, W] class logits (sigmoid), or None: no distributions.
        num_classes: K.
    """
    counts = [len(b) for b in boxes]
    rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], dim=1) for i, b in enumerate(boxes)])
    level = fpn_levels(rois[:, 1:], strides)
    feats = maps[0].new_zeros(len(rois), maps[0].shape[1])
    probs = maps[0].new_zeros(len(rois), num_classes + 1) if cls_maps is not None else None
    for lvl, stride in enumerate(strides):
        idx = (level == lvl).nonzero().flatten()
        if not len(idx):
            continue
        r = rois[idx].to(maps[lvl].dtype)
        pooled = roi_align(maps[lvl], r, BINS, spatial_scale=1 / stride, sampling_ratio=2, aligned=True)
        feats[idx] = pooled.mean(dim=(2, 3)).to(feats.dtype)
        if probs is not None:
            logits = roi_align(cls_maps[lvl], r, BINS, spatial_scale=1 / stride, sampling_ratio=2, aligned=True)
            p = logits.sigmoid().view(len(idx), -1, num_classes, BINS * BINS).amax(dim=(1, 3))
            dist = torch.cat([p, 1 - p.amax(dim=1, keepdim=True)], dim=1)
            probs[idx] = (dist / dist.sum(dim=1, keepdim=True).clamp(min=1e-12)).to(probs.dtype)
    return (list(probs.split(counts)) if probs is not None else None), list(feats.split(counts))
