"""In-loop capture: the frame recovery (the batch's boxes back onto the annotation file's) and the head replay."""

import torch

from prune_hooks.core.scoring.inloop import HeadReplay, original_frame, replayable


def _augment(boxes, scale_w, scale_h, width, flip):
    """What a resize then a horizontal flip do to xyxy boxes (the pipelines' own formulas)."""
    out = boxes * torch.tensor([scale_w, scale_h, scale_w, scale_h])
    if flip:
        w = width * scale_w
        out = torch.stack([w - out[:, 2], out[:, 1], w - out[:, 0], out[:, 3]], dim=1)
    return out


def _boxes(n, width=640, height=480, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([width * 0.6, height * 0.6])
    wh = 5 + torch.rand(n, 2, generator=g) * 100
    return torch.cat([xy, xy + wh], dim=1)


def test_resize_and_flip_are_recovered_and_predictions_mapped_back():
    file = _boxes(6)
    for flip in (False, True):
        batch = _augment(file, 800 / 640, 600 / 480, 640, flip)
        frame = original_frame(batch, file, (600, 800), (480, 640))
        assert frame is not None and frame.flip is flip
        torch.testing.assert_close(frame.to_original(batch.float()), file, atol=1e-3, rtol=0)
        # a prediction box goes back the same way
        pred = _boxes(3, seed=1)
        torch.testing.assert_close(frame.to_original(_augment(pred, 800 / 640, 600 / 480, 640, flip)), pred)


def test_clipped_boxes_still_match():
    file = torch.tensor([[600.0, 10.0, 700.0, 60.0], [10.0, 20.0, 50.0, 90.0]])  # the first crosses x = 640
    batch = _augment(file, 0.5, 0.5, 640, True)
    batch[:, 0::2] = batch[:, 0::2].clamp(0, 320)
    assert original_frame(batch, file, (240, 320), (480, 640)) is not None


def test_identity_broken_is_none():
    file = _boxes(4)
    batch = _augment(file, 1.25, 1.25, 640, False)
    assert original_frame(batch[:3], file, (600, 800), (480, 640)) is None  # a box dropped
    assert original_frame(batch + torch.tensor([7.0, 0, 7.0, 0]), file, (600, 800), (480, 640)) is None  # a crop
    assert original_frame(batch[[1, 0, 2, 3]], file, (600, 800), (480, 640)) is None  # another order
    assert original_frame(batch[:0], file[:0], (600, 800), (480, 640)) is None  # no object: the flip is unknown


def test_symmetric_boxes_read_as_not_flipped():
    file = torch.tensor([[270.0, 10.0, 370.0, 60.0]])  # centred on x = 320 of a 640-wide image
    frame = original_frame(_augment(file, 1.0, 1.0, 640, True), file, (480, 640), (480, 640))
    assert frame is not None and not frame.flip


class _Head(torch.nn.Module):
    """A head whose forward counts its calls: 2 * x + the call count (so a replay is visible)."""

    def __init__(self, *layers):
        super().__init__()
        self.layers = torch.nn.Sequential(*layers)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return [self.layers(x) * 2 + self.calls], {"n": torch.tensor(self.calls)}


def test_replayable_refuses_heads_that_compute_differently_in_eval():
    assert replayable(_Head(torch.nn.Conv2d(2, 2, 1), torch.nn.GroupNorm(1, 2), torch.nn.ReLU()))
    assert not replayable(_Head(torch.nn.Conv2d(2, 2, 1), torch.nn.BatchNorm2d(2)))
    assert not replayable(_Head(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1))))
    assert not replayable(None)


def test_replay_returns_the_training_forward_output_once():
    head = _Head(torch.nn.Identity())
    replay = HeadReplay({"head": head})
    x = torch.ones(1, 2, requires_grad=True)
    replay.start()
    trained = head(x)  # the training forward: call 1
    head.eval()
    with replay.replaying():
        out = head(x)  # answered from the training forward, not computed
    assert head.calls == 1
    assert torch.equal(out[0][0], trained[0][0].detach()) and not out[0][0].requires_grad
    assert int(out[1]["n"]) == 1
    assert int(head(x)[1]["n"]) == 2  # after the block the head computes again
    with replay.replaying():  # nothing kept any more: computes
        assert int(head(x)[1]["n"]) == 3
    replay.remove()
    head.train()
    head(x)
    assert replay.kept == {}  # hook removed


def test_replay_skips_a_head_called_twice_or_in_eval():
    head = _Head(torch.nn.Identity())
    replay = HeadReplay({"head": head})
    x = torch.ones(1, 2)
    replay.start()
    head(x), head(x)  # twice in one training forward: which output the branch wants is unknown
    with replay.replaying():
        assert int(head(x)[1]["n"]) == 3
    head.eval()
    replay.start()
    head(x)  # an eval forward is not a training step's
    with replay.replaying():
        assert int(head(x)[1]["n"]) == 5
    head.train()
    replay.start()
    head(x)
    replay.start()  # the next training forward drops what the last one kept
    with replay.replaying():
        assert int(head(x)[1]["n"]) == 7


def test_replay_hands_back_float32_for_half_precision_outputs():
    head = _Head(torch.nn.Identity())
    replay = HeadReplay({"head": head})
    replay.start()
    head(torch.ones(1, 2, dtype=torch.float16))
    with replay.replaying():
        out = head(torch.ones(1, 2))
    assert out[0][0].dtype == torch.float32 and out[1]["n"].dtype == torch.int64
