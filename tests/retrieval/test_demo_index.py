"""The demo's SearchService with an approximate gallery index: built with the chosen method,
saved, loaded as saved at the next start (no re-embedding), re-indexed when another is asked."""

from __future__ import annotations

import json

import numpy as np
from demo_fixtures import demo_runs  # noqa: F401  (session fixture)

from mirror3d.engine.demo_search import SearchService


def test_demo_builds_saves_and_loads_an_approximate_index(demo_runs, tmp_path, monkeypatch):  # noqa: F811
    idx = tmp_path / "idx"
    run = demo_runs.reid_image
    first = SearchService(run, index_dir=idx, index_method="hnsw", index_params={"ef_search": 40})
    assert first.index.method == "hnsw" and first.index.method_params["ef_search"] == 40
    assert (idx / "ann.faiss").is_file()
    assert json.loads((idx / "index.json").read_text())["search"]["method"] == "hnsw"

    built = []
    real = SearchService.build_index
    monkeypatch.setattr(SearchService, "build_index", lambda self: built.append(1) or real(self))
    second = SearchService(run, index_dir=idx)  # the demo's default: the cached index as saved
    assert built == [] and second.index.method == "hnsw"
    assert second.index.method_params == first.index.method_params
    np.testing.assert_array_equal(second.index.features, first.index.features)

    query = demo_runs.images("gallery")[0]
    exact = SearchService(run, index_dir=idx, index_method="exact")  # re-indexed, not re-embedded
    assert built == [] and exact.index.method == "exact" and not (idx / "ann.faiss").exists()
    got = second.search(query.read_bytes(), k=3).rows
    want = exact.search(query.read_bytes(), k=3).rows
    # a gallery of tens of rows: the graph search with ef_search 40 visits all of it
    assert [r["path"] for r in got] == [r["path"] for r in want]
    assert got[0]["path"] == str(query)
