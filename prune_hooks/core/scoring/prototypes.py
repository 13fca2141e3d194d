"""Per-image per-class prototypes: the mean RoI feature of an image's GT boxes of one class (CSOD).

``prototypes.npz`` holds ``image_id`` int64[P], ``category_id`` int64[P] and ``feature`` float16[P, D],
rows grouped by ascending category id, within a category by ascending image id: CSOD reads a class's
rows as one contiguous block of the file (readers accept any order). Each feature row is stored as
its unit vector: every method that reads prototypes uses cosines only (CSOD, k-center, herding,
``--dedup``), so the scale carries nothing, and unit components fit float16 (half the bytes of
float32; 1e-3 relative precision, no overflow). The file is an uncompressed npz, and ``feature`` is
memory-mapped on load, so selection reads it in chunks instead of holding a copy. Files written as
float32 (earlier versions) load the same way.
"""

from __future__ import annotations

import mmap
import os
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..data.coco import CocoIndex
from ..errors import PruneHooksError
from ..io import atomic_writer
from .shards import SINGLE, Comm

__all__ = ["PrototypeCollector", "save_prototypes", "load_prototypes", "image_features", "row_chunks"]


class PrototypeCollector:
    """Collects prototypes image by image during one pass (on the CPU: they are written, not updated)."""

    def __init__(self, index: CocoIndex) -> None:
        self.index = index
        self._pos = index.image_position()
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, image_id: int, features: torch.Tensor) -> None:
        """``features`` Tensor[n, D]: one row per object of the image, in the index's object order."""
        pos = self._pos[int(image_id)]
        a, b = int(self.index.offsets[pos]), int(self.index.offsets[pos + 1])
        if features.shape[0] != b - a:
            raise PruneHooksError(f"image {image_id}: {features.shape[0]} feature rows for {b - a} objects")
        if a == b or pos in self._rows:
            return
        cats = self.index.obj_category_ids[a:b]
        uniq, inverse = np.unique(cats, return_inverse=True)
        feats = features.detach().float()
        inv = torch.as_tensor(inverse, device=feats.device)
        sums = torch.zeros(len(uniq), feats.shape[1], device=feats.device).index_add_(0, inv, feats)
        counts = torch.bincount(inv, minlength=len(uniq)).to(feats.dtype)
        self._rows[pos] = (uniq.astype(np.int64), (sums / counts[:, None]).cpu().numpy())

    def __len__(self) -> int:
        return len(self._rows)

    def arrays(self, comm: Comm = SINGLE) -> dict[str, np.ndarray] | None:
        """All ranks' prototypes as the npz arrays, in file order, on the main process (None on the others)."""
        parts = comm.to(self._rows, 0)
        if parts is None:
            return None
        rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for part in parts:
            for pos, value in part.items():
                rows.setdefault(pos, value)
        order = sorted(rows)
        if not order:
            return {
                "image_id": np.zeros(0, np.int64),
                "category_id": np.zeros(0, np.int64),
                "feature": np.zeros((0, 0), np.float32),
            }
        return {
            "image_id": np.concatenate([np.full(len(rows[p][0]), self.index.image_ids[p], np.int64) for p in order]),
            "category_id": np.concatenate([rows[p][0] for p in order]),
            "feature": np.concatenate([rows[p][1] for p in order]).astype(np.float32),
        }


CHUNK = 65536  # rows validated / converted at a time


