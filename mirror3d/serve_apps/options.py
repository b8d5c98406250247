"""The options of the demo (``python -m mirror3d serve``, ``serve_config.yaml``'s ``args``): which
runs, where it listens, the upload limits, and how the model deployments scale.

A typed config (:mod:`mirror3d.utils.config`): every value is checked with a one-line error, and
the same dataclass is the ``serve`` job's config, so ``--reconstructor.autoscaling.max_replicas 3``
works on the command line and ``reconstructor: {autoscaling: {max_replicas: 3}}`` in a YAML file.

Autoscaling follows Ray Serve's ``autoscaling_config`` (Ray Serve docs, "Ray Serve Autoscaling":
https://docs.ray.io/en/latest/serve/autoscaling-guide.html): a deployment keeps between
``min_replicas`` and ``max_replicas`` replicas, aiming at ``target_ongoing_requests`` requests in
flight per replica. The defaults fit the whole demo on 2 CPUs at its maximum scale:
2 × 0.45 (Reconstructor) + 2 × 0.45 (ReidSearch) + 0.1 (the ingress) = 1.9 CPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mirror3d.utils.config import ConfigError

__all__ = ["AutoscalingOptions", "DemoOptions", "GalleryIndexOptions", "ReplicaOptions"]


@dataclass
class AutoscalingOptions:
    """Ray Serve ``autoscaling_config`` of one model deployment."""

    min_replicas: int = field(default=1, metadata={
        "range": (1, 64), "help": "replicas kept when idle"})
    max_replicas: int = field(default=2, metadata={
        "range": (1, 64), "help": "replicas at most under load"})
    target_ongoing_requests: float = field(default=2.0, metadata={
        "range": (0.1, None), "help": "requests in flight per replica the autoscaler aims at"})
    upscale_delay_s: float = field(default=5.0, metadata={
        "range": (0.0, None), "help": "seconds of high load before adding a replica"})
    downscale_delay_s: float = field(default=30.0, metadata={
        "range": (0.0, None), "help": "seconds of low load before removing a replica"})

    def validate(self) -> None:
        if self.min_replicas > self.max_replicas:
            raise ConfigError(f"autoscaling: min_replicas {self.min_replicas} > max_replicas "
                              f"{self.max_replicas}")

    def to_serve(self) -> dict[str, Any]:
        """The ``autoscaling_config`` mapping of ``@serve.deployment``."""
        return {"min_replicas": self.min_replicas, "initial_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s,
                "downscale_delay_s": self.downscale_delay_s}


@dataclass
class ReplicaOptions:
    """Resources and scaling of one model deployment's replicas."""

    num_cpus: float = field(default=0.45, metadata={
        "range": (0.0, 64.0), "help": "CPUs reserved per replica (fractional: several share a core)"})
    num_gpus: float = field(default=0.0, metadata={
        "range": (0.0, 8.0), "help": "GPUs reserved per replica (set device: cuda too)"})
    max_ongoing_requests: int = field(default=4, metadata={
        "range": (1, 1024), "help": "requests one replica accepts at once; more wait in the router"})
    autoscaling: AutoscalingOptions = field(default_factory=AutoscalingOptions)

    def actor_options(self) -> dict[str, float]:
        """``ray_actor_options`` of ``@serve.deployment``."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}


@dataclass
class GalleryIndexOptions:
    """How the demo's gallery is searched (:class:`mirror3d.retrieval.gallery.GalleryIndex`).

    ``method`` empty keeps a cached index as it was saved and builds an exact one when there is
    none; ``exact`` / ``ivf`` / ``hnsw`` (re)build the index with that method from the cached
    features (no re-embedding). A parameter left at 0 takes the method's default
    (:func:`mirror3d.retrieval.gallery.default_method_params`); a parameter of another method is
    refused by the index.
    """

    method: Literal["", "exact", "ivf", "hnsw"] = field(default="", metadata={
        "help": "search method: exact (faiss flat), ivf or hnsw (approximate, for >= 1M rows); "
                "empty = as cached, else exact"})
    nlist: int = field(default=0, metadata={
        "range": (0, 1_000_000), "help": "ivf: k-means lists (0 = sqrt of the gallery size)"})
    nprobe: int = field(default=0, metadata={
        "range": (0, 1_000_000), "help": "ivf: lists scanned per query (0 = default)"})
    m: int = field(default=0, metadata={
        "range": (0, 512), "help": "hnsw: links per node (0 = 32)"})
    ef_construction: int = field(default=0, metadata={
        "range": (0, 100_000), "help": "hnsw: beam width while building (0 = 80)"})
    ef_search: int = field(default=0, metadata={
        "range": (0, 100_000), "help": "hnsw: beam width per query (0 = 64)"})

    def params(self) -> dict[str, int]:
        """The parameters set (non-zero), as ``GalleryIndex``'s ``method_params``."""
        return {k: v for k, v in (("nlist", self.nlist), ("nprobe", self.nprobe), ("m", self.m),
                                  ("ef_construction", self.ef_construction),
                                  ("ef_search", self.ef_search)) if v}

    def validate(self) -> None:
        own = {"": set(), "exact": set(), "ivf": {"nlist", "nprobe"},
               "hnsw": {"m", "ef_construction", "ef_search"}}[self.method]
        foreign = sorted(set(self.params()) - own)
        if foreign:
            raise ConfigError(f"index: {', '.join(foreign)} set, but they are not parameters of "
                              f"method {self.method or '(as cached)'!r}; expected "
                              f"{', '.join(sorted(own)) or 'none'}")


