"""GalleryIndex: search against a numpy argsort reference (torch backend), faiss against torch,
the approximate methods against exact search, save/load, validation."""

from __future__ import annotations

import json
import sys

import numpy as np
import pyarrow as pa
import pytest
import torch

from mirror3d.retrieval import GalleryIndex, faiss_available


def make_gallery(n=50, d=12, seed=0):
    rng = np.random.default_rng(seed)
    feats = (rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=(n, 1))).astype(np.float32)
    meta = [{"pid": int(i % 7), "camid": int(i % 3), "path": f"g/{i:04d}.jpg", "extra": i * 10} for i in range(n)]
    return feats, meta


def reference_search(feats, queries, k):
    g = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q.astype(np.float64) @ g.T.astype(np.float64)
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, idx, 1), idx


def test_build_normalises_and_keeps_metadata():
    feats, meta = make_gallery()
    index = GalleryIndex(feats, meta, backend="torch")
    assert len(index) == 50 and index.dim == 12 and index.backend == "torch"
    np.testing.assert_allclose(np.linalg.norm(index.features, axis=1), 1.0, atol=1e-6)
    assert index.features.dtype == np.float32
    assert index.metadata.column("path").to_pylist()[3] == "g/0003.jpg"
    table_index = GalleryIndex(feats, pa.Table.from_pylist(meta), backend="torch")
    np.testing.assert_array_equal(table_index.features, index.features)


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_torch_search_matches_numpy_reference(chunk_size):
    feats, meta = make_gallery()
    queries = np.random.default_rng(1).normal(size=(7, 12)).astype(np.float32)
    index = GalleryIndex(feats, meta, backend="torch", chunk_size=chunk_size)
    scores, idx = index.search(queries, k=5)
    ref_scores, ref_idx = reference_search(feats, queries, 5)
    assert scores.shape == (7, 5) and idx.shape == (7, 5) and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    # Torch tensors and a single (D,) query are accepted.
    s1, i1 = index.search(torch.from_numpy(queries[2]), k=5)
    np.testing.assert_array_equal(i1, ref_idx[2:3])


def test_max_chunk_elements_caps_the_chunk_without_changing_results():
    feats, meta = make_gallery()
    queries = np.random.default_rng(2).normal(size=(9, 12))
    a = GalleryIndex(feats, meta, backend="torch").search(queries, 4)
    b = GalleryIndex(feats, meta, backend="torch", max_chunk_elements=60).search(queries, 4)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)  # GEMM blocking may differ by an ulp


def test_ties_within_k_are_ordered_by_index():
    feats = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.0, -1.0]], dtype=np.float32)
    meta = [{"pid": i, "camid": 0, "path": str(i)} for i in range(5)]
    scores, idx = GalleryIndex(feats, meta, backend="torch").search(np.array([[3.0, 0.0]]), k=3)
    np.testing.assert_array_equal(idx, [[1, 2, 3]])
    np.testing.assert_allclose(scores, [[1.0, 1.0, 1.0]])


def test_search_rows_returns_metadata_in_rank_order():
    feats, meta = make_gallery()
    index = GalleryIndex(feats, meta, backend="torch")
    queries = feats[[10, 33]] * 2.0  # each query's best match is itself
    rows = index.search_rows(queries, k=3)
    _, idx = index.search(queries, k=3)
    assert len(rows) == 2 and all(len(r) == 3 for r in rows)
    assert rows[0][0]["index"] == 10 and rows[1][0]["index"] == 33
    assert rows[0][0]["score"] == pytest.approx(1.0, abs=1e-5)
    for q in range(2):
        for rank, row in enumerate(rows[q], start=1):
            j = int(idx[q, rank - 1])
            assert row["rank"] == rank and row["index"] == j
            assert row["path"] == meta[j]["path"] and row["pid"] == meta[j]["pid"]
            assert row["extra"] == meta[j]["extra"]


