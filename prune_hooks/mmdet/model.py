"""The mmdet side of the lifecycle: the train set with the test pipeline, one batch through a two-stage or
dense detector with the bbox head also run on the GT boxes, mmengine gathering, in-loop capture.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Iterable

import torch
from mmengine.dist import gather_object, get_rank, get_world_size, is_main_process
from mmengine.model import is_model_wrapper

from ..core.errors import fail
from ..core.lifecycle import Adapter, ImageOutput, StepImage
from ..core.scoring.dense import pyramid_gt_outputs
from ..core.scoring.inloop import BREAKING_TRANSFORMS, Step, replayable
from ..core.scoring.shards import Comm
from ..core.selection.methods import PROTOTYPES, SOFT_LABELS
from .config import pipeline_types
from .retrain import write_retrain_config

__all__ = ["GT_KINDS", "MMDetAdapter", "unwrap"]


class MMDetAdapter(Adapter):
    """The mmdet answers of :class:`~prune_hooks.core.lifecycle.Adapter` for a
    :class:`~prune_hooks.mmdet.hook.PruneHook` (its scored ``dataset_cfg``) in ``runner``."""

    framework = "mmdet"

    def __init__(self, hook: Any, runner) -> None:
        self.hook, self.runner = hook, runner
        self._loader = None

    def batches(self) -> Iterable[Any]:
        if self._loader is None:
            cfg = self.runner.cfg
            test = cfg.get("test_dataloader") or cfg.get("val_dataloader")
            if not test or "pipeline" not in test.get("dataset", {}):
                raise fail("scoring passes use the test pipeline: the config has no test_dataloader.dataset.pipeline")
            dataset = copy.deepcopy(self.hook.dataset_cfg)
            dataset.update(pipeline=test["dataset"]["pipeline"], test_mode=True)
            batch = self.hook.pass_batch_size or test.get("batch_size", 1)
            if batch == 1 and self.hook.pass_batch_size is None:  # the zoo's test batch: the training one instead
                batch = cfg.train_dataloader.get("batch_size", 1)
            workers = test.get("num_workers", 0) if self.hook.pass_workers is None else self.hook.pass_workers
            loader = dict(
                batch_size=batch,
                num_workers=workers,
                persistent_workers=False,
                sampler=dict(type="DefaultSampler", shuffle=False),
                dataset=dataset,
            )
            self._loader = self.runner.build_dataloader(loader, seed=0)
        return self._loader

    def model_classes(self) -> list[int]:
        return [int(c) for c in self.batches().dataset.cat_ids]

    def gt_outputs(self, model) -> frozenset[str]:
        kind = _gt_kind(model)
        if kind == "dense" and not getattr(model.bbox_head, "use_sigmoid_cls", True):
            return frozenset({PROTOTYPES})  # softmax class scores: no distribution defined for them here
        return frozenset({SOFT_LABELS, PROTOTYPES}) if kind else frozenset()

    def gt_description(self, model) -> str:
        return GT_KINDS.get(_gt_kind(model), "no RoI bbox head or dense head with a prior generator (e.g. DETR)")

    def threshold_owners(self, model) -> list[tuple[Any, str]]:
        # two-stage: the RoI head's test_cfg (the RPN's has no score_thr); one-stage: the bbox head's
        owners = []
        for part in (getattr(model, "roi_head", None), getattr(model, "bbox_head", None)):
            cfg = getattr(part, "test_cfg", None)
            if cfg is not None and "score_thr" in cfg:
                owners.append((cfg, "score_thr"))
        return owners

    def infer(self, model, batch, gt_boxes, with_gt: bool) -> Iterable[ImageOutput]:
        data = model.data_preprocessor(batch, False)
        inputs, samples = data["inputs"], data["data_samples"]
        if not with_gt:
            for s in model.predict(inputs, samples):
                p = s.pred_instances
                yield ImageOutput(s.metainfo["img_id"], p.bboxes, p.scores, p.labels)
            return
        x = model.extract_feat(inputs)
        gt = []
        for s in samples:
            w_scale, h_scale = s.metainfo["scale_factor"]
            boxes = gt_boxes(s.metainfo["img_id"]).to(inputs.device)
            gt.append(boxes * boxes.new_tensor([w_scale, h_scale, w_scale, h_scale]))
        results, probs, feats = _heads(model, x, samples, gt, rescale=True)
        for s, r, pr, ft in zip(samples, results, probs, feats):
            yield ImageOutput(s.metainfo["img_id"], r.bboxes, r.scores, r.labels, pr, ft)

    def in_loop_parts(self, model):
        """Refuse pipelines that always move or mix boxes; keep the training step's samples, its neck (or
        backbone) features and replayable head outputs."""
        found = sorted(pipeline_types(self.runner.cfg.train_dataloader.get("dataset", {})) & set(BREAKING_TRANSFORMS))
        if found:
            raise fail(
                f"PruneHook capture in_loop needs the batch's boxes to be the file's boxes resized and flipped; the "
                f"train pipeline has {found}, which move or mix them: use capture='pass' with this pipeline"
            )
        if _gt_kind(model) is None:
            raise fail(
                "PruneHook capture in_loop runs the model's inference branch on its training features: "
                f"{type(model).__name__} has no RoI bbox head or dense head with a prior generator"
            )
        feature_module = model.neck if getattr(model, "with_neck", False) else model.backbone
        return feature_module, _replay_heads(model), _training_samples

    def step_images(self, model, step: Step) -> Iterable[StepImage]:
        """The training step's samples, from the features it computed."""
        samples = step.batch
        if not samples:
            return
        x = tuple(t.detach().float() for t in step.features)  # AMP steps: half precision
        gt = [_tensor(s.gt_instances.bboxes).to(x[0].device).float() for s in samples]
        results, probs, _ = _heads(model, x, samples, gt, rescale=False)
        for s, r, pr, g in zip(samples, results, probs, gt):
            m = s.metainfo
            size, original = tuple(m["img_shape"][:2]), tuple(m["ori_shape"][:2])
            yield StepImage(m["img_id"], _tensor(r.bboxes), r.scores, r.labels, pr, g, size, original)

    def comm(self) -> Comm:
        if get_world_size() == 1:
            return Comm()
        group = _cpu_group()
        return Comm(get_rank(), get_world_size(), lambda obj, dst: gather_object(obj, dst=dst, group=group))

    def is_main(self) -> bool:
        return is_main_process()

    def log(self, message: str, warning: bool = False) -> None:
        (self.runner.logger.warning if warning else self.runner.logger.info)(f"[prune_hooks] {message}")

    def put_scalar(self, name: str, value: float) -> None:
        self.runner.message_hub.update_scalar(name, value)

    def iteration(self) -> int:
        return self.runner.iter + 1

    def run_meta(self) -> dict[str, Any]:
        h = self.hook
        return {
            "ann_file": h.ann_file,
            "train_ann_file": h.train_ann_file,
            "image_root": h.image_root,
            "iterations": self.runner.iter,
        }

    def write_retrain(self, run: Path, pruned: Path, n_keep: int, n_total: int) -> Path:
        return write_retrain_config(self.runner.cfg, pruned, n_keep, n_total, run / "retrain.py")