def save_prototypes(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``prototypes.npz`` atomically: rows by category id, then image id; feature rows as float16
    unit vectors (NaN, inf and zero rows are written as they are, for ``load_prototypes`` to name)."""
    path = Path(path)
    feat = np.asarray(arrays["feature"], dtype=np.float32)
    image_id, category_id = np.asarray(arrays["image_id"]), np.asarray(arrays["category_id"])
    order = np.lexsort((image_id, category_id))
    unit = np.empty(feat.shape, dtype=np.float16)
    for a in range(0, len(feat), CHUNK):
        rows = feat[order[a : a + CHUNK]]
        norm = np.linalg.norm(rows, axis=1, keepdims=True)
        ok = np.isfinite(norm) & (norm > 0)
        unit[a : a + CHUNK] = np.where(ok, rows / np.where(ok, norm, 1.0), rows)
    with atomic_writer(path) as f:
        np.savez(f, image_id=image_id[order], category_id=category_id[order], feature=unit)
    return path


def _mapped_member(path: Path, z: zipfile.ZipFile, name: str) -> np.ndarray | None:
    """Array ``name`` of the uncompressed npz ``path`` (open as ``z``) memory-mapped read-only, or None when
    it cannot be (compressed member, object dtype): then the caller reads it whole."""
    try:
        info = z.getinfo(f"{name}.npy")
    except KeyError:
        return None
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # local file header: name and extra-field lengths at bytes 26..29
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return None
        offset = f.tell()
    if dtype.hasobject:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def row_chunks(
    feature: np.ndarray, dtype: Any = None, chunk: int = 0, copy: bool = True
) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows copied as ``dtype``) over ``feature`` in order, ``chunk`` rows at a time;
    ``copy=False``: the rows themselves (a view, to be used before the next chunk is asked for).

    Rows of a memory-mapped file are released from this process once used: a reader that goes
    over a 10x-COCO file once does not keep its pages resident (they stay in the page cache)."""
    chunk = chunk or CHUNK
    mapped = getattr(feature, "_mmap", None) if isinstance(feature, np.memmap) else None
    for a in range(0, len(feature), chunk):
        block = feature[a : a + chunk]
        rows = np.array(block, dtype=dtype or block.dtype) if copy else np.asarray(block)
        if not copy:
            yield a, rows
        if mapped is not None and hasattr(mapped, "madvise") and block.flags.c_contiguous and len(block):
            start = block.ctypes.data - _mmap_address(mapped)  # byte offset of the block in the mapping
            lo = start - start % mmap.PAGESIZE
            try:
                mapped.madvise(mmap.MADV_DONTNEED, lo, start + block.nbytes - lo)
            except (OSError, ValueError):  # advice only: nothing is lost when the kernel declines
                mapped = None
        if copy:
            yield a, rows


def _mmap_address(mapped: mmap.mmap) -> int:
    """Address of the first byte of ``mapped`` (numpy's view of it at offset 0)."""
    return np.frombuffer(mapped, dtype=np.uint8, count=1).ctypes.data


def load_prototypes(path: str | os.PathLike, index: CocoIndex | None = None) -> dict[str, np.ndarray]:
    """Read and validate ``prototypes.npz`` (against ``index`` when given); ``feature`` memory-mapped."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("image_id", "category_id", "feature") if k not in z.files]
            if missing:
                raise PruneHooksError(f"{path}: missing arrays {missing} (has {z.files})")
            image_id, category_id = z["image_id"], z["category_id"]
            feature = _mapped_member(path, z.zip, "feature")
            if feature is None:
                feature = z["feature"]
    except FileNotFoundError:
        raise PruneHooksError(
            f"prototypes not found: {path} (written by the hooks when 'csod' is among the methods)"
        ) from None
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:  # an empty or cut file
        raise PruneHooksError(f"{path}: not a readable npz file ({type(e).__name__}: {e})") from None
    if feature.ndim != 2 or image_id.shape != (feature.shape[0],) or category_id.shape != (feature.shape[0],):
        raise PruneHooksError(
            f"{path}: mismatched array lengths: image_id {image_id.shape}, category_id {category_id.shape}, feature "
            f"{feature.shape}"
        )
    if not np.issubdtype(image_id.dtype, np.integer) or not np.issubdtype(category_id.dtype, np.integer):
        raise PruneHooksError(
            f"{path}: image_id and category_id must be integers, got {image_id.dtype}, {category_id.dtype}"
        )
    if not np.issubdtype(feature.dtype, np.floating):
        raise PruneHooksError(f"{path}: feature must be floating point, got {feature.dtype}")
    if feature.shape[0] and feature.shape[1] == 0:
        raise PruneHooksError(f"{path}: feature rows have no values (shape {feature.shape})")
    # One reduction per row: its largest magnitude (for float16 on the bits, which numpy reduces in SIMD:
    # its float16 ufuncs go element by element). NaN and inf rows: not finite; zero rows: 0.
    if feature.dtype == np.float16:

        def largest(x):
            return (x.view(np.uint16) & 0x7FFF).max(axis=1)

        checks = ((lambda m: m >= 0x7C00, "has NaN or inf"),)  # exponent all ones
    else:

        def largest(x):
            return np.abs(x).max(axis=1)

        checks = ((lambda m: ~np.isfinite(m), "has NaN or inf"),)
    checks += ((lambda m: m == 0, "is a zero vector: its cosine is undefined"),)
    for a, rows in row_chunks(feature, copy=False):
        m = largest(rows)
        for test, what in checks:
            mask = test(m)
            if mask.any():  # the error path counts the offending rows of the whole file
                r = a + int(np.flatnonzero(mask)[0])
                total = sum(int(test(largest(feature[b : b + CHUNK])).sum()) for b in range(a, len(feature), CHUNK))
                raise PruneHooksError(
                    f"{path}: feature row {r} (image {image_id[r]}, category {category_id[r]}) {what} ({total} rows)"
                )
    protos = {"image_id": image_id.astype(np.int64), "category_id": category_id.astype(np.int64), "feature": feature}
    if index is not None:
        check_prototypes(path, protos, index)
    return protos


def check_prototypes(path: str | os.PathLike, protos: dict[str, np.ndarray], index: CocoIndex) -> None:
    """Every image and category of the prototypes ``protos`` (read from ``path``) is one of ``index``."""
    unknown = np.setdiff1d(protos["image_id"], index.image_ids)
    if unknown.size:
        raise PruneHooksError(f"{path}: image ids not in {index.path}: {unknown[:5].tolist()}")
    unknown = np.setdiff1d(protos["category_id"], index.category_ids)
    if unknown.size:
        raise PruneHooksError(f"{path}: category ids not in {index.path}: {unknown[:5].tolist()}")


def image_features(protos: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(image ids ndarray[I], features ndarray[I, D]): mean of each image's unit prototypes.

    Rows are gathered image by image, a chunk of whole images at a time, whatever the file's row order
    (the hooks write it by class), and only the means are held."""
    feature = protos["feature"]
    ids, inverse = np.unique(protos["image_id"], return_inverse=True)
    order = np.argsort(inverse, kind="stable")  # rows in image order
    counts = np.bincount(inverse, minlength=len(ids))
    starts = np.concatenate([[0], np.cumsum(counts)])
    out = np.empty((len(ids), feature.shape[1]), dtype=np.float32)
    i = 0
    while i < len(ids):
        j = max(int(np.searchsorted(starts, starts[i] + CHUNK, side="right")) - 1, i + 1)  # images i..j-1
        rows = np.asarray(feature[order[starts[i] : starts[j]]], dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        sums = np.add.reduceat(rows, starts[i:j] - starts[i], axis=0, dtype=np.float64)
        out[i:j] = sums / counts[i:j, None]
        i = j
    return ids, out
