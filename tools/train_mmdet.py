#!/usr/bin/env python
"""MMDetection's own train script (the copy the mmdet wheel ships as mmdet/.mim/tools/train.py), one command here.

    python tools/train_mmdet.py CONFIG [--work-dir DIR] [--resume] [--cfg-options ...]
    torchrun --nproc_per_node N tools/train_mmdet.py CONFIG --launcher pytorch

Arguments go to mmdet's script unchanged. One addition: with ``--launcher pytorch`` on a machine
without CUDA, mmengine 0.10's ``init_dist`` calls ``torch.cuda.set_device`` and its DDP wrapper passes
``device_ids=[LOCAL_RANK]``, both of which fail on CPU. This script then joins the processes with
gloo itself and asks for a CPU DDP wrapper (``model_wrapper_cfg.device_ids=None``). The process group is
destroyed when the script ends (mmengine leaves it open).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def main() -> None:
    import mmdet

    train_py = Path(mmdet.__file__).parent / ".mim" / "tools" / "train.py"
    argv = sys.argv[1:]
    launcher = argv[argv.index("--launcher") + 1] if "--launcher" in argv[:-1] else "none"
    if launcher == "pytorch" and not torch.cuda.is_available():
        dist.init_process_group("gloo")
        argv += [
            "--cfg-options",
            "model_wrapper_cfg.type=MMDistributedDataParallel",
            "model_wrapper_cfg.device_ids=None",
        ]
    sys.argv = [str(train_py), *argv]
    try:
        runpy.run_path(str(train_py), run_name="__main__")
    finally:
        # mmengine leaves the process group open; gloo's threads alive at interpreter teardown can abort a
        # finished run (SIGABRT, "terminate called without an active exception").
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