def _training_samples(args: tuple, kwargs: dict) -> Any:
    """The data samples of a training forward (``mode='loss'``) of an mmdet detector."""
    if kwargs.get("mode", args[2] if len(args) > 2 else None) != "loss":
        return None
    return kwargs.get("data_samples", args[1] if len(args) > 1 else None)


def _tensor(boxes) -> torch.Tensor:
    """A box tensor from mmdet's box types (``HorizontalBoxes``) or a plain tensor."""
    return getattr(boxes, "tensor", boxes)


def unwrap(model):
    return model.module if is_model_wrapper(model) else model


GT_KINDS = {
    "roi": "the RoI bbox head on GT boxes",
    "cascade": "the cascade's final stage on GT boxes",
    "dense": "the dense head's pyramid and class maps on GT boxes",
}


def _heads(model, x, samples, gt: list[torch.Tensor], rescale: bool) -> tuple[list, list, list]:
    """The inference branch on computed features ``x``: per image (InstanceData, class distributions
    on the GT boxes ``gt`` (network input coordinates) or None, their features)."""
    kind = _gt_kind(model)
    if kind == "dense":
        head = model.bbox_head
        outs = head(x)
        strides = [s[0] if isinstance(s, (tuple, list)) else s for s in head.prior_generator.strides]
        sigmoid = getattr(head, "use_sigmoid_cls", True)  # softmax scores: no distribution (gt_outputs)
        probs, feats = pyramid_gt_outputs(
            x[: len(strides)], strides, gt, outs[0] if sigmoid else None, head.num_classes
        )
        metas = [s.metainfo for s in samples]
        results = head.predict_by_feat(*outs, batch_img_metas=metas, rescale=rescale)
        return results, probs or [None] * len(gt), feats
    from mmdet.structures.bbox import bbox2roi

    roi = model.roi_head
    rpn = model.rpn_head.predict(x, samples, rescale=False)
    results = roi.predict(x, rpn, samples, rescale=rescale)
    extractor, head = roi.bbox_roi_extractor, roi.bbox_head
    if kind == "cascade":  # the final stage
        extractor, head = extractor[-1], head[-1]
    pooled = extractor(x[: extractor.num_inputs], bbox2roi(gt))
    if getattr(roi, "with_shared_head", False):
        pooled = roi.shared_head(pooled)
    seen: list[torch.Tensor] = []  # the input of fc_cls: the vector the classifier consumes
    handle = head.fc_cls.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        cls_score = head(pooled)[0]
    finally:
        handle.remove()
    counts = [len(b) for b in gt]
    return results, cls_score.softmax(dim=-1).split(counts), seen[0].flatten(1).split(counts)


