"""Start a whole MXNet parameter-server cluster on this machine and watch it to the end.

ps-lite wires a scheduler, servers and workers together through DMLC_* environment variables.
The scheduler and the servers run inside `import mxnet` and exit there; the workers run the
user's command. ps-lite has no fault tolerance: when one process dies the others wait
forever, so the launcher takes the whole cluster down as soon as one fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

HOST = "127.0.0.1"
POLL_SECONDS = 0.2
GRACE_SECONDS = 5.0  # a terminated process gets this long before SIGKILL
SERVERS_EXIT_SECONDS = 30.0  # after the workers finish, servers get this long to exit


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    worker: bool


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def cluster_env(workers: int, servers: int, port: int) -> dict[str, str]:
    return {"DMLC_PS_ROOT_URI": HOST, "DMLC_PS_ROOT_PORT": str(port),
            "DMLC_NUM_WORKER": str(workers), "DMLC_NUM_SERVER": str(servers),
            "DMLC_NODE_HOST": HOST}


def start(name: str, command: list[str], role: str, env: dict[str, str],
          worker: bool) -> Process:
    full_env = {**os.environ, **env, "DMLC_ROLE": role}
    # Each in a session of its own, so that its whole process group can be stopped.
    popen = subprocess.Popen(command, env=full_env, start_new_session=True)
    return Process(name, popen, worker)


def stop(processes: list[Process]) -> None:
    """SIGTERM every process group still running, then SIGKILL what is left after a grace."""
    alive = [p for p in processes if p.popen.poll() is None]
    for p in alive:
        signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while any(p.popen.poll() is None for p in alive) and time.monotonic() < deadline:
        time.sleep(0.05)
    for p in alive:
        if p.popen.poll() is None:
            signal_group(p, signal.SIGKILL)
        p.popen.wait()


def signal_group(process: Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.popen.pid, signum)


def launch(command: list[str], workers: int, servers: int,
           say: Callable[[str], None]) -> int:
    """Run `command` as `workers` workers beside `servers` servers and a scheduler on this
    machine; the exit status is 0 when every worker succeeded, else the first failure's."""
    env = cluster_env(workers, servers, free_port())
    idle = [sys.executable, "-c", "import mxnet"]  # the scheduler and servers live in here
    processes = [start("scheduler", idle, "scheduler", env, worker=False)]
    processes += [start(f"server {i}", idle, "server", env, worker=False)
                  for i in range(servers)]
    processes += [start(f"worker {i}", command, "worker", env, worker=True)
                  for i in range(workers)]
    for p in processes:
        say(f"{p.name}: pid {p.popen.pid}")
    try:
        return watch(processes, say)
    except KeyboardInterrupt:
        say("interrupted; stopping the cluster")
        stop(processes)
        return 130
    finally:
        stop(processes)


def watch(processes: list[Process], say: Callable[[str], None]) -> int:
    workers = [p for p in processes if p.worker]
    while True:
        for p in processes:
            code = p.popen.poll()
            # The scheduler and servers end cleanly (0) once the workers have finalized,
            # which can be a moment before the workers' own exit shows.
            if code is None or code == 0:
                continue
            status = f"status {code}" if code >= 0 else signal.Signals(-code).name
            say(f"{p.name} ended ({status}) while the cluster was running; stopping every "
                "process of it")
            stop(processes)
            return code if code > 0 else 1
        if all(p.popen.poll() == 0 for p in workers):
            break
        time.sleep(POLL_SECONDS)
    deadline = time.monotonic() + SERVERS_EXIT_SECONDS
    while any(p.popen.poll() is None for p in processes) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    say(f"all {len(workers)} workers finished")
    return 0
