"""The demo's gallery search: a query photo → the top-k gallery people of a trained re-id run.

Plain Python over a re-id run (OG-Net on lifted point clouds, Zheng et al. 2022,
"Parameter-Efficient Person Re-identification in the 3D Space"; or the 2D CNN baseline), loaded
with :func:`mirror3d.engine.reid_train.load_reid_model`. What the model takes comes from its
registry entry (:func:`~mirror3d.engine.reid_train.input_kind`), and a point model's query is
lifted exactly as its training clouds were: the settings the lifting job recorded next to the
run's shards (``<data.shards>/_meta/lift_settings.json``: mode, image size, point counts, frame,
reconstructor and checkpoint, seed) drive :func:`mirror3d.lifting.modes.lift_image` with the same
:class:`~mirror3d.lifting.modes.LiftParams`, and the cloud is then loaded like an evaluation
sample (:class:`mirror3d.data.datasets.PointCloudDataset`, ``train=False``) and embedded with the
evaluation's test-time augmentation (:func:`~mirror3d.engine.reid_train.embed_dataset`). A run
lifted with an oracle that looks images up in a dataset's ground truth (``synth-truth``) cannot
lift an uploaded photo and is refused when the service starts.

The gallery is the run's gallery split, embedded once and kept as a
:class:`mirror3d.retrieval.GalleryIndex` under ``<run_dir>/demo_index`` (reused while its
fingerprint — checkpoint, shard files or image tree, lifting settings — matches). Ranking is
cosine top-k (``GalleryIndex.search``), as torchreid's ``visrank`` shows it: exact (faiss, or
torch without it) unless the cached index was saved with an approximate method (``"ivf"`` or
``"hnsw"``, for galleries of a million and more), which is then loaded and used as saved;
``index_method`` chooses the method of the index built (or re-derived from the cached features).

Example::

    svc = SearchService("runs/pipeline/cpu-default/reid/casl-visible")
    res = svc.search(decode_upload(data), k=10, query_pid=market_ids("0002_c1s1_000451_03.jpg")[0])
    [(r["rank"], r["score"], r["pid"], r["match"]) for r in res.rows]
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import pathlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mirror3d.data.datasets import PointCloudDataset
from mirror3d.data.masks import load_rgb
from mirror3d.data.readers.reid import MARKET_PATTERN, parse_reid_name
from mirror3d.data.transforms import ResizeOnly, resize_pair, to_rgb_tensor
from mirror3d.engine.demo_inputs import (InputError, UploadLimits, decode_mask_upload,
                                         image_input, resolve_mask)
from mirror3d.engine.reid_train import (ReidTrainConfig, embed_dataset, input_kind,
                                        load_reid_data, load_reid_model)
from mirror3d.lifting.modes import (MODES_NEEDING_MASK, LiftParams, TooFewPoints, lift_image,
                                    seed_for_key)
from mirror3d.lifting.reconstructors import SYNTH_TRUTH, build_reconstructor
from mirror3d.lifting.config import LiftConfig
from mirror3d.lifting.run import SETTINGS_FILE
from mirror3d.models.casl import MaskError
from mirror3d.retrieval.gallery import GalleryIndex
from mirror3d.utils.config import ConfigError, update_config
from mirror3d.utils.files import atomic_write

log = logging.getLogger(__name__)

__all__ = ["SearchResult", "SearchService", "LiftRecipe", "read_lift_recipe", "thumbnail",
           "market_ids", "INDEX_DIR", "FINGERPRINT_FILE"]

#: The gallery index's folder inside a re-id run (default of ``index_dir``).
INDEX_DIR = "demo_index"
#: What the cached index was built from (inside the index folder).
FINGERPRINT_FILE = "fingerprint.json"
#: Bump when the way gallery features are computed changes (invalidates cached indexes).
_EMBED_VERSION = 1


@dataclass(frozen=True)
class LiftRecipe:
    """How a point re-id run's clouds were lifted (from its shards' ``lift_settings.json``).

    Attributes:
        mode: a :data:`mirror3d.lifting.modes.LIFT_MODES` entry.
        params: the :class:`LiftParams` (num_points, min_points, short, oversample, depth_tol,
            height, frame).
        image_size: (W, H) images (and masks) were resized to first, or None (kept).
        reconstructor, checkpoint, refine_steps: the ``casl-*`` modes' mesh source.
        seed: the base seed (per image: :func:`~mirror3d.lifting.modes.seed_for_key`).
        root: the dataset root the shards came from.
        settings: the file's content as read.
    """

    mode: str
    params: LiftParams
    image_size: tuple[int, int] | None
    reconstructor: str
    checkpoint: str
    refine_steps: int
    seed: int
    root: str
    settings: dict = field(repr=False, compare=False)


#: The lifting settings that make a cloud's points (LiftConfig.params()).
POINT_KEYS = ("num_points", "min_points", "short", "oversample", "depth_tol", "height", "frame")


def read_lift_recipe(shards: str | os.PathLike, run: str = "") -> LiftRecipe:
    """The :class:`LiftRecipe` recorded next to a shard directory.

    Raises:
        FileNotFoundError: no ``_meta/lift_settings.json`` (one line naming the run and file).
        ValueError: an unreadable file or settings :class:`LiftParams` refuses.
    """
    path = pathlib.Path(shards) / "_meta" / SETTINGS_FILE
    who = f"re-id run {run}: " if run else ""
    if not path.is_file():
        raise FileNotFoundError(f"{who}its shards {shards} have no _meta/{SETTINGS_FILE}, so "
                                f"how to lift a query is unknown; re-lift them with the lift job")
    try:
        s = json.loads(path.read_text())
        # the file holds LiftConfig's content keys: its own checks and params() read them back
        cfg = update_config(LiftConfig(), {k: s[k] for k in POINT_KEYS
                                           if k in s or k != "frame"})  # older files: no frame
        params = cfg.params()
        size = s.get("image_size")
        return LiftRecipe(mode=s["mode"], params=params,
                          image_size=None if size is None else (int(size[0]), int(size[1])),
                          reconstructor=str(s.get("reconstructor", "")),
                          checkpoint=str(s.get("checkpoint") or ""),
                          refine_steps=int(s.get("refine_steps", 0)), seed=int(s.get("seed", 0)),
                          root=str(s.get("root", "")), settings=s)
    except (ValueError, KeyError, TypeError, ConfigError) as e:
        raise ValueError(f"{who}{path}: unusable lifting settings ({e})") from None


@dataclass
class SearchResult:
    """One query's top-k.

    Attributes:
        rows: k dicts, best first: ``rank`` (1-based), ``score`` (cosine), ``pid``, ``camid``
            (0-based), ``path``, ``index`` (gallery row), ``match`` (pid equals the query's
            pid; None when the query's pid is unknown).
        k: rows asked for (capped at the gallery size).
        query_pid: as given, or None.
        feature: (D,) float32 L2-normalised query feature.
        mask: (H, W) bool mask used for lifting (upload size), or None (flat / image models).
        mask_source: ``"upload"`` | ``"box"`` | ``"estimate"`` | ``"none"``.
        kind: ``"points"`` | ``"image"``.  lift_mode: the lifting mode, or None for images.
        num_points: points of the lifted query cloud (before the model's selection), or 0.
        seconds: wall time of :meth:`SearchService.search`.
    """

    rows: list[dict[str, Any]]
    k: int
    query_pid: int | None
    feature: np.ndarray = field(repr=False)
    mask: np.ndarray | None = field(repr=False)
    mask_source: str
    kind: str
    lift_mode: str | None
    num_points: int
    seconds: float

    def summary(self) -> dict:
        """The JSON-able part (no arrays)."""
        return {"rows": [dict(r) for r in self.rows], "k": self.k, "query_pid": self.query_pid,
                "mask_source": self.mask_source, "kind": self.kind, "lift_mode": self.lift_mode,
                "num_points": self.num_points, "seconds": round(self.seconds, 4)}


def market_ids(filename: str | os.PathLike) -> tuple[int, int] | None:
    """(pid, camid 0-based) from a Market-1501 file name (``0002_c1s1_000451_03.jpg``), else
    None — the query's identity when the user uploads a dataset image."""
    try:
        return parse_reid_name(pathlib.Path(str(filename)).name, MARKET_PATTERN)
    except ValueError:
        return None


@functools.lru_cache(maxsize=2048)
def _thumbnail(path: str, size: tuple[int, int]) -> np.ndarray:
    img = ResizeOnly(size, train=False)(load_rgb(path)).image
    img.flags.writeable = False
    return img


def thumbnail(path: str | os.PathLike, size: tuple[int, int] = (64, 128)) -> np.ndarray:
    """A gallery image resized to ``size`` = (W, H) (bicubic): (H, W, 3) uint8, read-only,
    cached.

    Raises:
        FileNotFoundError, ValueError: see :func:`mirror3d.data.masks.load_rgb`.
    """
    return _thumbnail(str(path), (int(size[0]), int(size[1])))


def _file_sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class SearchService:
    """A re-id run loaded once, searching its gallery for uploaded photos.

    Args:
        run_dir: a re-id run directory (its ``model_final.pt``).
        device: torch device.
        index_dir: where the gallery index is cached (default ``<run_dir>/demo_index``); an
            unwritable place only costs the rebuild at the next start.
        gallery_index: a prebuilt :class:`GalleryIndex` of this model's features (e.g. a large
            benchmark gallery); then the run's gallery is not embedded.
        limits: caps of uploads given as bytes.
        batch_size: gallery samples per forward pass when building the index.
        index_method: None (default): a cached index is used with the search method it was
            saved with, a new one is exact; "exact", "ivf" or "hnsw": the index's method (a
            cached index with another method is re-indexed from its saved features, without
            embedding the gallery again, and saved).
        index_params: the method's parameters (:func:`mirror3d.retrieval.gallery.
            default_method_params` for the rest).

    Attributes:
        kind: ``"points"`` or ``"image"``.  recipe: the :class:`LiftRecipe` (points) or None.
        reconstructor: the ``casl-*`` modes' reconstructor, built once, or None.
        index: the :class:`GalleryIndex`.

    Raises:
        ValueError: a run lifted with a reconstructor that cannot lift a photo (``synth-truth``
            or any that looks images up by path), in one line naming the run and the reason.
        FileNotFoundError: no model, no lifting settings, a missing CASL checkpoint.
    """

    def __init__(self, run_dir: str | os.PathLike, device: str = "cpu",
                 index_dir: str | os.PathLike | None = None,
                 gallery_index: GalleryIndex | None = None,
                 limits: UploadLimits = UploadLimits(), batch_size: int = 64,
                 index_method: str | None = None, index_params: dict | None = None) -> None:
        self.run_dir = pathlib.Path(run_dir)
        self.index_method = index_method
        self.index_params = dict(index_params or {})
        self.device = device
        self.limits = limits
        self.batch_size = int(batch_size)
        self.model, self.cfg = load_reid_model(self.run_dir, device)
        self.kind = input_kind(self.cfg.model.name)
        self.recipe: LiftRecipe | None = None
        self.reconstructor = None
        if self.kind == "points":
            self.recipe = read_lift_recipe(self.cfg.data.shards, str(self.run_dir))
            self._check_liftable(self.recipe)
            if self.recipe.mode in MODES_NEEDING_MASK:
                r = self.recipe
                self.reconstructor = build_reconstructor(r.reconstructor, r.checkpoint, device,
                                                         r.refine_steps, root=r.root or None)
                if getattr(self.reconstructor, "needs_path", False):
                    raise ValueError(f"re-id run {self.run_dir}: its clouds were lifted with "
                                     f"reconstructor {r.reconstructor!r}, which looks images up "
                                     f"by file and cannot lift an uploaded photo")
        self.index_dir = pathlib.Path(index_dir) if index_dir else self.run_dir / INDEX_DIR
        self.index = gallery_index if gallery_index is not None else self._gallery_index()

    # ------------------------------------------------------------------------------ startup
    def _check_liftable(self, r: LiftRecipe) -> None:
        if r.mode in MODES_NEEDING_MASK and r.reconstructor == SYNTH_TRUTH:
            raise ValueError(
                f"re-id run {self.run_dir}: its clouds were lifted with the {SYNTH_TRUTH} oracle "
                f"(each SynthPeople image's true mesh, looked up in the dataset's ground truth), "
                f"which cannot lift an uploaded photo; serve a run lifted with casl, flat, or the "
                f"2D baseline")

    def _checkpoint(self) -> pathlib.Path:
        p = self.run_dir
        return p / "model_final.pt" if p.is_dir() else p

    def fingerprint(self) -> dict:
        """What the gallery features depend on: the checkpoint's hash, the model's input, and
        the gallery's source (shard files' names / sizes / times and the lifting settings, or
        the image folder's listing)."""
        fp: dict[str, Any] = {"version": _EMBED_VERSION, "kind": self.kind,
                              "checkpoint_sha256": _file_sha256(self._checkpoint())}
        if self.kind == "points":
            shards = pathlib.Path(self.cfg.data.shards)
            fp["shards"] = [[f.name, f.stat().st_size, f.stat().st_mtime_ns]
                            for f in sorted(shards.glob("*.parquet"))]
            fp["lift_settings"] = self.recipe.settings if self.recipe else None
            fp["num_points"] = self.cfg.data.num_points
        else:
            gallery = pathlib.Path(self.cfg.data.images) / "bounding_box_test"
            fp["images"] = str(pathlib.Path(self.cfg.data.images).resolve())
            fp["gallery"] = sorted([f.name, f.stat().st_size] for f in gallery.glob("*")
                                   if f.is_file())
            fp["image_size"] = list(self.cfg.data.image_size)
        return fp

    def _gallery_index(self) -> GalleryIndex:
        fp = self.fingerprint()
        fp_file = self.index_dir / FINGERPRINT_FILE
        index = None
        try:
            if json.loads(fp_file.read_text()) == json.loads(json.dumps(fp)):
                try:
                    index = GalleryIndex.load(self.index_dir)
                except ImportError as e:  # an approximate index saved where faiss now is missing
                    log.warning("demo search: searching the cached gallery exactly (%s)", e)
                    index = GalleryIndex.load(self.index_dir, method="exact")
                want = self.index_method or index.method
                if want == index.method and all(index.method_params.get(key) == v
                                                for key, v in self.index_params.items()):
                    return index
                # another search method asked for: re-index the cached features
                index = GalleryIndex(index.features, index.metadata, method=self.index_method
                                     or index.method, method_params=self.index_params or None)
        except (OSError, ValueError, ImportError) as e:
            if fp_file.exists():
                log.warning("demo search: rebuilding the gallery index (%s)", e)
        if index is None:
            index = self.build_index()
        try:
            index.save(self.index_dir, overwrite=True)
            atomic_write(fp_file, json.dumps(fp, indent=1))
        except OSError as e:
            log.warning("demo search: cannot cache the gallery index in %s (%s)", self.index_dir, e)
        return index

    def build_index(self) -> GalleryIndex:
        """Embed the run's gallery split (``embed_dataset``, the evaluation's features) into a
        :class:`GalleryIndex` with metadata pid, camid, path."""
        data = load_reid_data(self.cfg)
        feats = embed_dataset(self.model, data.gallery, self.kind, self.batch_size)
        m = data.gallery_meta
        meta = [{"pid": int(p), "camid": int(c), "path": str(s)}
                for p, c, s in zip(m["pid"], m["camid"], m["path"])]
        return GalleryIndex(feats, meta, method=self.index_method or "exact",
                            method_params=self.index_params or None)

    # ------------------------------------------------------------------------------ queries
    def _image(self, image) -> np.ndarray:
        return image_input(image, self.limits)

    def lift(self, image: np.ndarray, mask=None, box=None, seed: int | None = None
             ) -> tuple[np.ndarray, np.ndarray | None, str]:
        """Lift a query photo the way the run's clouds were lifted (points runs only).

        Args:
            image: (H, W, 3) uint8.  mask / box: as :func:`resolve_mask` (``casl-*`` modes).
            seed: the lifting seed; default derived from the image's content and the recipe's
                seed (the same photo always lifts to the same cloud).

        Returns:
            (points (M, 6) float32 [x, y, z, r, g, b], mask used (H, W) bool or None,
            mask source).

        Raises:
            InputError: an unusable mask, or a cloud with too few points.
        """
        r = self.recipe
        if r is None:
            raise ValueError(f"re-id run {self.run_dir}: model {self.cfg.model.name} takes "
                             f"images, nothing to lift")
        mask_used, source = None, "none"
        if r.mode in MODES_NEEDING_MASK:
            if isinstance(mask, (bytes, bytearray, memoryview)):
                mask = decode_mask_upload(mask, image.shape[:2], self.limits)
            mask_used, source = resolve_mask(image, mask, box)
        img, m = image, mask_used
        if r.image_size is not None:
            img, m = resize_pair(image, mask_used, r.image_size, "bicubic")
        if seed is None:
            seed = seed_for_key(hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest(),
                                r.seed)
        try:
            res = lift_image(img, m, r.mode, self.reconstructor, r.params, seed)
        except (TooFewPoints, MaskError) as e:
            raise InputError(f"query: cannot lift it ({e}); draw the person on the mask or give "
                             f"a box") from None
        return res.points, mask_used, source

    def embed(self, image, mask=None, box=None, seed: int | None = None
              ) -> tuple[np.ndarray, dict]:
        """The query's (D,) float32 feature, computed as the gallery's were (``seed``: the
        lifting seed, see :meth:`lift`); and ``{"mask", "mask_source", "num_points"}``."""
        image = self._image(image)
        info: dict[str, Any] = {"mask": None, "mask_source": "none", "num_points": 0}
        if self.kind == "points":
            pts, info["mask"], info["mask_source"] = self.lift(image, mask, box, seed)
            info["num_points"] = int(pts.shape[0])
            d = self.cfg.data
            ds = PointCloudDataset([pts], [0], [0], num_points=d.num_points, train=False,
                                   slim=d.slim, short=d.short, names=["query"])
        else:
            size = tuple(self.cfg.data.image_size)
            ds = [{"image": to_rgb_tensor(ResizeOnly(size, train=False)(image).image)}]
        feat = embed_dataset(self.model, ds, self.kind, 1)
        return feat[0].numpy().astype(np.float32), info

    def search(self, image, mask=None, box=None, k: int = 10, query_pid: int | None = None
               ) -> SearchResult:
        """Top-k gallery entries for a query photo.

        Args:
            image: (H, W, 3) uint8 RGB or the uploaded file's bytes.
            mask, box: the person (point runs lifted with a ``casl-*`` mode; ignored otherwise).
            k: results, 1..; capped at the gallery size.
            query_pid: the query's identity if known (e.g. :func:`market_ids` of its file name)
                for the right / wrong marks.

        Raises:
            InputError: bad image / mask / box / k.
        """
        t0 = time.perf_counter()
        if isinstance(k, str):
            k = k.strip()
            k = int(k) if k.isdigit() else k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k: expected an integer >= 1, got {k!r}")
        k = min(int(k), len(self.index))
        feat, info = self.embed(image, mask, box)
        rows = self.index.search_rows(feat[None], k)[0]
        out = []
        for r in rows:
            pid = int(r["pid"])
            out.append({"rank": int(r["rank"]), "score": float(r["score"]), "pid": pid,
                        "camid": int(r["camid"]), "path": str(r["path"]), "index": int(r["index"]),
                        "match": None if query_pid is None else pid == int(query_pid)})
        return SearchResult(rows=out, k=k, query_pid=None if query_pid is None else int(query_pid),
                            feature=feat, mask=info["mask"], mask_source=info["mask_source"],
                            kind=self.kind, lift_mode=self.recipe.mode if self.recipe else None,
                            num_points=info["num_points"], seconds=time.perf_counter() - t0)

    def thumbnail(self, path: str | os.PathLike, size: tuple[int, int] = (64, 128)) -> np.ndarray:
        """:func:`thumbnail` of a gallery image; only paths of this gallery are served.

        Raises:
            KeyError: a path that is not in the gallery.
        """
        if str(path) not in self._paths:
            raise KeyError(f"thumbnail: {path} is not a gallery image of this run")
        return thumbnail(path, size)

    @functools.cached_property
    def _paths(self) -> frozenset[str]:
        return frozenset(self.index.metadata.column("path").to_pylist())

    @property
    def config(self) -> ReidTrainConfig:
        """The run's training config."""
        return self.cfg
