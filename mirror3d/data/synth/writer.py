"""SynthPeople on disk: the Market-1501 and Market-HQ trees, the 3D ground truth, sharding and
resume. Everything here runs in one process; :mod:`mirror3d.platform.synth` runs the same shards
as Ray tasks.

Layout of ``out`` (all paths in the ground truth are relative to it)::

    Market-1501/bounding_box_train/PPPP_cCs1_FFFFFF_00.jpg     train identities (JPEG q95)
    Market-1501/query/…                                          one per camera of a test id
    Market-1501/bounding_box_test/…                              the rest of the test ids, plus
                                                                 distractors (pid 0000) and
                                                                 junk (pid -1)
    Market-HQ/pytorch/{train_all,query}/PPPP/<img>.jpg.png       RGB (PNG data)
    Market-HQ/seg_hmr/{train_all,query}/PPPP/<img>.jpg_<r.rr>.png   mask 0/255, r = fg ratio
    gt/images.parquet      one row per written RGB image (both trees)
    gt/recipes.jsonl       one recipe per generated person (ids, distractors, junk)
    gt/meshes/RRRR.obj     (+ .mtl + .png) the base-pose mesh of recipe RRRR (= the pid for ids)
    gt/raw_pixel_floor.json  (if computed) nearest neighbour on raw pixels
    contact_sheet.png      the identities x cameras grid (:func:`identity_camera_sheet`)
    README.txt
    .synth/                generator state: config.json (the settings, see
                           :mod:`mirror3d.utils.fingerprint`), shards/NNNNN.{done,parquet,jsonl}

Work units are people: ids 1..N (train: the first ceil(N/2), test: the rest), then distractor
and junk people with recipe ids N+1, …. A unit depends only on (seed, recipe id) and the
settings, never on the shard it lands in. Shards (``shard_size`` units) are written into
``.synth/tmp/`` and moved into place; a ``.synth/shards/NNNNN.done`` marker listing the files
is written last. A re-run skips shards whose marker and files exist and rebuilds the merged
ground truth, contact sheet and README, so the tree comes out byte-identical. The recorded
settings only block a re-run with other settings once a shard was finished with them: a start
that failed before its first shard removes them again, and a tree without a finished shard is
started afresh (its partial files removed), so the corrected re-run is never refused.

:func:`generate_dataset` takes the function that writes the pending shards: by default
:func:`write_shards_in_process` (a plain loop); the Ray version passes its own.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from mirror3d.data.masks import mask_name_with_ratio
from mirror3d.data.synth.body import build_person
from mirror3d.data.synth.config import SynthConfig, resolved_counts
from mirror3d.data.synth.floor import raw_pixel_floor
from mirror3d.data.synth.recipe import POSE_NAMES, PersonRecipe, draw_recipe, identity_rng
from mirror3d.data.synth.scene import (
    View,
    assign_cameras,
    camera_rig,
    draw_views,
    render_views,
)
from mirror3d.render import MeshRenderer
from mirror3d.render.mesh_io import export_mesh
from mirror3d.utils import storage
from mirror3d.utils.config import config_from_dict, validate_config
from mirror3d.utils.files import atomic_path, atomic_write
from mirror3d.utils.fingerprint import check_settings, read_settings, write_settings

__all__ = [
    "GENERATOR_VERSION", "Unit", "plan_units", "plan_shards", "choose_queries", "market_stem",
    "generate_unit", "write_shard", "ShardWriter", "write_shards_in_process", "generate_dataset",
    "load_recipes", "read_ground_truth", "synth_settings", "view_from_row", "rerender_row",
    "file_hashes", "gt_schema", "shard_done", "identity_camera_sheet",
]

GENERATOR_VERSION = "synthpeople-1"
_STATE = ".synth"
_MARKET = "Market-1501"
_HQ = "Market-HQ"
_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
_HQ_SPLITS = {"train": "train_all", "query": "query"}


def gt_schema():
    """The pyarrow schema of ``gt/images.parquet``."""
    fields = [
        ("path", pa.string()), ("tree", pa.string()), ("image_key", pa.string()),
        ("mask_path", pa.string()), ("pid", pa.int32()), ("camid", pa.int16()),
        ("split", pa.string()), ("role", pa.string()), ("frame", pa.int32()),
        ("azimuth", pa.float32()), ("elevation", pa.float32()), ("distance", pa.float32()),
        ("bx", pa.float32()), ("by", pa.float32()), ("light", pa.list_(pa.float32(), 9)),
        ("recipe_id", pa.int32()), ("pose_jitter", pa.list_(pa.float32(), len(POSE_NAMES))),
        ("fg_ratio", pa.float32()), ("bg_style", pa.string()), ("bg_seed", pa.int64()),
    ]
    meta = {
        b"pose_jitter_names": ",".join(POSE_NAMES).encode(),
        b"generator": GENERATOR_VERSION.encode(),
        b"camid": b"0-based (file camera number minus one)",
    }
    return pa.schema(fields, metadata=meta)


# ------------------------------------------------------------------------------ planning
@dataclass(frozen=True)
class Unit:
    """One person to generate.

    Attributes:
        recipe_id: generator key (= pid for identities).
        role: "train" | "test" | "distractor" | "junk".
        pid: the pid in file names (recipe id, 0 for distractors, −1 for junk).
    """

    recipe_id: int
    role: str
    pid: int


def plan_units(cfg: SynthConfig) -> list[Unit]:
    """All people of the dataset in generation order."""
    n, d, j = resolved_counts(cfg)
    n_train = (n + 1) // 2
    units = [Unit(p, "train" if p <= n_train else "test", p) for p in range(1, n + 1)]
    units += [Unit(n + k, "distractor", 0) for k in range(1, d + 1)]
    units += [Unit(n + d + k, "junk", -1) for k in range(1, j + 1)]
    return units


def plan_shards(units: list[Unit], shard_size: int) -> list[list[Unit]]:
    if shard_size < 1:
        raise ValueError(f"shard_size: expected >= 1, got {shard_size}")
    return [units[i:i + shard_size] for i in range(0, len(units), shard_size)]


def choose_queries(camids: list[int]) -> list[int]:
    """Market-style queries of a test identity: the first image of each camera it appears in,
    taken (cameras in ascending order) only while every chosen query keeps a positive, i.e. a
    gallery image of the same identity from another camera.

    Returns:
        sorted image indices of the queries.
    """
    first: dict[int, int] = {}
    for i, c in enumerate(camids):
        first.setdefault(c, i)
    chosen: list[int] = []
    for c in sorted(first):
        trial = chosen + [first[c]]
        gallery_cams = [camids[i] for i in range(len(camids)) if i not in trial]
        if all(any(g != camids[q] for g in gallery_cams) for q in trial):
            chosen = trial
    return sorted(chosen)


def market_stem(pid: int, camera: int, frame: int) -> str:
    """``PPPP_cCs1_FFFFFF_00`` (camera 1-based; pid −1 is written ``-1``)."""
    p = "-1" if pid == -1 else f"{pid:04d}"
    return f"{p}_c{camera}s1_{frame:06d}_00"


# ------------------------------------------------------------------------------ one unit
def _encode(array: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(array)
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=quality)
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()


def _renderer(cfg: SynthConfig) -> MeshRenderer:
    w, h = cfg.image_size
    return MeshRenderer((h, w))


def generate_unit(cfg: SynthConfig, unit: Unit, rig=None, renderer: MeshRenderer | None = None,
                  mesh_dir: pathlib.Path | None = None) -> dict[str, Any]:
    """Generate one person's images and ground truth (deterministic in cfg.seed and the unit).

    Args:
        mesh_dir: if given, the base-pose mesh is exported there as ``RRRR.obj``.
    Returns:
        dict with ``files`` (relative path → bytes), ``rows`` (ground-truth rows) and
        ``recipe`` (the recipes.jsonl record).
    """
    rig = rig if rig is not None else camera_rig(cfg.cameras, cfg.seed)
    renderer = renderer if renderer is not None else _renderer(cfg)
    recipe = draw_recipe(cfg.seed, unit.recipe_id)
    mesh = build_person(recipe)
    rng = identity_rng(cfg.seed, unit.recipe_id, 1)
    m = cfg.images_per_id
    if unit.role == "junk":
        camids = [int(c) for c in rng.integers(0, cfg.cameras, m)]
    else:
        camids = assign_cameras(rng, m, cfg.cameras)
    views = draw_views(rng, rig, camids, junk=unit.role == "junk")
    rgb, mask = render_views(mesh, views, rig, renderer)
    queries = set(choose_queries(camids)) if unit.role == "test" else set()

    files: dict[str, bytes] = {}
    rows: list[dict[str, Any]] = []
    for j, view in enumerate(views):
        frame = (unit.recipe_id - 1) * m + j + 1
        stem = market_stem(unit.pid, view.camid + 1, frame)
        split = "train" if unit.role == "train" else ("query" if j in queries else "gallery")
        ratio = float(mask[j].mean())
        market_path = f"{_MARKET}/{_FOLDERS[split]}/{stem}.jpg"
        files[market_path] = _encode(rgb[j], "JPEG", cfg.jpeg_quality)
        base = _row(view, rig, unit, split, frame, stem, ratio)
        hq_mask = None
        if split in _HQ_SPLITS:
            hq = _HQ_SPLITS[split]
            hq_rgb = f"{_HQ}/pytorch/{hq}/{unit.pid:04d}/{stem}.jpg.png"
            hq_mask = f"{_HQ}/seg_hmr/{hq}/{unit.pid:04d}/{mask_name_with_ratio(stem + '.jpg', ratio)}"
            files[hq_rgb] = _encode(rgb[j], "PNG")
            files[hq_mask] = _encode(mask[j].astype(np.uint8) * 255, "PNG")
        rows.append({**base, "path": market_path, "tree": "market1501", "mask_path": hq_mask})
        if hq_mask is not None:
            rows.append({**base, "path": hq_rgb, "tree": "market_hq", "mask_path": hq_mask})
    if mesh_dir is not None:
        export_mesh(pathlib.Path(mesh_dir) / f"{unit.recipe_id:04d}.obj", mesh.posed(None)[0],
                    mesh.faces, mesh.face_uvs, mesh.texture)
    record = {"recipe_id": unit.recipe_id, "pid": unit.pid, "role": unit.role,
              "recipe": recipe.to_dict()}
    return {"files": files, "rows": rows, "recipe": record}


def _row(view: View, rig, unit: Unit, split: str, frame: int, stem: str, ratio: float) -> dict:
    return {
        "image_key": stem, "pid": unit.pid, "camid": view.camid, "split": split, "role": unit.role,
        "frame": frame, "azimuth": view.azimuth, "elevation": view.elevation,
        "distance": view.distance, "bx": view.bx, "by": view.by, "light": list(view.light),
        "recipe_id": unit.recipe_id, "pose_jitter": list(view.pose_jitter), "fg_ratio": ratio,
        "bg_style": rig[view.camid].style, "bg_seed": view.bg_seed,
    }


# ------------------------------------------------------------------------------ shards
def _state(root: pathlib.Path) -> pathlib.Path:
    return root / _STATE


def _marker(root: pathlib.Path, k: int) -> pathlib.Path:
    return _state(root) / "shards" / f"{k:05d}.done"


def shard_done(root: pathlib.Path, k: int) -> bool:
    """A shard is done when its marker exists and every file it lists exists."""
    marker = _marker(root, k)
    if not marker.is_file():
        return False
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError):
        return False
    return all((root / f).is_file() for f in files)


def write_shard(cfg: SynthConfig | dict, k: int, units: list[Unit], root: str | os.PathLike,
                threads: int | None = None) -> dict[str, Any]:
    """Generate shard ``k`` into a temporary directory, move it into ``root``, mark it done.

    Returns:
        dict(shard, units, images, files).
    """
    if isinstance(cfg, dict):  # from a Ray task: the config travels as a plain dict
        cfg = config_from_dict(SynthConfig, cfg)
    if threads is not None:
        torch.set_num_threads(threads)
    # a dataset in a store (cfg.out a URI): written into this node's stage, pushed shard by shard
    root = storage.local_path(cfg.out) if storage.is_uri(cfg.out) else pathlib.Path(root)
    tmp = _state(root) / "tmp" / f"shard-{k:05d}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        rig = camera_rig(cfg.cameras, cfg.seed)
        renderer = _renderer(cfg)
        rows, recipes, n_images = [], [], 0
        for unit in units:
            out = generate_unit(cfg, unit, rig, renderer, mesh_dir=tmp / "gt" / "meshes")
            for rel, data in out["files"].items():
                p = tmp / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
            rows += out["rows"]
            recipes.append(out["recipe"])
            n_images += cfg.images_per_id
        _write_rows(tmp / _STATE / "shards" / f"{k:05d}.parquet", rows)
        (tmp / _STATE / "shards" / f"{k:05d}.jsonl").write_text(
            "".join(json.dumps(r, sort_keys=True) + "\n" for r in recipes))
        rels = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        for rel in rels:
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, dest)
        atomic_write(_marker(root, k), json.dumps(
            {"shard": k, "units": [u.recipe_id for u in units], "files": rels}, indent=0))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if storage.is_uri(cfg.out):  # the files, then the marker (= "done"), to the store
        for rel in rels + [_marker(root, k).relative_to(root).as_posix()]:
            storage.push(cfg.out, rel)
    return {"shard": k, "units": len(units), "images": n_images, "files": len(rels)}


def _write_rows(path: pathlib.Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=gt_schema())
    pq.write_table(table, path)


# ------------------------------------------------------------------------------ the dataset
def _settings(cfg: SynthConfig) -> dict[str, Any]:
    """What the files depend on (recorded in ``.synth/config.json``; a resume must match it)."""
    n, d, j = resolved_counts(cfg)
    return {"generator": GENERATOR_VERSION, "ids": n, "distractor_ids": d, "junk_ids": j,
            "images_per_id": cfg.images_per_id, "seed": cfg.seed,
            "image_size": list(cfg.image_size), "cameras": cfg.cameras,
            "shard_size": cfg.shard_size, "jpeg_quality": cfg.jpeg_quality}


def _finished_markers(root: pathlib.Path) -> list[pathlib.Path]:
    """The ``.done`` markers of the shards an earlier run finished."""
    return sorted((_state(root) / "shards").glob("*.done"))


#: What a SynthPeople tree holds besides its state folder (removed when nothing was finished).
_TREE_ENTRIES = (_MARKET, _HQ, "gt", "contact_sheet.png", "README.txt")


def _clear_unfinished(root: pathlib.Path, location: str) -> None:
    """Remove a SynthPeople tree of which no shard was finished (a failed start): its state and
    whatever a shard interrupted while moving its files left behind."""
    for name in (_STATE, *_TREE_ENTRIES):
        storage.remove(storage.join(location, name) if storage.is_uri(location) else root / name)


def _prepare_root(cfg: SynthConfig) -> pathlib.Path:
    storage.pull(cfg.out)  # a dataset in a store: what is done already (resume)
    root = storage.local_path(cfg.out) if storage.is_uri(cfg.out) else pathlib.Path(cfg.out)
    settings = _settings(cfg)
    state = _state(root) / "config.json"
    if root.exists() and not root.is_dir():
        raise ValueError(f"out: {root} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        if not state.is_file():
            raise ValueError(f"out: {root} is not empty and holds no SynthPeople dataset "
                             f"(no {_STATE}/config.json); choose a new or empty directory")
        diff = check_settings(state, settings)
        if diff and _finished_markers(root):
            raise ValueError(f"out: {root} holds a SynthPeople dataset made with other settings "
                             f"({', '.join(diff)}); choose another directory or delete it")
        if diff:  # nothing was finished with the old settings: start afresh
            _clear_unfinished(root, str(cfg.out))
    write_settings(state, settings)
    shutil.rmtree(_state(root) / "tmp", ignore_errors=True)  # leftovers of an interrupted run
    storage.push(cfg.out, f"{_STATE}/config.json")
    return root


#: ``write_shards(cfg, root, shards, todo, advance)``: generate the shards numbered ``todo``
#: (each with :func:`write_shard`) and call ``advance(n)`` as ``n`` more are finished.
ShardWriter = Callable[[SynthConfig, pathlib.Path, list[list[Unit]], list[int], Callable[[int], Any]], None]


def write_shards_in_process(cfg: SynthConfig, root: pathlib.Path, shards: list[list[Unit]],
                            todo: list[int], advance: Callable[[int], Any]) -> None:
    """The plain loop: the pending shards one after another in this process."""
    # one torch thread, as in each Ray task: the tensors are small, and extra intra-op threads
    # only add overhead (measured ~2.5x slower with 2 threads on a busy 2-core box)
    threads = torch.get_num_threads()
    try:
        for k in todo:
            write_shard(cfg, k, shards[k], root, threads=1)
            advance(1)
    finally:
        torch.set_num_threads(threads)


def generate_dataset(cfg: SynthConfig,
                     write_shards: ShardWriter = write_shards_in_process) -> dict[str, Any]:
    """Generate (or resume) the dataset described by ``cfg`` into ``cfg.out`` (a folder, or a
    storage URI: written into this node's stage, each shard pushed by whoever wrote it, the rest
    at the end; :mod:`mirror3d.utils.storage`).

    Args:
        write_shards: what generates the pending shards (:data:`ShardWriter`); by default a
            plain loop in this process, whatever ``cfg.no_ray`` says (Ray:
            :func:`mirror3d.platform.synth.generate_dataset`).
    Returns:
        summary dict: out, seconds, shards, shards_generated, counts, floor (or None).
    """
    cfg = validate_config(cfg)
    t0 = time.perf_counter()
    root_existed = (storage.local_path(cfg.out) if storage.is_uri(cfg.out)
                    else pathlib.Path(cfg.out)).exists()
    root = _prepare_root(cfg)
    shards = plan_shards(plan_units(cfg), cfg.shard_size)
    todo = [k for k in range(len(shards)) if not shard_done(root, k)]
    bar = tqdm(total=len(shards), initial=len(shards) - len(todo), desc="synth shards",
               unit="shard", disable=not cfg.progress)
    try:
        write_shards(cfg, root, shards, todo, bar.update)
    except BaseException:
        if not _finished_markers(root):  # a failed start: nothing left that blocks a re-run
            _clear_unfinished(root, str(cfg.out))
            if not root_existed and root.is_dir() and not any(root.iterdir()):
                root.rmdir()
        raise
    finally:
        bar.close()
    storage.pull(cfg.out)  # the shards other nodes wrote
    missing = [k for k in range(len(shards)) if not shard_done(root, k)]
    if missing:
        raise RuntimeError(f"synth: shards {missing[:5]} did not finish")
    table = _assemble(root, len(shards))
    counts = _counts(table, root)
    floor = None
    if cfg.floor:
        floor = raw_pixel_floor(root)
        atomic_write(root / "gt" / "raw_pixel_floor.json",
                     json.dumps(floor, indent=1, sort_keys=True) + "\n")
    identity_camera_sheet(root, table, cfg.cameras)
    atomic_write(root / "README.txt", _readme(cfg, counts, floor))
    storage.push(cfg.out)
    return {"out": str(root), "seconds": time.perf_counter() - t0, "shards": len(shards),
            "shards_generated": len(todo), "counts": counts, "floor": floor}


def _assemble(root: pathlib.Path, n_shards: int):
    shard_dir = _state(root) / "shards"
    tables = [pq.read_table(shard_dir / f"{k:05d}.parquet") for k in range(n_shards)]
    table = pa.concat_tables(tables).cast(gt_schema())
    gt = root / "gt"
    with atomic_path(gt / "images.parquet") as tmp:
        pq.write_table(table, tmp)
    lines = "".join((shard_dir / f"{k:05d}.jsonl").read_text() for k in range(n_shards))
    atomic_write(gt / "recipes.jsonl", lines)
    return table


def _counts(table, root: pathlib.Path) -> dict[str, Any]:
    t = table.to_pydict()
    market = [i for i, tree in enumerate(t["tree"]) if tree == "market1501"]
    split = [t["split"][i] for i in market]
    role = [t["role"][i] for i in market]
    ids = {t["pid"][i] for i in market if t["pid"][i] > 0}
    ratios = np.array([t["fg_ratio"][i] for i in market if t["pid"][i] > 0] or [0.0])
    p05, med, p95 = (float(x) for x in np.quantile(ratios, [0.05, 0.5, 0.95]))
    return {
        "fg_ratio_p05": p05, "fg_ratio_median": med, "fg_ratio_p95": p95,
        "identities": len(ids),
        "train_ids": len({t["pid"][i] for i in market if t["role"][i] == "train"}),
        "test_ids": len({t["pid"][i] for i in market if t["role"][i] == "test"}),
        "market_images": len(market),
        "train": split.count("train"), "query": split.count("query"), "gallery": split.count("gallery"),
        "distractor_images": role.count("distractor"), "junk_images": role.count("junk"),
        "hq_images": sum(1 for tree in t["tree"] if tree == "market_hq"),
        "meshes": len(list((root / "gt" / "meshes").glob("*.obj"))),
    }


# ------------------------------------------------------------------------------ pictures, README
def identity_camera_sheet(root: pathlib.Path, table, cameras: int, max_ids: int = 8,
                          scale: int = 2) -> pathlib.Path:
    """A grid: up to ``max_ids`` identities (rows, train then test) × camera ids (columns), the
    first image of each (id, camera); empty cells are light grey. Written to contact_sheet.png."""
    t = table.to_pydict()
    cells: dict[tuple[int, int], str] = {}
    pids: list[int] = []
    for i, tree in enumerate(t["tree"]):
        if tree != "market1501" or t["pid"][i] <= 0:
            continue
        pid = t["pid"][i]
        if pid not in pids:
            if len(pids) >= max_ids:
                continue
            pids.append(pid)
        cells.setdefault((pid, t["camid"][i]), t["path"][i])
    first = Image.open(root / next(iter(cells.values())))
    w, h = first.size
    w, h = w * scale, h * scale
    pad, label_h = 4, 14
    sheet = Image.new("RGB", (cameras * (w + pad) + pad, len(pids) * (h + pad) + pad + label_h),
                      (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c in range(cameras):
        draw.text((pad + c * (w + pad) + 2, 1), f"c{c + 1}", fill=(0, 0, 0))
    for r, pid in enumerate(pids):
        for c in range(cameras):
            x, y = pad + c * (w + pad), label_h + pad + r * (h + pad)
            path = cells.get((pid, c))
            if path is None:
                sheet.paste((225, 225, 225), (x, y, x + w, y + h))
            else:
                img = Image.open(root / path).convert("RGB").resize((w, h), Image.NEAREST)
                sheet.paste(img, (x, y))
    out = root / "contact_sheet.png"
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out


def _readme(cfg: SynthConfig, counts: dict[str, int], floor: dict | None) -> str:
    n, d, j = resolved_counts(cfg)
    rig = camera_rig(cfg.cameras, cfg.seed)
    w, h = cfg.image_size
    cams = "\n".join(
        f"  c{c.camid + 1}: background {c.style:<9} azimuth {c.azimuth_centre:7.1f} ± {c.azimuth_spread:4.1f} deg, "
        f"elevation ~ {c.elevation_mean:5.1f} deg, distance ~ {c.distance_mean:.2f}, light l0 ~ {c.light_l0:.2f}"
        for c in rig)
    floor_text = "not computed (--floor false)"
    if floor:
        floor_text = (f"R1 {100 * floor['rank1']:.2f} %, R5 {100 * floor['rank5']:.2f} %, "
                      f"mAP {100 * floor['map_trapezoid']:.2f} % (trapezoid) / "
                      f"{100 * floor['map_mean_precision']:.2f} % (mean precision)")
    return f"""SynthPeople ({GENERATOR_VERSION}) - procedural clothed people with 3D ground truth
