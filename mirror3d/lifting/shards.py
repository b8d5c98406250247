"""Point-cloud shards: parquet files of lifted samples, the OG-Net trainer's input.

Schema (one row per image):

    xyz     list<fixed_size_list<float32, 3>>   the sample's points
    rgb     list<fixed_size_list<float32, 3>>   their colours in [0, 1]
    pid     int64      person id (0 = distractor, −1 = junk in galleries)
    camid   int64      camera id (0-based)
    split   string     train | query | gallery
    path    string     source image
    mode    string     lifting mode (flat | casl-visible | casl-visible+bg)

A shard is written to a hidden temporary name and renamed (:func:`mirror3d.utils.files.atomic_path`),
so a crash leaves no partial file; readers of a directory skip hidden files.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mirror3d.utils.errors import UserError
from mirror3d.utils.files import atomic_path

__all__ = ["SCHEMA", "write_shard", "read_shards", "PointSamples", "ShardError"]

_POINT = pa.list_(pa.list_(pa.float32(), 3))
SCHEMA = pa.schema([
    ("xyz", _POINT), ("rgb", _POINT), ("pid", pa.int64()), ("camid", pa.int64()),
    ("split", pa.string()), ("path", pa.string()), ("mode", pa.string()),
])


class ShardError(UserError, ValueError):
    """A shard with the wrong columns or types, or unreadable."""


@dataclass
class PointSamples:
    """Samples read back from shards. ``points[i]`` is (N_i, 6) float32 [xyz, rgb]."""

    points: list[np.ndarray]
    pid: np.ndarray
    camid: np.ndarray
    split: np.ndarray
    path: np.ndarray
    mode: np.ndarray

    def __len__(self) -> int:
        return len(self.points)

    def select(self, mask: np.ndarray) -> "PointSamples":
        idx = np.nonzero(mask)[0]
        return PointSamples([self.points[i] for i in idx], self.pid[idx], self.camid[idx],
                            self.split[idx], self.path[idx], self.mode[idx])


def _points_array(clouds: Sequence[np.ndarray], cols: slice) -> pa.Array:
    lengths = np.array([c.shape[0] for c in clouds], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = np.concatenate([np.ascontiguousarray(c[:, cols], dtype=np.float32).reshape(-1)
                           for c in clouds]) if clouds else np.zeros(0, np.float32)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), 3)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


def write_shard(path: str | os.PathLike, clouds: Sequence[np.ndarray], pid: Iterable[int],
                camid: Iterable[int], split: Iterable[str], src: Iterable[str], mode: str) -> pathlib.Path:
    """Write samples (each (N_i, 6) float32 xyz+rgb) as one parquet shard, atomically."""
    pid, camid, split, src = list(pid), list(camid), list(split), list(src)
    n = len(clouds)
    for name, col in (("pid", pid), ("camid", camid), ("split", split), ("src", src)):
        if len(col) != n:
            raise ValueError(f"{name}: expected {n} values (one per cloud), got {len(col)}")
    for i, c in enumerate(clouds):
        c = np.asarray(c)
        if c.ndim != 2 or c.shape[1] != 6 or c.shape[0] == 0:
            raise ValueError(f"clouds[{i}] ({src[i]}): expected shape (N>0, 6), got {c.shape}")
        if not np.isfinite(c).all():
            raise ValueError(f"clouds[{i}] ({src[i]}): contains NaN or infinite values")
    table = pa.Table.from_arrays(
        [_points_array(clouds, slice(0, 3)), _points_array(clouds, slice(3, 6)),
         pa.array(pid, pa.int64()), pa.array(camid, pa.int64()), pa.array(split, pa.string()),
         pa.array(src, pa.string()), pa.array([mode] * n, pa.string())], schema=SCHEMA)
    path = pathlib.Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def _check_schema(schema: pa.Schema, path: pathlib.Path) -> None:
    missing = [f.name for f in SCHEMA if f.name not in schema.names]
    if missing:
        raise ShardError(f"shard {path}: missing column(s) {missing}; expected {SCHEMA.names}")
    for f in SCHEMA:
        got = schema.field(f.name).type
        if not got.equals(f.type):
            raise ShardError(f"shard {path}: column {f.name!r} has type {got}, expected {f.type}")


def _cloud_values(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    arr = col.combine_chunks()
    offsets = arr.offsets.to_numpy()
    values = arr.values.flatten().to_numpy(zero_copy_only=False).reshape(-1, 3)
    return offsets, values


def read_shards(paths: Iterable[str | os.PathLike] | str | os.PathLike) -> PointSamples:
    """Read one shard, a directory of ``*.parquet`` shards (hidden files, e.g. a shard being
    written, left out), or a list of shard files.

    Raises:
        FileNotFoundError: no shard found.
        ShardError: wrong columns/types, unreadable file, NaN points, or an empty sample.
    """
    if isinstance(paths, (str, os.PathLike)):
        p = pathlib.Path(paths)
        files = (sorted(f for f in p.glob("*.parquet") if not f.name.startswith("."))
                 if p.is_dir() else [p])
    else:
        files = [pathlib.Path(p) for p in paths]
    if not files:
        raise FileNotFoundError(f"no *.parquet shard in {paths}")
    pts, pid, camid, split, src, mode = [], [], [], [], [], []
    for f in files:
        if not f.exists():
            raise FileNotFoundError(f"shard {f} does not exist")
        try:
            table = pq.read_table(f)
        except Exception as exc:
            raise ShardError(f"shard {f}: unreadable parquet ({type(exc).__name__}: {exc})") from None
        _check_schema(table.schema, f)
        if table.num_rows == 0:
            raise ShardError(f"shard {f}: empty (0 rows)")
        off_x, xyz = _cloud_values(table.column("xyz"))
        off_c, rgb = _cloud_values(table.column("rgb"))
        if not np.array_equal(off_x, off_c):
            raise ShardError(f"shard {f}: xyz and rgb point counts differ")
        if not (np.isfinite(xyz).all() and np.isfinite(rgb).all()):
            raise ShardError(f"shard {f}: contains NaN or infinite points")
        paths_col = table.column("path").to_pylist()
        for i in range(table.num_rows):
            a, b = off_x[i], off_x[i + 1]
            if b <= a:
                raise ShardError(f"shard {f}: sample {paths_col[i]!r} has no points")
            pts.append(np.concatenate([xyz[a:b], rgb[a:b]], axis=1))
        pid.append(table.column("pid").to_numpy())
        camid.append(table.column("camid").to_numpy())
        split += table.column("split").to_pylist()
        src += paths_col
        mode += table.column("mode").to_pylist()
    return PointSamples(pts, np.concatenate(pid), np.concatenate(camid), np.array(split),
                        np.array(src), np.array(mode))
