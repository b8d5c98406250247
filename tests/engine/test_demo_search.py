"""The demo's gallery search (mirror3d/engine/demo_search.py) on tiny trained re-id runs
(tests/demo_fixtures.py): the query lifted exactly as the run's clouds were, rows equal to
GalleryIndex.search, the cached index, oracle runs refused, bad input."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest

from demo_fixtures import demo_runs  # noqa: F401  (session fixture)
from mirror3d.data.masks import load_binary_mask, load_rgb
from mirror3d.engine import demo_search
from mirror3d.engine.demo_inputs import InputError
from mirror3d.engine.demo_search import (FINGERPRINT_FILE, SearchService, market_ids,
                                         read_lift_recipe, thumbnail)
from mirror3d.engine.reid_train import embed_dataset, load_reid_data
from mirror3d.lifting.modes import seed_for_key
from mirror3d.lifting.shards import read_shards
from mirror3d.retrieval.gallery import GalleryIndex
from mirror3d.utils.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def points_svc(demo_runs, tmp_path_factory):  # noqa: F811
    return SearchService(demo_runs.reid_points, index_dir=tmp_path_factory.mktemp("idx") / "i")


def _settings(demo_runs) -> dict:  # noqa: F811
    return json.loads((demo_runs.shards / "_meta" / "lift_settings.json").read_text())


def _query(demo_runs, i: int = 0):  # noqa: F811
    """A query image: path, bytes, (H, W, 3) array, its Market-HQ mask."""
    path = demo_runs.images("query")[i]
    [mask_file] = (demo_runs.synth / "Market-HQ" / "seg_hmr").rglob(f"{path.name}_*.png")
    return path, path.read_bytes(), load_rgb(path), load_binary_mask(mask_file)


def test_the_run_decides_how_a_query_is_lifted(points_svc, demo_runs):  # noqa: F811
    s = _settings(demo_runs)
    r = points_svc.recipe
    assert points_svc.kind == "points" and r.mode == s["mode"] == "casl-visible"
    assert (r.params.num_points, r.params.min_points, r.params.short, r.params.frame) == \
        (s["num_points"], s["min_points"], s["short"], s["frame"]) == (256, 64, "pad", "object")
    assert r.image_size == tuple(s["image_size"]) and r.reconstructor == "casl"
    assert type(points_svc.reconstructor).__name__ == "CaslPredictor"  # built once, from
    assert r.checkpoint == str(demo_runs.casl / "model_final.pt")       # the run's checkpoint


def test_query_cloud_and_feature_equal_the_runs_own(points_svc, demo_runs, monkeypatch):  # noqa: F811
    """A query image lifted by the service with the lifting job's mask and seed is the very
    cloud in the shards, and its feature the evaluation's feature of that sample."""
    s = _settings(demo_runs)
    path, _, image, mask = _query(demo_runs, 1)
    seed = seed_for_key(path.relative_to(demo_runs.market).as_posix(), s["seed"])
    calls = []
    real = demo_search.lift_image

    def spy(img, m, mode, reconstructor, params, seed, **kw):
        calls.append((img.shape, mode, params, reconstructor))
        return real(img, m, mode, reconstructor, params, seed, **kw)

    monkeypatch.setattr(demo_search, "lift_image", spy)
    pts, used, source = points_svc.lift(image, mask, seed=seed)
    [(shape, mode, params, rec)] = calls
    assert shape == (s["image_size"][1], s["image_size"][0], 3) and mode == s["mode"]
    assert params == points_svc.recipe.params and params.num_points == s["num_points"]
    assert rec is points_svc.reconstructor and source == "upload"
    shards = read_shards(demo_runs.shards)
    row = list(shards.path).index(str(path))
    assert np.array_equal(pts, shards.points[row])
    feat, info = points_svc.embed(image, mask, seed=seed)
    data = load_reid_data(points_svc.cfg)
    q = list(data.query_meta["path"]).index(str(path))
    want = embed_dataset(points_svc.model, data.query, "points", 8)[q].numpy()
    np.testing.assert_allclose(feat, want, atol=1e-5)
    assert info["num_points"] == len(pts)


def test_search_rows_are_gallery_index_search(points_svc, demo_runs):  # noqa: F811
    path, data, image, mask = _query(demo_runs)
    pid = market_ids(path)[0]
    res = points_svc.search(data, mask=mask, k=3, query_pid=pid)
    assert res.k == 3 and [r["rank"] for r in res.rows] == [1, 2, 3]
    scores = [r["score"] for r in res.rows]
    assert scores == sorted(scores, reverse=True)
    want_s, want_i = points_svc.index.search(res.feature, 3)
    assert [r["index"] for r in res.rows] == want_i[0].tolist()
    np.testing.assert_allclose(scores, want_s[0], rtol=0, atol=1e-6)
    meta = points_svc.index.metadata.to_pylist()
    for r in res.rows:
        m = meta[r["index"]]
        assert (r["pid"], r["camid"], r["path"]) == (m["pid"], m["camid"], m["path"])
        assert r["match"] == (r["pid"] == pid)
    # the same photo gives the same answer; the index holds the evaluation's gallery features
    again = points_svc.search(image, mask=mask, k=3)
    assert [r["index"] for r in again.rows] == [r["index"] for r in res.rows]
    assert all(r["match"] is None for r in again.rows)
    d = load_reid_data(points_svc.cfg)
    gf = embed_dataset(points_svc.model, d.gallery, "points", 8).numpy()
    np.testing.assert_allclose(points_svc.index.features, gf, atol=1e-5)
    s = res.summary()
    assert json.loads(json.dumps(s)) == s and s["lift_mode"] == "casl-visible"
    # k larger than the gallery is capped; the estimate / box paths work
    n = len(points_svc.index)
    assert points_svc.search(data, k=n + 5).k == n
    assert points_svc.search(data, box=(2, 2, 30, 62), k=1).mask_source == "box"


