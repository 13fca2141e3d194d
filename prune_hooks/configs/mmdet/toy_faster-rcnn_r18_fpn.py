# Faster R-CNN R18-FPN, shrunk to train from scratch on CPU in seconds on the toy shapes set
# (prune_hooks.toy, `make demo` writes it). Everything not set here comes from mmdet's own config.
# Data root: the environment variable PRUNE_TOY_ROOT, or --cfg-options on the train script.
_base_ = "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"

# mmdet.models imports detectron2 when it is installed; detectron2 0.6 then needs the aliases that
# prune_hooks.compat restores (Pillow >= 10, numpy >= 1.24). Harmless without detectron2.
custom_imports = dict(imports=["prune_hooks.compat"], allow_failed_imports=False)

data_root = "{{$PRUNE_TOY_ROOT:data/toy/}}"
metainfo = dict(classes=("square", "disc", "triangle"))
img_scale = (128, 128)

model = dict(
    # From scratch at batch 4, BN's statistics are noise (and its eval-mode running averages lag the
    # weights): GroupNorm, as the detectron2 toy does, is what makes this recipe learn.
    backbone=dict(
        depth=18,
        init_cfg=None,
        frozen_stages=-1,
        norm_eval=False,
        norm_cfg=dict(type="GN", num_groups=32, requires_grad=True),
    ),
    neck=dict(in_channels=[64, 128, 256, 512]),
    rpn_head=dict(anchor_generator=dict(scales=[4])),
    roi_head=dict(bbox_head=dict(num_classes=3)),
    # Fewer proposals and RoI samples: mmcv's CPU RoIAlign dominates a step otherwise.
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=512, max_per_img=256),
        rcnn=dict(sampler=dict(num=128)),
    ),
    test_cfg=dict(rpn=dict(nms_pre=256, max_per_img=100), rcnn=dict(score_thr=0.05, max_per_img=100)),
)

train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True),
    dict(type="Resize", scale=img_scale, keep_ratio=True),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PackDetInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=img_scale, keep_ratio=True),
    dict(type="LoadAnnotations", with_bbox=True),
    dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file="annotations/instances_train.json",
        data_prefix=dict(img="train/"),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file="annotations/instances_val.json",
        data_prefix=dict(img="val/"),
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + "annotations/instances_val.json")
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=12, val_interval=12)
# An early large gradient can blow up the RPN from scratch: clip it (as the detectron2 toy does).
optim_wrapper = dict(optimizer=dict(lr=0.01), clip_grad=dict(max_norm=5.0, norm_type=2))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type="MultiStepLR", begin=0, end=12, by_epoch=True, milestones=[9, 11], gamma=0.1),
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=12))
