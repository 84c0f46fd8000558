"""Where a process stands in a parameter-server cluster, told by ps-lite's DMLC_* variables."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..data import steps_per_epoch
from ..errors import ConfigError

# ps-lite's variables: every process needs these; mnist-launch sets them, with DMLC_ROLE.
ROLE, ROOT_URI, ROOT_PORT = "DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT"
NUM_WORKER, NUM_SERVER, NODE_HOST = "DMLC_NUM_WORKER", "DMLC_NUM_SERVER", "DMLC_NODE_HOST"


def cluster_env(host: str, port: int, workers: int, servers: int) -> dict[str, str]:
    """The variables every process of a cluster shares; each adds its own ROLE."""
    return {ROOT_URI: host, ROOT_PORT: str(port), NUM_WORKER: str(workers),
            NUM_SERVER: str(servers), NODE_HOST: host}


@dataclass
class Cluster:
    """Where this process stands in a distributed run; one worker of one otherwise."""

    kvstore: object = None
    rank: int = 0
    workers: int = 1

    @property
    def writer(self) -> bool:
        return self.rank == 0  # only rank 0 writes the run folder

    @property
    def prefix(self) -> str:
        return f"[rank {self.rank}/{self.workers}] " if self.kvstore is not None else ""

    def share(self, order: np.ndarray, batch_size: int) -> np.ndarray:
        """This worker's part of each global batch of the epoch's `order`: every worker
        takes its own `batch_size` examples of each step, so the workers together train on
        the batches a single process with the global batch would."""
        if self.workers == 1:
            return order
        steps = steps_per_epoch(len(order), batch_size * self.workers)
        grid = order[: steps * batch_size * self.workers].reshape(steps, self.workers, -1)
        return grid[:, self.rank].reshape(-1)


def join_cluster(kvstore: str) -> Cluster:
    """For a dist_* kvstore, connect to the parameter servers (started by mnist-launch)."""
    if not kvstore.startswith("dist"):
        return Cluster()
    missing = [v for v in (ROLE, ROOT_URI, ROOT_PORT, NUM_WORKER, NUM_SERVER)
               if v not in os.environ]
    if missing:
        raise ConfigError(f"train.kvstore={kvstore} needs a cluster ({', '.join(missing)} not "
                          "set); start it with: mnist-launch -n WORKERS -s SERVERS -- "
                          "mnist-train ...")
    from ..mxnet_compat import mx

    kv = mx.kv.create(kvstore)
    return Cluster(kv, kv.rank, kv.num_workers)


def parameters_digest(net) -> str:
    """A checksum of the parameters' values: equal on every worker of a consistent run."""
    import hashlib

    from ..model import named_parameters

    digest = hashlib.sha256()
    for name, param in sorted(named_parameters(net).items()):
        digest.update(name.encode() + param.data().asnumpy().tobytes())
    return digest.hexdigest()