def _replay_heads(model) -> dict[str, torch.nn.Module]:
    """The head the training forward runs on the features and in-loop capture can take the outputs
    of: a dense detector's bbox head, else the RPN head; none where it computes differently in eval."""
    head = model.bbox_head if _gt_kind(model) == "dense" else getattr(model, "rpn_head", None)
    return {"head": head} if replayable(head) else {}


def _gt_kind(model) -> str | None:
    """How GT-box outputs are read from ``model`` (a key of :data:`GT_KINDS`), or None.

    ``roi``: a two-stage detector whose RoI bbox head has ``fc_cls`` (Faster/Mask R-CNN); ``cascade``:
    the same per stage (``ModuleList``s), final stage; ``dense``: a single-stage detector whose
    ``bbox_head`` has a prior generator and returns per-level class maps first (RetinaNet, FCOS,
    ATSS, YOLOX, RTMDet). DETR-family heads have neither: VPS only.
    """
    roi = getattr(model, "roi_head", None)
    if roi is not None:
        if not (all(hasattr(roi, n) for n in ("bbox_roi_extractor", "bbox_head")) and hasattr(model, "rpn_head")):
            return None
        if isinstance(roi.bbox_head, torch.nn.ModuleList):
            return "cascade" if hasattr(roi.bbox_head[-1], "fc_cls") else None
        return "roi" if hasattr(roi.bbox_head, "fc_cls") else None
    head = getattr(model, "bbox_head", None)
    dense = ("prior_generator", "predict_by_feat", "num_classes")
    return "dense" if head is not None and all(hasattr(head, n) for n in dense) else None


@functools.lru_cache(maxsize=None)
def _cpu_group() -> Any:
    """A gloo group for gathering host objects (the default group when training already uses gloo; NCCL would
    move every pickled object through the GPU). Made once, by every rank, when the hook builds its run."""
    import torch.distributed as dist

    return None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