=====================================================================

Generated by mirror3d:
  python -m mirror3d synth --ids {n} --images_per_id {cfg.images_per_id} --seed {cfg.seed} \\
      --image_size {w},{h} --cameras {cfg.cameras} --distractor_ids {d} --junk_ids {j} --out <dir>
The same settings always give the same files (per-person random streams seeded from
(seed, recipe id); the shard size, the number of workers and Ray or not do not matter).
Re-running the command on an existing directory resumes it (finished shards are skipped).

Content
  identities       {counts['identities']} (train {counts['train_ids']}, test {counts['test_ids']}; disjoint)
  images per id    {cfg.images_per_id}, {w}x{h} (WxH), RGB + binary mask
  foreground ratio {counts['fg_ratio_median']:.2f} median, {counts['fg_ratio_p05']:.2f}-{counts['fg_ratio_p95']:.2f} (5-95 %) over
                   the identities' images (Market-HQ masks; CASL's Market filter is (0.09, 0.64))
  Market-1501      {counts['market_images']} JPEGs (quality {cfg.jpeg_quality}): bounding_box_train {counts['train']},
                   query {counts['query']}, bounding_box_test {counts['gallery']}
                   (of which distractors pid 0000: {counts['distractor_images']}, junk pid -1: {counts['junk_images']})
  Market-HQ        {counts['hq_images']} image/mask pairs (train_all = train ids, query = the queries)
  meshes           {counts['meshes']} (gt/meshes, base pose, OBJ + MTL + PNG texture)

