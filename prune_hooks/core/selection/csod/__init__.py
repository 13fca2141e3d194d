"""CSOD, the class-rotating greedy on per-image per-class prototypes: :func:`csod_select` is the one entry;
``greedy`` holds the exact and lazy greedies, ``kernels`` the compiled lazy loop, ``cuda`` the optional GPU kernel.
"""

from .greedy import CSODResult, csod_select

__all__ = ["CSODResult", "csod_select"]
