"""The one place where prune_hooks adapts the environment: for detectron2 v0.6, and for numba-cuda.

detectron2 v0.6 (the last tagged release, and what the python-only build installs) still uses names
that newer libraries removed:

* ``np.int`` / ``np.float`` / ``np.bool`` (removed in numpy 1.24): ``data/build.py`` builds the class
  histogram printed at the start of every training with ``dtype=np.int``; masks and the semantic
  segmentation evaluator use the other two. They were aliases of the builtins, so that is what we restore.
* ``PIL.Image.LINEAR`` (removed in Pillow 10): ``data/transforms/transform.py`` uses it as a default
  argument, so importing ``detectron2.data`` fails without it. It was an alias of ``BILINEAR``.

Each alias is added only when it is missing, and only when detectron2 0.6 is the installed version
(newer official sources no longer use them), before anything imports ``detectron2.data``. Importing
this module applies them. MMDetection needs it too when detectron2 0.6 is installed beside it:
``mmdet.models`` imports detectron2 (its ``d2_wrapper``) whenever detectron2 is importable, so an mmdet
config in such an environment lists ``prune_hooks.compat`` in ``custom_imports``.

numba-cuda (0.30.4 seen) names ``np.row_stack`` (removed in numpy 2.5) when it compiles a kernel: CSOD's
CUDA greedy would fail to compile and fall back to the CPU. ``numba_cuda_aliases`` restores it as the
alias of ``vstack`` it was, only when missing; ``core/selection/csod/cuda.py`` calls it on import.
"""

from __future__ import annotations

import importlib.metadata

__all__ = ["apply", "numba_cuda_aliases"]

_applied: list[str] = []


def apply() -> list[str]:
    """Restore the removed aliases detectron2 0.6 needs; returns the names added (idempotent)."""
    if _applied:
        return _applied
    try:
        version = importlib.metadata.version("detectron2")
    except importlib.metadata.PackageNotFoundError:
        return _applied
    if not version.startswith("0.6"):
        return _applied
    import numpy as np
    from PIL import Image

    for name, value in (("int", int), ("float", float), ("bool", bool)):
        if name not in np.__dict__:
            setattr(np, name, value)
            _applied.append(f"numpy.{name}")
    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR  # type: ignore[attr-defined]
        _applied.append("PIL.Image.LINEAR")
    return _applied


def numba_cuda_aliases() -> list[str]:
    """Restore ``numpy.row_stack`` for numba-cuda's kernel compiler; returns the names added."""
    import numpy as np

    if "row_stack" in np.__dict__:
        return []
    np.row_stack = np.vstack  # type: ignore[attr-defined]
    return ["numpy.row_stack"]


apply()
