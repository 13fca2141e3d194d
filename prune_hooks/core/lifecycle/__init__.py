"""The hook lifecycle shared by the framework adapters: what an adapter answers (``adapter``), the options
every hook checks (``options``), and the run that scores, selects and writes (``run``).
"""

from .adapter import Adapter, ImageOutput, StepImage
from .options import CAPTURES, COVERAGE, check_coverage, check_options
from .run import ScoringRun, inference_context

__all__ = [
    "Adapter",
    "CAPTURES",
    "COVERAGE",
    "ImageOutput",
    "ScoringRun",
    "StepImage",
    "check_coverage",
    "check_options",
    "inference_context",
]
