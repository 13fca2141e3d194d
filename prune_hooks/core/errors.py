"""The one exception type prune_hooks raises for bad input."""

from __future__ import annotations

__all__ = ["PruneHooksError", "fail"]


class PruneHooksError(ValueError):
    """Bad input or configuration. The message names the field, the expected and the given value.

    The CLI prints it as one line (no traceback); hooks raise it at start-up, prefixed with
    ``[prune_hooks]``.
    """


def fail(msg: str) -> PruneHooksError:
    """The error a hook raises: ``msg`` prefixed with ``[prune_hooks]`` (the component, in the frameworks' logs)."""
    return PruneHooksError(f"[prune_hooks] {msg}")
