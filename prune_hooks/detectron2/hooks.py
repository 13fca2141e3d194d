"""Detectron2 hooks: VPS scoring passes during training, run directory and retrain.yaml at the end."""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.engine import HookBase, hooks
from detectron2.utils import comm

from detectron2.structures import Boxes

from ..core import AGGREGATIONS, PruneHooksError, describe_changes, load_coco, scale_schedule
from ..core.capture import VPSCapture
from ..core.io import atomic_write_text
from ..core.select import METHODS, write_hook_run
from ..report import report_or_warn

__all__ = ["PruneHook", "build_prune_hooks", "check_prune_config", "insert_prune_hooks", "write_retrain_config"]

logger = logging.getLogger("detectron2.prune_hooks")

SCHEDULE_KEYS = ("SOLVER.MAX_ITER", "SOLVER.STEPS", "SOLVER.WARMUP_ITERS", "TEST.EVAL_PERIOD", "SOLVER.CHECKPOINT_PERIOD")


def _fail(msg: str) -> PruneHooksError:
    return PruneHooksError(f"[prune_hooks] {msg}")


class PruneHook(HookBase):
    """Scores every training object at each epoch end; writes ``OUTPUT_DIR/prune/`` when training ends.

    Place it before ``PeriodicCheckpointer`` (:func:`insert_prune_hooks`): a checkpoint written at an
    epoch end then already holds that epoch's pass, so ``--resume`` neither loses nor repeats one.
    """

    def __init__(self, cfg: CfgNode) -> None:
        self.dataset, self.index = check_prune_config(cfg)
        p = cfg.PRUNE
        meta = MetadataCatalog.get(self.dataset)
        self.image_root = getattr(meta, "image_root", "")
        # Predictions come in contiguous ids; the index speaks COCO category ids.
        to_coco = getattr(meta, "thing_dataset_id_to_contiguous_id", None) or {int(c): i for i, c in enumerate(self.index.category_ids)}
        lut = torch.zeros(max(to_coco.values()) + 1, dtype=torch.long)
        for coco_id, contiguous in to_coco.items():
            lut[contiguous] = int(coco_id)
        self.cfg = cfg.clone()
        self.period = int(p.PERIOD) or math.ceil(self.index.num_images / cfg.SOLVER.IMS_PER_BATCH)
        self.capture = VPSCapture(self.index, device=cfg.MODEL.DEVICE, record=bool(p.DUMP_DETECTIONS))
        self._lut = lut.to(self.capture.device)
        self.out_dir = Path(cfg.OUTPUT_DIR) / "prune"
        self._loader = None
        self.capture.set_model_classes([int(c) for c in lut.tolist()])
        self.want_prototypes = any(m in p.METHODS for m in ("csod", "kcenter", "herding"))

    def before_train(self) -> None:
        roi = _box_head(_unwrap(self.trainer.model))
        if roi is None:
            if self.want_prototypes:
                raise _fail(
                    f"PRUNE.METHODS {list(self.cfg.PRUNE.METHODS)} need GT-box RoI features, but the model "
                    f"({type(_unwrap(self.trainer.model)).__name__}) has no standard box head "
                    "(roi_heads.box_pooler/box_head/box_predictor)"
                )
            logger.warning("model has no standard box head: no soft labels (method entropy unavailable)")

    # -- scoring pass -------------------------------------------------------------------------

    def after_step(self) -> None:
        if (self.trainer.iter + 1) % self.period == 0:
            # The pass after the last iteration scores with the final model: it also takes the prototypes.
            self.scoring_pass(prototypes=self.want_prototypes and self.trainer.iter + 1 >= self.trainer.max_iter)

    @torch.no_grad()
    def scoring_pass(self, prototypes: bool = False, vps: bool = True) -> None:
        """One pass over the training images in eval mode: CIPA + soft labels (+ prototypes)."""
        model = _unwrap(self.trainer.model)
        if self._loader is None:
            self._loader = build_detection_test_loader(self.cfg, self.dataset)
        start = time.perf_counter()
        was_training = model.training
        restore = _set_score_thresh(model, float(self.cfg.PRUNE.SCORE_THRESH))
        roi = _box_head(model)
        if prototypes:
            self.capture.collect_prototypes()
        model.eval()
        try:
            for inputs in self._loader:
                if roi is None:
                    outputs, probs, feats = model(inputs), [None] * len(inputs), [None] * len(inputs)
                else:
                    outputs, probs, feats = self._infer_with_gt(model, roi, inputs)
                for inp, out, pr, ft in zip(inputs, outputs, probs, feats):
                    inst = out["instances"]
                    self.capture.add_image(
                        inp["image_id"], inst.pred_boxes.tensor, inst.scores, self._lut[inst.pred_classes.to(self._lut.device)],
                        probs=pr, features=ft,
                    )
        finally:
            model.train(was_training)
            restore()
        gather = comm.all_gather if comm.get_world_size() > 1 else None
        closed = self.capture.close_pass(self.out_dir, gather, comm.is_main_process(), vps=vps, dump=bool(self.cfg.PRUNE.DUMP_DETECTIONS))
        if closed is None:
            return
        t, seen = closed
        elapsed = time.perf_counter() - start
        if comm.is_main_process():
            self.trainer.storage.put_scalar("prune/pass_seconds", elapsed, smoothing_hint=False)
            logger.info(
                "scoring pass %d at iteration %d: %d images (this rank), %.1fs (%.3fs/image)",
                t, self.trainer.iter + 1, seen, elapsed, elapsed / max(seen, 1),
            )

    def _infer_with_gt(self, model, roi, inputs):
        """GeneralizedRCNN inference that also runs the box head on each image's GT boxes, on the same
        backbone features: predictions, class distributions (soft labels) and RoI features per image."""
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
        instances, _ = model.roi_heads(images, features, proposals, None)
        outputs = model._postprocess(instances, inputs, images.image_sizes)
        gt = []
        for inp, (h, w) in zip(inputs, images.image_sizes):
            boxes = self.capture.gt_boxes(inp["image_id"]).to(images.tensor.device)
            scale = boxes.new_tensor([w / inp["width"], h / inp["height"]] * 2)
            gt.append(Boxes(boxes * scale))
        pooled = roi.box_pooler([features[f] for f in roi.box_in_features], gt)
        box_features = roi.box_head(pooled)
        logits = roi.box_predictor(box_features)[0]
        counts = [len(b) for b in gt]
        return outputs, logits.softmax(dim=-1).split(counts), box_features.flatten(1).split(counts)

    # -- end of training ----------------------------------------------------------------------

    def after_train(self) -> None:
        if self.capture.acc.passes == 0:
            if comm.is_main_process():
                logger.warning("no scoring pass ran (period %d, iterations %d): nothing written", self.period, self.trainer.iter)
            return
        if self.want_prototypes and not self.capture.prototypes_taken:
            # the last pass was not after the last iteration: a features-only pass with the final model
            self.scoring_pass(prototypes=True, vps=False)
        if comm.is_main_process():
            self.write_outputs()

    def write_outputs(self) -> dict[str, Any]:
        p = self.cfg.PRUNE
        run = self.out_dir
        meta = {
            "dataset": self.dataset, "image_root": self.image_root, "period": self.period,
            "iterations": self.trainer.iter, "methods": list(p.METHODS),
        }
        method, agg = p.METHODS[0], p.AGGREGATION
        subset, pruned, n_keep = write_hook_run(run, self.capture, "detectron2", meta, method, float(p.KEEP_RATIO), agg)
        retrain = write_retrain_config(self.cfg, self.dataset, pruned, self.image_root, n_keep, self.index.num_images, run / "retrain.yaml")
        report_or_warn(run, self.image_root)
        logger.info("prune run written to %s: kept %d of %d images (%s, %s); retrain with %s", run, n_keep, self.index.num_images, method, agg, retrain)
        return subset

    # -- checkpoint state ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return self.capture.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capture.load_state_dict(state)
        logger.info("resumed prune state: %d scoring passes", self.capture.acc.passes)


