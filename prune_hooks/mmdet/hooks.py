"""The mmengine hook: scoring passes during training, run directory and retrain.py at the end.

The lifecycle is the core's (:class:`~prune_hooks.core.lifecycle.ScoringRun`); this module is the
mmdet side of it: the train set with the test pipeline, one batch through a two-stage detector with
the bbox head also run on the GT boxes, mmengine gathering, and ``retrain.py``.
"""

from __future__ import annotations

import copy
import math
import os.path as osp
import pprint
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from mmengine.dist import all_gather_object, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

from ..core import PruneHooksError, describe_changes, load_coco, scale_schedule
from ..core.dense import pyramid_gt_outputs
from ..core.inloop import BREAKING_TRANSFORMS, HeadReplay, replayable
from ..core.io import atomic_write_text
from ..core.lifecycle import COVERAGE, Adapter, ImageOutput, ScoringRun, StepImage, check_coverage, check_options
from ..core.methods import PROTOTYPES, SOFT_LABELS
from ..core.schedule import cap_warmup, drop_late_milestones
from ..core.unseen import check_score_set

__all__ = ["PruneHook", "trust_own_checkpoints", "write_retrain_config"]

WRAPPERS = ("RepeatDataset", "ConcatDataset", "ClassBalancedDataset", "MultiImageMixDataset")
OPTION_LABELS = {
    "methods": "PruneHook methods",
    "keep_ratio": "PruneHook keep_ratio",
    "aggregation": "PruneHook aggregation",
    "capture": "PruneHook capture",
    "other_set": "PruneHook score_ann_file",
    **{name: f"PruneHook {name}" for name in COVERAGE},
}


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
            Any registered method (:mod:`prune_hooks.core.methods`); those that need prototypes make
            the hook save them.
        keep_ratio: fraction of images in the subset written at the end, in (0, 1].
        aggregation: image score from object scores: max | mean | sum.
        interval: iterations between passes in iteration-based loops (default: one epoch).
        score_thr: detection score threshold during passes (low, so every object can be matched).
        dump_detections: also write each pass's detections as COCO results under ``prune/passes/``.
        score_ann_file: score this COCO file's images instead of the training set's (UNSEEN fold
            proxies; relative paths are joined to the training set's ``data_root``). Its images must
            not be training images unless ``score_allow_overlap`` (then a warning). Such a run writes
            no retrain.py: its subset is not a training plan by itself.
        score_data_prefix: image directory of ``score_ann_file`` (default: the training set's ``data_prefix``).
        capture: ``pass`` (scoring passes over the training set with the test pipeline) or ``in_loop``
            (each training batch after its step, from the features the step computed; docs/methods.md,
            "In-loop capture"). in_loop is refused with train pipelines that move or mix boxes
            (:data:`~prune_hooks.core.inloop.BREAKING_TRANSFORMS`) and with ``score_ann_file``.
        stratify, group_by, per_group_max, dedup: coverage of the subset written at the end
            (docs/methods.md, "Coverage options"; the CLI's --stratify, --group-by, --per-group-max,
            --dedup): CCS strata over the first method's score; spread over an image field or
            FIELD:REGEX, at most ``per_group_max`` per group (None: round robin); skip images whose mean
            prototype has cosine >= ``dedup`` with a kept one. None / False = off.
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
        score_ann_file: str | None = None,
        score_data_prefix: str | dict | None = None,
        score_allow_overlap: bool = False,
        capture: str = "pass",
        stratify: bool = False,
        group_by: str | None = None,
        per_group_max: int | None = None,
        dedup: float | None = None,
    ) -> None:
        self.coverage = {"stratify": stratify, "group_by": group_by, "per_group_max": per_group_max, "dedup": dedup}
        self.methods = check_options(
            methods, keep_ratio, aggregation, OPTION_LABELS, capture, other_set=bool(score_ann_file)
        )
        self.in_loop = capture == "in_loop"
        self._stash: dict[str, Any] = {}
        self._handles: list[Any] = []
        self._replay = HeadReplay({})
        self.score_ann_file, self.score_data_prefix = score_ann_file, score_data_prefix
        self.score_allow_overlap = bool(score_allow_overlap)
        if interval is not None and (not isinstance(interval, int) or interval < 1):
            raise _fail(f"PruneHook interval must be a positive number of iterations, got {interval}")
        self.keep_ratio, self.aggregation = float(keep_ratio), aggregation
        self.interval, self.score_thr, self.dump = interval, float(score_thr), bool(dump_detections)
        self.run: ScoringRun | None = None

    def before_run(self, runner) -> None:
        self.ann_file, self.dataset_cfg = check_dataset(runner.cfg)
        self.train_ann_file = self.ann_file
        try:
            index = train_index = load_coco(self.ann_file)
        except PruneHooksError as e:
            raise _fail(str(e)) from None
        if self.score_ann_file:  # score another set: the train set's config with its file and images
            self.ann_file = osp.join(self.dataset_cfg.get("data_root") or "", self.score_ann_file)
            if not osp.isfile(self.ann_file):
                raise _fail(f"PruneHook score_ann_file {self.ann_file!r} not found")
            self.dataset_cfg = copy.deepcopy(self.dataset_cfg)
            self.dataset_cfg["ann_file"] = self.score_ann_file
            if self.score_data_prefix is not None:
                prefix = self.score_data_prefix
                self.dataset_cfg["data_prefix"] = dict(img=prefix) if isinstance(prefix, str) else dict(prefix)
            try:
                index = load_coco(self.ann_file)
                check_score_set(
                    train_index, index, self.score_allow_overlap, "PruneHook score_ann_file", warn=runner.logger.warning
                )
            except PruneHooksError as e:
                raise _fail(str(e)) from None
        prefix = self.dataset_cfg.get("data_prefix", {}) or {}
        self.image_root = osp.join(
            self.dataset_cfg.get("data_root") or "", prefix.get("img", prefix.get("img_path", ""))
        )
        model = _unwrap(runner.model)
        self.run = ScoringRun(
            _MMDetAdapter(self, runner),
            index,
            methods=self.methods,
            keep_ratio=self.keep_ratio,
            aggregation=self.aggregation,
            score_thresh=self.score_thr,
            dump=self.dump,
            device=next(model.parameters()).device,
            out_dir=Path(runner.work_dir) / "prune",
            scores_training_set=not self.score_ann_file,
            capture="in_loop" if self.in_loop else "pass",
            coverage=check_coverage(self.coverage, self.methods, OPTION_LABELS, index),
        )
        self.run.check_model(model, "PruneHook methods")
        if self.in_loop:
            self._start_in_loop(runner, model)
        self.iter_based = isinstance(runner.train_loop, IterBasedTrainLoop)
        batch = runner.cfg.train_dataloader.get("batch_size", 1) * get_world_size()
        self.epoch_iters = math.ceil(train_index.num_images * _repeats(runner.cfg.train_dataloader.dataset) / batch)
        self._undo_trust = trust_own_checkpoints(runner.work_dir) if getattr(runner, "_resume", False) else None

    def before_train(self, runner) -> None:
        if self._undo_trust is not None:  # the resume is done
            self._undo_trust()
            self._undo_trust = None

    def _start_in_loop(self, runner, model) -> None:
        """Refuse pipelines that always move or mix boxes; keep the training step's samples, features and
        replayable head outputs."""
        found = sorted(_pipeline_types(runner.cfg.train_dataloader.get("dataset", {})) & set(BREAKING_TRANSFORMS))
        if found:
            raise _fail(
                f"PruneHook capture in_loop needs the batch's boxes to be the file's boxes resized and flipped; the "
                f"train pipeline has {found}, which move or mix them: use capture='pass' with this pipeline"
            )
        if _gt_kind(model) is None:
            raise _fail(
                "PruneHook capture in_loop runs the model's inference branch on its training features: "
                f"{type(model).__name__} has no RoI bbox head or dense head with a prior generator"
            )
        feature_module = model.neck if getattr(model, "with_neck", False) else model.backbone
        self._handles = [
            model.register_forward_pre_hook(self._keep_samples, with_kwargs=True),
            feature_module.register_forward_hook(self._keep_features),
        ]
        self._replay = HeadReplay(_replay_heads(model))
        runner.logger.info(f"[prune_hooks] {self._replay.describe()}")

    def _keep_samples(self, module, args, kwargs) -> None:
        if module.training and kwargs.get("mode", args[2] if len(args) > 2 else None) == "loss":
            self._stash = {"samples": kwargs.get("data_samples", args[1] if len(args) > 1 else None)}
            self._replay.start()

    def _keep_features(self, module, args, output) -> None:
        if module.training and "samples" in self._stash:
            self._stash["features"] = output

    def after_train_epoch(self, runner) -> None:
        if not self.iter_based:
            self._pass(runner, last=self.is_last_train_epoch(runner))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.in_loop:
            self.run.observe_step(_unwrap(runner.model))
        if self.iter_based and self.every_n_train_iters(runner, self.interval or self.epoch_iters):
            self._pass(runner, last=self.is_last_train_iter(runner))

    def _pass(self, runner, last: bool) -> None:
        if self.in_loop:
            self.run.close_period()
            return
        # The pass after the last iteration scores with the final model: it also takes the prototypes.
        self.run.scoring_pass(_unwrap(runner.model), prototypes=self.run.want_prototypes and last)

    def after_train(self, runner) -> None:
        for h in self._handles:
            h.remove()
        self._replay.remove()
        self._handles, self._stash = [], {}
        if self.run is None:
            return
        meta = {
            "ann_file": self.ann_file,
            "train_ann_file": self.train_ann_file,
            "image_root": self.image_root,
            "iterations": runner.iter,
        }
        self.run.finish(_unwrap(runner.model), meta)

    # -- checkpoint state -----------------------------------------------------------------------

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.run is not None:
            checkpoint["prune_hooks"] = self.run.state_dict()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Only a resumed run continues the statistics; load_from (new training) starts empty.
        if "prune_hooks" in checkpoint and getattr(runner, "_resume", False) and self.run is not None:
            self.run.load_state_dict(checkpoint["prune_hooks"])


class _MMDetAdapter(Adapter):
    """The mmdet answers of :class:`~prune_hooks.core.lifecycle.Adapter` for a :class:`PruneHook`."""

    framework = "mmdet"

    def __init__(self, hook: PruneHook, runner) -> None:
        self.hook, self.runner = hook, runner
        self._loader = None

    def batches(self) -> Iterable[Any]:
        if self._loader is None:
            cfg = self.runner.cfg
            test = cfg.get("test_dataloader") or cfg.get("val_dataloader")
            if not test or "pipeline" not in test.get("dataset", {}):
                raise _fail("scoring passes use the test pipeline: the config has no test_dataloader.dataset.pipeline")
            dataset = copy.deepcopy(self.hook.dataset_cfg)
            dataset.update(pipeline=test["dataset"]["pipeline"], test_mode=True)
            loader = dict(
                batch_size=test.get("batch_size", 1),
                num_workers=test.get("num_workers", 0),
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

    def step_images(self, model) -> Iterable[StepImage]:
        """The last training step's batch, from the features it computed (the hook's stash)."""
        stash, self.hook._stash = self.hook._stash, {}
        samples = stash.get("samples")
        if "features" not in stash or not samples:
            return
        x = tuple(t.detach().float() for t in stash["features"])  # AMP steps: half precision
        gt = [_tensor(s.gt_instances.bboxes).to(x[0].device).float() for s in samples]
        with self.hook._replay.replaying():
            results, probs, _ = _heads(model, x, samples, gt, rescale=False)
        for s, r, pr, g in zip(samples, results, probs, gt):
            m = s.metainfo
            size, original = tuple(m["img_shape"][:2]), tuple(m["ori_shape"][:2])
            yield StepImage(m["img_id"], _tensor(r.bboxes), r.scores, r.labels, pr, g, size, original)

    def all_gather(self):
        return all_gather_object if get_world_size() > 1 else None

    def is_main(self) -> bool:
        return is_main_process()

    def log(self, message: str, warning: bool = False) -> None:
        (self.runner.logger.warning if warning else self.runner.logger.info)(f"[prune_hooks] {message}")

    def put_scalar(self, name: str, value: float) -> None:
        self.runner.message_hub.update_scalar(name, value)

    def iteration(self) -> int:
        return self.runner.iter + 1

    def write_retrain(self, run: Path, pruned: Path, n_keep: int, n_total: int) -> Path:
        return write_retrain_config(self.runner.cfg, pruned, n_keep, n_total, run / "retrain.py")


def _tensor(boxes) -> torch.Tensor:
    """A box tensor from mmdet's box types (``HorizontalBoxes``) or a plain tensor."""
    return getattr(boxes, "tensor", boxes)


def _pipeline_types(node) -> set[str]:
    """Every transform type named in any ``pipeline`` under a dataset config (wrappers included)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pipeline" and isinstance(value, (list, tuple)):
                found |= {t.get("type", "") for t in value if isinstance(t, dict)}
                for t in value:  # RandomChoice / RandomApply nest transforms
                    found |= _pipeline_types({"pipeline": t.get("transforms", [])} if isinstance(t, dict) else {})
            else:
                found |= _pipeline_types(value)
    elif isinstance(node, (list, tuple)):
        for v in node:
            found |= _pipeline_types(v)
    return found


def check_dataset(cfg) -> tuple[str, dict]:
    """The training set's annotation file (data_root applied) and the config of its innermost COCO
    dataset: wrappers (``RepeatDataset``, ``ClassBalancedDataset``, ``MultiImageMixDataset``, a
    ``ConcatDataset`` of one) are looked through, since repeats, mosaic and mixup are training
    augmentations, not data. A ``ConcatDataset`` of several files is refused."""
    dataset, where = _innermost(cfg.train_dataloader.get("dataset", {}))
    kind = dataset.get("type", "")
    ann = dataset.get("ann_file")
    if not ann:
        raise _fail(f"{where} ({kind or 'no type'}) has no ann_file: PruneHook needs a COCO annotation file to prune")
    path = osp.join(dataset.get("data_root") or "", ann)
    if not osp.isfile(path):
        raise _fail(f"{where}.ann_file {path!r} not found")
    return path, dataset


def _innermost(dataset, where: str = "train_dataloader.dataset") -> tuple[dict, str]:
    """(innermost dataset config, its dotted path) under the wrappers of :data:`WRAPPERS`."""
    while dataset.get("type", "") in WRAPPERS:
        if dataset["type"] == "ConcatDataset":
            parts = dataset.get("datasets", [])
            if len(parts) != 1:
                raise _fail(
                    f"{where} is a ConcatDataset of {len(parts)} datasets: PruneHook prunes one COCO file; "
                    "merge the files into one annotation file for the proxy run (or prune each part in its own run)"
                )
            dataset, where = parts[0], f"{where}.datasets[0]"
        else:
            dataset, where = dataset.get("dataset", {}), f"{where}.dataset"
    return dataset, where


def _point_at(node, leaf: dict) -> dict:
    """The override that makes ``node``'s innermost dataset read ``leaf`` (ann_file, data_root), wrappers kept."""
    kind = node.get("type", "")
    if kind == "ConcatDataset":  # a list is replaced, not merged: write its one part whole
        part = node["datasets"][0]
        return {"datasets": [_merge(_plain(part), _point_at(part, leaf))]}
    if kind in WRAPPERS:
        return {"dataset": _point_at(node["dataset"], leaf)}
    return leaf


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _repeats(dataset) -> int:
    """How many times an epoch of ``dataset`` goes over its innermost images (RepeatDataset.times)."""
    times = 1
    while dataset.get("type", "") in WRAPPERS:
        times *= int(dataset.get("times", 1)) if dataset["type"] == "RepeatDataset" else 1
        dataset = dataset.get("dataset") or (dataset.get("datasets") or [{}])[0]
    return times


def _is_warmup(sched: dict) -> bool:
    """An iteration-based warm-up (the zoo's ``LinearLR``/``QuadraticWarmupLR`` from iteration 0): its
    length is kept, not scaled with the data (core.schedule.cap_warmup)."""
    return (
        str(sched.get("type", "")).split(".")[-1] in ("LinearLR", "QuadraticWarmupLR")
        and not sched.get("by_epoch", True)
        and sched.get("begin", 0) == 0
        and _finite(sched.get("end", math.inf))
    )


def write_retrain_config(cfg, pruned_json: Path, n_keep: int, n_total: int, path: Path) -> Path:
    """``retrain.py``: inherits the user's config, trains on the pruned file, PruneHook removed,
    iteration-valued settings scaled by ``n_keep / n_total`` in iteration-based loops."""
    fraction = n_keep / n_total
    inner, _ = _innermost(cfg.train_dataloader.dataset)
    # data_root as resolved for this run (it may come from an environment variable); wrappers are kept
    leaf = {"ann_file": str(Path(pruned_json).resolve()), "data_root": inner.get("data_root")}
    data = _point_at(cfg.train_dataloader.dataset, leaf)
    body: dict[str, Any] = {
        "train_dataloader": {"dataset": data},
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
        warmups = [i for i, sched in enumerate(plain["param_scheduler"]) if _is_warmup(sched)]
        for i, sched in enumerate(plain["param_scheduler"]):
            if not sched.get("by_epoch", True) and i not in warmups:
                # an open end (mmengine's default: sys.maxsize) stays open
                keys += [
                    f"param_scheduler.{i}.{k}"
                    for k in ("begin", "end", "milestones")
                    if k in sched and _finite(sched[k])
                ]
        changes = scale_schedule(plain, keys, fraction)
        end = plain["train_cfg"].get("max_iters")
        for i, sched in enumerate(plain["param_scheduler"]):
            if f"param_scheduler.{i}.milestones" in keys and isinstance(end, int):
                drop_late_milestones(plain, f"param_scheduler.{i}.milestones", end, changes)
            if i in warmups and isinstance(end, int):
                cap_warmup(plain, f"param_scheduler.{i}.end", end, changes)
        body["train_cfg"] = plain["train_cfg"]
        if "default_hooks.checkpoint.interval" in keys:
            body["default_hooks"] = plain["default_hooks"]
        if plain["param_scheduler"]:
            body["param_scheduler"] = plain["param_scheduler"]
    note = (
        describe_changes(changes, fraction)
        if iter_based
        else "epoch-based loop: epochs kept (iterations shrink with the data)"
    )
    if cfg.filename:
        base = f"_base_ = {str(Path(cfg.filename).resolve())!r}\n"
    else:  # a config built in code: write it whole
        base = cfg.pretty_text + "\n"
    text = (
        f"# generated by prune_hooks: {n_keep}/{n_total} images; {note}\n"
        + base
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
