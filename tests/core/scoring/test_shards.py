"""Sharded capture state: W gloo processes on the CPU hold what one process holds, and resume on another W."""

import json
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from prune_hooks.core.data.coco import load_coco
from prune_hooks.core.scoring.capture import VPSCapture
from prune_hooks.core.scoring.shards import Comm, image_ranges, join_states, shard_state

CLASSES = 20  # 21 columns: more than the 2·k = 16 a pass brings per object (the approximate path)


def synthetic_coco(path, images=14, seed=0):
    rng = np.random.default_rng(seed)
    anns, ims = [], []
    for i in range(1, images + 1):
        ims.append({"id": i * 10, "file_name": f"{i}.jpg", "width": 100, "height": 80})
        for _ in range(int(rng.integers(0, 6)) if i % 5 else 0):  # every 5th image has no object
            x, y = rng.uniform(0, 60, 2)
            anns.append({"id": len(anns) + 1, "image_id": i * 10, "category_id": int(rng.integers(1, CLASSES + 1)),
                         "bbox": [x, y, float(rng.uniform(5, 35)), float(rng.uniform(5, 35))], "iscrowd": 0,
                         "area": 1.0})  # fmt: skip
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, CLASSES + 1)]
    path.write_text(json.dumps({"images": ims, "annotations": anns, "categories": cats}))
    return path


def predictions(idx, image_id, t):
    """Deterministic detections and class distributions of image ``image_id`` in pass ``t``."""
    a, b = idx.offsets[idx.image_position()[image_id]], idx.offsets[idx.image_position()[image_id] + 1]
    g = torch.Generator().manual_seed(image_id * 31 + t)
    gt = torch.as_tensor(idx.obj_boxes[a:b], dtype=torch.float32)
    boxes = torch.cat([gt + torch.randn(gt.shape, generator=g) * 3, torch.tensor([[70.0, 50, 95, 75]])])
    scores = torch.rand(len(boxes), generator=g) * 0.6 + 0.35
    cats = torch.as_tensor(np.r_[idx.obj_category_ids[a:b], 1 + image_id % CLASSES]).long()
    cats[torch.rand(len(cats), generator=g) < 0.2] = 3
    probs = torch.softmax(torch.randn(b - a, CLASSES + 1, generator=g) * 3, dim=1)
    return boxes, scores, cats, probs


def score(cap, idx, image_ids, t):
    if image_ids and cap._columns is None:  # as ScoringRun does: when the rank scores its first image
        cap.set_model_classes(list(range(1, CLASSES + 1)))
    for i in image_ids:
        cap.add_image(i, *predictions(idx, i, t)[:3], probs=predictions(idx, i, t)[3])
    cap.end_pass()


def schedule(idx, world, t):
    """Images each rank scores in pass t: a shuffled split (as in-loop batches are), one image on two ranks."""
    order = np.random.default_rng(t).permutation(idx.image_ids)
    parts = [order[r::world].tolist() for r in range(world)]
    parts[-1].append(parts[0][0])  # a padded sampler: an image scored twice in the pass
    if t == 0:  # the last rank scores nothing in the first pass: it has no soft labels when rows reach it
        parts[0] += parts[-1]
        parts[-1] = []
    return parts


def _worker(rank, world, port, path, out, resume, flush):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=world, rank=rank)
    try:

        def gather(obj, dst):
            got = [None] * world if rank == dst else None
            dist.gather_object(obj, got, dst=dst)
            return got

        idx = load_coco(path)
        cap = VPSCapture(idx, comm=Comm(rank, world, gather))
        if flush:
            cap.FLUSH_ROWS = flush
        passes = range(3)
        if resume:
            cap.load_state_dict(torch.load(resume, weights_only=True))
            passes = range(3, 5)
        assert cap.acc.num_objects == cap.rows[1] - cap.rows[0] < idx.num_objects
        for t in passes:
            score(cap, idx, schedule(idx, world, t)[rank], t)
        state = cap.state_dict()
        if rank == 0:
            torch.save(state, out)
    finally:
        dist.destroy_process_group()


def run_ranks(world, path, out, resume=None, flush=None):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(world, port, str(path), str(out), resume and str(resume), flush), nprocs=world)
    return torch.load(out, weights_only=True)


def one_process(path, passes, flush=None):
    idx = load_coco(path)
    cap = VPSCapture(idx)
    if flush:
        cap.FLUSH_ROWS = flush
    cap.set_model_classes(list(range(1, CLASSES + 1)))
    for t in passes:
        score(cap, idx, sorted({i for part in schedule(idx, 2, t) for i in part}), t)
    return cap.state_dict()


def assert_same_state(a, b, path=""):
    assert type(a) is type(b) or isinstance(a, (int, float)), path
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), path
        for k in a:
            assert_same_state(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), path
    else:
        assert a == b, path


def test_image_ranges_cut_at_images_and_balance_objects():
    offsets = np.array([0, 3, 3, 10, 11, 20, 20])  # 6 images, 20 objects, two images without any
    for world in (1, 2, 3, 7):
        r = image_ranges(offsets, world)
        assert r[0] == 0 and r[-1] == 6 and len(r) == world + 1 and (np.diff(r) >= 0).all()
        sizes = np.diff(offsets[r])
        assert sizes.sum() == 20 and sizes.max() <= 20 / world + 9  # the largest image holds 9


def test_shard_then_join_is_the_whole_state(tmp_path):
    path = synthetic_coco(tmp_path / "a.json")
    whole = one_process(path, range(2))
    idx = load_coco(path)
    for world in (2, 3):
        r = image_ranges(idx.offsets, world)
        parts = [shard_state(whole, (idx.offsets[r[k]], idx.offsets[r[k + 1]]), (r[k], r[k + 1])) for k in range(world)]
        assert_same_state(join_states(parts), whole)


def test_rows_applied_during_the_pass_give_the_state_of_rows_applied_when_it_closes(tmp_path):
    path = synthetic_coco(tmp_path / "a.json")
    assert_same_state(one_process(path, range(3), flush=2), one_process(path, range(3)))


@pytest.mark.parametrize("world, flush", [(2, None), (3, 4)])
def test_ranks_hold_their_objects_and_gather_the_one_process_state(tmp_path, world, flush):
    """With ``flush`` a rank applies its own objects' rows every ``flush`` rows and sends the others' at the close."""
    path = synthetic_coco(tmp_path / "a.json")
    assert load_coco(path).num_objects > 20
    got = run_ranks(world, path, tmp_path / "state.pt", flush=flush)
    assert_same_state(got, one_process(path, range(3)))
    assert int(got["soft_labels"]["count"].max()) == 3 and (got["audit"]["tracks"]["image"].numel() > 0)


def test_resume_on_another_number_of_ranks(tmp_path):
    path = synthetic_coco(tmp_path / "a.json")
    run_ranks(2, path, tmp_path / "two.pt")  # passes 0-2 on two ranks, then 3-4 on three
    got = run_ranks(3, path, tmp_path / "three.pt", resume=tmp_path / "two.pt")
    assert_same_state(got, one_process(path, range(5)))
