import os

import pytest

from prune_hooks.core.errors import PruneHooksError
from prune_hooks.core.io import atomic_write_bytes, read_json, write_csv, write_json


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(path.parent) == ["f.bin"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    write_json(path, {"a": 1})

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_json(path, {"a": 2})
    assert read_json(path) == {"a": 1}
    assert os.listdir(tmp_path) == ["f.json"]


def test_write_csv_formats_floats_and_missing_values(tmp_path):
    path = write_csv(tmp_path / "t.csv", ("a", "b", "c"), [(1, 0.1 + 0.2, float("nan")), (2, None, 1e-12)])
    assert path.read_text() == "a,b,c\n1,0.3,\n2,,1e-12\n"


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(PruneHooksError, match="subset not found"):
        read_json(tmp_path / "nope.json", "subset")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PruneHooksError, match="bad.json is not valid JSON"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(PruneHooksError, match="is a directory"):
        read_json(tmp_path)