@dataclass
class DemoOptions:
    """The Ray Serve demo: a CASL run and a re-id run behind a REST API and a Gradio page."""

    casl: str = field(default="", metadata={
        "metavar": "RUN",
        "help": "a CASL run directory (default: the newest under runs_root)"})
    reid: str = field(default="", metadata={
        "metavar": "RUN",
        "help": "a re-id run directory on a photo-liftable input (default: the newest suitable "
                "one under runs_root)"})
    runs_root: str = field(default="runs", metadata={
        "help": "where make run leaves its runs (searched when casl / reid are not given)"})
    host: str = field(default="127.0.0.1", metadata={
        "help": "address the HTTP proxy binds (0.0.0.0 exposes the demo to the network)"})
    port: int = field(default=8000, metadata={"range": (1, 65535), "help": "HTTP port"})
    device: str = field(default="cpu", metadata={
        "choices": ["cpu", "cuda"], "help": "torch device of the model replicas"})
    max_upload_mb: float = field(default=10.0, metadata={
        "range": (0.01, 1024.0), "help": "largest accepted upload (one file), in MiB"})
    max_pixels: int = field(default=25_000_000, metadata={
        "range": (256, 1_000_000_000), "help": "largest accepted image (width x height)"})
    top_k: int = field(default=10, metadata={
        "range": (1, 1000), "help": "search results by default (a request may ask for up to max_k)"})
    max_k: int = field(default=100, metadata={
        "range": (1, 10_000), "help": "most search results one request may ask for"})
    turntable_frames: int = field(default=8, metadata={
        "range": (1, 360), "help": "frames of the turntable GIF on the page"})
    max_refine_steps: int = field(default=200, metadata={
        "range": (0, 100_000), "help": "most test-time refinement steps one request may ask for"})
    index_dir: str = field(default="", metadata={
        "help": "where the gallery index is cached (default: <reid run>/demo_index)"})
    index: GalleryIndexOptions = field(default_factory=GalleryIndexOptions)
    mesh_dir: str = field(default="", metadata={
        "help": "where served GLBs and GIFs are kept (default: a new temporary folder)"})
    max_meshes: int = field(default=256, metadata={
        "range": (1, 1_000_000), "help": "GLBs kept for GET /api/meshes/{id}.glb (oldest go)"})
    ingress_num_cpus: float = field(default=0.1, metadata={
        "range": (0.0, 64.0), "help": "CPUs reserved for the ingress (FastAPI + Gradio) replica"})
    ingress_max_ongoing_requests: int = field(default=64, metadata={
        "range": (1, 100_000), "help": "requests the ingress replica takes at once (it only awaits "
        "the model deployments, which queue; Serve's default 5 would queue them in the proxy)"})
    ui: bool = field(default=True, metadata={"help": "mount the Gradio page at /ui"})
    reconstructor: ReplicaOptions = field(default_factory=ReplicaOptions)
    search: ReplicaOptions = field(default_factory=ReplicaOptions)

    def validate(self) -> None:
        if self.top_k > self.max_k:
            raise ConfigError(f"top_k: {self.top_k} is more than max_k {self.max_k}")

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)
