"""What the demo and the benchmarks share: run a training in a subprocess, read its COCO AP, write results;
the benchmark setting (proxy config, the two frameworks' proxy and retraining runs, UNSEEN's driver); the
synthetic prototype instances of the selection benchmarks. The scripts of this folder import it (it is their
``sys.path[0]``), never each other.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from prune_hooks.core.selection.methods import MASKS, REGISTRY

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "tools" / "bench"
RESULTS = ROOT / "docs" / "benchmarks"  # every benchmark's default --out: tables, JSON and plots only


def train(cmd: list[str], log: Path, env: dict | None = None) -> float:
    """Run ``python *cmd`` with its output in ``log``; its wall seconds, or exit with the log's tail."""
    start = time.time()
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, *map(str, cmd)], stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        print("".join(log.read_text().splitlines(keepends=True)[-40:]), file=sys.stderr)
        raise SystemExit(f"training failed ({proc.returncode}), see {log}")
    return time.time() - start


def last_ap(output_dir: Path) -> dict:
    """The last COCO bbox metrics detectron2 logged to OUTPUT_DIR/metrics.json."""
    records = [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines() if line.strip()]
    evals = [r for r in records if "bbox/AP" in r]
    return {k: evals[-1][f"bbox/{k}"] if evals else math.nan for k in ("AP", "AP50", "AP75")}


def mmdet_ap(work_dir: Path) -> dict:
    """The last COCO bbox metrics mmengine logged under work_dir (in percent, like detectron2's)."""
    records = []
    for scalars in sorted(work_dir.glob("*/vis_data/scalars.json")):
        records += [json.loads(line) for line in scalars.read_text().splitlines() if line.strip()]
    evals = [r for r in records if "coco/bbox_mAP" in r]
    keys = (("AP", "mAP"), ("AP50", "mAP_50"), ("AP75", "mAP_75"))
    return {k: 100 * evals[-1][f"coco/bbox_{m}"] if evals else math.nan for k, m in keys}


def write_result(out: Path, stem: str, result: dict, lines: list[str]) -> None:
    """OUT/STEM.json (the numbers) and OUT/STEM.md (the table), and the table printed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# the package's detectron2 train script with the benchmark's backbone registered first
TRAIN_NET = (
    "import sys, runpy; sys.path[:0] = [{tools!r}]; import mobilenet_fpn; "
    "sys.argv = ['train_net', '--config-file', {yaml!r}]; "
    "runpy.run_module('prune_hooks.detectron2.train_net', run_name='__main__', alter_sys=True)"
)


def train_net(yaml: Path, log: Path) -> float:
    return train(["-c", TRAIN_NET.format(tools=str(BENCH), yaml=str(yaml))], log)


def proxy_config(files, data_root: Path, out: Path, n_train: int, epochs: int, classes: int, size: int):
    from prune_hooks.detectron2.toy import toy_config

    cfg = toy_config(files, data_root, out, prefix="bq")
    cfg.merge_from_file(str(BENCH / "configs" / "bench_MNV2_FPN_overrides.yaml"))
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = classes
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = (
        (size,),
        size,
        size,
        size,
    )
    cfg.SOLVER.MAX_ITER = epochs * math.ceil(n_train / cfg.SOLVER.IMS_PER_BATCH)
    cfg.SOLVER.STEPS = (int(cfg.SOLVER.MAX_ITER * 0.75),)
    cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.MAX_ITER // 10)
    cfg.SOLVER.CHECKPOINT_PERIOD = cfg.SOLVER.MAX_ITER
    cfg.TEST.EVAL_PERIOD = 0
    cfg.PRUNE.ENABLED = True
    # shape scores where the data has masks (fashion; deepforest is box-only)
    masks = any("segmentation" in a for a in json.loads(Path(files["train"]).read_text())["annotations"])
    cfg.PRUNE.METHODS = ["vps_iou", "vps_conf", "csod"] + (["cb_scs", "si_scs"] if masks else [])
    return cfg


def fmt(vals) -> str:
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    if not vals:
        return "n/a"
    return f"{np.mean(vals):.1f}" + (f" ± {np.std(vals, ddof=1):.1f}" if len(vals) > 1 else "")


class Detectron2Bench:
    """Proxy with tools/train_net.py + PRUNE config; each subset retrained from its retrain.yaml."""

    def __init__(self, work: Path, files, n_train: int, epochs: int, classes: int, size: int):
        self.work, self.n_train = work, n_train
        self.cfg = proxy_config(files, work / "data", work / "proxy", n_train, epochs, classes, size)
        self.iters, self.batch = self.cfg.SOLVER.MAX_ITER, self.cfg.SOLVER.IMS_PER_BATCH

    def proxy(self) -> tuple[float, dict]:
        (self.work / "proxy.yaml").write_text(self.cfg.dump())
        return train_net(self.work / "proxy.yaml", self.work / "proxy.log"), last_ap(self.work / "proxy")

    def full(self, repeat: int) -> tuple[float, dict]:
        """The full training set without the hook, training seed ``repeat``."""
        cfg = self.cfg.clone()
        cfg.PRUNE.ENABLED, cfg.SEED, cfg.OUTPUT_DIR = False, repeat, str(self.work / f"full_r{repeat}")
        yaml = self.work / f"full_r{repeat}.yaml"
        yaml.write_text(cfg.dump())
        return train_net(yaml, self.work / f"full_r{repeat}.log"), last_ap(Path(cfg.OUTPUT_DIR))

    def retrain(self, name: str, sel: Path, n_keep: int, repeat: int = 0, n_sched: int = 0) -> tuple[float, int, dict]:
        """Train ``sel``'s pruned file with its retrain.yaml (schedule scaled to ``n_sched`` >= n_keep images)."""
        from detectron2.config import get_cfg

        from prune_hooks.detectron2 import add_prune_config, write_retrain_config

        base = self.cfg.clone()
        base.OUTPUT_DIR = str(self.work / "retrain" / name)
        base.SEED = repeat  # the training seed; 0 = the overrides' default
        yaml = write_retrain_config(
            base,
            "bq_train",
            next(sel.glob("*_pruned.json")),
            str((self.work / "data" / "train").resolve()),
            max(n_keep, n_sched),
            self.n_train,
            sel / f"retrain{f'_r{repeat}' if repeat else ''}.yaml",
        )
        re_cfg = add_prune_config(get_cfg())
        re_cfg.merge_from_file(str(yaml))
        secs = train_net(yaml, sel / f"train{f'_r{repeat}' if repeat else ''}.log")
        return secs, re_cfg.SOLVER.MAX_ITER, last_ap(Path(re_cfg.OUTPUT_DIR))


