"""The detectron2 hook: scoring passes (or in-loop capture) during training, the run directory and
``retrain.yaml`` when it ends. Lifecycle calls only: the work is the core's :class:`ScoringRun` on a
:class:`~prune_hooks.detectron2.model.Detectron2Adapter`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.engine import HookBase, hooks

from ..core.lifecycle import ScoringRun
from .config import PruneSetup, check_prune_config
from .model import Detectron2Adapter, unwrap

__all__ = ["PruneHook", "build_prune_hooks", "insert_prune_hooks"]


class PruneHook(HookBase):
    """Scores every training object at each epoch end; writes ``OUTPUT_DIR/prune/`` when training ends.

    Place it before ``PeriodicCheckpointer`` (:func:`insert_prune_hooks`): a checkpoint written at an
    epoch end then already holds that epoch's pass, so ``--resume`` neither loses nor repeats one.

    With ``PRUNE.CAPTURE: in_loop`` it scores each training batch after its step instead, from the
    features the step computed (kept by forward hooks on the model while it trains), and from the
    step's RPN head or dense head outputs where that head computes the same in eval (``HeadReplay``).

    Args:
        cfg: the training config, with the ``PRUNE`` node (``add_prune_config``).
        setup: ``check_prune_config(cfg)``, where the train script already made it (else made here); a
            LazyConfig's comes from :func:`~prune_hooks.detectron2.lazy.lazy_prune_hook`.
    """

    def __init__(self, cfg: CfgNode | None = None, setup: PruneSetup | None = None) -> None:
        if setup is None and cfg is None:
            raise TypeError("PruneHook needs a config (cfg) or its checked set-up (setup)")
        self.setup = setup or check_prune_config(cfg)
        options = dict(self.setup.options)
        self.period = options.pop("period")
        self.in_loop = options["capture"] == "in_loop"
        self.run = ScoringRun(
            Detectron2Adapter(self),
            self.setup.index,
            device=self.setup.device,
            out_dir=Path(self.setup.output_dir) / "prune",
            scores_training_set=self.setup.dataset == self.setup.train_dataset,
            **options,
        )

    @property
    def model(self) -> torch.nn.Module:
        return unwrap(self.trainer.model)

    def before_train(self) -> None:
        self.run.check_model(self.model, "PRUNE.METHODS")
        if self.in_loop:
            self.run.start_in_loop(self.model)

    def after_step(self) -> None:
        end = (self.trainer.iter + 1) % self.period == 0
        if self.in_loop:
            self.run.observe_step(self.model)
            if end:
                self.run.close_period()
        elif end:
            # The pass after the last iteration scores with the final model: it also takes the prototypes.
            last = self.trainer.iter + 1 >= self.trainer.max_iter
            self.run.scoring_pass(self.model, prototypes=self.run.want_prototypes and last)

    def after_train(self) -> None:
        # detectron2 calls after_train also when training raised: only a finished loop has iter == max_iter
        self.run.finish(self.model, completed=self.trainer.iter >= self.trainer.max_iter)

    # -- checkpoint state (saved by TrainerBase.state_dict) ---------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return self.run.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run.load_state_dict(state)


def build_prune_hooks(cfg: CfgNode, setup: PruneSetup | None = None) -> list[HookBase]:
    """The prune hooks ``cfg.PRUNE`` asks for (none when ``PRUNE.ENABLED`` is False)."""
    return [PruneHook(cfg, setup)] if cfg.PRUNE.ENABLED else []


def insert_prune_hooks(hook_list: list[HookBase], cfg: CfgNode, setup: PruneSetup | None = None) -> list[HookBase]:
    """``hook_list`` with the prune hooks placed just before the first ``PeriodicCheckpointer``.

    Use in ``DefaultTrainer.build_hooks``: ``return insert_prune_hooks(super().build_hooks(), self.cfg)``.
    """
    new = build_prune_hooks(cfg, setup)
    at = next((i for i, h in enumerate(hook_list) if isinstance(h, hooks.PeriodicCheckpointer)), len(hook_list))
    return hook_list[:at] + new + hook_list[at:]
