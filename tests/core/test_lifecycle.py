"""The shared hook lifecycle, driven by a fake adapter around a tiny torch model (no framework)."""

import json

import numpy as np
import pytest
import torch

from prune_hooks.core.data.coco import load_coco
from prune_hooks.core.errors import PruneHooksError
from prune_hooks.core.lifecycle import Adapter, ImageOutput, ScoringRun, check_options, inference_context
from prune_hooks.core.selection.methods import PROTOTYPES, SOFT_LABELS

LABELS = {"methods": "methods", "keep_ratio": "keep_ratio", "aggregation": "aggregation"}


class Jitter(torch.nn.Module):
    """Predicts each GT box shifted by a learnable offset, class 0 = category 1, score = sigmoid(w)."""

    def __init__(self):
        super().__init__()
        self.shift = torch.nn.Parameter(torch.tensor(3.0))
        self.test_score_thresh = 0.05


class FakeAdapter(Adapter):
    framework = "fake"

    def __init__(self, index, gt=True, fail_at=None):
        self.index, self.gt, self.fail_at = index, gt, fail_at
        self.logs, self.scalars, self.retrains, self.passes = [], [], [], 0
        self.seen_thresh = []

    def batches(self):
        self.passes += 1
        ids = self.index.image_ids.tolist()
        return [ids[:2], ids[2:]]

    def infer(self, model, batch, gt_boxes, with_gt):
        assert not model.training and not torch.is_grad_enabled()
        self.seen_thresh.append(model.test_score_thresh)
        if self.fail_at == self.passes:
            raise RuntimeError("boom")
        for image_id in batch:
            gt = gt_boxes(image_id)
            boxes = gt + model.shift.detach() / self.passes
            scores = torch.full((len(gt),), 0.5 + 0.1 * self.passes)
            labels = torch.zeros(len(gt), dtype=torch.long)
            probs = torch.tensor([[0.7, 0.2, 0.1]]).repeat(len(gt), 1) if with_gt else None
            feats = (gt[:, :2] + 1.0) if with_gt else None
            yield ImageOutput(image_id, boxes, scores, labels, probs, feats)

    def model_classes(self):
        return [1, 2]

    def gt_outputs(self, model):
        if self.gt is True:
            return frozenset({SOFT_LABELS, PROTOTYPES})
        return frozenset(self.gt or ())

    def threshold_owners(self, model):
        return [(model, "test_score_thresh")]

    def write_retrain(self, run, pruned, n_keep, n_total):
        self.retrains.append((pruned.name, n_keep, n_total))
        path = run / "retrain.txt"
        path.write_text(f"{n_keep}/{n_total}")
        return path

    def log(self, message, warning=False):
        self.logs.append((warning, message))

    def put_scalar(self, name, value):
        self.scalars.append(name)


def make_run(coco_file, tmp_path, methods=("vps_iou", "csod"), **kw):
    index = load_coco(coco_file)
    adapter = FakeAdapter(index, **kw)
    run = ScoringRun(
        adapter,
        index,
        methods=methods,
        keep_ratio=0.5,
        aggregation="max",
        score_thresh=0.0,
        dump=True,
        device="cpu",
        out_dir=tmp_path / "prune",
    )
    return run, adapter, index


def test_inference_context_restores_mode_and_threshold_even_on_error():
    model = Jitter()
    model.train()
    with pytest.raises(RuntimeError):
        with inference_context(model, [(model, "test_score_thresh")], 0.0):
            assert model.test_score_thresh == 0.0 and not model.training and not torch.is_grad_enabled()
            raise RuntimeError("inside")
    assert model.training and model.test_score_thresh == 0.05 and torch.is_grad_enabled()


def test_inference_context_leaves_the_random_streams_where_it_found_them():
    import random

    model = Jitter()

    def draws():
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]

    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    expected = draws()
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    with inference_context(model, [], 0.0):
        inside = draws()  # what a loader's worker seed or a sampler would consume
        torch.utils.data.DataLoader(range(4)).__iter__()
    assert draws() == expected == inside


def test_passes_accumulate_and_finish_writes_everything(coco_file, tmp_path):
    run, adapter, index = make_run(coco_file, tmp_path)
    model = Jitter()
    run.check_model(model, "methods")
    assert run.want_prototypes
    run.scoring_pass(model)
    run.scoring_pass(model)
    assert adapter.seen_thresh == [0.0] * 4 and model.test_score_thresh == 0.05 and model.training
    assert run.capture.acc.passes == 2
    subset = run.finish(model)
    out = tmp_path / "prune"
    # prototypes were not taken on a pass after the last iteration: finish ran a features-only pass
    assert adapter.passes == 3 and run.capture.acc.passes == 2
    protos = np.load(out / "prototypes.npz")
    assert sorted(protos["image_id"].tolist()) == [1, 1, 3]
    assert subset["method"] == "vps_iou" and subset["n_images"] == 2
    assert adapter.retrains == [("instances_train_pruned.json", 2, 3)]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["framework"] == "fake" and meta["passes"] == 2 and meta["methods"] == ["vps_iou", "csod"]
    assert sorted(p.name for p in (out / "passes").iterdir()) == ["pass_001.json", "pass_002.json"]
    assert (out / "soft_labels.npz").exists() and (out / "state.pt").exists()
    assert adapter.scalars == ["prune/pass_seconds"] * 2
    assert any("prune run written to" in m for _, m in adapter.logs)


