"""How many workers run a training loop: a config section (``ray.*`` in the trainers' configs)
that the engine's loops ignore and the Ray layer (:func:`mirror3d.platform.train.fit`) reads."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RayConfig"]


@dataclass
class RayConfig:
    """Ray Train scaling of a trainer (one worker per GPU on a cluster; gloo DDP on CPU)."""

    num_workers: int = field(default=1, metadata={"range": (1, 4096)})
    use_gpu: bool = False
    cpus_per_worker: float = field(default=0.0, metadata={
        "range": (0.0, 1024.0), "help": "CPUs (= torch threads) per worker; 0 = auto: the cluster's "
                                        "CPUs shared among the workers, at most one node's"})
    torch_threads: int = field(default=0, metadata={
        "range": (0, 1024), "help": "torch intra-op threads per worker; 0 = the worker's CPUs. "
                                   "Fewer threads than CPUs leave a core to the batch prefetch "
                                   "thread and Ray's own processes"})
    max_failures: int = field(default=0, metadata={
        "range": (-1, 1000), "help": "restarts of the worker group after a worker or node fails "
                                    "(-1 = no limit); it resumes from the last checkpoint"})
    placement_strategy: str = field(default="PACK", metadata={
        "choices": ["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"],
        "help": "where the workers go (Ray placement groups): PACK few nodes, SPREAD over "
                "nodes where possible; STRICT_* must, or the run waits"})
