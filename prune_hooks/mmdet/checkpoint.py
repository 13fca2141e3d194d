"""Resuming a run whose checkpoints hold the hook's state, under torch >= 2.6's safe loading."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["trust_own_checkpoints"]


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
