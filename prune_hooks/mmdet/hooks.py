"""The mmengine hook: scoring passes during training, run directory and retrain.py at the end."""
from __future__ import annotations

import copy
import math
import os.path as osp
import pprint
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from mmengine.dist import all_gather_object, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

from ..core import AGGREGATIONS, PruneHooksError, describe_changes, load_coco, scale_schedule
from ..core.capture import VPSCapture
from ..core.io import atomic_write_text
from ..core.select import METHODS, write_hook_run
from ..report import report_or_warn

__all__ = ["PruneHook", "trust_own_checkpoints", "write_retrain_config"]

WRAPPERS = ("RepeatDataset", "ConcatDataset", "ClassBalancedDataset", "MultiImageMixDataset")


def _fail(msg: str) -> PruneHooksError:
    return PruneHooksError(f"[prune_hooks] {msg}")


@HOOKS.register_module()
class PruneHook(Hook):
    """Scores every training object at each epoch end (iteration loops: every ``interval`` iterations)
    and writes ``<work_dir>/prune/`` when training ends.

    Priority BELOW_NORMAL (60): after the EMA hook (NORMAL, 50; it keeps the live weights in the model
    during training and swaps only around validation and saving, so the pass scores the weights being
    trained) and before ``CheckpointHook`` (VERY_LOW, 90), so a checkpoint written at an epoch end
    already holds that epoch's pass and ``--resume`` neither loses nor repeats one.

    Args:
        methods: scores to compute; the first chooses the subset written at the end (others: the CLI).
            Any of :data:`prune_hooks.core.select.METHODS`; csod/kcenter/herding also save prototypes.
        keep_ratio: fraction of images in the subset written at the end, in (0, 1].
        aggregation: image score from object scores: max | mean | sum.
        interval: iterations between passes in iteration-based loops (default: one epoch).
        score_thr: detection score threshold during passes (low, so every object can be matched).
        dump_detections: also write each pass's detections as COCO results under ``prune/passes/``.
    """

    priority = "BELOW_NORMAL"

    def __init__(
        self,
        methods: Sequence[str] = ("vps_iou", "vps_conf"),
        keep_ratio: float = 0.5,
        aggregation: str = "max",
        interval: int | None = None,
        score_thr: float = 0.0,
        dump_detections: bool = False,
    ) -> None:
        methods = [methods] if isinstance(methods, str) else list(methods)
        if not methods:
            raise _fail("PruneHook methods is empty")
        for m in methods:
            if m not in METHODS:
                raise _fail(f"PruneHook methods: unknown method {m!r}; choose from {list(METHODS)}")
        if aggregation not in AGGREGATIONS:
            raise _fail(f"PruneHook aggregation must be one of {list(AGGREGATIONS)}, got {aggregation!r}")
        if not (isinstance(keep_ratio, (int, float)) and 0 < keep_ratio <= 1):
            raise _fail(f"PruneHook keep_ratio must be in (0, 1], got {keep_ratio}")
        if interval is not None and (not isinstance(interval, int) or interval < 1):
            raise _fail(f"PruneHook interval must be a positive number of iterations, got {interval}")
        self.methods, self.keep_ratio, self.aggregation = methods, float(keep_ratio), aggregation
        self.interval, self.score_thr, self.dump = interval, float(score_thr), bool(dump_detections)
        self.want_prototypes = any(m in methods for m in ("csod", "kcenter", "herding"))
        self.capture: VPSCapture | None = None
        self._loader = None

    # -- setup ---------------------------------------------------------------------------------

    def before_run(self, runner) -> None:
        self.ann_file, self.dataset_cfg = check_dataset(runner.cfg)
        prefix = self.dataset_cfg.get("data_prefix", {}) or {}
        self.image_root = osp.join(self.dataset_cfg.get("data_root") or "", prefix.get("img", prefix.get("img_path", "")))
        try:
            self.index = load_coco(self.ann_file)
        except PruneHooksError as e:
            raise _fail(str(e)) from None
        model = _unwrap(runner.model)
        if self.want_prototypes and _roi_head(model) is None:
            raise _fail(f"PruneHook methods {self.methods} need GT-box RoI features, but {type(model).__name__} has no roi_head with a bbox head")
        self.iter_based = isinstance(runner.train_loop, IterBasedTrainLoop)
        batch = runner.cfg.train_dataloader.get("batch_size", 1) * get_world_size()
        self.epoch_iters = math.ceil(self.index.num_images / batch)
        device = next(model.parameters()).device
        self.capture = VPSCapture(self.index, device=device, record=self.dump)
        self.out_dir = Path(runner.work_dir) / "prune"
        self._undo_trust = trust_own_checkpoints(runner.work_dir) if getattr(runner, "_resume", False) else None

    def before_train(self, runner) -> None:
        if self._undo_trust is not None:  # the resume is done
            self._undo_trust()
            self._undo_trust = None

    # -- scoring passes --------------------------------------------------------------------------

    def after_train_epoch(self, runner) -> None:
        if not self.iter_based:
            self.scoring_pass(runner, prototypes=self.want_prototypes and runner.epoch + 1 >= runner.max_epochs)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.iter_based and (runner.iter + 1) % (self.interval or self.epoch_iters) == 0:
            self.scoring_pass(runner, prototypes=self.want_prototypes and runner.iter + 1 >= runner.max_iters)

    def _build_loader(self, runner):
        cfg = runner.cfg
        test = cfg.get("test_dataloader") or cfg.get("val_dataloader")
        if not test or "pipeline" not in test.get("dataset", {}):
            raise _fail("scoring passes use the test pipeline: the config has no test_dataloader.dataset.pipeline")
        dataset = copy.deepcopy(self.dataset_cfg)
        dataset.update(pipeline=test["dataset"]["pipeline"], test_mode=True)
        loader = dict(
            batch_size=test.get("batch_size", 1),
            num_workers=test.get("num_workers", 0),
            persistent_workers=False,
            sampler=dict(type="DefaultSampler", shuffle=False),
            dataset=dataset,
        )
        return runner.build_dataloader(loader, seed=0)

    @torch.no_grad()
    def scoring_pass(self, runner, prototypes: bool = False, vps: bool = True) -> None:
        model = _unwrap(runner.model)
        if self._loader is None:
            self._loader = self._build_loader(runner)
            cat_ids = list(self._loader.dataset.cat_ids)
            self.capture.set_model_classes(cat_ids)
            self._cat_lut = torch.as_tensor(cat_ids, device=self.capture.device)
        roi = _roi_head(model)
        start = time.perf_counter()
        if prototypes:
            self.capture.collect_prototypes()
        was_training = model.training
        restore = _set_score_thr(roi, self.score_thr)
        model.eval()
        try:
            for batch in self._loader:
                for img_id, boxes, scores, labels, probs, feats in self._infer(model, roi, batch):
                    self.capture.add_image(img_id, boxes, scores, self._cat_lut[labels.to(self._cat_lut.device)], probs=probs, features=feats)
        finally:
            model.train(was_training)
            restore()
        gather = all_gather_object if get_world_size() > 1 else None
        closed = self.capture.close_pass(self.out_dir, gather, is_main_process(), vps=vps, dump=self.dump)
        if closed is None:
            return
        t, seen = closed
        elapsed = time.perf_counter() - start
        if is_main_process():
            runner.message_hub.update_scalar("prune/pass_seconds", elapsed)
            runner.logger.info(
                f"[prune_hooks] scoring pass {t} after iteration {runner.iter + 1}: {seen} images (this rank), "
                f"{elapsed:.1f}s ({elapsed / max(seen, 1):.3f}s/image)"
            )

    def _infer(self, model, roi, batch):
        """Per image: (img_id, boxes xyxy original coords, scores, labels, GT-box probs, GT-box features)."""
        data = model.data_preprocessor(batch, False)
        inputs, samples = data["inputs"], data["data_samples"]
        if roi is None:
            for s in model.predict(inputs, samples):
                p = s.pred_instances
                yield s.metainfo["img_id"], p.bboxes, p.scores, p.labels, None, None
            return
        x = model.extract_feat(inputs)
        rpn = model.rpn_head.predict(x, samples, rescale=False)
        results = roi.predict(x, rpn, samples, rescale=True)
        gt = []
        for s in samples:
            w_scale, h_scale = s.metainfo["scale_factor"]
            boxes = self.capture.gt_boxes(s.metainfo["img_id"]).to(inputs.device)
            gt.append(boxes * boxes.new_tensor([w_scale, h_scale, w_scale, h_scale]))
        from mmdet.structures.bbox import bbox2roi

        rois = bbox2roi(gt)
        feats = roi.bbox_roi_extractor(x[: roi.bbox_roi_extractor.num_inputs], rois)
        if getattr(roi, "with_shared_head", False):
            feats = roi.shared_head(feats)
        seen: list[torch.Tensor] = []
        handle = roi.bbox_head.fc_cls.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        try:
            cls_score = roi.bbox_head(feats)[0]
        finally:
            handle.remove()
        counts = [len(b) for b in gt]
        probs = cls_score.softmax(dim=-1).split(counts)
        box_feats = seen[0].flatten(1).split(counts)
        for s, r, pr, ft in zip(samples, results, probs, box_feats):
            yield s.metainfo["img_id"], r.bboxes, r.scores, r.labels, pr, ft

    # -- end of training ------------------------------------------------------------------------

    def after_train(self, runner) -> None:
        if self.capture is None or self.capture.acc.passes == 0:
            runner.logger.warning("[prune_hooks] no scoring pass ran: nothing written")
            return
        if self.want_prototypes and not self.capture.prototypes_taken:
            self.scoring_pass(runner, prototypes=True, vps=False)
        if is_main_process():
            self.write_outputs(runner)

    def write_outputs(self, runner) -> dict[str, Any]:
        run = self.out_dir
        meta = {"ann_file": self.ann_file, "image_root": self.image_root, "iterations": runner.iter, "methods": self.methods}
        subset, pruned, n_keep = write_hook_run(run, self.capture, "mmdet", meta, self.methods[0], self.keep_ratio, self.aggregation)
        retrain = write_retrain_config(runner.cfg, pruned, n_keep, self.index.num_images, run / "retrain.py")
        report_or_warn(run, self.image_root)
        runner.logger.info(
            f"[prune_hooks] prune run written to {run}: kept {n_keep} of {self.index.num_images} images "
            f"({self.methods[0]}); retrain with {retrain}"
        )
        return subset

    # -- checkpoint state -----------------------------------------------------------------------

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.capture is not None:
            checkpoint["prune_hooks"] = self.capture.state_dict()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Only a resumed run continues the statistics; load_from (new training) starts empty.
        if "prune_hooks" in checkpoint and getattr(runner, "_resume", False) and self.capture is not None:
            self.capture.load_state_dict(checkpoint["prune_hooks"])
            runner.logger.info(f"[prune_hooks] resumed prune state: {self.capture.acc.passes} scoring passes")


