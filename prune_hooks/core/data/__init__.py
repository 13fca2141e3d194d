"""Files in: COCO annotation and results files (``coco``), run directories (``rundir``).
Each reader returns what the later stages take, or raises :class:`~prune_hooks.core.errors.PruneHooksError` in one line.
"""