def check_prune_config(cfg: CfgNode) -> tuple[str, Any]:
    """Validate ``cfg.PRUNE`` and the training set; returns (dataset name, its CocoIndex).

    Call it before the trainer loads data (``tools/train_net.py`` does) so a bad config fails at once.
    """
    p = cfg.PRUNE
    if not p.METHODS:
        raise _fail("PRUNE.METHODS is empty")
    for m in p.METHODS:
        if m not in METHODS:
            raise _fail(f"PRUNE.METHODS: unknown or unsupported method {m!r}; this version supports {list(METHODS)}")
    if "csod" in p.METHODS and cfg.MODEL.META_ARCHITECTURE != "GeneralizedRCNN":
        raise _fail(f"PRUNE.METHODS has csod, which needs a box head: MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r} has none")
    if p.AGGREGATION not in AGGREGATIONS:
        raise _fail(f"PRUNE.AGGREGATION must be one of {list(AGGREGATIONS)}, got {p.AGGREGATION!r}")
    if not (0 < float(p.KEEP_RATIO) <= 1):
        raise _fail(f"PRUNE.KEEP_RATIO must be in (0, 1], got {p.KEEP_RATIO}")
    if int(p.PERIOD) < 0:
        raise _fail(f"PRUNE.PERIOD must be >= 0 (0 = one epoch), got {p.PERIOD}")
    if len(cfg.DATASETS.TRAIN) != 1:
        raise _fail(f"DATASETS.TRAIN must name one COCO dataset to prune, got {list(cfg.DATASETS.TRAIN)}")
    dataset = cfg.DATASETS.TRAIN[0]
    json_file = getattr(MetadataCatalog.get(dataset), "json_file", None)
    if not json_file:
        raise _fail(
            f"DATASETS.TRAIN {dataset!r} is not COCO-registered (its metadata has no json_file, so there is "
            "no annotation file to prune): register it with register_coco_instances or PRUNE.COCO_DATASETS"
        )
    try:
        return dataset, load_coco(json_file)
    except PruneHooksError as e:
        raise _fail(str(e)) from None


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel


