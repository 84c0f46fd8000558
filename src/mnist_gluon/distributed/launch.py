"""Start a whole MXNet parameter-server cluster and watch it to the end: on this machine, or
over ssh on the hosts of a hostfile.

ps-lite wires a scheduler, servers and workers together through DMLC_* environment variables.
The scheduler and the servers run inside `import mxnet` and exit there; the workers run the
user's command. ps-lite has no fault tolerance: when one process dies the others wait
forever, so the launcher takes the whole cluster down as soon as one fails.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import OutputError
from ..training.cluster import NODE_HOST, ROLE, ROOT_URI, cluster_env

HOST = "127.0.0.1"
POLL_SECONDS = 0.2
GRACE_SECONDS = 5.0  # a terminated process gets this long before SIGKILL
SERVERS_EXIT_SECONDS = 30.0  # after the workers finish, servers get this long to exit
# `python -m` would put the folder it starts in first on the import path: a numpy.py there would
# run inside the scheduler and the servers, on every host. -c's first entry is dropped instead.
IDLE = ("import sys; del sys.path[0]; import runpy; "
        "runpy.run_module('mnist_gluon.mxnet_compat', run_name='__main__')")


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    worker: bool



def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start(name: str, command: list[str], role: str, env: dict[str, str], worker: bool,
          host: str | None = None, ssh: tuple[str, ...] = ("ssh",)) -> Process:
    """Start one role here, or on `host` over ssh (with a terminal, so that the remote
    process is hung up when its ssh ends)."""
    role_env = {**env, ROLE: role}
    if host is None:
        argv, full_env = command, {**os.environ, **role_env}
    else:
        role_env[NODE_HOST] = address(host)
        remote = (f"cd {shlex.quote(os.getcwd())} && exec env "
                  + " ".join(f"{k}={shlex.quote(v)}" for k, v in role_env.items()) + " "
                  + " ".join(shlex.quote(part) for part in command))
        argv, full_env = [*ssh, "-tt", host, remote], dict(os.environ)
    # Each in a session of its own, so that its whole process group can be stopped.
    popen = subprocess.Popen(argv, env=full_env, start_new_session=True)
    return Process(name, popen, worker)


def address(host: str) -> str:
    return host.rpartition("@")[2]


def read_hostfile(path: str) -> list[str]:
    """Hosts, one per line (`host` or `user@host`); blank lines and # comments are skipped."""
    try:
        lines = open(path).read().splitlines()  # noqa: SIM115 - read at once
    except OSError as error:
        raise OutputError(f"hostfile {path} cannot be read ({error.strerror})") from None
    hosts = [line.split("#")[0].strip() for line in lines]
    hosts = [h for h in hosts if h]
    if not hosts:
        raise OutputError(f"hostfile {path} names no host; write one host per line")
    return hosts


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


class Ended(Exception):
    """A signal asked the launcher to end (SIGTERM, SIGHUP): its cluster goes with it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def end_on_signals() -> None:
    def handler(signum, frame):
        raise Ended(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


def check_joins(command: list[str]) -> None:
    """Refuse an mnist-train that would not join the cluster: without a dist kvstore each
    worker trains alone, into the same run folder. (Other commands cannot be asked.)"""
    if os.path.basename(command[0]) != "mnist-train":
        return
    asked = subprocess.run([*command, "--print-config"], capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if not k.startswith("DMLC_")})
    if asked.returncode != 0:
        lines = asked.stderr.strip().splitlines()
        raise OutputError(f"the worker command fails on its own: "
                          f"{lines[-1] if lines else f'status {asked.returncode}'}; nothing "
                          "was started")
    kvstore = (yaml.safe_load(asked.stdout).get("train") or {}).get("kvstore", "local")
    if not str(kvstore).startswith("dist"):
        raise OutputError(f"the worker command trains with train.kvstore={kvstore}, so each "
                          "worker would train alone into the same run folder; add --set "
                          "train.kvstore=dist_sync (or dist_async); nothing was started")


def process_stat(pid: int) -> tuple[str, float] | None:
    """(state, user and system CPU seconds so far) of a local process; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return fields[0], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class StallWatch:
    """Notices a local worker that has used no CPU for `seconds` (stopped, or stuck): ps-lite
    would have the others wait for it forever."""

    def __init__(self, workers: list[Process], seconds: float | None):
        self.seconds = seconds
        self.workers = workers
        self.last: dict[str, tuple[float | None, float]] = {}  # name -> (CPU seconds, since)

    def stalled(self) -> str | None:
        if not self.seconds:
            return None
        now, silent = time.monotonic(), []
        for p in self.workers:
            state, used = process_stat(p.popen.pid) or ("", None)
            seen, since = self.last.get(p.name, (None, now))
            if used is None or used != seen:
                self.last[p.name] = (used, now)
            elif now - since >= self.seconds:
                silent.append((state not in ("T", "t"), since, p))
        if not silent:
            return None
        # The others wait for a stopped one: it is the cause.
        running, since, p = min(silent, key=lambda entry: entry[:2])
        return (f"{p.name} (pid {p.popen.pid}) has used no CPU for {now - since:.0f} s "
                f"({'stuck' if running else 'stopped'}); stopping every process of the "
                "cluster (--stall-timeout sets how long to wait)")