class MMDetBench:
    """Proxy with mmdet's train script (tools/train_mmdet.py) + PruneHook; each subset retrained from its retrain.py."""

    def __init__(self, work: Path, files, n_train: int, epochs: int, classes: int, size: int):
        if classes != 10 or size != 256:
            raise SystemExit(
                "--framework mmdet: tools/bench/configs/bench_faster-rcnn_mnv2_fpn.py is written for the fashion data"
            )
        self.work, self.n_train, self.epochs, self.batch = work, n_train, epochs, 4
        self.iters = epochs * math.ceil(n_train / self.batch)
        os.environ["PRUNE_TOY_ROOT"] = (
            str((work / "data").resolve()) + "/"
        )  # the configs' data_root, here and in the trainings
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")]))
        self.config = self.write_config(work / "proxy.py", epochs, work / "proxy", hook=True)

    def write_config(self, path: Path, epochs: int, work_dir: Path, hook: bool = False, seed: int = 0) -> Path:
        path.write_text(
            f"_base_ = {str(BENCH / 'configs' / 'bench_faster-rcnn_mnv2_fpn.py')!r}\n"
            "custom_imports = dict(imports=['prune_hooks.compat', 'mobilenet_mmdet', 'prune_hooks.mmdet'], "
            "allow_failed_imports=False)\n"
            + (
                "custom_hooks = [dict(type='PruneHook', methods=['vps_iou', 'vps_conf', 'csod', 'cb_scs', 'si_scs'])]\n"
                if hook
                else ""
            )
            + f"work_dir = {str(work_dir.resolve())!r}\n"
            f"randomness = dict(seed={seed})\n"
            f"train_cfg = dict(max_epochs={epochs}, val_interval={epochs})\n"
            "param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50), "
            f"dict(type='MultiStepLR', begin=0, end={epochs}, by_epoch=True, "
            f"milestones=[{max(1, round(epochs * 0.75))}], gamma=0.1)]\n"
            f"default_hooks = dict(checkpoint=dict(interval={epochs}))\n"
        )
        return path

    def _train(self, config: Path, log: Path) -> float:
        return train([ROOT / "tools" / "train_mmdet.py", config], log, self.env)

    def proxy(self) -> tuple[float, dict]:
        secs = self._train(self.config, self.work / "proxy.log")
        return secs, mmdet_ap(self.work / "proxy")

    def retrain(self, name: str, sel: Path, n_keep: int, repeat: int = 0, n_sched: int = 0) -> tuple[float, int, dict]:
        """Train ``sel``'s pruned file with training seed ``repeat``; an epoch-based loop keeps its epochs, so a
        schedule floor ``n_sched`` > n_keep becomes more epochs (epochs * n_sched / n_keep)."""
        from mmengine.config import Config

        from prune_hooks.mmdet.retrain import write_retrain_config

        tag = f"{name}_mmdet"
        epochs = round(self.epochs * max(n_keep, n_sched) / n_keep)
        base = self.write_config(sel / f"mmdet_base{f'_r{repeat}' if repeat else ''}.py", epochs,
                                 self.work / "retrain" / tag, seed=repeat)  # fmt: skip
        cfg = Config.fromfile(str(base))
        r = f"_r{repeat}" if repeat else ""
        pruned = next(sel.glob("*_pruned.json"))
        path = write_retrain_config(cfg, pruned, n_keep, self.n_train, sel / f"retrain_mmdet{r}.py")
        secs = self._train(path, sel / f"train_mmdet{r}.log")
        return secs, epochs * math.ceil(n_keep / self.batch), mmdet_ap(Path(cfg.work_dir + "_retrain"))