Re-id protocol (Market-1501)
  Names PPPP_cCs1_FFFFFF_00.jpg: pid (4 digits, from 0001), camera C (1-based), sequence 1,
  frame FFFFFF (unique per image), box 00. Each test identity has one query per camera it
  appears in (as long as the query keeps a positive in another camera); its other images are
  gallery. Distractors (pid 0000) are extra people who never appear as a query; junk (pid -1)
  are badly cropped or tiny renders of extra people. Junk = same pid and same camera, or pid -1.
  Raw-pixel nearest-neighbour floor (32x64 RGB, L2-normalised, cosine): {floor_text}.
  (Near chance: across cameras the background dominates raw pixels; any learned model should
  do far better.)

Cameras (each with its own background style, light bias and preferred azimuth sector, so
same-camera matches are easier than cross-camera ones)
{cams}
  Per image: azimuth ~ N(centre, spread) wrapped to [-180, 180); elevation clipped to [-15, 15];
  distance ~ N(camera mean, 0.3) clipped to [2, 6]; look-at offset (bx, by) ~ U(-0.1, 0.1); SH light l0 in [2.5, 3.5],
  l1..l8 in [-0.1, 0.1]; pose jitter ~ N(0, 3 deg) per angle (clipped to 8 deg); background drawn
  afresh (bg_seed). Junk renders use offsets 0.3-0.6 or distance 12-20.

