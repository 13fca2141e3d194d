"""retrain.py for iteration-based mmdet configs: what is scaled and what is not."""

import pytest

pytest.importorskip("mmdet")

from mmengine.config import Config  # noqa: E402

from prune_hooks.mmdet import write_retrain_config  # noqa: E402

USER = """
train_cfg = dict(type='IterBasedTrainLoop', max_iters=9000, val_interval=1000)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2000))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=9000, milestones=[6000, 8000], gamma=0.1),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=12),
    dict(type='ConstantLR', by_epoch=False, factor=0.5),
]
train_dataloader = dict(dataset=dict(type='CocoDataset', data_root='/data/coco/', ann_file='annotations/train.json'))
custom_hooks = [dict(type='PruneHook', keep_ratio=0.3), dict(type='EMAHook')]
work_dir = '/runs/proxy'
"""


def test_iteration_based_schedule_scaled_and_hook_removed(tmp_path):
    user = tmp_path / "user.py"
    user.write_text(USER)
    cfg = Config.fromfile(str(user))
    path = write_retrain_config(cfg, tmp_path / "train_pruned.json", 30, 100, tmp_path / "retrain.py")
    new = Config.fromfile(str(path))
    assert new.train_cfg.max_iters == 2700 and new.train_cfg.val_interval == 300
    assert new.default_hooks.checkpoint.interval == 600
    warm, steps, cosine, const = new.param_scheduler
    assert (warm.begin, warm.end) == (0, 500)  # a warm-up keeps its length
    assert (steps.end, steps.milestones) == (2700, [1800, 2400])
    assert (cosine.begin, cosine.end) == (1, 12)  # by_epoch: untouched
    assert "end" not in const  # open end stays open
    assert [h.type for h in new.custom_hooks] == ["EMAHook"]
    assert new.train_dataloader.dataset.ann_file == str((tmp_path / "train_pruned.json").resolve())
    assert new.train_dataloader.dataset.data_root == "/data/coco/" and new.work_dir == "/runs/proxy_retrain"
    assert "schedule scaled by 0.3" in path.read_text()


def test_epoch_based_keeps_epochs(tmp_path):
    user = tmp_path / "user.py"
    user.write_text(
        USER.replace(
            "type='IterBasedTrainLoop', max_iters=9000, val_interval=1000",
            "type='EpochBasedTrainLoop', max_epochs=12, val_interval=1",
        )
    )
    new = Config.fromfile(
        str(write_retrain_config(Config.fromfile(str(user)), tmp_path / "p.json", 30, 100, tmp_path / "retrain.py"))
    )
    assert new.train_cfg.max_epochs == 12 and new.param_scheduler[1].milestones == [6000, 8000]


def test_warmup_at_most_half_the_scaled_schedule(tmp_path):
    user = tmp_path / "user.py"
    user.write_text(USER)
    path = write_retrain_config(Config.fromfile(str(user)), tmp_path / "p.json", 1, 100, tmp_path / "retrain.py")
    new = Config.fromfile(str(path))
    assert new.train_cfg.max_iters == 90 and new.param_scheduler[0].end == 45  # 500 would outlast the schedule
    assert "(warm-up kept, at most half the schedule) 500 -> 45" in path.read_text()
