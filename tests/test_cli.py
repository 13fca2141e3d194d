import argparse
import csv
import json
import subprocess
import sys

import pytest

from prune_hooks.cli import build_parser, main

PASS1 = [
    {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.8},
    {"image_id": 1, "category_id": 2, "bbox": [20, 20, 10, 5], "score": 0.6},
]
PASS2 = [
    {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 5], "score": 0.4},
    {"image_id": 3, "category_id": 2, "bbox": [5, 5, 20, 10], "score": 0.9},
]


def write(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture
def run(tmp_path, coco_file):
    dets = [write(tmp_path / "e1.json", PASS1), write(tmp_path / "e2.json", PASS2)]
    out = tmp_path / "run"
    assert main(["score", "vps", "--annotations", str(coco_file), "--detections", *dets, "--out", str(out)]) == 0
    return out


def test_score_vps_hand_computed(run):
    objs = {int(r["ann_id"]): r for r in rows(run / "objects.csv")}
    assert list(rows(run / "objects.csv")[0]) == [
        "ann_id",
        "image_id",
        "category_id",
        "passes",
        "iou_mean",
        "iou_std",
        "conf_mean",
        "conf_std",
        "learned_passes",
        "forget_events",
        "learned_last",
        "entropy",
    ]
    assert sorted(objs) == [10, 11, 13]  # crowd annotation 12 is not an object
    # object 10: IoU 1 then 0.5 (same class); conf 0.8 then 0.4
    # object 11: IoU 0.5 then 0 (no dog predicted in pass 2: falls back to the cat box); conf 0.6 then 0.4
    # object 13: no prediction in pass 1 (0/0), then the other-class box with IoU 1 and conf 0.9
    want = {10: (0.25, 0.2), 11: (0.25, 0.1), 13: (0.5, 0.45)}
    for aid, (iou_std, conf_std) in want.items():
        assert float(objs[aid]["iou_std"]) == pytest.approx(iou_std, abs=1e-6)
        assert float(objs[aid]["conf_std"]) == pytest.approx(conf_std, abs=1e-6)
        assert objs[aid]["passes"] == "2"
    # learned = same class at IoU >= 0.5: 10 both passes; 11 pass 1 only (one forgetting event); 13 never
    assert [(objs[a]["learned_passes"], objs[a]["forget_events"], objs[a]["learned_last"]) for a in (10, 11, 13)] == [
        ("2", "0", "1"),
        ("1", "1", "0"),
        ("0", "0", "0"),
    ]
    assert objs[10]["entropy"] == ""  # no soft labels from detections alone
    imgs = {int(r["image_id"]): r for r in rows(run / "images.csv")}
    assert float(imgs[1]["vps_iou_sum"]) == pytest.approx(0.5) and float(imgs[1]["vps_conf_mean"]) == pytest.approx(
        0.15
    )
    assert float(imgs[3]["vps_conf_max"]) == pytest.approx(0.45)
    assert imgs[3]["forgetting_max"] == "inf" and imgs[1]["forgetting_sum"] == "1"
    assert imgs[2]["n_objects"] == "0" and imgs[2]["vps_iou_max"] == ""
    meta = json.loads((run / "meta.json").read_text())
    assert meta["passes"] == 2 and meta["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert len(meta["annotations_sha256"]) == 64


def test_select_vps_writes_subset_and_pruned_file(run, tmp_path):
    out = tmp_path / "sel"
    assert (
        main(["select", str(run), "--method", "vps_iou", "--aggregation", "max", "--keep", "0.5", "--out", str(out)])
        == 0
    )
    subset = json.loads((out / "subset.json").read_text())
    assert subset == {
        "method": "vps_iou",
        "aggregation": "max",
        "keep_ratio": 0.5,
        "n_images": 2,
        "n_total": 3,
        "seed": None,
        "image_ids": [3, 1],
    }
    pruned = json.loads((out / "instances_train_pruned.json").read_text())
    assert [i["id"] for i in pruned["images"]] == [3, 1]
    assert sorted(a["id"] for a in pruned["annotations"]) == [10, 11, 12, 13]
    # Pruning 2/3 keeps the objectless image last in the ranking out.
    assert main(["select", str(run), "--method", "vps_conf", "--prune", "0.34", "--out", str(out)]) == 0
    assert json.loads((out / "subset.json").read_text())["image_ids"] == [3, 1]


def test_select_random_is_seeded(run, tmp_path):
    picks = []
    for seed in (0, 0, 1, 2, 3):
        assert (
            main(
                [
                    "select",
                    str(run),
                    "--method",
                    "random",
                    "--count",
                    "2",
                    "--seed",
                    str(seed),
                    "--out",
                    str(tmp_path / "r"),
                ]
            )
            == 0
        )
        s = json.loads((tmp_path / "r" / "subset.json").read_text())
        assert s["seed"] == seed and s["aggregation"] is None and s["n_images"] == 2
        picks.append(tuple(s["image_ids"]))
    assert picks[0] == picks[1] and len(set(picks)) > 1


def error_of(capsys, argv, code=1):
    """The one stderr line of a failing command; exit 1 for runtime errors (bad files, bad runs), 2 for usage."""
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prune-hooks: error: "), err
    return err[0]


def test_errors_are_one_line(tmp_path, coco_file, run, capsys):
    ok = write(tmp_path / "ok.json", PASS1)
    score = ["score", "vps", "--annotations", str(coco_file), "--out", str(tmp_path / "x"), "--detections"]
    assert "detections file not found: " in error_of(capsys, score + [str(tmp_path / "nope.json")])
    assert "annotation file not found" in error_of(
        capsys,
        ["score", "vps", "--annotations", str(tmp_path / "no.json"), "--detections", ok, "--out", str(tmp_path / "x")],
    )
    assert "is a directory" in error_of(capsys, score + [str(tmp_path)])
    (tmp_path / "bin.json").write_bytes(b"\x89PNG\x00\xff")
    assert "is not valid JSON" in error_of(capsys, score + [str(tmp_path / "bin.json")])
    notcoco = write(tmp_path / "notcoco.json", {"images": []})
    assert "not a COCO file: missing 'annotations'" in error_of(
        capsys, ["score", "vps", "--annotations", notcoco, "--detections", ok, "--out", str(tmp_path / "x")]
    )

    def bad(**kw):
        return write(tmp_path / "bad.json", [{**PASS1[0], **kw}])

    assert "image_id 99 is not an image" in error_of(capsys, score + [bad(image_id=99)])
    assert "category_id 7 is not a category" in error_of(capsys, score + [bad(category_id=7)])
    assert "bbox values must be finite" in error_of(capsys, score + [bad(bbox=[0, 0, float("nan"), 1])])
    assert "score must be a finite number" in error_of(capsys, score + [bad(score=float("inf"))])
    assert "width and height must be >= 0" in error_of(capsys, score + [bad(bbox=[0, 0, 3, -1])])
    sel = ["select", str(run), "--method", "vps_iou", "--out", str(tmp_path / "s")]
    assert r"keep ratio must be in (0, 1], got 1.5" in error_of(capsys, sel + ["--keep", "1.5"])
    assert r"keep ratio must be in (0, 1], got 0.0" in error_of(capsys, sel + ["--keep", "0"])
    assert "prune ratio must be in [0, 1), got 1.0" in error_of(capsys, sel + ["--prune", "1"])
    assert "count must be an integer in [1, 3], got 0" in error_of(capsys, sel + ["--count", "0"])
    assert "count must be an integer in [1, 3], got 4" in error_of(capsys, sel + ["--count", "4"])
    assert "invalid choice: 'vps_size'" in error_of(
        capsys, ["select", str(run), "--method", "vps_size", "--keep", "0.5"], code=2
    )
    assert "run directory not found" in error_of(
        capsys, ["select", str(tmp_path / "none"), "--method", "random", "--keep", "0.5"]
    )
    dup = write(tmp_path / "dup.json", {"images": [{"id": 1}, {"id": 1}], "annotations": [], "categories": []})
    assert "images[1].id 1 is a duplicate image id" in error_of(capsys, sel + ["--keep", "0.5", "--annotations", dup])
    zero = json.loads(coco_file.read_text())
    zero["annotations"][0]["bbox"] = [0, 0, 5, 0]
    zero_path = write(tmp_path / "zero.json", zero)
    assert "width and height must be > 0" in error_of(capsys, sel + ["--keep", "0.5", "--annotations", zero_path])
    assert not (tmp_path / "x").exists(), "a failed score must not leave a partial run directory"


def test_console_script_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "prune_hooks.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "score" in out and "select" in out
    out = subprocess.run(
        [sys.executable, "-m", "prune_hooks.cli", "select", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--method", "--aggregation", "--keep", "--prune", "--count", "--seed", "--annotations", "--out"):
        assert flag in out


def test_version_and_help_on_every_argument(capsys):
    from prune_hooks import __version__

    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"prune-hooks {__version__}"

    def parsers(p):
        yield p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub in a.choices.values():
                    yield from parsers(sub)

    missing = [
        f"{p.prog} {a.dest}"
        for p in parsers(build_parser())
        for a in p._actions
        if not a.help and not isinstance(a, (argparse._SubParsersAction, argparse._HelpAction))
    ]
    assert not missing, missing
    # the same option for the same thing in every subcommand: the annotation file is --annotations
    folds = next(p for p in parsers(build_parser()) if p.prog.endswith("unseen folds"))
    assert any(a.option_strings == ["--annotations"] for a in folds._actions)
