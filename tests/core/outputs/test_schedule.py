import pytest

from prune_hooks.core.errors import PruneHooksError
from prune_hooks.core.outputs.schedule import describe_changes, scale_schedule


def test_scales_nested_ints_lists_and_tuples():
    cfg = {
        "SOLVER": {"MAX_ITER": 1000, "STEPS": (600, 800), "WARMUP_ITERS": 1, "CHECKPOINT_PERIOD": 0},
        "TEST": {"EVAL_PERIOD": 250},
    }
    keys = [
        "SOLVER.MAX_ITER",
        "SOLVER.STEPS",
        "SOLVER.WARMUP_ITERS",
        "SOLVER.CHECKPOINT_PERIOD",
        "TEST.EVAL_PERIOD",
        "SOLVER.MISSING",
    ]
    changes = scale_schedule(cfg, keys, 0.3)
    assert cfg["SOLVER"] == {"MAX_ITER": 300, "STEPS": (180, 240), "WARMUP_ITERS": 1, "CHECKPOINT_PERIOD": 0}
    assert cfg["TEST"]["EVAL_PERIOD"] == 75
    assert [c[0] for c in changes] == keys[:-1]
    line = describe_changes(changes, 0.3)
    assert "SOLVER.MAX_ITER 1000 -> 300" in line and "SOLVER.STEPS [600, 800] -> [180, 240]" in line


def test_list_index_paths_and_round_half_up():
    cfg = {"param_scheduler": [{"end": 500}, {"milestones": [8, 11]}], "train_cfg": {"max_iters": 5}}
    scale_schedule(
        cfg,
        ["param_scheduler.0.end", "param_scheduler.1.milestones", "param_scheduler.2.end", "train_cfg.max_iters"],
        0.5,
    )
    assert cfg == {"param_scheduler": [{"end": 250}, {"milestones": [4, 6]}], "train_cfg": {"max_iters": 3}}


def test_rejects_non_iteration_values_and_bad_fraction():
    with pytest.raises(PruneHooksError, match="SOLVER.MAX_ITER must be an iteration count"):
        scale_schedule({"SOLVER": {"MAX_ITER": "100"}}, ["SOLVER.MAX_ITER"], 0.5)
    with pytest.raises(PruneHooksError, match=r"fraction must be in \(0, 1\], got 1.5"):
        scale_schedule({}, [], 1.5)


def test_drop_late_milestones_records_the_change():
    from prune_hooks.core.outputs.schedule import drop_late_milestones

    cfg = {"s": [{"milestones": [2, 3, 7]}]}
    changes = drop_late_milestones(cfg, "s.0.milestones", 3, [])
    assert cfg["s"][0]["milestones"] == [2] and changes == [
        ("s.0.milestones (at or beyond 3, dropped)", [2, 3, 7], [2])
    ]
    assert drop_late_milestones(cfg, "s.0.milestones", 3, []) == []  # nothing left to drop
    assert drop_late_milestones(cfg, "absent.key", 3, []) == []
