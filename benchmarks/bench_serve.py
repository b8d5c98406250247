"""The Ray Serve demo under load: latency, throughput, errors and autoscaling of POST
/api/reconstruct and POST /api/search, against the same requests handled in-process.

The demo is started with the project's own builder (``mirror3d.serve_apps.app.start_demo`` →
``build_app(DemoOptions)``) on 127.0.0.1 from the given runs (default: the newest ones ``make run``
left, ``mirror3d.engine.demo_runs.newest_demo_runs``). For the benchmark only, the model
deployments' autoscaling delays are short (``--upscale-delay 1``, ``--downscale-delay 5`` s, via
``DemoOptions.<deployment>.autoscaling``) so that scaling up and back down fits in the run; the
other options are the demo's defaults (min 1 / max 2 replicas, target 2 ongoing requests,
0.45 CPU per model replica, Serve's 30 s look-back window).

Search runs on a gallery of ``--gallery`` (10,000) entries: the re-id run's real gallery features
(its cached ``demo_index``) plus generated ones (each a real feature plus isotropic Gaussian noise,
L2-normalised, cosine ≈ 0.8 to its source; pid ≥ 100000, path ``generated/*``), saved as a
``GalleryIndex`` in a temporary ``index_dir`` with the run's fingerprint so that the ReidSearch
replicas load it as they load their cache (exact cosine search: its cost depends on the size, not
on the values). The first served answer is checked against the in-process one on that gallery.

Load: a loopback generator (httpx + asyncio) with C = 1, 2, 4, 8, 16, 32 concurrent clients, each
level ``--seconds / 6`` long; a client sends its next request as soon as its previous one returned
and starts none after the level's deadline (the level ends when the last one returns). Requests
are SynthPeople query JPEGs (data/synthpeople/Market-1501/query, 64×128) with their Market-HQ masks,
as multipart uploads; search asks for k = 10 and sends the file name (the ✓/✗ marks). Per level::

    latency        wall time of one request (send → whole JSON answer), successful requests only
    p50/p95/p99    numpy percentiles (linear) of those latencies
    throughput     answered requests / level wall time (incl. the drain)
    errors         non-2xx answers + exceptions (timeouts, connection errors)
    served / in-process = served p50 / in-process p50

The baseline, measured in the same run before Serve starts: the same uploads (bytes) through
``ReconstructService.reconstruct(..., turntable=False)`` / ``SearchService.search(..., k=10)`` in
this process, one request at a time, on ``--baseline-threads`` (1) torch thread — what a
model replica with < 1 CPU gets (Ray sets OMP_NUM_THREADS=1). Serve's status
(``serve.status().applications[app].deployments[name].replica_states``) is sampled every second
through the load and a cool-down after each endpoint (until the model deployments are back at
min_replicas: at least 10 s, at most ``--cooldown`` s). The single DemoIngress replica takes
``ingress_max_ongoing_requests`` (64) requests at once and awaits the model replicas, where
requests beyond their ``max_ongoing_requests`` queue (they wait; they must not fail). Goals (issue #14, 2 cores, 64×128): reconstruct p50 ≤ 300 ms and
search p50 ≤ 50 ms (at 1 client), 0 errors at 32 clients.

    python benchmarks/bench_serve.py [--casl RUN] [--reid RUN] [--seconds 60] [--gallery 10000]
    python benchmarks/bench_serve.py --quick      # smoke: 2 s levels (~25 s of load), cool-downs
                                                  # <= 30 s; 3-5 min with Ray/Serve start-up

Run it alone on a quiet machine: the load generator, Serve's proxy and the replicas share the 2
cores. The full run takes ~5-7 min (Serve start-up ~40 s, 2 × 60 s of load plus the drains of
the 32-client levels, cool-downs). Without a trained run it prints SKIPPED and exits 0 (``make
bench`` runs every benchmark); a named run that does not exist is an error. Prints tables; JSON and a PNG (latency percentiles vs clients, replicas over time) to
benchmarks/results/bench_serve.{json,png} (``--quick``: bench_serve_quick.*).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import pathlib
import platform
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from mirror3d.utils.env import apply_local_env

apply_local_env()  # loopback Ray, no auth, passive OpenMP, no Gradio analytics: before torch/Ray

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

from mirror3d.engine.demo_reconstruct import ReconstructService  # noqa: E402
from mirror3d.engine.demo_search import FINGERPRINT_FILE, SearchService, market_ids  # noqa: E402
from mirror3d.retrieval import GalleryIndex  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = REPO / "data" / "synthpeople"
LEVELS = (1, 2, 4, 8, 16, 32)
ENDPOINTS = {"reconstruct": "/api/reconstruct", "search": "/api/search"}
GOALS = {"reconstruct": 300.0, "search": 50.0}  # p50 ms at 1 client
K = 10


# ------------------------------------------------------------------------------------ inputs
@dataclass
class Upload:
    name: str
    image: bytes
    mask: bytes | None
    mask_name: str | None
    pid: int | None


def load_uploads(root: pathlib.Path, count: int) -> tuple[list[Upload], str]:
    """``count`` query JPEGs (sorted, evenly spread) with their Market-HQ masks when present."""
    query = root / "Market-1501" / "query"
    files = sorted(query.glob("*.jpg"))
    if not files:
        raise SystemExit(f"bench_serve: no query images in {query} (make the SynthPeople data "
                         f"first: make run)")
    pick = [files[i] for i in np.linspace(0, len(files) - 1, min(count, len(files))).astype(int)]
    out = []
    for f in pick:
        ids = market_ids(f.name)
        masks = sorted((root / "Market-HQ" / "seg_hmr" / "query" / f.name[:4]).glob(f"{f.name}_*.png"))
        out.append(Upload(f.name, f.read_bytes(), masks[0].read_bytes() if masks else None,
                          masks[0].name if masks else None, None if ids is None else ids[0]))
    with_mask = sum(u.mask is not None for u in out)
    what = (f"{len(out)} SynthPeople query JPEGs from {query.relative_to(REPO) if query.is_relative_to(REPO) else query}"
            f", {with_mask} with their Market-HQ mask")
    return out, what


def build_gallery(real: GalleryIndex, size: int, seed: int = 0) -> tuple[GalleryIndex, str]:
    """The real gallery plus generated entries up to ``size`` (see the module docstring)."""
    n_real = len(real)
    meta = real.metadata.select(["pid", "camid", "path"])
    if n_real >= size:
        feats = np.asarray(real.features[:size])
        return (GalleryIndex(feats, meta.slice(0, size)),
                f"{size:,} real gallery entries (of {n_real:,})")
    rng = np.random.default_rng(seed)
    n_gen = size - n_real
    base = np.asarray(real.features)[rng.integers(0, n_real, n_gen)]
    noise = rng.standard_normal(base.shape).astype(np.float32)
    noise *= 0.75 / np.linalg.norm(noise, axis=1, keepdims=True)  # cos(src, gen) = 1/sqrt(1+0.75²) = 0.8
    gen = base + noise
    gen /= np.linalg.norm(gen, axis=1, keepdims=True)
    gen_meta = pa.table({
        "pid": pa.array(100_000 + np.arange(n_gen), type=meta.schema.field("pid").type),
        "camid": pa.array(np.arange(n_gen) % 6, type=meta.schema.field("camid").type),
        "path": pa.array([f"generated/{i:05d}.jpg" for i in range(n_gen)],
                         type=meta.schema.field("path").type),
    })
    index = GalleryIndex(np.concatenate([np.asarray(real.features), gen]),
                         pa.concat_tables([meta, gen_meta]))
    return index, (f"{size:,} entries x {real.dim}: the run's {n_real:,} real gallery features + "
                   f"{n_gen:,} generated (real + noise, cosine 0.8 to their source)")


# --------------------------------------------------------------------------------- baseline
def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def in_process(fn, uploads: list[Upload], requests: int) -> dict:
    """Sequential latencies (ms) of ``fn(upload)`` after one warm-up call."""
    fn(uploads[0])
    ms = []
    for i in range(requests):
        t0 = time.perf_counter()
        fn(uploads[i % len(uploads)])
        ms.append((time.perf_counter() - t0) * 1e3)
    return {"requests": requests, "p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95),
            "p99_ms": pct(ms, 99), "mean_ms": float(np.mean(ms)), "ms": ms}


# ------------------------------------------------------------------------------ serve status
class ReplicaSampler(threading.Thread):
    """``serve.status()`` every ``period`` s: replicas per deployment and state, with the phase
    the main thread is in."""

    def __init__(self, app: str, period: float = 1.0) -> None:
        super().__init__(daemon=True, name="replica-sampler")
        self.app, self.period = app, period
        self.samples: list[dict] = []
        self.phase = {"phase": "start", "endpoint": None, "clients": 0}
        self.t0 = time.monotonic()
        self._halt = threading.Event()
        self.errors = 0

    def snapshot(self) -> dict[str, dict]:
        from ray import serve

        app = serve.status().applications.get(self.app)
        out = {}
        for name, d in (app.deployments.items() if app else ()):
            states = {str(getattr(k, "value", k)): int(v) for k, v in d.replica_states.items()}
            out[name] = {"running": states.get("RUNNING", 0), "total": sum(states.values()),
                         "wanted": sum(v for k, v in states.items() if k != "STOPPING"),
                         "states": states, "status": str(getattr(d.status, "value", d.status))}
        return out

    def run(self) -> None:
        while not self._halt.is_set():
            t = time.monotonic() - self.t0
            try:
                snap = self.snapshot()
            except Exception:  # a status call can fail while Serve shuts down: skip the sample
                self.errors += 1
                snap = None
            if snap is not None:
                self.samples.append({"t": round(t, 2), **self.phase, "deployments": snap})
            self._halt.wait(max(0.0, self.period - (time.monotonic() - self.t0 - t)))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


# -------------------------------------------------------------------------------- load
@dataclass
class Level:
    endpoint: str
    clients: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_lines: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    t_start: float = 0.0

    def error(self, line: str) -> None:
        self.errors += 1
        line = " ".join(line.split())[:160]
        self.error_lines[line] = self.error_lines.get(line, 0) + 1

    def stats(self, baseline_p50: float) -> dict:
        ok = len(self.latencies_ms)
        p50 = pct(self.latencies_ms, 50)
        return {"endpoint": self.endpoint, "clients": self.clients, "requests": ok + self.errors,
                "ok": ok, "errors": self.errors, "wall_s": self.wall_s,
                "throughput_rps": ok / self.wall_s if self.wall_s else float("nan"),
                "p50_ms": p50, "p95_ms": pct(self.latencies_ms, 95),
                "p99_ms": pct(self.latencies_ms, 99),
                "max_ms": max(self.latencies_ms) if ok else float("nan"),
                "served_over_in_process_p50": p50 / baseline_p50,
                "error_lines": self.error_lines, "t_start": self.t_start}


def request_kwargs(endpoint: str, u: Upload) -> dict:
    files = {"image": (u.name, u.image, "image/jpeg")}
    if u.mask is not None:
        files["mask"] = (u.mask_name, u.mask, "image/png")
    data = {"refine_steps": "0"} if endpoint == "reconstruct" else {"k": str(K)}
    return {"files": files, "data": data}


async def run_level(client: httpx.AsyncClient, url: str, endpoint: str, uploads: list[Upload],
                    clients: int, seconds: float, t0: float) -> Level:
    level = Level(endpoint, clients, t_start=time.monotonic() - t0)
    start = time.monotonic()
    deadline = start + seconds
    counter = iter(range(10**9))

    async def worker() -> None:
        while time.monotonic() < deadline:
            u = uploads[next(counter) % len(uploads)]
            t = time.perf_counter()
            try:
                r = await client.post(url + ENDPOINTS[endpoint], **request_kwargs(endpoint, u))
                body = r.content
                ms = (time.perf_counter() - t) * 1e3
                if 200 <= r.status_code < 300:
                    level.latencies_ms.append(ms)
                else:
                    level.error(f"HTTP {r.status_code}: {body[:200].decode(errors='replace')}")
            except Exception as e:  # timeouts, refused / reset connections: all count
                level.error(f"{type(e).__name__}: {e}")

    await asyncio.gather(*(worker() for _ in range(clients)))
    level.wall_s = time.monotonic() - start
    return level


async def load_endpoint(url: str, endpoint: str, uploads: list[Upload], levels: list[int],
                        level_seconds: float, timeout: float, sampler: ReplicaSampler) -> list[Level]:
    limits = httpx.Limits(max_connections=max(levels) * 2, max_keepalive_connections=max(levels) * 2)
    out = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=limits,
                                 trust_env=False) as client:
        for c in levels:
            sampler.phase = {"phase": "load", "endpoint": endpoint, "clients": c}
            lv = await run_level(client, url, endpoint, uploads, c, level_seconds, sampler.t0)
            print(f"  {endpoint:<12} {c:>3} clients: {len(lv.latencies_ms):>5} ok, "
                  f"{lv.errors} errors, p50 {pct(lv.latencies_ms, 50):8.1f} ms, "
                  f"{len(lv.latencies_ms) / lv.wall_s:6.2f} req/s ({lv.wall_s:.1f} s)", flush=True)
            out.append(lv)
    return out


def at_min(sampler: ReplicaSampler, names: list[str], minimum: dict[str, int]) -> bool:
    try:
        snap = sampler.snapshot()
    except Exception:
        return False
    return all(snap.get(n, {}).get("total", -1) == minimum[n]
               and snap.get(n, {}).get("running", -1) == minimum[n] for n in names)


def cool_down(sampler: ReplicaSampler, endpoint: str, names: list[str], minimum: dict[str, int],
              limit: float, least: float = 10.0) -> float:
    """Wait (no load) until the model deployments are back at min_replicas, at least ``least`` s
    (Serve's metrics lag: a scale-up can still be decided after the load) and at most ``limit``
    s; returns the seconds waited."""
    sampler.phase = {"phase": "cooldown", "endpoint": endpoint, "clients": 0}
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if time.monotonic() - t0 >= min(least, limit) and at_min(sampler, names, minimum):
            break
        time.sleep(1.0)
    return time.monotonic() - t0


def wait_healthy(url: str, limit: float) -> None:
    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < limit:
        try:
            r = httpx.get(url + "/healthz", timeout=10, trust_env=False)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as e:
            last = f"{type(e).__name__}"
        time.sleep(1.0)
    raise SystemExit(f"bench_serve: {url}/healthz not answering after {limit:.0f} s ({last})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------- reporting
def timeline(samples: list[dict], deployment: dict[str, str], minimum: dict[str, int]
             ) -> dict[str, dict]:
    """Per endpoint, its model deployment's replicas from the start of its load to the end of its
    cool-down (seconds relative to the load's start): when a replica more than min_replicas was
    asked for (``wanted``: not STOPPING, incl. STARTING) and RUNNING, the peak, and when RUNNING
    was back at min_replicas after the load ended."""
    out = {}
    for ep, dep in deployment.items():
        xs = [(x["t"], x["phase"], x["deployments"].get(dep, {})) for x in samples
              if x["endpoint"] == ep and dep in x["deployments"]]
        load = [t for t, ph, _ in xs if ph == "load"]
        if not load:
            continue
        t0, t_end = load[0], load[-1]
        lo = minimum[dep]
        run = [(t - t0, d.get("running", 0)) for t, _, d in xs]
        want = [(t - t0, d.get("wanted", 0)) for t, _, d in xs]
        peak = max(r for _, r in run)
        t_peak = next((t for t, r in run if r == peak), None)
        down = None
        if peak > lo:
            after = [t for t, r in run if t >= t_peak and r <= lo]
            down = after[0] - (t_end - t0) if after else None
        out[ep] = {"deployment": dep, "min_replicas": lo, "load_seconds": t_end - t0,
                   "asked_more_at_s": next((t for t, w in want if w > lo), None),
                   "running_more_at_s": next((t for t, r in run if r > lo), None),
                   "peak_running": peak, "scaled_up": peak > lo,
                   "running_at_end": run[-1][1], "back_down": run[-1][1] == lo,
                   "back_down_s_after_load": down,
                   "running": [r for _, r in run], "wanted": [w for _, w in want]}
    return out


def plot(path: pathlib.Path, stats: list[dict], baseline: dict, samples: list[dict],
         names: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = sorted({s["endpoint"] for s in stats}, key=list(ENDPOINTS).index)
    fig, axes = plt.subplots(1, len(eps) + 1, figsize=(5.2 * (len(eps) + 1), 4.2))
    for ax, ep in zip(axes, eps):
        rows = [s for s in stats if s["endpoint"] == ep]
        c = [r["clients"] for r in rows]
        for key, style in (("p50_ms", "o-"), ("p95_ms", "s--"), ("p99_ms", "^:")):
            ax.plot(c, [r[key] for r in rows], style, label=key[:3] + " served")
        ax.axhline(baseline[ep]["p50_ms"], color="grey", lw=1, label="p50 in-process")
        ax.axhline(GOALS[ep], color="red", lw=1, ls="--", label=f"goal p50 {GOALS[ep]:g} ms")
        for r in rows:
            if r["errors"]:
                y = r["p50_ms"] if r["p50_ms"] > 0 else GOALS[ep]  # NaN when all failed
                ax.annotate(f"{r['errors']} err", (r["clients"], y), color="red", fontsize=8)
        if not rows or not any(r[k] > 0 for r in rows for k in ("p50_ms", "p95_ms", "p99_ms")):
            ax.text(0.5, 0.5, "no successful request", transform=ax.transAxes, ha="center",
                    color="red")
        else:
            ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.set_xlim(min(c) / 1.4, max(c) * 1.4)
        ax.set_xticks(c, [str(x) for x in c])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"POST {ENDPOINTS[ep]}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[-1]
    ts = [s["t"] for s in samples]
    for n in names:
        line, = ax.step(ts, [s["deployments"].get(n, {}).get("running", 0) for s in samples],
                        where="post", label=f"{n} running")
        ax.step(ts, [s["deployments"].get(n, {}).get("wanted", 0) + 0.05 for s in samples],
                where="post", ls=":", color=line.get_color(), label=f"{n} asked for")
    ax2 = ax.twinx()
    ax2.step(ts, [s["clients"] for s in samples], where="post", color="grey", alpha=0.4,
             label="clients")
    ax2.set_yscale("symlog", base=2)
    ax2.set_ylabel("concurrent clients", color="grey")
    t_prev = None
    for s in samples:  # shade the load phases
        key = (s["phase"], s["endpoint"])
        if key != t_prev and s["phase"] == "load":
            ax.annotate(s["endpoint"], (s["t"], 0.2), fontsize=8, color="grey")
        t_prev = key
    ax.set_ylim(0, max([2] + [s["deployments"].get(n, {}).get("running", 0)
                              for s in samples for n in names]) + 0.5)
    ax.set_xlabel("seconds since Serve started")
    ax.set_ylabel("replicas (RUNNING)")
    ax.set_title("replicas over time (load, then cool-down)")
    ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--casl", default="", help="CASL run (default: the newest)")
    p.add_argument("--reid", default="", help="re-id run (default: the newest servable one)")
    p.add_argument("--runs-root", default="runs")
    p.add_argument("--data", type=pathlib.Path, default=DATA, help="SynthPeople root")
    p.add_argument("--images", type=int, default=32, help="distinct query uploads")
    p.add_argument("--gallery", type=int, default=10_000, help="search gallery entries")
    p.add_argument("--seconds", type=float, default=60.0, help="load per endpoint (all levels)")
    p.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrent clients")
    p.add_argument("--endpoints", default="reconstruct,search")
    p.add_argument("--cooldown", type=float, default=90.0,
                   help="at most this many seconds of cool-down after each endpoint")
    p.add_argument("--baseline-requests", type=int, default=20)
    p.add_argument("--baseline-threads", type=int, default=1)
    p.add_argument("--upscale-delay", type=float, default=1.0)
    p.add_argument("--downscale-delay", type=float, default=5.0)
    p.add_argument("--max-replicas", type=int, default=0, help="0: the demo's default")
    p.add_argument("--ui", action=argparse.BooleanOptionalAction, default=True,
                   help="mount the Gradio page as the demo does")
    p.add_argument("--port", type=int, default=0, help="HTTP port (0: a free one)")
    p.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    p.add_argument("--quick", action="store_true",
                   help="smoke: 2 s levels, 8 uploads, 3 baseline requests, cool-downs <= 30 s")
    p.add_argument("--out", type=pathlib.Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.images, args.baseline_requests = 12.0, 8, 3
        args.cooldown = min(args.cooldown, 30.0)
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    bad = [e for e in endpoints if e not in ENDPOINTS]
    if bad or not levels or min(levels) < 1 or args.seconds <= 0 or args.gallery < 1:
        raise SystemExit(f"bench_serve: bad arguments (endpoints {bad or endpoints}, levels "
                         f"{levels}, seconds {args.seconds}, gallery {args.gallery})")
    out = args.out or RESULTS / ("bench_serve_quick.json" if args.quick else "bench_serve.json")

    # Ray / Serve modules load here (only the benchmark's Serve part needs them)
    import ray

    from mirror3d.serve_apps.app import (
        APP_NAME,
        NoRunError,
        resolve_runs,
        start_demo,
        stop_demo,
    )
    from mirror3d.serve_apps.deployments import Reconstructor, ReidSearch
    from mirror3d.serve_apps.options import DemoOptions
    from mirror3d.utils.config import config_from_dict

    scaling = {"upscale_delay_s": args.upscale_delay, "downscale_delay_s": args.downscale_delay}
    if args.max_replicas:
        scaling["max_replicas"] = args.max_replicas
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_serve_"))
    opts = config_from_dict(DemoOptions, {
        "casl": args.casl, "reid": args.reid, "runs_root": args.runs_root,
        "port": args.port or free_port(), "index_dir": str(tmp / "index"),
        "mesh_dir": str(tmp / "meshes"), "ui": args.ui,
        "reconstructor": {"autoscaling": scaling}, "search": {"autoscaling": scaling}})
    try:
        runs = resolve_runs(opts)
    except NoRunError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if args.casl or args.reid:
            raise SystemExit(f"bench_serve: {e}") from None
        print(f"bench_serve: SKIPPED, {e}")
        return 0
    names = [Reconstructor.name, ReidSearch.name]
    minimum = {Reconstructor.name: opts.reconstructor.autoscaling.min_replicas,
               ReidSearch.name: opts.search.autoscaling.min_replicas}
    uploads, uploads_what = load_uploads(args.data, args.images)
    print(f"runs: casl {runs.casl}\n      reid {runs.reid}")
    print(f"uploads: {uploads_what}")

    # ---- in-process baseline (and the 10,000-entry gallery), before Ray starts
    torch.set_num_threads(args.baseline_threads)
    t0 = time.perf_counter()
    real = SearchService(runs.reid)  # the run's gallery index (its cache, or embedded once)
    gallery, gallery_what = build_gallery(real.index, args.gallery)
    fingerprint = real.fingerprint()
    del real
    gallery.save(opts.index_dir, overwrite=True)
    (pathlib.Path(opts.index_dir) / FINGERPRINT_FILE).write_text(json.dumps(fingerprint, indent=1))
    print(f"search gallery: {gallery_what} ({time.perf_counter() - t0:.1f} s to prepare); "
          f"served from index_dir {opts.index_dir}")

    baseline: dict[str, dict] = {}
    reference: dict | None = None
    search_kind = None
    if "search" in endpoints:
        svc = SearchService(runs.reid, gallery_index=gallery, limits=_limits(opts))
        u0 = uploads[0]
        reference = svc.search(u0.image, u0.mask, k=K, query_pid=u0.pid).summary()
        baseline["search"] = in_process(
            lambda u: svc.search(u.image, u.mask, k=K, query_pid=u.pid), uploads,
            args.baseline_requests)
        search_kind = f"{svc.kind}" + (f", lifted {svc.recipe.mode}" if svc.recipe else "")
        del svc
    if "reconstruct" in endpoints:
        svc = ReconstructService(runs.casl, turntable_frames=opts.turntable_frames,
                                 max_refine_steps=opts.max_refine_steps, limits=_limits(opts))
        baseline["reconstruct"] = in_process(
            lambda u: svc.reconstruct(u.image, u.mask, refine_steps=0, turntable=False), uploads,
            args.baseline_requests)
        del svc
    gc.collect()
    for ep, b in baseline.items():
        print(f"in-process {ep:<12} p50 {b['p50_ms']:8.1f} ms  p95 {b['p95_ms']:8.1f} ms "
              f"({b['requests']} sequential requests, {args.baseline_threads} torch thread(s))")

    # ---- served
    sampler = None
    levels_out: list[Level] = []
    cooldowns: dict[str, float] = {}
    served_check = None
    startup_s = float("nan")
    try:
        t0 = time.perf_counter()
        url = start_demo(opts)
        sampler = ReplicaSampler(APP_NAME)
        sampler.start()
        wait_healthy(url, 600)
        startup_s = time.perf_counter() - t0
        print(f"demo up at {url} in {startup_s:.1f} s (ui {'on' if opts.ui else 'off'}; "
              f"autoscaling min {opts.reconstructor.autoscaling.min_replicas} max "
              f"{opts.reconstructor.autoscaling.max_replicas} target "
              f"{opts.reconstructor.autoscaling.target_ongoing_requests:g}, upscale / downscale "
              f"delay {args.upscale_delay:g} / {args.downscale_delay:g} s — short for the benchmark)")
        # warm-up (one request each, not timed) and the served-vs-in-process search check
        with httpx.Client(timeout=args.timeout, trust_env=False) as c:
            for ep in endpoints:
                r = c.post(url + ENDPOINTS[ep], **request_kwargs(ep, uploads[0]))
                if r.status_code != 200:
                    print(f"warm-up {ep}: HTTP {r.status_code} {r.text[:300]}")
                elif ep == "search" and reference is not None:
                    got = [(row["index"], round(row["score"], 4)) for row in r.json()["rows"]]
                    ref = [(row["index"], round(row["score"], 4)) for row in reference["rows"]]
                    count = json.loads((pathlib.Path(opts.index_dir) / "index.json").read_text())["count"]
                    served_check = got == ref and count == len(gallery)
                    gen = sum(row["pid"] >= 100_000 for row in r.json()["rows"])
                    print(f"served top-{K} == in-process top-{K}: {'yes' if got == ref else 'NO'} "
                          f"({gen} generated entries among them); the replicas' index_dir holds "
                          f"{count:,} entries (not rebuilt: "
                          f"{'yes' if count == len(gallery) else 'NO, fingerprint mismatch'})")
        level_seconds = args.seconds / len(levels)
        for ep in endpoints:
            print(f"load {ep}: {levels} clients, {level_seconds:.1f} s each")
            levels_out += asyncio.run(load_endpoint(url, ep, uploads, levels, level_seconds,
                                                    args.timeout, sampler))
            cooldowns[ep] = cool_down(sampler, ep, names, minimum, args.cooldown)
            print(f"  cool-down {cooldowns[ep]:.0f} s")
    finally:  # each step on its own: one failing must not leave Serve or Ray running
        for step in ((sampler.stop if sampler is not None else None), stop_demo, ray.shutdown):
            try:
                if step is not None:
                    step()
            except Exception as e:
                print(f"bench_serve: cleanup {getattr(step, '__name__', step)}: {e}")
        shutil.rmtree(tmp, ignore_errors=True)
    samples = sampler.samples if sampler else []

    # ---- report
    stats = [lv.stats(baseline[lv.endpoint]["p50_ms"]) for lv in levels_out]
    print()
    print(f"{'endpoint':<12}{'clients':>8}{'ok':>7}{'err':>5}{'req/s':>8}{'p50 ms':>9}"
          f"{'p95 ms':>9}{'p99 ms':>9}{'served/in-proc':>15}{'replicas':>10}")
    for s in stats:
        in_level = [x for x in samples if x["phase"] == "load" and x["endpoint"] == s["endpoint"]
                    and x["clients"] == s["clients"]]
        dep = Reconstructor.name if s["endpoint"] == "reconstruct" else ReidSearch.name
        reps = [x["deployments"].get(dep, {}).get("running", 0) for x in in_level]
        asked = [x["deployments"].get(dep, {}).get("wanted", 0) for x in in_level]
        rep = f"{min(reps)}-{max(reps)}" if reps else "?"
        rep += f"/{max(asked)}" if asked else ""
        s["replicas_running"], s["replicas_asked"] = reps, asked
        print(f"{s['endpoint']:<12}{s['clients']:>8}{s['ok']:>7}{s['errors']:>5}"
              f"{s['throughput_rps']:>8.2f}{s['p50_ms']:>9.1f}{s['p95_ms']:>9.1f}"
              f"{s['p99_ms']:>9.1f}{s['served_over_in_process_p50']:>15.2f}{rep:>10}")
    for ep, b in baseline.items():
        print(f"{ep + ' in-process':<27}{'':>13}{b['p50_ms']:>9.1f}{b['p95_ms']:>9.1f}"
              f"{b['p99_ms']:>9.1f}{1.0:>15.2f}   (baseline)")
    print("replicas: the model deployment's RUNNING replicas during the level (min-max) / the most "
          "asked for (incl. STARTING)")
    for s in stats:
        for line, n in list(s["error_lines"].items())[:3]:
            print(f"  {s['endpoint']} @ {s['clients']}: {n}x {line}")

    deployment = {"reconstruct": Reconstructor.name, "search": ReidSearch.name}
    tl = timeline(samples, {ep: deployment[ep] for ep in endpoints}, minimum)
    print("\nreplicas of the loaded deployment, one sample per second from the load's start to the "
          "end of its cool-down (running / asked for incl. STARTING):")

    def when(x):
        return "-" if x is None else f"{x:.0f} s"

    for ep, v in tl.items():
        print(f"  {v['deployment']:<14} ({ep} load {v['load_seconds']:.0f} s): more than "
              f"{v['min_replicas']} asked at {when(v['asked_more_at_s'])}, running at "
              f"{when(v['running_more_at_s'])}, peak {v['peak_running']} -> "
              f"{'scaled up' if v['scaled_up'] else 'did NOT scale up'}; at the end "
              f"{v['running_at_end']} -> {'back down' if v['back_down'] else 'NOT back down'}"
              + (f" ({v['back_down_s_after_load']:.0f} s after the load)"
                 if v["back_down_s_after_load"] is not None else ""))
        print(f"  {'running':>14}  {''.join(str(min(r, 9)) for r in v['running'])}")
        print(f"  {'asked for':>14}  {''.join(str(min(r, 9)) for r in v['wanted'])}")
    if sampler and sampler.errors:
        print(f"  ({sampler.errors} status samples failed)")

    goals = {}
    for ep in endpoints:
        rows = {s["clients"]: s for s in stats if s["endpoint"] == ep}
        lo, hi = min(rows), max(rows)
        goals[ep] = {"p50_ms_at_1_client": rows[lo]["p50_ms"], "goal_p50_ms": GOALS[ep],
                     "p50_met": rows[lo]["p50_ms"] <= GOALS[ep],
                     f"errors_at_{hi}_clients": rows[hi]["errors"],
                     "zero_errors_met": rows[hi]["errors"] == 0}
        print(f"goal {ep}: p50 at {lo} client(s) {rows[lo]['p50_ms']:.0f} ms <= {GOALS[ep]:g} ms: "
              f"{'met' if goals[ep]['p50_met'] else 'NOT met'}; errors at {hi} clients "
              f"{rows[hi]['errors']} == 0: {'met' if goals[ep]['zero_errors_met'] else 'NOT met'}")

    report = {
        "benchmark": "bench_serve",
        "config": {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()},
        "runs": {"casl": runs.casl, "reid": runs.reid},
        "uploads": uploads_what, "gallery": gallery_what, "gallery_size": len(gallery),
        "search_kind": search_kind,
        "served_top_k_matches_in_process": served_check,
        "autoscaling": opts.reconstructor.autoscaling.to_serve(),
        "replica_cpus": {"reconstructor": opts.reconstructor.num_cpus,
                         "search": opts.search.num_cpus, "ingress": opts.ingress_num_cpus},
        "startup_s": startup_s, "baseline_torch_threads": args.baseline_threads,
        "baseline": baseline, "levels": stats, "cooldown_s": cooldowns, "replicas": tl,
        "samples": samples, "goals": goals,
        "python": sys.version.split()[0], "machine": platform.machine(),
        "ray": ray.__version__, "httpx": httpx.__version__,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_finite(report), indent=1, default=str) + "\n")
    png = out.with_suffix(".png")
    plot(png, stats, baseline, samples, names,
         f"mirror3d demo on Ray Serve {ray.__version__}: {len(gallery):,}-entry gallery, "
         f"{args.seconds:g} s per endpoint, delays up {args.upscale_delay:g} s / down "
         f"{args.downscale_delay:g} s" + (" (quick)" if args.quick else ""))
    print(f"wrote {out}\nwrote {png}")
    return 0


def _limits(opts):
    from mirror3d.engine.demo_inputs import UploadLimits

    return UploadLimits(max_bytes=opts.max_bytes, max_pixels=opts.max_pixels)


def _finite(o):
    """NaN / inf → None, numpy scalars → Python (strict JSON)."""
    if isinstance(o, dict):
        return {str(k): _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, (np.floating, np.integer)):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


if __name__ == "__main__":
    raise SystemExit(main())
