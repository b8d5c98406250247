"""The pipeline report's re-id rows and its Table I paragraph (mirror3d/jobs/pipeline_report.py)
on hand-made numbers: oracle rows come last and marked; which orderings hold, and the gap CASL
leaves, are computed from the mAPs."""

import pytest

from mirror3d.jobs.pipeline_report import ORACLE_NOTE, reid_rows, table1_lines, table1_orderings


def _result(map_: float) -> dict:
    ev = {"rank1": map_, "rank5": map_, "map_trapezoid": map_, "map_mean_precision": map_,
          "num_queries": 10, "num_gallery": 50}
    return {"eval": ev, "params": 1000, "epochs": 2, "train_minutes": 0.1, "train_acc": 0.5,
            "run_dir": "/nowhere", "ranked": "/nowhere/ranked.png"}


def _rows(**maps) -> list[dict]:
    """reid_rows from mAPs keyed like the pipeline's inputs (``oracle_`` for ``oracle:``, ``_bg``
    for ``+bg``)."""
    reids = {k.replace("oracle_", "oracle:").replace("_", "-").replace("-bg", "+bg"): _result(v)
             for k, v in maps.items()}
    return reid_rows(reids, _result(0.4), "og-net-small", "cnn2d-small")


def test_rows_put_the_oracle_last_and_mark_it():
    rows = _rows(flat=0.1, casl_visible=0.2, oracle_casl_visible=0.3)
    assert [(r["input"], r["mesh"], r["oracle"]) for r in rows] == [
        ("flat", None, False), ("casl-visible", "casl", False),
        ("image (2D baseline)", None, False), ("oracle:casl-visible", "true", True)]
    assert rows[-1]["mode"] == "casl-visible" and rows[-1]["map"] == 0.3
    assert "upper bound that needs ground truth, not a method" in ORACLE_NOTE


def test_ordering_fails_with_casl_and_holds_with_true_meshes():
    rows = _rows(flat=0.072, casl_visible=0.259, casl_visible_bg=0.009,
                 oracle_casl_visible=0.35, oracle_casl_visible_bg=0.41)
    t = table1_orderings(rows)
    casl, true = t["meshes"]["casl"], t["meshes"]["true"]
    assert [p["holds"] for p in casl["pairs"]] == [False, True] and casl["holds"] is False
    assert casl["pairs"][0]["points"] == pytest.approx(-25.0)
    assert [p["holds"] for p in true["pairs"]] == [True, True] and true["holds"] is True
    assert true["pairs"][1] == {"better": "casl-visible", "worse": "flat", "map_better": 0.35,
                                "map_worse": 0.072, "points": pytest.approx(27.8), "holds": True}
    g = t["gaps"]
    assert g["casl-visible"]["points"] == pytest.approx(9.1)
    assert g["casl-visible+bg"]["points"] == pytest.approx(40.1)
    # CASL's share of the true mesh's gain over flat: (25.9 - 7.2) / (35 - 7.2)
    assert g["casl-visible"]["casl_share_of_true_gain"] == pytest.approx(18.7 / 27.8)
    text = "\n".join(table1_lines(t))
    assert ("with CASL meshes: casl-visible+bg 0.9 < casl-visible 25.9 (-25.0 points): does not "
            "hold; casl-visible 25.9 ≥ flat 7.2 (+18.7 points): holds — the ordering does not "
            "hold.") in text
    assert "with true meshes (oracle): casl-visible+bg 41.0 ≥ casl-visible 35.0 (+6.0 points)" in text
    assert "— the ordering holds." in text
    assert "gap CASL leaves in casl-visible+bg: true mesh 41.0 − CASL 0.9 = +40.1 mAP points" in text
    assert "CASL's gain over flat is 67 % of the true mesh's" in text


def test_ordering_fails_with_true_meshes_too_and_ties_hold():
    rows = _rows(flat=0.30, casl_visible=0.30, casl_visible_bg=0.35,
                 oracle_casl_visible=0.25, oracle_casl_visible_bg=0.40)
    t = table1_orderings(rows)
    assert t["meshes"]["casl"]["holds"] is True  # 0.35 ≥ 0.30 ≥ 0.30 (a tie holds)
    assert [p["holds"] for p in t["meshes"]["true"]["pairs"]] == [True, False]
    assert t["meshes"]["true"]["holds"] is False
    # the true mesh below flat: CASL's share of its gain is undefined, the gap is still given
    assert t["gaps"]["casl-visible"]["points"] == pytest.approx(-5.0)
    assert t["gaps"]["casl-visible"]["casl_share_of_true_gain"] is None
    text = "\n".join(table1_lines(t))
    assert "casl-visible 25.0 < flat 30.0 (-5.0 points): does not hold — the ordering does not hold." in text
    assert "gap CASL leaves in casl-visible: true mesh 25.0 − CASL 30.0 = -5.0 mAP points." in text


def test_missing_rows_are_named_not_guessed():
    t = table1_orderings(_rows(flat=0.1, oracle_casl_visible_bg=0.2))
    assert list(t["meshes"]) == ["true"] and t["gaps"] == {}
    pairs = t["meshes"]["true"]["pairs"]
    assert [p["holds"] for p in pairs] == [None, None] and t["meshes"]["true"]["holds"] is None
    text = "\n".join(table1_lines(t))
    assert "n/a (no casl-visible row)" in text and "cannot be checked" in text
    assert table1_lines(table1_orderings(_rows())) == []  # only the 2D baseline: no paragraph
