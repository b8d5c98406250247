"""A user error raised inside a Ray Data actor reaches the command line as its own one line (not
Ray's wrapper around the actor's traceback): the lifting pool returns it as data and the driver
raises it as it was. Uses the session's Ray instance (tests/conftest.py)."""

from __future__ import annotations

from lifting.lift_fixtures import make_lift_tree
from mirror3d.cli import main
from mirror3d.utils.checkpoint import save_checkpoint


def test_an_actors_checkpoint_error_reaches_the_cli_as_its_own_line(
        ray_session, tmp_path, capsys):
    tree = make_lift_tree(tmp_path / "data")
    reid = save_checkpoint(tmp_path / "reid.pt", "reid",
                           {"config": {}, "model": {}, "num_classes": 2})
    out = tmp_path / "out"
    # a factory reconstructor is built only in the actors: the driver's checks cannot see that
    # it will be given a re-id checkpoint, so the actor's CheckpointError must come back
    args = ["lift", "--mode", "casl-visible+bg", "--root", str(tree["root"]),
            "--mask_dir", str(tree["masks"]), "--reconstructor", "mirror3d.models.casl:load_casl",
            "--checkpoint", str(reid), "--image_size", "16,32", "--num_points", "300",
            "--min_points", "64", "--shard_size", "64", "--out", str(out),
            "--runs_root", str(tmp_path / "runs"), "--name", "t", "--actors", "1",
            "--progress", "false"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err  # (Ray Data's own INFO lines about the dataset may come first)
    lines = [line for line in err.splitlines() if line.startswith("mirror3d lift:")]
    assert lines == [err.splitlines()[-1]], err
    assert lines[0].startswith("mirror3d lift: error: checkpoint ")
    assert str(reid) in lines[0] and "mirror3d/casl" in lines[0]
    assert not list(out.glob("*.parquet"))