def test_bad_queries(points_svc, demo_runs):  # noqa: F811
    _, data, image, mask = _query(demo_runs)
    for kwargs, words in [(dict(image=b"nope"), "not an image"),
                          (dict(image=data[:200]), "image"),
                          (dict(image=data, k=0), "k: expected"),
                          (dict(image=data, k="x"), "k: expected"),
                          (dict(image=data, mask=np.zeros(mask.shape, bool)), "mask: empty"),
                          (dict(image=data, mask=np.ones((3, 3), bool)), "mask: 3x3"),
                          (dict(image=data, box="9,9,1,1"), "box")]:
        with pytest.raises(InputError, match=words) as ei:
            points_svc.search(**kwargs)
        assert ei.value.status == 400 and "\n" not in str(ei.value)
    assert points_svc.search(data, mask=mask, k="2").k == 2


def test_image_model_searches_images(demo_runs, tmp_path):  # noqa: F811
    svc = SearchService(demo_runs.reid_image, index_dir=tmp_path / "idx")
    assert svc.kind == "image" and svc.recipe is None and svc.reconstructor is None
    g = demo_runs.images("gallery")[0]
    res = svc.search(g.read_bytes(), k=2, query_pid=market_ids(g)[0])
    top = res.rows[0]
    assert top["path"] == str(g) and top["score"] == pytest.approx(1.0, abs=1e-5)
    assert top["match"] is True and res.mask is None and res.mask_source == "none"
    assert svc.thumbnail(top["path"]).shape == (128, 64, 3)
    with pytest.raises(KeyError, match="not a gallery image"):
        svc.thumbnail(str(demo_runs.images("query")[0]))


def test_gallery_index_is_cached_by_fingerprint(demo_runs, tmp_path, monkeypatch):  # noqa: F811
    idx = tmp_path / "idx"
    first = SearchService(demo_runs.reid_image, index_dir=idx)
    assert (idx / FINGERPRINT_FILE).is_file()
    built = []
    real = SearchService.build_index
    monkeypatch.setattr(SearchService, "build_index",
                        lambda self: built.append(1) or real(self))
    second = SearchService(demo_runs.reid_image, index_dir=idx)
    assert built == [] and np.array_equal(second.index.features, first.index.features)
    fp = json.loads((idx / FINGERPRINT_FILE).read_text())
    fp["checkpoint_sha256"] = "0" * 64  # another model: rebuild
    (idx / FINGERPRINT_FILE).write_text(json.dumps(fp))
    SearchService(demo_runs.reid_image, index_dir=idx)
    assert built == [1]
    # a prebuilt index is used as given
    given = GalleryIndex(np.eye(3, first.index.dim, dtype=np.float32),
                         [{"pid": i, "camid": 0, "path": f"p{i}"} for i in range(3)])
    svc = SearchService(demo_runs.reid_image, index_dir=tmp_path / "unused", gallery_index=given)
    assert svc.index is given and not (tmp_path / "unused").exists()
    res = svc.search(demo_runs.images("query")[0].read_bytes(), k=10)
    assert res.k == 3 and sorted(r["path"] for r in res.rows) == ["p0", "p1", "p2"]


def _run_with_settings(demo_runs, tmp_path, edit) -> pathlib.Path:  # noqa: F811
    """A copy of the points run whose shards' lift_settings.json is edited by ``edit``."""
    shards = tmp_path / "shards"
    shutil.copytree(demo_runs.shards, shards)
    f = shards / "_meta" / "lift_settings.json"
    if edit is None:
        f.unlink()
    else:
        f.write_text(json.dumps(edit(json.loads(f.read_text()))))
    run = tmp_path / "run"
    state = load_checkpoint(demo_runs.reid_points / "model_final.pt", "reid")
    state["config"]["data"]["shards"] = str(shards)
    save_checkpoint(run / "model_final.pt", "reid",
                    {k: v for k, v in state.items() if k not in ("format", "version")})
    return run


def test_an_oracle_run_is_refused_in_one_line(demo_runs, tmp_path):  # noqa: F811
    run = _run_with_settings(demo_runs, tmp_path / "a", lambda s: {**s, "checkpoint": "",
                                                                   "reconstructor": "synth-truth"})
    with pytest.raises(ValueError) as ei:
        SearchService(run, index_dir=tmp_path / "idx")
    msg = str(ei.value)
    assert "\n" not in msg and str(run) in msg
    assert "synth-truth oracle" in msg and "cannot lift an uploaded photo" in msg
    run = _run_with_settings(demo_runs, tmp_path / "b", None)
    with pytest.raises(FileNotFoundError, match="no _meta/lift_settings.json") as ei:
        SearchService(run, index_dir=tmp_path / "idx")
    assert "\n" not in str(ei.value)


def test_helpers(demo_runs):  # noqa: F811
    assert market_ids("/x/0002_c3s1_000451_03.jpg") == (2, 2)
    assert market_ids("-1_c1s1_000001_00.jpg") == (-1, 0)
    assert market_ids("holiday.jpg") is None
    r = read_lift_recipe(demo_runs.shards)
    assert r.mode == "casl-visible" and r.params.num_points == 256
    t = thumbnail(demo_runs.images("gallery")[0], (16, 32))
    assert t.shape == (32, 16, 3) and t.dtype == np.uint8 and not t.flags.writeable