def test_save_load_roundtrip(tmp_path):
    feats, meta = make_gallery()
    index = GalleryIndex(feats, meta, backend="torch")
    out = index.save(tmp_path / "gal")
    assert sorted(p.name for p in out.iterdir()) == ["features.npy", "index.json", "meta.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gal"]  # no temp dir left
    info = json.loads((out / "index.json").read_text())
    assert (info["dim"], info["count"], info["normalized"], info["version"]) == (12, 50, True, 2)
    assert info["search"] == {"method": "exact", "params": {}}
    for mmap in (False, True):
        loaded = GalleryIndex.load(out, backend="torch", mmap=mmap)
        np.testing.assert_array_equal(loaded.features, index.features)
        assert loaded.metadata.equals(index.metadata)
        q = feats[:4] + 0.1
        for a, b in zip(loaded.search(q, 6), index.search(q, 6)):
            np.testing.assert_array_equal(a, b)


def test_save_refuses_non_empty_dir_unless_overwrite(tmp_path):
    feats, meta = make_gallery()
    GalleryIndex(feats, meta, backend="torch").save(tmp_path / "gal")
    other = GalleryIndex(feats[:20], meta[:20], backend="torch")
    with pytest.raises(FileExistsError):
        other.save(tmp_path / "gal")
    assert len(GalleryIndex.load(tmp_path / "gal", backend="torch")) == 50
    other.save(tmp_path / "gal", overwrite=True)
    assert len(GalleryIndex.load(tmp_path / "gal", backend="torch")) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gal"]


@pytest.mark.parametrize("missing", ["features.npy", "meta.parquet", "index.json"])
def test_load_missing_file_names_it(tmp_path, missing):
    feats, meta = make_gallery()
    d = GalleryIndex(feats, meta, backend="torch").save(tmp_path / "gal")
    (d / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        GalleryIndex.load(d)


def test_load_rejects_inconsistent_files(tmp_path):
    feats, meta = make_gallery()
    d = GalleryIndex(feats, meta, backend="torch").save(tmp_path / "gal")
    info = json.loads((d / "index.json").read_text())

    (d / "index.json").write_text(json.dumps({**info, "count": 49}))
    with pytest.raises(ValueError, match="count"):
        GalleryIndex.load(d, backend="torch")
    (d / "index.json").write_text(json.dumps({**info, "dim": 13}))
    with pytest.raises(ValueError, match="dim"):
        GalleryIndex.load(d, backend="torch")
    (d / "index.json").write_text(json.dumps({**info, "version": 99}))
    with pytest.raises(ValueError, match="version"):
        GalleryIndex.load(d, backend="torch")
    (d / "index.json").write_text(json.dumps(info))

    # Metadata with a different row count.
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(meta[:-1]), d / "meta.parquet")
    with pytest.raises(ValueError, match="rows"):
        GalleryIndex.load(d, backend="torch")
    pq.write_table(pa.Table.from_pylist(meta), d / "meta.parquet")
    assert len(GalleryIndex.load(d, backend="torch")) == 50

    # A pickled object array must not be unpickled.
    np.save(d / "features.npy", np.array([{"x": 1}] * 50, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="features.npy"):
        GalleryIndex.load(d, backend="torch")


def test_bad_input():
    feats, meta = make_gallery()
    with pytest.raises(ValueError, match="features"):
        GalleryIndex(feats[0], meta)
    bad = feats.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="features"):
        GalleryIndex(bad, meta)
    with pytest.raises(ValueError, match="metadata"):
        GalleryIndex(feats, meta[:-1])
    with pytest.raises(ValueError, match="camid"):
        GalleryIndex(feats, [{"pid": 1, "path": "x"}] * 50)
    with pytest.raises(ValueError, match="backend"):
        GalleryIndex(feats, meta, backend="annoy")
    index = GalleryIndex(feats, meta, backend="torch")
    with pytest.raises(ValueError, match="query_feats"):
        index.search(np.ones((2, 11)), 3)
    with pytest.raises(ValueError, match="k"):
        index.search(np.ones((2, 12)), 51)
    with pytest.raises(ValueError, match="k"):
        index.search(np.ones((2, 12)), 0)


def test_version_1_directory_loads_as_exact(tmp_path):
    feats, meta = make_gallery()
    d = GalleryIndex(feats, meta, backend="torch").save(tmp_path / "gal")
    info = json.loads((d / "index.json").read_text())
    del info["search"]
    (d / "index.json").write_text(json.dumps({**info, "version": 1}))
    loaded = GalleryIndex.load(d)
    assert loaded.method == "exact"
    np.testing.assert_array_equal(loaded.features, GalleryIndex(feats, meta).features)


