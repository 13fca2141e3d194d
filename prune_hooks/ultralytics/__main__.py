"""``yolo train`` with the prune callbacks, for the command line (Ultralytics' CLI has no way to add callbacks).

    python -m prune_hooks.ultralytics model=yolov8n.yaml data=data.yaml epochs=100 imgsz=640 \\
        prune.methods=vps_iou,vps_conf,csod prune.keep_ratio=0.5

Arguments are Ultralytics' ``key=value`` train arguments, given to ``YOLO(model).train(...)`` unchanged; those
starting with ``prune.`` are the callbacks' options (``add_prune_callbacks``; lists comma-separated). The
generated ``retrain_args.yaml`` retrains with Ultralytics' own command: ``yolo detect train cfg=.../retrain_args.yaml``.
"""

from __future__ import annotations

import sys

from ..core.errors import PruneHooksError

__all__ = ["main", "parse"]


def _value(text: str):
    import yaml

    return yaml.safe_load(text) if text else None


def parse(argv: list[str]) -> tuple[dict, dict]:
    """(train arguments, prune options) from ``key=value`` words."""
    train, prune = {}, {}
    for word in argv:
        key, sep, text = word.partition("=")
        if not sep or not key:
            raise PruneHooksError(f"[prune_hooks] arguments are key=value (Ultralytics' form), got {word!r}")
        if key.startswith("prune."):
            name = key[len("prune.") :]
            prune[name] = text.split(",") if name == "methods" else _value(text)
        else:
            train[key] = _value(text)
    if "model" not in train:
        raise PruneHooksError("[prune_hooks] model= is required (a model yaml such as yolov8n.yaml, or your .pt)")
    return train, prune


def main(argv: list[str] | None = None) -> int:
    try:
        train, prune = parse(sys.argv[1:] if argv is None else argv)
        from ultralytics import YOLO

        from . import add_prune_callbacks

        model = YOLO(str(train.pop("model")))
        add_prune_callbacks(model, **prune)
        model.train(**train)
    except (PruneHooksError, TypeError) as e:  # bad options: one line
        print(str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