def check_dataset(cfg) -> tuple[str, dict]:
    """The training set's annotation file (data_root applied) and dataset config; refuses wrappers."""
    dataset = cfg.train_dataloader.get("dataset", {})
    kind = dataset.get("type", "")
    if kind in WRAPPERS:
        raise _fail(
            f"train_dataloader.dataset is a {kind}: PruneHook scores one COCO dataset; put the "
            "CocoDataset itself in train_dataloader.dataset for the proxy run (dataset wrappers are not supported)"
        )
    ann = dataset.get("ann_file")
    if not ann:
        raise _fail(f"train_dataloader.dataset ({kind or 'no type'}) has no ann_file: PruneHook needs a COCO annotation file to prune")
    path = osp.join(dataset.get("data_root") or "", ann)
    if not osp.isfile(path):
        raise _fail(f"train_dataloader.dataset.ann_file {path!r} not found")
    return path, dataset


def write_retrain_config(cfg, pruned_json: Path, n_keep: int, n_total: int, path: Path) -> Path:
    """``retrain.py``: inherits the user's config, trains on the pruned file, PruneHook removed,
    iteration-valued settings scaled by ``n_keep / n_total`` in iteration-based loops."""
    fraction = n_keep / n_total
    body: dict[str, Any] = {
        # data_root as resolved for this run (it may come from an environment variable)
        "train_dataloader": {"dataset": {"ann_file": str(Path(pruned_json).resolve()), "data_root": cfg.train_dataloader.dataset.get("data_root")}},
        "work_dir": str(Path(cfg.work_dir).resolve()) + "_retrain",
        "custom_hooks": [h for h in cfg.get("custom_hooks", []) if h.get("type") not in ("PruneHook", PruneHook)],
    }
    changes: list = []
    iter_based = cfg.train_cfg.get("type") in ("IterBasedTrainLoop", IterBasedTrainLoop) or (
        "max_iters" in cfg.train_cfg and "max_epochs" not in cfg.train_cfg
    )
    if iter_based:
        plain = {
            "train_cfg": dict(cfg.train_cfg),
            "default_hooks": {"checkpoint": dict(cfg.default_hooks.get("checkpoint", {}))},
            "param_scheduler": [dict(s) for s in _as_list(cfg.get("param_scheduler"))],
        }
        keys = ["train_cfg.max_iters", "train_cfg.val_interval"]
        if not plain["default_hooks"]["checkpoint"].get("by_epoch", True):
            keys.append("default_hooks.checkpoint.interval")
        for i, sched in enumerate(plain["param_scheduler"]):
            if not sched.get("by_epoch", True):
                # an open end (mmengine's default: sys.maxsize) stays open
                keys += [f"param_scheduler.{i}.{k}" for k in ("begin", "end", "milestones") if k in sched and _finite(sched[k])]
        changes = scale_schedule(plain, keys, fraction)
        body["train_cfg"] = plain["train_cfg"]
        if "default_hooks.checkpoint.interval" in keys:
            body["default_hooks"] = plain["default_hooks"]
        if plain["param_scheduler"]:
            body["param_scheduler"] = plain["param_scheduler"]
    note = describe_changes(changes, fraction) if iter_based else "epoch-based loop: epochs kept (iterations shrink with the data)"
    if cfg.filename:
        base = f"_base_ = {str(Path(cfg.filename).resolve())!r}\n"
    else:  # a config built in code: write it whole
        base = cfg.pretty_text + "\n"
    text = (
        f"# generated by prune_hooks: {n_keep}/{n_total} images; {note}\n" + base
        + "".join(f"{k} = {pprint.pformat(_plain(v), width=100, sort_dicts=False)}\n" for k, v in body.items())
    )
    return atomic_write_text(path, text)


