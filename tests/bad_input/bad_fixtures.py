"""Shared pieces of the bad-input matrix (tests/bad_input): the tiny valid inputs every case
starts from, bad files, and the checks every case makes.

Valid inputs (:class:`Inputs`, built once per test session in about two seconds, no Ray):

- ``market``: a Market-1501 tree (tests/dataset_fixtures.py: 12 train, 4 query, 11 gallery
  images of 8×16);
- ``hq``: a Market-HQ tree (5 train, 2 query images of 16×32 with masks);
- ``casl_run``: a CASL run directory (``model_final.pt`` of a tiny untrained model + its
  ``config.yaml``) and ``casl_ckpt`` its file;
- ``reid_run``: a re-id run directory (an untrained ``cnn2d-small`` on ``market`` at 16×32,
  ``model_final.pt`` + ``config.yaml``) and ``reid_ckpt`` its file;
- ``shards``: flat point-cloud shards of ``market``.

Cases must not write into them; :func:`snapshot` of their folder is compared before and after.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import pickle
from dataclasses import dataclass

import numpy as np
import torch
import yaml

import dataset_fixtures as fx
import reid_fixtures
from mirror3d.utils.checkpoint import save_checkpoint

#: the tiny CASL model of the cases (untrained; 16x32 inputs)
TINY_CASL = {"data": {"image_size": [16, 32], "bg": False},
             "net": {"camera_channels": 4, "shape_channels": 4, "texture_channels": 4,
                     "light_channels": [4, 4, 4, 4, 4], "background_channels": 4,
                     "shape_hidden": 16, "camera_hidden": 16, "texture_decoder_channels": 8}}


@dataclass(frozen=True)
class Inputs:
    """The valid inputs of the matrix (see the module docstring)."""

    root: pathlib.Path
    market: pathlib.Path
    hq: pathlib.Path
    casl_run: pathlib.Path
    casl_ckpt: pathlib.Path
    reid_run: pathlib.Path
    reid_ckpt: pathlib.Path
    shards: pathlib.Path


def build_inputs(root: pathlib.Path) -> Inputs:
    """Write the valid inputs under ``root``."""
    from mirror3d.jobs import resolve_config
    from mirror3d.models.casl.step import build_casl_model
    from mirror3d.engine.reid_train import build_model
    from mirror3d.utils.config import config_to_dict, update_config

    market = fx.make_market1501(root / "data")
    hq = fx.make_market_hq(root / "data")
    with torch.random.fork_rng():  # the session's random state stays as it was
        torch.manual_seed(0)
        casl_model = build_casl_model(TINY_CASL)
    casl_run = root / "runs" / "casl" / "tiny"
    casl_ckpt = save_checkpoint(casl_run / "model_final.pt", "casl",
                                {"model": casl_model.state_dict(), "config": TINY_CASL})
    (casl_run / "config.yaml").write_text(yaml.safe_dump(TINY_CASL))
    cfg = update_config(resolve_config("train-reid", "smoke"),
                        {"model.name": "cnn2d-small", "data.images": str(market),
                         "data.image_size": (16, 32)})
    classes = len(fx.REID_TRAIN_PIDS)
    reid_run = root / "runs" / "ognet" / "tiny"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        reid_model = build_model(cfg, classes)
    reid_ckpt = save_checkpoint(reid_run / "model_final.pt", "reid",
                                {"model": reid_model.state_dict(), "epoch": 1,
                                 "num_classes": classes, "config": config_to_dict(cfg)})
    (reid_run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    shards = reid_fixtures.flat_shards(market, root / "shards")
    return Inputs(root, market, hq, casl_run, casl_ckpt, reid_run, reid_ckpt, shards)


# ---------------------------------------------------------------------------- bad files
def corrupt_file(path: pathlib.Path, head: bytes = b"\xff\xd8\xff\xe0") -> pathlib.Path:
    """A file that starts like an image (JPEG magic by default) and then is garbage."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + b" not really an image " * 4)
    return path


class _Payload:
    """Unpickling this creates the file ``path`` (what a malicious checkpoint would do)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def malicious_checkpoint(path: pathlib.Path, payload_target: pathlib.Path) -> pathlib.Path:
    """A pickle posing as a checkpoint whose loading (unsafely) creates ``payload_target``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"format": "mirror3d/casl", "x": _Payload(str(payload_target))}))
    return path


def failing_factory(checkpoint: str):
    """A ``module:factory`` reconstructor (lift ``--reconstructor``) whose every reconstruction
    fails: a lifting job that starts and then fails in its first shard."""
    return _FailingReconstructor()


class _FailingReconstructor:
    refine_steps = 0

    def reconstruct(self, image, mask):
        raise RuntimeError("the reconstructor broke down in the middle of the job")


# ---------------------------------------------------------------------------- checks
def snapshot(*roots: pathlib.Path) -> dict[str, tuple]:
    """Every file and folder under ``roots``: relative path -> (kind, size, digest)."""
    out: dict[str, tuple] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for d in dirnames:
                out[os.path.join(dirpath, d)] = ("dir",)
            for f in filenames:
                p = os.path.join(dirpath, f)
                if os.path.islink(p):
                    out[p] = ("link", os.readlink(p))
                    continue
                data = pathlib.Path(p).read_bytes()
                out[p] = ("file", len(data), hashlib.sha1(data).hexdigest())
    return out


def changes(before: dict, after: dict) -> list[str]:
    """What differs between two :func:`snapshot`\\ s (created, removed, changed paths)."""
    added = [f"created {p}" for p in sorted(set(after) - set(before))]
    removed = [f"removed {p}" for p in sorted(set(before) - set(after))]
    changed = [f"changed {p}" for p in sorted(set(before) & set(after)) if before[p] != after[p]]
    return added + removed + changed


def one_error_line(err: str, prog: str) -> str:
    """The one line of a CLI error (stderr holds exactly one non-empty line, no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{err}"
    assert "Traceback" not in err
    assert lines[0].startswith(f"mirror3d {prog}: error: "), lines[0]
    return lines[0]


def gray16_png(path: pathlib.Path, value: int, size: tuple[int, int] = (8, 16)) -> pathlib.Path:
    """A 16-bit gray PNG (pillow mode I;16) of one value 0..65535."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0]), value, np.uint16)
    Image.fromarray(arr).save(path)
    return path