Conventions
  Renderer: mirror3d.render (DIB-R / CASL conventions): +y up, the person faces +z, the camera
  at azimuth 0 sits on +z; position (d cosE sinA, d sinE, d cosE cosA), look-at (bx, by, 0),
  fovy = 2 atan(1/2.5). The person is rendered on white and composited over the (unshaded)
  background with the hard coverage mask.
  Meshes: closed parts (torso, neck, head, hair, limbs, hands, feet, skirt/dress, bag), faces
  counter-clockwise from outside, one texture atlas, normalised at the base pose to
  y in [-0.9, 0.9] (height 1.8), centred on the bounding box.
  Masks: Market-HQ/seg_hmr/<split>/<pid>/<img>.jpg_<r.rr>.png, 0/255, r = foreground fraction
  (2 decimals); RGB at Market-HQ/pytorch/<split>/<pid>/<img>.jpg.png (PNG data).

Ground truth
  gt/images.parquet: one row per RGB image (tree market1501 or market_hq); columns path,
  tree, image_key, mask_path, pid, camid (0-based), split (train/query/gallery), role
  (train/test/distractor/junk), frame, azimuth, elevation, distance, bx, by, light[9],
  recipe_id, pose_jitter[{len(POSE_NAMES)}] ({', '.join(POSE_NAMES)}), fg_ratio, bg_style, bg_seed.
  gt/recipes.jsonl: one line per person: recipe_id, pid, role, recipe.
  The exact mesh of any image: mirror3d.data.synth.build_person_mesh(recipe, row['pose_jitter']);
  mirror3d.data.synth.rerender_row(dir, row) renders the image again (bit-identical).