def test_faiss_is_the_default_backend_and_matches_torch_top10():
    """faiss-cpu is a dependency: "auto" is faiss; its exact top-10 equals the torch reference's
    (and the numpy argsort reference's) on a gallery large enough for faiss to block its work."""
    assert faiss_available()
    feats = np.random.default_rng(5).normal(size=(3000, 64)).astype(np.float32)
    meta = [{"pid": i, "camid": 0, "path": str(i)} for i in range(3000)]
    queries = np.random.default_rng(6).normal(size=(40, 64)).astype(np.float32)
    index = GalleryIndex(feats, meta)
    assert index.backend == "faiss" and index.method == "exact"
    fs, fi = index.search(queries, 10)
    ts, ti = GalleryIndex(feats, meta, backend="torch").search(queries, 10)
    np.testing.assert_array_equal(fi, ti)
    np.testing.assert_allclose(fs, ts, atol=1e-5)
    np.testing.assert_array_equal(fi, reference_search(feats, queries, 10)[1])


def test_torch_is_the_fallback_without_faiss(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    assert not faiss_available()
    feats, meta = make_gallery()
    assert GalleryIndex(feats, meta).backend == "torch"
    with pytest.raises(ImportError, match="faiss"):
        GalleryIndex(feats, meta, backend="faiss")
    with pytest.raises(ImportError, match="faiss"):
        GalleryIndex(feats, meta, method="hnsw")


def clustered_gallery(n=600, d=32, ids=60, seed=0):
    """Re-id-like features: per-identity centres plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, d))
    feats = (centres[rng.integers(0, ids, n)] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    queries = (centres[rng.integers(0, ids, 30)] + 0.5 * rng.normal(size=(30, d))).astype(np.float32)
    meta = [{"pid": i, "camid": 0, "path": f"g/{i}"} for i in range(n)]
    return feats, meta, queries


def recall(approx_idx, exact_idx):
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx_idx, exact_idx)]))


def test_ivf_probing_every_list_is_exact_and_fewer_lists_are_approximate():
    feats = np.random.default_rng(7).normal(size=(800, 24)).astype(np.float32)
    meta = [{"pid": i, "camid": 0, "path": str(i)} for i in range(800)]
    queries = np.random.default_rng(8).normal(size=(30, 24))
    es, ei = GalleryIndex(feats, meta, backend="torch").search(queries, 10)
    ivf = GalleryIndex(feats, meta, method="ivf", method_params={"nlist": 16, "nprobe": 1})
    assert ivf.backend == "faiss" and ivf.method_params["nlist"] == 16
    assert recall(ivf.search(queries, 10)[1], ei) < 0.9  # unstructured data, one list of 16
    ivf.set_search_params(nprobe=16)
    s, i = ivf.search(queries, 10)
    np.testing.assert_array_equal(i, ei)
    np.testing.assert_allclose(s, es, atol=1e-5)
    with pytest.raises(ValueError, match="ef_search"):
        ivf.set_search_params(ef_search=10)


def test_ivf_query_with_fewer_than_k_candidates_is_answered_exactly():
    feats = np.random.default_rng(9).normal(size=(200, 8)).astype(np.float32)
    meta = [{"pid": i, "camid": 0, "path": str(i)} for i in range(200)]
    queries = np.random.default_rng(10).normal(size=(6, 8))
    ivf = GalleryIndex(feats, meta, method="ivf", method_params={"nlist": 5, "nprobe": 1})
    q = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    assert (ivf._ann.search(q, 150)[1] < 0).any()  # faiss alone pads with -1
    s, i = ivf.search(queries, 150)  # each list holds ~40 rows: every query comes up short
    es, ei = GalleryIndex(feats, meta, backend="torch").search(queries, 150)
    assert (i >= 0).all()
    np.testing.assert_array_equal(i, ei)


def test_hnsw_finds_the_exact_top10_on_clustered_features():
    feats, meta, queries = clustered_gallery()
    _, ei = GalleryIndex(feats, meta, backend="torch").search(queries, 10)
    hnsw = GalleryIndex(feats, meta, method="hnsw", method_params={"m": 16, "ef_search": 200})
    assert hnsw.method_params == {"m": 16, "ef_construction": 80, "ef_search": 200}
    assert recall(hnsw.search(queries, 10)[1], ei) >= 0.99
    rows = hnsw.search_rows(queries[:2], 3)
    assert [r["rank"] for r in rows[0]] == [1, 2, 3] and rows[0][0]["score"] >= rows[0][1]["score"]


@pytest.mark.parametrize("method,params,search", [
    ("ivf", {"nlist": 12, "nprobe": 2}, {"nprobe": 3}),
    ("hnsw", {"m": 8, "ef_search": 16}, {"ef_search": 24}),
])
def test_approximate_index_is_saved_and_loaded(tmp_path, method, params, search):
    feats, meta, queries = clustered_gallery()
    index = GalleryIndex(feats, meta, method=method, method_params=params)
    index.set_search_params(**search)
    d = index.save(tmp_path / "gal")
    assert sorted(p.name for p in d.iterdir()) == ["ann.faiss", "features.npy", "index.json", "meta.parquet"]
    info = json.loads((d / "index.json").read_text())
    assert info["search"]["method"] == method and info["search"]["file"] == "ann.faiss"
    assert info["search"]["params"] == index.method_params
    loaded = GalleryIndex.load(d)
    assert loaded.method == method and loaded.method_params == index.method_params
    for a, b in zip(loaded.search(queries, 10), index.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    exact = GalleryIndex.load(d, method="exact", backend="torch")
    assert exact.method == "exact"
    np.testing.assert_array_equal(exact.search(queries, 10)[1],
                                  GalleryIndex(feats, meta, backend="torch").search(queries, 10)[1])
    # overwritten by an exact index: no stale ann.faiss
    GalleryIndex(feats, meta).save(d, overwrite=True)
    assert not (d / "ann.faiss").exists() and GalleryIndex.load(d).method == "exact"


def test_load_rejects_a_bad_approximate_index(tmp_path):
    feats, meta, _ = clustered_gallery()
    d = GalleryIndex(feats, meta, method="ivf", method_params={"nlist": 8}).save(tmp_path / "gal")
    other = GalleryIndex(feats[:300], meta[:300], method="ivf", method_params={"nlist": 8})
    other.save(tmp_path / "other")
    (d / "ann.faiss").write_bytes((tmp_path / "other" / "ann.faiss").read_bytes())
    with pytest.raises(ValueError, match="300"):
        GalleryIndex.load(d)
    hnsw = GalleryIndex(feats, meta, method="hnsw", method_params={"m": 4}).save(tmp_path / "h")
    (d / "ann.faiss").write_bytes((hnsw / "ann.faiss").read_bytes())
    with pytest.raises(ValueError, match="IndexIVFFlat"):
        GalleryIndex.load(d)
    (d / "ann.faiss").write_bytes(b"not a faiss index")
    with pytest.raises(ValueError, match="ann.faiss"):
        GalleryIndex.load(d)
    (d / "ann.faiss").unlink()
    with pytest.raises(FileNotFoundError, match="ann.faiss"):
        GalleryIndex.load(d)
    assert GalleryIndex.load(d, method="exact").method == "exact"
    info = json.loads((d / "index.json").read_text())
    (d / "index.json").write_text(json.dumps({**info, "search": {"method": "annoy"}}))
    with pytest.raises(ValueError, match="search"):
        GalleryIndex.load(d)


def test_bad_method_arguments():
    feats, meta = make_gallery()
    with pytest.raises(ValueError, match="method"):
        GalleryIndex(feats, meta, method="annoy")
    with pytest.raises(ValueError, match="nprobe"):
        GalleryIndex(feats, meta, method="hnsw", method_params={"nprobe": 4})
    with pytest.raises(ValueError, match="nlist"):
        GalleryIndex(feats, meta, method="ivf", method_params={"nlist": 0})
    with pytest.raises(ValueError, match="nlist"):
        GalleryIndex(feats, meta, method="ivf", method_params={"nlist": 51})
    with pytest.raises(ValueError, match="torch"):
        GalleryIndex(feats, meta, backend="torch", method="ivf")
    with pytest.raises(ValueError, match="method"):
        GalleryIndex.load("/nonexistent", method="ivf")
