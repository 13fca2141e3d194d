"""``launch`` that also runs several processes on a machine without CUDA (gloo).

detectron2 v0.6's ``launch`` asserts CUDA and uses NCCL, and its ``create_ddp_model`` passes
``device_ids=[local_rank]``, which DistributedDataParallel refuses for a CPU model. With CUDA this
function is detectron2's ``launch``; without it, ``num_processes > 1`` spawns that many CPU
processes joined by gloo, sets detectron2's local process group, and builds CPU DDP models.
"""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import defaults
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

__all__ = ["fast_coco_eval_available", "launch"]


def launch(
    main_func: Callable[..., Any],
    num_processes: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args: tuple = (),
    timeout: timedelta = timedelta(minutes=30),
) -> Any:
    """Run ``main_func(*args)`` in ``num_processes`` processes (GPUs, or CPU processes without CUDA)."""
    if torch.cuda.is_available() or num_processes * num_machines <= 1:
        return d2_launch(
            main_func,
            num_processes,
            num_machines=num_machines,
            machine_rank=machine_rank,
            dist_url=dist_url,
            args=args,
            timeout=timeout,
        )
    if num_machines != 1:
        raise ValueError(f"[prune_hooks] CPU launch runs on one machine, got num_machines={num_machines}")
    if not dist_url or dist_url == "auto":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dist_url = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    mp.spawn(_cpu_worker, nprocs=num_processes, args=(main_func, num_processes, dist_url, args, timeout), daemon=False)


def _cpu_worker(
    rank: int, main_func: Callable[..., Any], world_size: int, dist_url: str, args: tuple, timeout: timedelta
) -> None:
    dist.init_process_group("gloo", init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout)
    comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(world_size)))
    defaults.create_ddp_model = _create_cpu_ddp_model
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        # gloo's worker threads must stop before the interpreter tears down, or the exit can abort the process
        # ("terminate called without an active exception", SIGABRT) after a successful run.
        dist.destroy_process_group()


def _create_cpu_ddp_model(model: torch.nn.Module, *, fp16_compression: bool = False, **kwargs: Any) -> torch.nn.Module:
    if comm.get_world_size() == 1:
        return model
    kwargs.pop("device_ids", None)
    return DistributedDataParallel(model, **kwargs)


def fast_coco_eval_available() -> bool:
    """detectron2 was built with its C++ ops (its fast COCO evaluator); a python-only build has a stub ``_C``."""
    import importlib.util

    spec = importlib.util.find_spec("detectron2._C")
    return bool(spec and spec.origin and not spec.origin.endswith(".py"))
