"""CIPA: class-prioritized IoU-aware prediction assignment (VPS paper, Algorithm 1; docs/methods.md, "CIPA")."""

from __future__ import annotations

import torch

__all__ = ["LEARNED_IOU", "NEAR_IOU", "box_iou", "cipa_match", "learned", "near_prediction"]

# An object counts as learned at a pass when CIPA matched it to a same-class prediction with IoU >= 0.5.
LEARNED_IOU = 0.5
# A prediction is near an object when their IoU reaches this (label audit: where the model puts the object).
NEAR_IOU = 0.1


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box of ``a`` [N, 4] with every box of ``b`` [M, 4] (x1, y1, x2, y2): Tensor[N, M].
    Here rather than torchvision's so that the CLI does not import torchvision (~1 s)."""
    lo = torch.maximum(a[:, None, :2], b[None, :, :2])
    hi = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def cipa_match(
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    pred_boxes: torch.Tensor,
    pred_scores: torch.Tensor,
    pred_labels: torch.Tensor,
    iou: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Match every ground-truth object of one image to one prediction.

    For object g: among predictions with label ``gt_labels[g]`` take the one of highest IoU with
    ``gt_boxes[g]``; if there is none, the highest-IoU prediction of any class. Ties: higher score,
    then lower prediction index. Without predictions an object gets IoU 0, confidence 0, index -1.

    Args:
        gt_boxes: Tensor[N, 4], xyxy, original image coordinates.
        gt_labels: Tensor[N], integer class ids (any id space shared with ``pred_labels``).
        pred_boxes: Tensor[M, 4], xyxy, post-NMS predictions.
        pred_scores: Tensor[M].
        pred_labels: Tensor[M].
        iou: Tensor[N, M], ``box_iou(gt_boxes, pred_boxes)`` when the caller has it already.

    Returns:
        (iou Tensor[N] float, conf Tensor[N] float, index Tensor[N] long): the matched prediction's IoU
        with the object, its score, and its index in the predictions (-1 when M == 0).
    """
    n, m = gt_boxes.shape[0], pred_boxes.shape[0]
    dtype = torch.promote_types(gt_boxes.dtype, torch.float32)
    if m == 0 or n == 0:
        zeros = torch.zeros(n, dtype=dtype, device=gt_boxes.device)
        return zeros, zeros.clone(), torch.full((n,), -1, dtype=torch.long, device=gt_boxes.device)

    iou = box_iou(gt_boxes.to(dtype), pred_boxes.to(dtype)) if iou is None else iou.to(dtype)  # [N, M]
    same = gt_labels.view(n, 1) == pred_labels.view(1, m)  # [N, M]
    # Candidates: same-class predictions where an object has any, otherwise all predictions.
    cand = same | ~same.any(dim=1, keepdim=True)
    neg_inf = torch.tensor(float("-inf"), dtype=dtype, device=iou.device)
    iou_c = torch.where(cand, iou, neg_inf)
    tie = cand & (iou_c == iou_c.max(dim=1, keepdim=True).values)
    score_c = torch.where(tie, pred_scores.to(dtype).view(1, m), neg_inf)
    tie &= score_c == score_c.max(dim=1, keepdim=True).values
    # argmax returns the first maximal index: the lowest prediction index among the remaining ties.
    index = tie.to(torch.uint8).argmax(dim=1)
    rows = torch.arange(n, device=iou.device)
    return iou[rows, index], pred_scores.to(dtype)[index], index


def learned(gt_labels: torch.Tensor, pred_labels: torch.Tensor, index: torch.Tensor, iou: torch.Tensor) -> torch.Tensor:
    """Tensor[N] bool: CIPA matched a prediction of the object's class with IoU >= ``LEARNED_IOU``.

    Args:
        gt_labels: Tensor[N]; pred_labels: Tensor[M]; index, iou: the outputs of :func:`cipa_match`.
    """
    if pred_labels.numel() == 0:
        return torch.zeros_like(gt_labels, dtype=torch.bool)
    same = pred_labels[index.clamp(min=0)].to(gt_labels.device) == gt_labels
    return same & (index >= 0) & (iou >= LEARNED_IOU)


def near_prediction(
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    pred_boxes: torch.Tensor,
    pred_scores: torch.Tensor,
    pred_labels: torch.Tensor,
    min_iou: float = NEAR_IOU,
    iou: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The most confident prediction of each object's class that overlaps it (IoU >= ``min_iou``): where
    the model puts that object (the label audit's bad_location; docs/methods.md, "Label audit").

    Returns:
        (score Tensor[N], box Tensor[N, 4] xyxy): 0 and zeros for an object without one. Ties: lower index.
    """
    n = gt_boxes.shape[0]
    if n == 0 or pred_boxes.shape[0] == 0:
        return torch.zeros(n, device=gt_boxes.device), torch.zeros(n, 4, device=gt_boxes.device)
    iou = box_iou(gt_boxes.float(), pred_boxes.float()) if iou is None else iou.float()
    ok = (gt_labels.view(-1, 1) == pred_labels.view(1, -1)) & (iou >= min_iou)
    score = torch.where(ok, pred_scores.float().view(1, -1), torch.tensor(-1.0, device=iou.device))
    best, j = score.max(dim=1)
    found = best >= 0
    return torch.where(found, best, 0.0), torch.where(found[:, None], pred_boxes[j].float(), 0.0)
