"""In-loop capture: score the objects of each training batch from the training step's own features.

A scoring pass runs the whole detector over every training image once per epoch. In-loop capture
(``PRUNE.CAPTURE: in_loop`` / ``PruneHook(capture='in_loop')``) reuses what the training step already
computed — the backbone (and neck) features of the augmented batch — and runs only the inference
branch on them under ``no_grad`` in eval behaviour: proposals, box head, and the box head on the GT
boxes the batch carries. Each image is seen once per epoch, so each object gets one observation per
epoch, as in a pass (docs/methods.md, "In-loop capture").

The core needs predictions in original image coordinates, objects in annotation-file order. The
batch holds them in the augmented image's coordinates, after the data pipeline's resize and flip.
:func:`original_frame` recovers that map from the batch's GT boxes and the file's: the scale is the
ratio of the image sizes, the flip is whichever of the two readings puts the batch's boxes onto the
file's. Where neither does (a crop shifted the image, a box was dropped, mosaic mixed images in) the
image is skipped for that epoch and counted; pipelines that always do that are refused up front.

The training forward also ran the first head on those features (the RPN head of a two-stage
detector, the whole head of a dense one). Where that head computes the same in training and in eval
(no batch norm, no dropout: :func:`replayable`), :class:`HeadReplay` keeps its outputs and hands them
to the inference branch instead of running it again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, NamedTuple

import torch

__all__ = ["Frame", "original_frame", "BREAKING_TRANSFORMS", "HeadReplay", "Step", "StepStash", "replayable"]

# mmdet train-pipeline transforms after which a batch's boxes are never the file's boxes resized and
# flipped (moved by a random offset, mixed with other images, cropped): in_loop is refused with them.
BREAKING_TRANSFORMS = (
    "Mosaic",
    "CachedMosaic",
    "MixUp",
    "CachedMixUp",
    "CopyPaste",
    "RandomAffine",
    "RandomCrop",
    "MinIoURandomCrop",
    "RandomCenterCropPad",
    "Expand",
    "RandomShift",
)


class Frame(NamedTuple):
    """The map from an augmented image (``width`` pixels wide) to the original: scale, then mirror."""

    sx: float
    sy: float
    flip: bool
    width: float

    def to_original(self, boxes: torch.Tensor) -> torch.Tensor:
        """Tensor[M, 4] xyxy in the augmented image -> the original image."""
        if self.flip:
            boxes = torch.stack([self.width - boxes[:, 2], boxes[:, 1], self.width - boxes[:, 0], boxes[:, 3]], dim=1)
        return boxes * boxes.new_tensor([self.sx, self.sy, self.sx, self.sy])


def original_frame(
    batch_boxes: torch.Tensor,
    file_boxes: torch.Tensor,
    augmented_size: tuple[int, int],
    original_size: tuple[int, int],
) -> Frame | None:
    """The frame that maps ``batch_boxes`` onto ``file_boxes`` row by row, or None when none does.

    Args:
        batch_boxes: Tensor[n, 4] xyxy, the image's GT boxes as the training batch holds them.
        file_boxes: Tensor[n', 4] xyxy, the image's objects in the annotation file (non-crowd, file order).
        augmented_size, original_size: (height, width) of the augmented image (before padding) and of
            the file's image.

    None when the counts differ (a box dropped or added) or when neither the plain nor the mirrored
    reading puts every box within half a pixel (plus 1e-4 of the image size) of the file's box, both
    clipped to the image as the pipelines clip them. With no object the flip cannot be read: None.
    A box set symmetric about the vertical centre line reads as not flipped; its objects' IoUs are
    the same either way.
    """
    n = len(file_boxes)
    if n == 0 or len(batch_boxes) != n:
        return None
    (ha, wa), (ho, wo) = augmented_size, original_size
    batch = batch_boxes.detach().to(file_boxes.device, torch.float64)
    want = file_boxes.to(torch.float64).clone()
    want[:, 0::2] = want[:, 0::2].clamp(0, wo)
    want[:, 1::2] = want[:, 1::2].clamp(0, ho)
    tol = 0.5 + 1e-4 * max(wo, ho)
    for flip in (False, True):
        frame = Frame(wo / wa, ho / ha, flip, float(wa))
        if (frame.to_original(batch) - want).abs().max() <= tol:
            return frame
    return None


# Layers whose output depends on the training flag: a head holding one computes differently in eval.
_MODE_DEPENDENT = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd)


def replayable(module: torch.nn.Module | None) -> bool:
    """``module`` computes in its training forward what it computes in eval (no batch norm, no dropout)."""
    return module is not None and not any(isinstance(m, _MODE_DEPENDENT) for m in module.modules())


class HeadReplay:
    """The outputs of heads in the last training forward, handed back to the inference branch.

    ``HeadReplay({name: head})`` registers a forward hook on each head that keeps its training-step
    output (detached; handed back with half-precision tensors as float32, as the branch runs on the
    features of an AMP step).
    ``start()`` (at the start of each training forward) drops what the last one kept; a head called
    twice in one forward is not replayed. ``replaying()`` makes each kept head return its kept output
    instead of computing, until the block ends, then keeps nothing. Only heads for which
    :func:`replayable` holds should be given: their eval forward would compute the same.
    """

    def __init__(self, heads: dict[str, torch.nn.Module]) -> None:
        self.heads = heads
        self.kept: dict[str, Any] = {}
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in heads.items()]

    def _hook(self, name: str):
        def keep(module: torch.nn.Module, args: Any, output: Any) -> None:
            if module.training:
                self.kept[name] = None if name in self.kept else _tree_map(torch.Tensor.detach, output)

        return keep

    def start(self) -> None:
        self.kept = {}

    @contextmanager
    def replaying(self) -> Iterator[None]:
        kept, self.kept = self.kept, {}
        with ExitStack() as undo:
            for name, output in kept.items():
                if output is not None:
                    undo.enter_context(_returning(self.heads[name], _tree_map(_float32, output)))
            yield

    def describe(self) -> str:
        """One log line: what the inference branch takes from the training step."""
        if not self.heads:
            return "in-loop capture runs the inference branch on each training step's features"
        names = ", ".join(type(m).__name__ for m in self.heads.values())
        return f"in-loop capture runs the inference branch on each training step's features and {names}'s outputs"

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles, self.kept = [], {}


@contextmanager
def _returning(module: torch.nn.Module, output: Any) -> Iterator[None]:
    """``module(...)`` returns ``output`` without computing (hooks still run) until the block ends."""
    module.forward = lambda *args, **kwargs: output
    try:
        yield
    finally:
        del module.forward


def _float32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _tree_map(fn, x: Any) -> Any:
    """``fn`` on every tensor of ``x`` (nested lists, tuples, named tuples, dicts)."""
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a named tuple
        return type(x)(*(_tree_map(fn, v) for v in x))
    if isinstance(x, (list, tuple)):
        return type(x)(_tree_map(fn, v) for v in x)
    if isinstance(x, dict):
        return {k: _tree_map(fn, v) for k, v in x.items()}
    return x


class Step(NamedTuple):
    """What the last training forward computed, as :class:`StepStash` kept it.

    Attributes:
        batch: the adapter's reading of the forward's arguments (``batch_of``).
        feature_input: the feature module's first input (the batched image tensor).
        features: the feature module's output (backbone or neck features).
    """

    batch: Any
    feature_input: Any
    features: Any


class StepStash:
    """The training step's batch, features and replayable head outputs, kept by forward hooks for
    in-loop capture; one per run (:class:`~prune_hooks.core.lifecycle.ScoringRun` owns it).

    ``attach(model, feature_module, heads, batch_of)``: ``batch_of(args, kwargs)`` returns what a
    training forward of ``model`` was called with (None for any other call: eval, another mode);
    ``feature_module``'s output of that forward is kept beside it, and ``heads``' outputs for
    :class:`HeadReplay`. ``take()`` hands the last step over once; ``detach()`` removes every hook.
    """

    def __init__(self) -> None:
        self.replay = HeadReplay({})
        self._handles: list[Any] = []
        self._batch: Any = None
        self._features: tuple[Any, Any] | None = None

    def attach(
        self,
        model: torch.nn.Module,
        feature_module: torch.nn.Module,
        heads: dict[str, torch.nn.Module],
        batch_of: Callable[[tuple, dict], Any],
    ) -> None:
        def keep_batch(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            if module.training:
                batch = batch_of(args, kwargs)
                if batch is not None:
                    self._batch, self._features = batch, None
                    self.replay.start()

        def keep_features(module: torch.nn.Module, args: tuple, output: Any) -> None:
            if module.training and self._batch is not None:
                self._features = (args[0] if args else None, output)

        self.detach()
        self.replay = HeadReplay(heads)
        self._handles = [
            model.register_forward_pre_hook(keep_batch, with_kwargs=True),
            feature_module.register_forward_hook(keep_features),
        ]

    def take(self) -> Step | None:
        """The last training step (once), or None when no training forward with features was kept."""
        batch, features = self._batch, self._features
        self._batch, self._features = None, None
        if batch is None or features is None:
            return None
        return Step(batch, *features)

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self.replay.remove()
        self._handles, self._batch, self._features = [], None, None