def trust_own_checkpoints(work_dir: str):
    """Let mmengine resume from checkpoints the run itself wrote in ``work_dir``; returns an undo function.

    torch >= 2.6 loads with ``weights_only=True``, which cannot read mmengine 0.10's checkpoints (its
    message hub pickles bound methods through ``getattr``; allowing ``getattr`` globally would open the
    unpickler to arbitrary code). For the duration of the resume only, files under ``work_dir`` load
    with ``weights_only=False``; any other path (``load_from``, a URL) keeps torch's safe default.
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    original = CheckpointLoader._schemes.get("")
    root = Path(work_dir).resolve()

    def load_local(filename, map_location):
        path = Path(filename).expanduser().resolve()
        if root in path.parents and path.is_file():
            return torch.load(path, map_location=map_location, weights_only=False)
        return original(filename, map_location)

    CheckpointLoader.register_scheme(prefixes="", loader=load_local, force=True)

    def undo() -> None:
        CheckpointLoader.register_scheme(prefixes="", loader=original, force=True)

    return undo


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


def _roi_head(model):
    roi = getattr(model, "roi_head", None)
    ok = roi is not None and all(hasattr(roi, n) for n in ("bbox_roi_extractor", "bbox_head")) and hasattr(model, "rpn_head")
    return roi if ok and hasattr(roi.bbox_head, "fc_cls") else None


def _set_score_thr(roi, thr: float):
    cfg = getattr(roi, "test_cfg", None) if roi is not None else None
    if cfg is None or "score_thr" not in cfg:
        return lambda: None
    old = cfg.score_thr
    cfg.score_thr = thr

    def restore() -> None:
        cfg.score_thr = old

    return restore


def _finite(v) -> bool:
    values = v if isinstance(v, (list, tuple)) else [v]
    return all(isinstance(x, int) and x < 2**31 for x in values)


def _as_list(v) -> list:
    if v is None:
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v
