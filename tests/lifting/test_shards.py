import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mirror3d.lifting.shards import ShardError, read_shards, write_shard


def _clouds(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((n, 6), dtype=np.float32) for n in (5, 7, 3)]


def test_round_trip_keeps_points_and_metadata(tmp_path):
    clouds = _clouds()
    write_shard(tmp_path / "s0.parquet", clouds, [1, 2, 0], [0, 1, 2], ["train", "query", "gallery"],
                ["a.jpg", "b.jpg", "c.jpg"], "flat")
    write_shard(tmp_path / "s1.parquet", clouds[:1], [-1], [3], ["gallery"], ["d.jpg"], "flat")
    got = read_shards(tmp_path)
    assert len(got) == 4
    for a, b in zip(got.points[:3], clouds):
        assert np.array_equal(a, b)
    assert got.pid.tolist() == [1, 2, 0, -1] and got.camid.tolist() == [0, 1, 2, 3]
    assert got.split.tolist() == ["train", "query", "gallery", "gallery"]
    assert got.path.tolist() == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert set(got.mode) == {"flat"}
    sub = got.select(got.split == "gallery")
    assert sub.pid.tolist() == [0, -1]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_shards_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_shards(tmp_path)
    pq.write_table(pa.table({"xyz": [1.0], "pid": [1]}), tmp_path / "bad.parquet")
    with pytest.raises(ShardError, match="missing column"):
        read_shards(tmp_path / "bad.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ShardError, match="unreadable"):
        read_shards(tmp_path / "junk.parquet")
    t = pa.table({"xyz": pa.array([[[0.0, 0, 0]]]), "rgb": pa.array([[[0.0, 0, 0]]]),
                  "pid": pa.array([1], pa.int32()), "camid": [0], "split": ["train"],
                  "path": ["a"], "mode": ["flat"]})
    pq.write_table(t, tmp_path / "types.parquet")
    with pytest.raises(ShardError, match="type"):
        read_shards(tmp_path / "types.parquet")


def test_write_rejects_nan_and_mismatched_lengths(tmp_path):
    c = _clouds()
    c[1][2, 0] = np.nan
    with pytest.raises(ValueError, match=r"clouds\[1\] \(b.jpg\)"):
        write_shard(tmp_path / "x.parquet", c, [1, 2, 3], [0, 0, 0], ["train"] * 3,
                    ["a.jpg", "b.jpg", "c.jpg"], "flat")
    with pytest.raises(ValueError, match="pid"):
        write_shard(tmp_path / "x.parquet", _clouds(), [1, 2], [0, 0, 0], ["train"] * 3,
                    ["a", "b", "c"], "flat")
    assert not (tmp_path / "x.parquet").exists()