def _box_head(model: torch.nn.Module):
    """The model's ROI heads when they have one standard box head (pooler, head, predictor), else None."""
    roi = getattr(model, "roi_heads", None)
    parts = [getattr(roi, n, None) for n in ("box_pooler", "box_head", "box_predictor", "box_in_features")]
    if roi is None or any(x is None for x in parts) or isinstance(roi.box_predictor, torch.nn.ModuleList):
        return None
    if not all(hasattr(model, n) for n in ("preprocess_image", "backbone", "proposal_generator", "_postprocess")):
        return None
    return roi


def _set_score_thresh(model: torch.nn.Module, thresh: float):
    """Lower the detector's test score threshold for a pass; returns a function that restores it."""
    owners = []
    for mod in (getattr(getattr(model, "roi_heads", None), "box_predictor", None), model):
        if mod is not None and hasattr(mod, "test_score_thresh"):
            owners.append((mod, mod.test_score_thresh))
            mod.test_score_thresh = thresh
            break
    if not owners:
        logger.warning("model has no test_score_thresh: scoring passes use its own threshold")

    def restore() -> None:
        for mod, value in owners:
            mod.test_score_thresh = value

    return restore


def write_retrain_config(
    cfg: CfgNode, dataset: str, pruned_json: Path, image_root: str, n_keep: int, n_total: int, path: Path
) -> Path:
    """``cfg`` training on the pruned file, schedule scaled by ``n_keep / n_total``, PRUNE disabled."""
    new = cfg.clone()
    new.defrost()
    name = f"{dataset}_{Path(pruned_json).stem}"
    new.DATASETS.TRAIN = (name,)
    new.PRUNE.COCO_DATASETS = [e for e in cfg.PRUNE.COCO_DATASETS if e[0] != name] + [[name, str(Path(pruned_json).resolve()), str(image_root)]]
    new.PRUNE.ENABLED = False
    new.OUTPUT_DIR = str(Path(cfg.OUTPUT_DIR).resolve()) + "_retrain"
    fraction = n_keep / n_total
    changes = scale_schedule(new, SCHEDULE_KEYS, fraction)
    logger.info(describe_changes(changes, fraction))
    header = f"# generated by prune_hooks: {n_keep}/{n_total} images of {dataset}; {describe_changes(changes, fraction)}\n"
    return atomic_write_text(path, header + new.dump())


def build_prune_hooks(cfg: CfgNode) -> list[HookBase]:
    """The prune hooks ``cfg.PRUNE`` asks for (none when ``PRUNE.ENABLED`` is False)."""
    return [PruneHook(cfg)] if cfg.PRUNE.ENABLED else []


def insert_prune_hooks(hook_list: list[HookBase], cfg: CfgNode) -> list[HookBase]:
    """``hook_list`` with the prune hooks placed just before the first ``PeriodicCheckpointer``.

    Use in ``DefaultTrainer.build_hooks``: ``return insert_prune_hooks(super().build_hooks(), self.cfg)``.
    """
    new = build_prune_hooks(cfg)
    at = next((i for i, h in enumerate(hook_list) if isinstance(h, hooks.PeriodicCheckpointer)), len(hook_list))
    return hook_list[:at] + new + hook_list[at:]