def train_script(work: Path) -> Path:
    """A train script for tools/unseen.py: tools/train_net.py with the benchmark's backbone registered."""
    path = work / "train_net_mnv2.py"
    code = TRAIN_NET.replace("sys.argv = ['train_net', '--config-file', {yaml!r}]; ", "")
    path.write_text(code.format(tools=str(BENCH)) + "\n")
    return path


def run_unseen(user_yaml: Path, out: Path, fold_seed: int, keep: float, steps: int, k: int = 2) -> Path:
    """tools/unseen.py (detectron2, K folds, vps_iou:max) on the user config; resumable, folds shared by keeps.
    It runs in tools/bench (the backbone module's folder), so every path is made absolute first."""
    user_yaml, out = user_yaml.resolve(), out.resolve()
    cmd = [sys.executable, str(ROOT / "tools" / "unseen.py"), "--framework", "detectron2", "--config", str(user_yaml),
           "--k", str(k), "--steps", str(steps), "--keep", str(keep), "--seed", str(fold_seed),
           "--method", "vps_iou:max", "--work", str(out), "--train-script", str(train_script(out.parent))]  # fmt: skip
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=BENCH)
    if proc.returncode:
        raise SystemExit(f"unseen failed: {proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    print(f"unseen K {k} seed {fold_seed} keep {keep} steps {steps}: {time.time() - start:.0f}s", flush=True)
    return out


def retrain(yaml: Path, name: str, work: Path, seeds: int) -> dict:
    """Train the retrain config with SEED 0..seeds-1; AP mean and sample std over the seeds.

    A training whose model ends with no detection at all (detectron2 then logs AP as nan) counts as
    AP 0 and is named in ``collapsed``: it is what that subset trained, not a missing value.
    """
    from detectron2.config import get_cfg

    from prune_hooks.detectron2 import add_prune_config

    runs = []
    for seed in range(seeds):
        cfg = add_prune_config(get_cfg())
        cfg.merge_from_file(str(yaml))
        run, tag = yaml, name
        if seed:
            cfg.SEED, cfg.OUTPUT_DIR = seed, f"{cfg.OUTPUT_DIR}_s{seed}"
            tag = f"{name}_s{seed}"
            run = work / f"{tag}.yaml"
            run.write_text(cfg.dump())
        runs.append(train_once(run, Path(cfg.OUTPUT_DIR), work / f"{tag}.log"))
    return {"iters": cfg.SOLVER.MAX_ITER, **seed_summary(runs)}


def train_once(yaml: Path, output_dir: Path, log: Path) -> dict:
    """``train_net`` on ``yaml`` unless its ``output_dir`` already holds COCO metrics (resumable benches); the
    last AP it logged."""
    metrics = output_dir / "metrics.json"
    if not metrics.exists() or "bbox/AP" not in metrics.read_text():
        train_net(yaml, log)
    return last_ap(output_dir)


def seed_summary(runs: list[dict]) -> dict:
    """AP / AP50 of one subset's trainings (``last_ap`` of each seed): mean, sample std, the per-seed values
    (a training with no detection counts as 0) and which seeds collapsed."""
    row: dict = {"seeds": len(runs), "collapsed": [s for s, r in enumerate(runs) if math.isnan(r["AP"])]}
    for k in ("AP", "AP50"):
        vals = [0.0 if math.isnan(r[k]) else r[k] for r in runs]
        mean = sum(vals) / len(vals)
        row[k], row[f"{k}_runs"] = mean, vals
        row[f"{k}_sd"] = (sum((v - mean) ** 2 for v in vals) / max(1, len(vals) - 1)) ** 0.5
    return row


# the image-score columns of a run directory from scoring passes
IMAGE_SCORE_COLUMNS = [c for m in REGISTRY.values() if m.is_score and MASKS not in m.needs for c in m.columns]


# Peak memory of the select process itself: VmHWM (ru_maxrss would carry the parent's over exec).
RUNNER = (
    "import sys\n"
    "from prune_hooks.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
    "print('MAXRSS_KB', hwm[0], file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


REGIMES = ("separated", "overlapping", "duplicates")


def make_instance(n_images: int, n_classes: int = 80, dim: int = 1024, seed: int = 0, regime: str = "separated"):
    """(coco dict, image_id, category_id, feature float32) with COCO-like class statistics.

    Regimes of the features: ``separated`` — relu(0.6 * class centre + noise); ``overlapping`` — every
    class shares one strong direction, relu(1.5 * g + 0.3 * class centre + noise), so all cosines are
    high and alike (the lazy greedy's bounds go stale fastest); ``duplicates`` — separated, but a third
    of the images are near copies (classes and features + 5 % noise) of another image."""
    rng = np.random.default_rng(seed)
    tail = 1.0 / np.arange(1, n_classes) ** 1.1
    tail /= tail.sum()
    ids, cats = [], []
    for i in range(1, n_images + 1):
        present = [1] if rng.random() < 0.45 else []
        k = min(rng.poisson(2.35), n_classes - 1)
        present += (2 + rng.choice(n_classes - 1, size=k, replace=False, p=tail)).tolist()
        ids += [i] * len(present)
        cats += sorted(present)
    image_id, category_id = np.array(ids, np.int64), np.array(cats, np.int64)
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    centers = rng.normal(size=(n_classes + 1, dim)).astype(np.float32)
    # separated / duplicates: 0.6 * class centre; overlapping: a strong shared direction + 0.3 * class centre
    shared, weight = 0.0, 0.6
    if regime == "overlapping":
        shared, weight = 1.5 * np.abs(rng.normal(size=dim)).astype(np.float32), 0.3
    feature = np.empty((len(ids), dim), np.float32)
    for s in range(0, len(ids), 50_000):
        part = slice(s, s + 50_000)
        noise = rng.standard_normal((len(image_id[part]), dim), dtype=np.float32)
        feature[part] = np.maximum(shared + weight * centers[category_id[part]] + noise, 0.0)
    if regime == "duplicates":
        image_id, category_id, feature = near_copies(rng, image_id, category_id, feature, n_images)
    feature[~(feature > 0).any(1), 0] = 1e-3
    coco = {
        "images": [
            {"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480} for i in range(1, n_images + 1)
        ],
        "annotations": [
            {
                "id": k + 1,
                "image_id": int(i),
                "category_id": int(c),
                "bbox": [10, 10, 50, 40],
                "area": 2000,
                "iscrowd": 0,
            }
            for k, (i, c) in enumerate(zip(image_id, category_id))
        ],
        "categories": [{"id": c, "name": f"class{c}"} for c in range(1, n_classes + 1)],
    }
    return coco, image_id, category_id, feature


def near_copies(rng, image_id, category_id, feature, n_images: int, share: float = 1 / 3):
    """A ``share`` of the images become near copies of another image: its classes, its features + noise."""
    starts = np.searchsorted(image_id, np.arange(1, n_images + 2))
    source = rng.integers(1, n_images + 1, size=n_images + 1)
    copy = (rng.random(n_images + 1) < share) & (source != np.arange(n_images + 1))
    ids, cats, feats = [], [], []
    for i in range(1, n_images + 1):
        j = int(source[i]) if copy[i] else i
        rows = slice(starts[j - 1], starts[j])
        f = feature[rows]
        if j != i:
            f = np.maximum(f + 0.05 * rng.standard_normal(f.shape, dtype=np.float32), 0.0)
        ids.append(np.full(len(f), i))
        cats.append(category_id[rows])
        feats.append(f)
    return np.concatenate(ids), np.concatenate(cats), np.concatenate(feats).astype(np.float32)


def as_stored(image_id, category_id, feature):
    """The rows as ``save_prototypes`` writes them: by category then image id, float16 unit rows."""
    order = np.lexsort((image_id, category_id))
    unit = np.empty(feature.shape, np.float16)
    for a in range(0, len(order), 65536):
        rows = feature[order[a : a + 65536]]
        unit[a : a + len(rows)] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return image_id[order], category_id[order], unit


def run_cli(argv: list[str], env: dict | None = None) -> tuple[float, float, str]:
    t = time.perf_counter()
    env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-c", RUNNER, *argv], capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"select failed: {proc.stderr[-2000:]}")
    rss = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("MAXRSS_KB")]
    return wall, rss[-1] / 2**20, proc.stderr
