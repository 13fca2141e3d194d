import logging

import pytest

from prune_hooks.core.errors import PruneHooksError
from prune_hooks.core.selection.estimate import available_memory, check_cost, selection_cost

# Objects365 v2's training set: 1,742,289 images, ~10 M (image, class) prototypes of 1,024 values, 365 classes
O365 = dict(images=1_742_289, rows=10_000_000, dim=1024, classes=365)


def test_kcenter_at_objects365_is_one_scan_of_every_image_feature_per_kept_image():
    (c,) = selection_cost("kcenter", **O365, n_keep=871_144)
    assert c.scans == 871_144 and c.scan_bytes == 4 * 1_742_289 * 1024  # float32 image features
    assert 7.1e9 < c.ram < 7.8e9  # the features, the gather's index arrays, the distances
    assert c.seconds > 86400  # days at any memory bandwidth of one machine
    with pytest.raises(PruneHooksError, match=r"^kcenter: ≈ 7\.\d GB of memory, 871,144 scans of 7\.1 GB .*4\.0 GB"):
        check_cost([c], available=4e9)


def test_csod_maps_its_file_and_dedup_grows_with_the_kept_set(caplog):
    csod, dedup = selection_cost("csod", **O365, n_keep=871_144, dedup=True)
    assert csod.mapped == csod.scan_bytes == 2 * 10_000_000 * 1024 and csod.ram < csod.mapped  # float16, in place
    assert dedup.what == "--dedup" and dedup.ram > 4 * 871_144 * 1024
    with caplog.at_level(logging.INFO, logger="prune_hooks"):
        check_cost([csod], available=16e9)  # fits; the file does not: each scan reads the disk
    assert "does not fit in memory" in caplog.text and caplog.records[-1].levelno == logging.WARNING
    assert selection_cost("vps_iou", **O365, n_keep=10) == []  # score methods: O(images)


def test_available_memory_is_read_on_linux():
    got = available_memory()
    assert got is None or got > 1e8