def launch(command: list[str], workers: int, servers: int, say: Callable[[str], None],
           hosts: list[str] | None = None, ssh: tuple[str, ...] = ("ssh",),
           stall_seconds: float | None = None) -> int:
    """Run `command` as `workers` workers beside `servers` servers and a scheduler, on this
    machine or over ssh on `hosts` (the scheduler on the first, servers and workers in turn;
    every host has this Python at the same path and this folder). The exit status is 0 when
    every worker succeeded, else the first failure's. However the launcher ends (a failure, a
    signal, a hang-up), it stops every process it started."""
    if hosts is None and shutil.which(command[0]) is None:
        raise OutputError(f"{command[0]} is not a command here (not found on the PATH, or not "
                          "executable); nothing was started")
    if hosts and shutil.which(ssh[0]) is None:
        raise OutputError(f"--ssh {ssh[0]} is not a command here (install an ssh client, or "
                          "name one with --ssh); nothing was started")
    check_joins(command)
    root = address(hosts[0]) if hosts else HOST
    # The port is free here: launch from the first host, or pick hosts where it is free too.
    env = {**cluster_env(HOST, free_port(), workers, servers), ROOT_URI: root}
    if hosts:
        env.pop(NODE_HOST)

    def on(i: int) -> str | None:
        return hosts[i % len(hosts)] if hosts else None

    idle = [sys.executable, "-c", IDLE]  # the scheduler and the servers live in here
    end_on_signals()
    processes: list[Process] = []
    try:
        processes.append(start("scheduler", idle, "scheduler", env, False, on(0), ssh))
        processes += [start(f"server {i}", idle, "server", env, False, on(i), ssh)
                      for i in range(servers)]
        processes += [start(f"worker {i}", command, "worker", env, True, on(i), ssh)
                      for i in range(workers)]
        for p in processes:
            say(f"{p.name}: pid {p.popen.pid}")
        # Remote workers are watched through their ssh, whose CPU time says nothing.
        stall = StallWatch([p for p in processes if p.worker and not hosts], stall_seconds)
        return watch(processes, say, stall)
    except KeyboardInterrupt:
        say("interrupted; stopping the cluster")
        return 130
    except Ended as ended:
        say(f"{ended} received; stopping the cluster")
        return 128 + ended.signum
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # stop, uninterrupted
            signal.signal(signum, signal.SIG_IGN)
        stop(processes)


def watch(processes: list[Process], say: Callable[[str], None], stall: StallWatch) -> int:
    workers = [p for p in processes if p.worker]
    while True:
        if (why := stall.stalled()) is not None:
            say(why)
            stop(processes)
            return 1
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
    if lingering := [p.name for p in processes if p.popen.poll() is None]:
        # A worker that left without telling the scheduler (MXNet's exit does) leaves them.
        say(f"{', '.join(lingering)} did not end within {SERVERS_EXIT_SECONDS:.0f} s of the "
            "workers; stopping them")
    return 0
