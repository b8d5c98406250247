"""A simulated multi-node Ray cluster in one machine, for the multi-node tests.

:func:`simulated_cluster` starts a head and ``workers`` worker nodes with
:class:`ray.cluster_utils.Cluster`, the way Ray's own test suite simulates a cluster
(Ray docs, "Tips for testing Ray programs", tip 4: a mini-cluster with ``ray.cluster_utils.Cluster``,
https://docs.ray.io/en/latest/ray-contribute/testing-tips.html):
every node is a real raylet with its own CPUs, object store and a custom resource
(``node_0``, ``node_1``, ... one unit each, so a test can pin work to a node), all on
127.0.0.1 (the local environment of :mod:`mirror3d.utils.env` is applied by tests/conftest.py).
The driver connects to it with ``ray.init(address=cluster.address)``; in a task or an actor,
``ray.get_runtime_context().get_node_id()`` tells which simulated node runs it. It coexists with the
session-wide local Ray of tests/conftest.py's ``ray_session`` fixture: a Ray already
initialised when entering is shut down, and on exit, after the cluster is torn down, the local
Ray is started again exactly as ``ray_session`` starts it (only if it was running before), so
later tests still find it. A test removes a worker node (node loss) with
``sc.remove_node(sc.workers[0])``. Starting a head and 2 workers costs ~10-20 s on 2 cores: put
it in a module-scoped fixture.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import Iterator

import ray
import torch
from ray.cluster_utils import Cluster

from mirror3d.platform.cluster import local_ray_init_kwargs

__all__ = ["SimulatedCluster", "simulated_cluster", "torch_threads", "LOOPBACK", "FAST_NODE_DEATH"]

LOOPBACK = "127.0.0.1"
#: the session Ray of tests/conftest.py's ``ray_session`` (started again on exit)
SESSION_RAY_CPUS = 2
#: The head's default ``_system_config``: the GCS declares a killed node dead after ~5 s (Ray's
#: defaults, a health check every 3 s and 5 failures in a row, take ~15 s), so actors and tasks
#: of a removed node are restarted elsewhere sooner. A killed raylet refuses the check at once;
#: the timeout only matters for a live but busy one, so it stays generous.
FAST_NODE_DEATH = {"health_check_period_ms": 1000, "health_check_timeout_ms": 5000,
                   "health_check_failure_threshold": 5}
#: how long to wait for new nodes to register (Ray's 30 s is short on a loaded 2-core machine)
NODES_UP_TIMEOUT_S = 180


@dataclasses.dataclass
class SimulatedCluster:
    """A running simulated cluster: ``cluster`` (the :class:`ray.cluster_utils.Cluster`),
    ``head`` and ``workers`` (``ray._private.node.Node`` objects, in the order they were added,
    for :meth:`remove_node`), ``worker_resources`` (the custom resource name of each worker,
    same order; ``node_<i>``, ``i`` counting every worker ever added, so names are never reused)."""

    cluster: Cluster
    head: object
    workers: list = dataclasses.field(default_factory=list)
    worker_resources: list[str] = dataclasses.field(default_factory=list)
    added: int = 0

    @property
    def address(self) -> str:
        return self.cluster.address

    def node_ids(self, alive_only: bool = True) -> list[str]:
        """Ray node ids (hex) of the cluster's nodes, head first, as in ``ray.nodes()``."""
        return [n["NodeID"] for n in ray.nodes() if n["Alive"] or not alive_only]

    def node_id(self, node) -> str:
        """The Ray node id (hex) of a ``Node`` object (the head or a worker)."""
        return node.node_id

    def worker_node_ids(self) -> list[str]:
        """Node ids of the worker nodes still in the cluster, in the order they were added."""
        return [w.node_id for w in self.workers]

    def head_node_id(self) -> str:
        return self.head.node_id

    def add_worker(self, num_cpus: int = 1, resources: dict | None = None, wait: bool = True):
        """Add one more worker node (its custom resource ``node_<i>`` plus ``resources``);
        ``wait``: until the GCS lists every node of the cluster."""
        name = f"node_{self.added}"
        node = self.cluster.add_node(
            wait=False, num_cpus=num_cpus, resources={name: 1, **(resources or {})},
            node_ip_address=LOOPBACK)
        self.added += 1
        self.workers.append(node)
        self.worker_resources.append(name)
        if wait:
            self.cluster.wait_for_nodes(timeout=NODES_UP_TIMEOUT_S)
        return node

    def remove_node(self, node, allow_graceful: bool = False) -> None:
        """Kill a worker node's processes (a node loss), as Ray's tests do."""
        self.cluster.remove_node(node, allow_graceful=allow_graceful)
        idx = self.workers.index(node)
        del self.workers[idx]
        del self.worker_resources[idx]


@contextlib.contextmanager
def simulated_cluster(workers: int = 2, cpus_per_worker: int = 1, head_cpus: int = 0,
                      resources: dict | None = None,
                      head_resources: dict | None = None,
                      system_config: dict | None = None) -> Iterator[SimulatedCluster]:
    """A head (``head_cpus`` CPUs, ``head_resources``) and ``workers`` worker nodes of
    ``cpus_per_worker`` CPUs each, worker ``i`` carrying the custom resource ``node_i: 1`` and
    ``resources``; the driver is connected to it for the ``with`` block. ``system_config``: the
    head's ``_system_config`` (default :data:`FAST_NODE_DEATH`). See the module doc."""
    restore_session = ray.is_initialized()
    if restore_session:
        ray.shutdown()
    # its own temp dir (sessions, sockets, logs): other Ray instances of the machine keep theirs
    temp_dir = tempfile.mkdtemp(prefix="m3d-cluster-")
    cluster = Cluster(initialize_head=False)
    try:
        cluster.add_node(
            num_cpus=head_cpus, resources=dict(head_resources or {}),
            node_ip_address=LOOPBACK, temp_dir=temp_dir,
            _system_config=dict(FAST_NODE_DEATH if system_config is None else system_config),
            include_dashboard=True,  # Ray Train/Tune's placement-group cleaner polls it
            dashboard_host=LOOPBACK, dashboard_port=None)  # None: the first free one from 8265
        sc = SimulatedCluster(cluster, cluster.head_node)
        for _ in range(workers):
            sc.add_worker(cpus_per_worker, resources, wait=False)
        cluster.wait_for_nodes(timeout=NODES_UP_TIMEOUT_S)
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        ips = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
        assert ips == {LOOPBACK}, f"simulated nodes must stay on loopback, got {ips}"
        yield sc
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        if restore_session:
            ray.init(num_cpus=SESSION_RAY_CPUS, **local_ray_init_kwargs())


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """This process's torch threads set to ``n`` inside the block: an in-process reference run
    with the thread count of a Ray worker of ``n`` CPUs (Ray Train sets it so), to compare with."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