def test_failed_pass_restores_the_model(coco_file, tmp_path):
    run, adapter, _ = make_run(coco_file, tmp_path, fail_at=1)
    model = Jitter()
    with pytest.raises(RuntimeError, match="boom"):
        run.scoring_pass(model)
    assert model.training and model.test_score_thresh == 0.05


def test_no_pass_writes_nothing_and_state_round_trips(coco_file, tmp_path):
    run, adapter, _ = make_run(coco_file, tmp_path, methods=("vps_iou",))
    assert run.finish(Jitter()) is None
    assert not (tmp_path / "prune").exists()
    assert adapter.logs[-1][0]  # a warning
    model = Jitter()
    run.scoring_pass(model)
    again, adapter2, _ = make_run(coco_file, tmp_path, methods=("vps_iou",))
    again.load_state_dict(run.state_dict())
    assert again.capture.acc.passes == 1
    np.testing.assert_array_equal(again.capture.soft.means(), run.capture.soft.means())


def test_methods_the_model_cannot_serve_are_refused_before_training(coco_file, tmp_path):
    run, adapter, _ = make_run(coco_file, tmp_path, gt=False)
    with pytest.raises(PruneHooksError, match=r"^\[prune_hooks\] methods \['csod'\] need GT-box RoI features, "):
        run.check_model(Jitter(), "methods")
    run, adapter, _ = make_run(coco_file, tmp_path, methods=("vps_iou",), gt=False)
    run.check_model(Jitter(), "methods")
    assert adapter.logs == [
        (
            True,
            "no class distributions on GT boxes from this model (no box head or dense head this adapter knows): "
            "no soft labels (method entropy unavailable)",
        )
    ]
    # features without class distributions (a dense head with softmax scores): csod yes, entropy no
    run, adapter, _ = make_run(coco_file, tmp_path, methods=("csod", "entropy"), gt={PROTOTYPES})
    with pytest.raises(PruneHooksError, match=r"methods \['entropy'\] need class distributions on GT boxes"):
        run.check_model(Jitter(), "methods")
    run, adapter, _ = make_run(coco_file, tmp_path, methods=("csod",), gt={PROTOTYPES})
    run.check_model(Jitter(), "methods")
    assert len(adapter.logs) == 1 and "entropy unavailable" in adapter.logs[0][1]


@pytest.mark.parametrize(
    "methods,keep,agg,msg",
    [
        ([], 0.5, "max", "methods is empty"),
        (["vps_size"], 0.5, "max", "methods: unknown method 'vps_size'"),
        (["vps_iou"], 1.5, "max", r"keep_ratio must be in \(0, 1\], got 1.5"),
        (["vps_iou"], True, "max", r"keep_ratio must be in \(0, 1\], got True"),
        (["vps_iou"], 0.5, "median", "aggregation must be one of"),
    ],
)
def test_check_options(methods, keep, agg, msg):
    with pytest.raises(PruneHooksError, match=r"\[prune_hooks\] " + msg):
        check_options(methods, keep, agg, LABELS)
    assert check_options("csod", 1, "sum", LABELS) == ["csod"]


class Blind(FakeAdapter):
    """A model that never predicts anything: every object unmatched in every pass."""

    def infer(self, model, batch, gt_boxes, with_gt):
        for out in super().infer(model, batch, gt_boxes, with_gt):
            yield out._replace(boxes=out.boxes[:0], scores=out.scores[:0], labels=out.labels[:0])


def test_never_matched_objects_are_reported_and_no_subset_is_picked(coco_file, tmp_path):
    index = load_coco(coco_file)
    adapter = Blind(index)
    run = ScoringRun(
        adapter,
        index,
        methods=["vps_iou"],
        keep_ratio=0.5,
        aggregation="max",
        score_thresh=0.0,
        dump=False,
        device="cpu",
        out_dir=tmp_path / "prune",
    )
    model = Jitter()
    run.scoring_pass(model)
    run.scoring_pass(model)
    assert run.finish(model) is None
    out = tmp_path / "prune"
    assert json.loads((out / "meta.json").read_text())["never_matched"] == 3
    assert (out / "images.csv").exists() and not (out / "subset.json").exists() and adapter.retrains == []
    warnings = [m for w, m in adapter.logs if w]
    assert any("3 of 3 objects (100%) were never matched" in m for m in warnings)
    assert any("without a subset" in m for m in warnings)
    assert "were never matched by any prediction" in (out / "report" / "report.md").read_text()


def test_a_stopped_training_writes_nothing(coco_file, tmp_path):
    run, adapter, _ = make_run(coco_file, tmp_path, methods=("vps_iou",))
    run.scoring_pass(Jitter())
    assert run.finish(Jitter(), completed=False) is None
    assert not (tmp_path / "prune" / "meta.json").exists()
    assert "before its end: no prune run written" in adapter.logs[-1][1]