"""


# ------------------------------------------------------------------------------ reading back
def load_recipes(root: str | os.PathLike) -> dict[int, PersonRecipe]:
    """recipe_id → :class:`PersonRecipe` from ``gt/recipes.jsonl``."""
    path = pathlib.Path(root) / "gt" / "recipes.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no SynthPeople recipes at {path}")
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[int(rec["recipe_id"])] = PersonRecipe.from_dict(rec["recipe"])
    return out


def read_ground_truth(root: str | os.PathLike):
    """``gt/images.parquet`` as a pyarrow Table."""
    path = pathlib.Path(root) / "gt" / "images.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"no SynthPeople ground truth at {path}")
    return pq.read_table(path)


def synth_settings(root: str | os.PathLike) -> dict[str, Any]:
    """The settings a SynthPeople tree was generated with (``.synth/config.json``: seed,
    cameras, ``image_size`` as [W, H], ...).

    Raises:
        FileNotFoundError: the tree has no (readable) settings file.
    """
    path = _state(pathlib.Path(root)) / "config.json"
    fp = read_settings(path)
    if fp is None:
        raise FileNotFoundError(f"no SynthPeople settings at {path}")
    return fp


def view_from_row(row: dict[str, Any]) -> View:
    """The :class:`View` of a ground-truth row (a dict of column → value)."""
    return View(camid=int(row["camid"]), azimuth=float(row["azimuth"]),
                elevation=float(row["elevation"]), distance=float(row["distance"]),
                bx=float(row["bx"]), by=float(row["by"]), light=tuple(float(x) for x in row["light"]),
                pose_jitter=tuple(float(x) for x in row["pose_jitter"]), bg_seed=int(row["bg_seed"]),
                junk=row["role"] == "junk")


def rerender_row(root: str | os.PathLike, row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Render the image of a ground-truth row again from its recipe and parameters.

    Returns:
        rgb (H, W, 3) uint8 and mask (H, W) bool, identical to the written PNGs.
    """
    root = pathlib.Path(root)
    fp = synth_settings(root)
    recipe = load_recipes(root)[int(row["recipe_id"])]
    rig = camera_rig(int(fp["cameras"]), int(fp["seed"]))
    w, h = fp["image_size"]
    rgb, mask = render_views(build_person(recipe), [view_from_row(row)], rig, MeshRenderer((h, w)))
    return rgb[0], mask[0]


def file_hashes(root: str | os.PathLike, include_state: bool = False) -> dict[str, str]:
    """relative path → sha256 of every file under ``root`` (``.synth/`` left out unless asked)."""
    root = pathlib.Path(root)
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or (not include_state and rel.startswith(_STATE + "/")):
            continue
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out

