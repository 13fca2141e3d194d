# tools/bench/bench_quality.py --framework mmdet: Faster R-CNN with an ImageNet-pretrained MobileNetV2-FPN at
# 256 px on the Fashion-MNIST benchmark data (tools/bench/bench_data.py); the mmdet twin of
# bench_MNV2_FPN_overrides.yaml beside it. tools/bench/ must be on PYTHONPATH (custom_imports).
# Data root: the environment variable PRUNE_TOY_ROOT, or --cfg-options on the train script.
_base_ = "../../../prune_hooks/configs/mmdet/toy_faster-rcnn_r18_fpn.py"

custom_imports = dict(imports=["prune_hooks.compat", "mobilenet_mmdet"], allow_failed_imports=False)

metainfo = dict(
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
)
img_scale = (256, 256)

model = dict(
    backbone=dict(_delete_=True, type="TorchvisionMobileNetV2"),
    neck=dict(in_channels=[24, 32, 96, 320], out_channels=128),
    rpn_head=dict(in_channels=128, feat_channels=128, anchor_generator=dict(scales=[3])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128),
        bbox_head=dict(in_channels=128, fc_out_channels=512, num_classes=10),
    ),
    train_cfg=dict(rcnn=dict(sampler=dict(num=64))),
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
train_dataloader = dict(dataset=dict(metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
randomness = dict(seed=0)
# like the detectron2 twin (toy_R18_FPN_overrides.yaml): an early large gradient at batch 4 can blow up the RPN
optim_wrapper = dict(clip_grad=dict(max_norm=5.0, norm_type=2))
