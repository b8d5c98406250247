"""A searchable gallery of re-id features with metadata, saved as plain files.

On disk (one directory)::

    features.npy   (N, D) float32, L2-normalised rows (loaded with allow_pickle=False)
    meta.parquet   N rows, at least the columns pid, camid, path
    index.json     {"format": "mirror3d.gallery", "version": 2, "dim": D, "count": N,
                    "normalized": true, "dtype": "float32", "metric": "cosine",
                    "search": {"method": "exact" | "ivf" | "hnsw", "params": {...}}}
    ann.faiss      only for an approximate method: the trained faiss index (faiss.write_index)

Search methods (``method=``):

- ``"exact"`` (default): exact cosine top-k. Backend ``"faiss"`` (the default: ``faiss-cpu`` is a
  regular dependency) is ``faiss.IndexFlatIP``; backend ``"torch"`` (the fallback when faiss
  cannot be imported, and the reference the faiss backend is tested against) is a chunked
  matmul + ``torch.topk``. Both return the same top-k up to float rounding of near-ties.
- ``"ivf"``: ``faiss.IndexIVFFlat`` (inner product): k-means into ``nlist`` lists, a query scans
  the ``nprobe`` nearest lists. For galleries of ~1M and more.
- ``"hnsw"``: ``faiss.IndexHNSWFlat`` (inner product), graph search with ``m`` links per node and
  beam width ``ef_search``.

The approximate methods need faiss; their trained index is saved next to the features and
loaded with them (version-1 directories, written before approximate search existed, load as
exact). Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

__all__ = ["GalleryIndex", "faiss_available", "REQUIRED_COLUMNS", "FORMAT_VERSION", "METHODS",
           "BACKENDS", "default_method_params"]

FORMAT_NAME = "mirror3d.gallery"
FORMAT_VERSION = 2
#: Versions :meth:`GalleryIndex.load` reads (1: exact only, no "search" entry).
READABLE_VERSIONS = (1, 2)
REQUIRED_COLUMNS = ("pid", "camid", "path")
FEATURES_FILE, META_FILE, INDEX_FILE, ANN_FILE = "features.npy", "meta.parquet", "index.json", "ann.faiss"
BACKENDS = ("auto", "torch", "faiss")
METHODS = ("exact", "ivf", "hnsw")
#: Parameters of each approximate method; the ``search_params`` may be changed after building.
METHOD_PARAMS = {
    "ivf": {"build": ("nlist", "train_size", "niter", "seed"), "search": ("nprobe",)},
    "hnsw": {"build": ("m", "ef_construction"), "search": ("ef_search",)},
    "exact": {"build": (), "search": ()},
}
# Default cap on (queries per chunk) x N for the torch backend: 2**25 scores (128 MB).
DEFAULT_MAX_CHUNK_ELEMENTS = 1 << 25


def faiss_available() -> bool:
    """True when ``import faiss`` works (``faiss-cpu`` is a dependency; the torch backend is the
    fallback for a platform where its wheel cannot be installed or imported)."""
    try:
        import faiss  # noqa: F401  (imported where used, so that the torch fallback needs no faiss)
    except ImportError:
        return False
    return True


def default_method_params(method: str, count: int) -> dict[str, int]:
    """The parameters used for ``method`` on a gallery of ``count`` items when none are given.

    ivf: ``nlist`` = sqrt(N) lists (at least 1, at most N // 39 so that k-means has 39
    training points per list), trained by ``niter`` = 10 k-means iterations on ``train_size`` =
    min(N, 64·nlist) rows sampled with ``seed`` (1M rows: 1,000 lists, 64k training rows);
    ``nprobe`` = max(8, nlist // 20) lists scanned per query (≈ 5 % of the gallery when large).
    hnsw: ``m`` = 32 links, ``ef_construction`` = 80, ``ef_search`` = 64.
    """
    if method == "ivf":
        nlist = int(max(1, min(round(count**0.5), count // 39)))
        return {"nlist": nlist, "train_size": int(min(count, 64 * nlist)), "niter": 10, "seed": 0,
                "nprobe": min(nlist, max(8, nlist // 20))}
    if method == "hnsw":
        return {"m": 32, "ef_construction": 80, "ef_search": 64}
    if method == "exact":
        return {}
    raise ValueError(f"method: expected one of {METHODS}, got {method!r}")


def _check_params(method: str, params: dict[str, Any] | None, count: int) -> dict[str, int]:
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    out = default_method_params(method, count)
    allowed = METHOD_PARAMS[method]["build"] + METHOD_PARAMS[method]["search"]
    for key, v in (params or {}).items():
        if key not in allowed:
            raise ValueError(f"method_params: {key!r} is not a parameter of method {method!r} "
                             f"(expected some of {list(allowed)})")
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if key == "seed" else 1):
            raise ValueError(f"method_params: {key} expected a positive integer, got {v!r}")
        out[key] = int(v)
    if method == "ivf":
        if out["nlist"] > count:
            raise ValueError(f"method_params: nlist={out['nlist']} exceeds the {count} gallery rows")
        out["train_size"] = max(out["nlist"], min(out["train_size"], count))
        out["nprobe"] = min(out["nprobe"], out["nlist"])
    return out


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _as_feature_matrix(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (N, D) array, got shape {a.shape}")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected real-valued features, got dtype {a.dtype}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty (N, D) array, got shape {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{name}: expected feature dimension {dim}, got {a.shape[1]}")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: features contain NaN or infinite values")
    return a


def _as_table(metadata: Any, count: int) -> pa.Table:
    if isinstance(metadata, pa.Table):
        table = metadata
    elif isinstance(metadata, Sequence) and not isinstance(metadata, (str, bytes)):
        if not all(isinstance(r, dict) for r in metadata):
            raise ValueError("metadata: expected a pyarrow Table or a list of dicts")
        table = pa.Table.from_pylist(list(metadata))
    else:
        raise ValueError(f"metadata: expected a pyarrow Table or a list of dicts, got {type(metadata).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"metadata: missing required column(s) {missing}; need {list(REQUIRED_COLUMNS)}")
    if table.num_rows != count:
        raise ValueError(f"metadata: {table.num_rows} rows do not match the {count} feature rows")
    return table


class GalleryIndex:
    """Cosine top-k search over a gallery of features with per-item metadata.

    Args:
        features: (N, D) float features (numpy or torch); stored as float32, L2-normalised.
        metadata: pyarrow Table or list of dicts, N rows, with at least pid, camid, path.
        backend: exact search's engine: "auto" (faiss if importable, else torch), "torch" or
            "faiss". The approximate methods always use faiss ("torch" is refused).
        method: "exact" (default), "ivf" or "hnsw" (approximate, built here: k-means or graph
            construction, seconds to minutes for 1M rows; see :func:`default_method_params`).
        method_params: overrides of :func:`default_method_params` (ivf: nlist, train_size, seed,
            nprobe; hnsw: m, ef_construction, ef_search).
        chunk_size: queries per torch chunk (upper bound; also capped so that
            chunk x N <= ``max_chunk_elements``).
    """

    def __init__(
        self,
        features: Any,
        metadata: Any,
        backend: str = "auto",
        chunk_size: int = 1024,
        max_chunk_elements: int = DEFAULT_MAX_CHUNK_ELEMENTS,
        method: str = "exact",
        method_params: dict[str, Any] | None = None,
        _normalised: bool = False,
        _ann: Any = None,
    ) -> None:
        feats = _as_feature_matrix(features, "features")
        self._features = feats if _normalised else _l2_normalise(feats)
        self._meta = _as_table(metadata, feats.shape[0])
        self.method_params = _check_params(method, method_params, feats.shape[0])
        self.method = method
        if method != "exact" and backend == "torch":
            raise ValueError(f"backend='torch' searches exactly; method={method!r} needs faiss")
        self.backend = self._resolve_backend("faiss" if method != "exact" else backend)
        for name, v in (("chunk_size", chunk_size), ("max_chunk_elements", max_chunk_elements)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        self.chunk_size = int(chunk_size)
        self.max_chunk_elements = int(max_chunk_elements)
        self._faiss_index = None
        self._ann = None
        if method != "exact":
            self._ann = _ann if _ann is not None else self._build_ann()
            self.set_search_params()

    # ---------------------------------------------------------------------------- properties
    @staticmethod
    def _resolve_backend(backend: str) -> str:
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        if backend == "auto":
            return "faiss" if faiss_available() else "torch"
        if backend == "faiss" and not faiss_available():
            raise ImportError("backend='faiss' needs the faiss package (pip install faiss-cpu)")
        return backend

    @property
    def features(self) -> np.ndarray:
        """(N, D) float32, L2-normalised rows (read-only view)."""
        v = self._features.view()
        v.flags.writeable = False
        return v

    @property
    def metadata(self) -> pa.Table:
        """N-row pyarrow Table (pid, camid, path, ...)."""
        return self._meta

    @property
    def dim(self) -> int:
        return int(self._features.shape[1])

    def __len__(self) -> int:
        return int(self._features.shape[0])

    def __repr__(self) -> str:
        return (f"GalleryIndex(count={len(self)}, dim={self.dim}, backend={self.backend!r}, "
                f"method={self.method!r})")

    # ------------------------------------------------------------------- approximate methods
    def _build_ann(self) -> Any:
        """Train and fill the faiss index of an approximate method (inner product on the
        normalised rows = cosine)."""
        import faiss  # guarded by _resolve_backend

        p, d, x = self.method_params, self.dim, np.ascontiguousarray(self._features)
        if self.method == "ivf":
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, p["nlist"], faiss.METRIC_INNER_PRODUCT)
            index.cp.seed, index.cp.niter = p["seed"], p["niter"]
            rows = np.random.default_rng(p["seed"]).choice(len(x), p["train_size"], replace=False)
            index.train(np.ascontiguousarray(x[np.sort(rows)]))
        else:  # hnsw
            index = faiss.IndexHNSWFlat(d, p["m"], faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = p["ef_construction"]
        index.add(x)
        return index

    def set_search_params(self, **params: int) -> None:
        """Change an approximate method's search-time parameters (ivf: ``nprobe``; hnsw:
        ``ef_search``): more → higher recall, slower queries. Saved with the index."""
        allowed = METHOD_PARAMS[self.method]["search"]
        for key, v in params.items():
            if key not in allowed:
                raise ValueError(f"{key!r} is not a search parameter of method {self.method!r} "
                                 f"(expected some of {list(allowed)})")
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{key}: expected a positive integer, got {v!r}")
            self.method_params[key] = int(v)
        if self.method == "ivf":
            self.method_params["nprobe"] = min(self.method_params["nprobe"], self.method_params["nlist"])
            self._ann.nprobe = self.method_params["nprobe"]
        elif self.method == "hnsw":
            self._ann.hnsw.efSearch = self.method_params["ef_search"]

    # -------------------------------------------------------------------------------- search
    def search(self, query_feats: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k cosine search.

        Args:
            query_feats: (Q, D) or (D,) features (normalised here).
            k: results per query, 1 <= k <= N.

        Returns:
            scores: (Q, k) float32 cosine similarities, descending.
            indices: (Q, k) int64 gallery rows. Within a query, equal scores are ordered by
                gallery index; which of several items tied exactly at the k-th score is
                returned depends on the backend. An approximate method returns its best k
                candidates (recall below 1); a query for which it finds fewer than k (an IVF
                probing too few lists) is answered exactly.
        """
        q = np.asarray(query_feats.detach().cpu() if isinstance(query_feats, torch.Tensor) else query_feats)
        if q.ndim == 1:
            q = q[None, :]
        q = _l2_normalise(_as_feature_matrix(q, "query_feats", dim=self.dim))
        n = len(self)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
            raise ValueError(f"k: expected an integer in [1, {n}], got {k!r}")
        k = int(k)
        if self.method != "exact":
            scores, idx = self._search_ann(q, k)
        elif self.backend == "faiss":
            scores, idx = self._search_faiss(q, k)
        else:
            scores, idx = self._search_torch(q, k)
        # Deterministic order within the k: score descending, then gallery index.
        order = np.lexsort((idx, -scores), axis=1)
        return np.take_along_axis(scores, order, 1), np.take_along_axis(idx, order, 1)

    def _search_torch(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        g = torch.from_numpy(self._features)
        qt = torch.from_numpy(q)
        step = max(1, min(self.chunk_size, self.max_chunk_elements // len(self)))
        scores = np.empty((q.shape[0], k), dtype=np.float32)
        idx = np.empty((q.shape[0], k), dtype=np.int64)
        with torch.no_grad():
            for s in range(0, q.shape[0], step):
                top = torch.topk(qt[s : s + step] @ g.T, k, dim=1, largest=True, sorted=True)
                scores[s : s + step] = top.values.numpy()
                idx[s : s + step] = top.indices.numpy()
        return scores, idx

    def _search_faiss(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss  # optional extra, guarded by _resolve_backend

        if self._faiss_index is None:
            index = faiss.IndexFlatIP(self.dim)
            index.add(np.ascontiguousarray(self._features))
            self._faiss_index = index
        scores, idx = self._faiss_index.search(np.ascontiguousarray(q), k)
        return scores.astype(np.float32, copy=False), idx.astype(np.int64, copy=False)

    def _search_ann(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, idx = self._ann.search(np.ascontiguousarray(q), k)
        scores, idx = scores.astype(np.float32, copy=False), idx.astype(np.int64, copy=False)
        short = (idx < 0).any(axis=1)
        if short.any():  # fewer than k candidates in the probed lists: exact for those queries
            scores[short], idx[short] = (self._search_faiss if self.backend == "faiss"
                                         else self._search_torch)(q[short], k)
        return scores, idx

    def search_rows(self, query_feats: Any, k: int) -> list[list[dict[str, Any]]]:
        """Like :meth:`search`, but per query a list of k metadata dicts, best first, each
        with the metadata columns plus ``score``, ``index`` (gallery row) and ``rank`` (1-based)."""
        scores, idx = self.search(query_feats, k)
        out = []
        for s_row, i_row in zip(scores, idx):
            rows = self._meta.take(pa.array(i_row)).to_pylist()
            for rank, (row, s, i) in enumerate(zip(rows, s_row, i_row), start=1):
                row.update(score=float(s), index=int(i), rank=rank)
            out.append(rows)
        return out

    # ------------------------------------------------------------------------------- storage
    def save(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write features.npy, meta.parquet, index.json (and an approximate method's ann.faiss)
        into ``directory``.

        The files are written into a temporary sibling directory which is then renamed, so a
        reader never sees a half-written index. An existing non-empty ``directory`` raises
        FileExistsError unless ``overwrite`` (then it is swapped out and removed).
        """
        target = Path(directory)
        if target.exists() and not target.is_dir():
            raise FileExistsError(f"directory: {target} exists and is not a directory")
        if target.is_dir() and any(target.iterdir()) and not overwrite:
            raise FileExistsError(f"directory: {target} is not empty (pass overwrite=True)")
        target.parent.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:8]
        tmp = target.parent / f".{target.name}.tmp-{tag}"
        tmp.mkdir()
        try:
            np.save(tmp / FEATURES_FILE, self._features, allow_pickle=False)
            pq.write_table(self._meta, tmp / META_FILE)
            info = {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "dim": self.dim,
                "count": len(self),
                "normalized": True,
                "dtype": "float32",
                "metric": "cosine",
                "search": {"method": self.method, "params": dict(self.method_params)},
            }
            if self._ann is not None:
                import faiss  # an approximate method exists only with faiss

                faiss.write_index(self._ann, str(tmp / ANN_FILE))
                info["search"]["file"] = ANN_FILE
            (tmp / INDEX_FILE).write_text(json.dumps(info, indent=2) + "\n")
            if target.exists():
                old = target.parent / f".{target.name}.old-{tag}"
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        backend: str = "auto",
        mmap: bool = False,
        method: str | None = None,
        **kwargs: Any,
    ) -> GalleryIndex:
        """Read an index written by :meth:`save`, checking it is complete and consistent.

        Args:
            directory: the index directory.
            backend: as in the constructor.
            mmap: memory-map features.npy (copy-on-write: the file is never modified)
                instead of reading it into memory.
            method: None (default) searches as saved (an approximate method's trained index
                is read from ann.faiss, with its saved search parameters); "exact" ignores a
                saved approximate index.

        Raises:
            FileNotFoundError: the directory or one of its files is missing (named; ann.faiss
                only when an approximate method is loaded).
            ValueError: unknown format/version/method, or features, metadata, ann.faiss and
                index.json disagree on the row count or dimension, or the features are not
                finite float32, or ann.faiss is not the saved method's faiss index.
            ImportError: a saved approximate index without faiss (load it with method="exact").
        """
        if method not in (None, "exact"):
            raise ValueError(f"method: expected None (as saved) or 'exact', got {method!r}")
        root = Path(directory)
        if not root.is_dir():
            raise FileNotFoundError(f"gallery index directory not found: {root}")
        for name in (INDEX_FILE, FEATURES_FILE, META_FILE):
            if not (root / name).is_file():
                raise FileNotFoundError(f"gallery index file missing: {root / name}")
        try:
            info = json.loads((root / INDEX_FILE).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{root / INDEX_FILE}: not valid JSON ({exc})") from exc
        if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
            raise ValueError(f"{root / INDEX_FILE}: not a {FORMAT_NAME} index")
        if info.get("version") not in READABLE_VERSIONS:
            raise ValueError(f"{root / INDEX_FILE}: unsupported version {info.get('version')!r}")
        for key in ("dim", "count"):
            if not isinstance(info.get(key), int) or info[key] < 1:
                raise ValueError(f"{root / INDEX_FILE}: '{key}' must be a positive integer")
        try:
            feats = np.load(root / FEATURES_FILE, allow_pickle=False, mmap_mode="c" if mmap else None)
        except ValueError as exc:
            raise ValueError(f"{root / FEATURES_FILE}: cannot be read without pickle ({exc})") from exc
        if feats.dtype != np.float32 or feats.ndim != 2:
            raise ValueError(f"{root / FEATURES_FILE}: expected a 2-D float32 array, got {feats.dtype} {feats.shape}")
        if feats.shape != (info["count"], info["dim"]):
            raise ValueError(
                f"{root / FEATURES_FILE}: shape {feats.shape} does not match index.json "
                f"(count={info['count']}, dim={info['dim']})"
            )
        meta = pq.read_table(root / META_FILE)
        if meta.num_rows != info["count"]:
            raise ValueError(
                f"{root / META_FILE}: {meta.num_rows} rows do not match index.json count={info['count']}"
            )
        if not np.isfinite(feats).all():
            raise ValueError(f"{root / FEATURES_FILE}: contains NaN or infinite values")
        search = info.get("search", {"method": "exact", "params": {}})
        if not isinstance(search, dict) or search.get("method") not in METHODS \
                or not isinstance(search.get("params", {}), dict):
            raise ValueError(f"{root / INDEX_FILE}: 'search' must name a method of {METHODS} "
                             f"and its params")
        saved = search["method"] if method is None else "exact"
        ann = None
        if saved != "exact":
            ann = cls._read_ann(root, saved, info)
        # Already-normalised float32 features are used as they are (a memory map stays one).
        normalised = info.get("normalized") is True
        return cls(feats, meta, backend=backend, _normalised=normalised, method=saved,
                   method_params=search.get("params") if saved != "exact" else None, _ann=ann,
                   **kwargs)

    @staticmethod
    def _read_ann(root: Path, method: str, info: dict) -> Any:
        """ann.faiss of an approximate method, checked against index.json."""
        if not faiss_available():
            raise ImportError(f"{root}: a saved {method!r} index needs the faiss package "
                              f"(pip install faiss-cpu), or load it with method='exact'")
        import faiss

        path = root / ANN_FILE
        if not path.is_file():
            raise FileNotFoundError(f"gallery index file missing: {path}")
        try:
            ann = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise ValueError(f"{path}: not a faiss index ({str(exc).splitlines()[0]})") from exc
        want = faiss.IndexIVFFlat if method == "ivf" else faiss.IndexHNSWFlat
        if not isinstance(ann, want) or ann.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"{path}: expected an inner-product {want.__name__} for method "
                             f"{method!r}, got {type(ann).__name__}")
        if (ann.ntotal, ann.d) != (info["count"], info["dim"]):
            raise ValueError(f"{path}: {ann.ntotal} x {ann.d} does not match index.json "
                             f"(count={info['count']}, dim={info['dim']})")
        params = info["search"].get("params", {})
        if method == "ivf" and "nlist" in params and ann.nlist != params["nlist"]:
            raise ValueError(f"{path}: {ann.nlist} lists, index.json says nlist={params['nlist']}")
        return ann
