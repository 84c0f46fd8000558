"""Data-parallel training on MXNet's parameter-server kvstore, with real processes on
127.0.0.1: a scheduler, a server and two workers started by mnist-launch."""

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_gluon.config import load_config
from mnist_gluon.mxnet_compat import mx
from mnist_gluon.training.run import run_training
from support import BIN

DIST = ["--set", "train.optimizer=nag", "--set", "train.lr=0.1", "--set", "train.batch_size=25"]


def launch(small_config, run_dir, *extra, workers=2, launcher=()):
    return subprocess.Popen(
        [str(BIN / "mnist-launch"), "-n", str(workers), "-s", "1", *launcher, "--",
         str(BIN / "mnist-train"), "--config", str(small_config), "--out", str(run_dir),
         "--quiet", "--set", "train.kvstore=dist_sync", *DIST, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def pids(stderr: str) -> dict[str, int]:
    return {name: int(pid) for name, pid in re.findall(r"mnist-launch: (\w+ ?\d*): pid (\d+)",
                                                       stderr)}


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def assert_all_gone(started: dict[str, int]) -> None:
    deadline = time.monotonic() + 15
    while not all(gone(pid) for pid in started.values()):
        assert time.monotonic() < deadline, "a process of the cluster survived its launcher"
        time.sleep(0.1)


def signal_worker_1_in_training(process, signum: int) -> tuple[dict[str, int], str]:
    """Send `signum` to worker 1 once it trains, then wait for the launcher to end (it must,
    within 2 minutes): (the processes it started, its stderr)."""
    err_lines: list[str] = []
    reader = threading.Thread(target=lambda: err_lines.extend(process.stderr), daemon=True)
    reader.start()
    try:
        for line in process.stdout:
            if line.startswith("[rank 1/2] epoch 1/"):
                break
        started = pids("".join(err_lines))
        os.kill(started["worker 1"], signum)
        process.wait(timeout=120)
    finally:
        process.kill()
    reader.join(timeout=10)
    return started, "".join(err_lines)


def test_two_workers_train_their_own_shares_and_match_one_process(small_config, tmp_path):
    process = launch(small_config, tmp_path / "dist")
    try:
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, err
    started = pids(err)
    assert set(started) == {"scheduler", "server 0", "worker 0", "worker 1"}
    assert all(gone(pid) for pid in started.values())  # nothing is left behind
    assert "did not end" not in err  # the scheduler and server ended with the workers

    digests = re.findall(r"\[rank (\d)/2\] parameters sha256 (\w+)", out)
    assert sorted(rank for rank, _ in digests) == ["0", "1"]
    assert digests[0][1] == digests[1][1]  # both workers end with the same parameters
    assert len(list((tmp_path / "dist").glob("events.out.tfevents.*"))) == 1  # rank 0's only
    for rank in ("0", "1"):
        assert (f"[rank {rank}/2] dist_sync: 2 workers; this one trains on its own 25 of each "
                "global batch of 50, 1250 of the 2500 examples each epoch") in out
    # Every line of the workers says whose it is, rank 0's final "done:" line included.
    assert all(re.match(r"\[rank [01]/2\] ", line) for line in out.splitlines() if line), out
    assert re.search(r"^\[rank 0/2\] done: best validation accuracy", out, re.MULTILINE)

    # One process with the global batch of 50 sees the same batches, each once.
    single = tmp_path / "single"
    overrides = [o for o in DIST if o != "--set"]
    overrides[-1] = "train.batch_size=50"
    run_training(load_config(small_config, overrides), single, quiet=True)
    dist = mx.nd.load(str(tmp_path / "dist" / "last.params"))
    for name, value in mx.nd.load(str(single / "last.params")).items():
        np.testing.assert_allclose(dist[name].asnumpy(), value.asnumpy(), rtol=1e-4,
                                   atol=1e-5)
    dist_rows = (tmp_path / "dist" / "metrics.jsonl").read_text().splitlines()
    single_rows = (single / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["val_accuracy"] for r in dist_rows] == [
        json.loads(r)["val_accuracy"] for r in single_rows]
    assert not list((tmp_path / "dist").glob("rank-*"))  # only rank 0 wrote the folder


def test_a_killed_worker_takes_the_whole_cluster_down_with_a_clear_message(small_config,
                                                                           tmp_path):
    process = launch(small_config, tmp_path / "run", "--set", "train.epochs=100000")
    started, err = signal_worker_1_in_training(process, signal.SIGKILL)
    assert process.returncode != 0
    assert ("mnist-launch: worker 1 ended (SIGKILL) while the cluster was running; stopping "
            "every process of it") in err
    assert_all_gone(started)


def test_a_distributed_run_resumes_with_its_parameters(small_config, tmp_path):
    run_dir = tmp_path / "run"
    first = launch(small_config, run_dir, "--set", "train.epochs=1")
    assert first.wait(timeout=120) == 0
    before = mx.nd.load(str(run_dir / "last.params"))
    resumed = subprocess.run(
        [str(BIN / "mnist-launch"), "-n", "2", "--", str(BIN / "mnist-train"), "--resume",
         str(run_dir), "--quiet", "--set", "train.epochs=2"],
        capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert ("[rank 0/2] resuming a distributed run restores its parameters; the optimizer's "
            "state (momentum) restarts") in resumed.stdout
    meta = json.loads((run_dir / "last.json").read_text())
    assert meta["epoch"] == 2
    after = mx.nd.load(str(run_dir / "last.params"))
    assert not np.array_equal(after["fc1.weight"].asnumpy(), before["fc1.weight"].asnumpy())


@pytest.mark.parametrize("argv, message", [
    (["-n", "2", "--"], "Missing argument 'COMMAND...'"),
    (["-n", "0", "--", "true"], "Invalid value for '-n'"),
    (["-n", "100000", "--", "true"], "100000 is not in the range 1<=x<=256"),
    (["-n", "1", "-s", "1000", "--", "true"], "1000 is not in the range 1<=x<=64"),
])
def test_bad_launcher_arguments_are_one_line_exit_2(argv, message):
    result = subprocess.run([str(BIN / "mnist-launch"), *argv], capture_output=True, text=True)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.fixture
def sshd(tmp_path):
    """A real sshd on a free port of 127.0.0.1, for this test only, with a key of its own;
    yields the ssh command that logs in to it."""
    import shutil
    import socket

    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    folder = tmp_path / "sshd"
    folder.mkdir()
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(folder / name)], check=True)
    (folder / "authorized_keys").write_text((folder / "user_key.pub").read_text())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {folder / 'authorized_keys'}\n"
        "StrictModes no\nPermitRootLogin yes\nPasswordAuthentication no\nUsePAM no\n"
        "KbdInteractiveAuthentication no\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    server = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(folder / "sshd_config")],
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield (f"ssh -i {folder / 'user_key'} -p {port} -o BatchMode=yes "
               "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_launcher_runs_a_two_worker_job_over_ssh(sshd, small_config, tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# every role through the test's own sshd\n127.0.0.1\n")
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [str(BIN / "mnist-launch"), "-n", "2", "-s", "1", "-H", str(hostfile), "--ssh", sshd,
         "--", str(BIN / "mnist-train"), "--config", str(small_config), "--out", str(run_dir),
         "--quiet", "--set", "train.kvstore=dist_sync", *DIST],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr + result.stdout
    digests = set(re.findall(r"\[rank \d/2\] parameters sha256 (\w+)", result.stdout))
    assert len(digests) == 1
    assert json.loads((run_dir / "last.json").read_text())["epoch"] == 2


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_launcher_ended_by_a_signal_takes_its_whole_cluster_with_it(small_config, tmp_path,
                                                                       signum):
    process = launch(small_config, tmp_path / "run", "--set", "train.epochs=1000")
    deadline = time.monotonic() + 60
    while not (tmp_path / "run" / "metrics.jsonl").exists():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, err
    assert f"{signal.Signals(signum).name} received; stopping the cluster" in err
    started = pids(err)
    assert set(started) == {"scheduler", "server 0", "worker 0", "worker 1"}
    assert_all_gone(started)


def test_a_command_that_does_not_exist_starts_nothing(tmp_path):
    result = subprocess.run([str(BIN / "mnist-launch"), "-n", "1", "--", "/nonexistent-cmd"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "mnist-launch: error: /nonexistent-cmd is not a command here (not found on the PATH, "
        "or not executable); nothing was started")


def test_an_ssh_client_that_does_not_exist_starts_nothing(small_config, tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("127.0.0.1\n")
    result = subprocess.run(
        [str(BIN / "mnist-launch"), "-n", "1", "-H", str(hostfile), "--ssh", "/nonexistent-ssh",
         "--", str(BIN / "mnist-train"), "--config", str(small_config)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "mnist-launch: error: --ssh /nonexistent-ssh is not a command here (install an ssh "
        "client, or name one with --ssh); nothing was started")


def test_an_mnist_train_without_a_dist_kvstore_is_refused_before_anything_starts(small_config,
                                                                                   tmp_path):
    result = subprocess.run(
        [str(BIN / "mnist-launch"), "-n", "2", "--", str(BIN / "mnist-train"), "--config",
         str(small_config), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "mnist-launch: error: the worker command trains with train.kvstore=local, so each "
        "worker would train alone into the same run folder; add --set "
        "train.kvstore=dist_sync (or dist_async); nothing was started")
    assert not (tmp_path / "run").exists()


def test_a_stopped_worker_ends_the_cluster_after_the_stall_timeout(small_config, tmp_path):
    process = launch(small_config, tmp_path / "run", "--set", "train.epochs=100000",
                     launcher=("--stall-timeout", "3"))
    started, err = signal_worker_1_in_training(process, signal.SIGSTOP)
    assert process.returncode == 1
    assert f"mnist-launch: worker 1 (pid {started['worker 1']}) has used no CPU for" in err
    assert_all_gone(started)


def test_a_module_in_the_folder_the_cluster_starts_in_runs_in_none_of_its_processes(
        small_config, tmp_path):
    """`python -m` put the working folder first on the scheduler's and servers' import path:
    a numpy.py there ran inside them, on every host."""
    folder = tmp_path / "shared"
    folder.mkdir()
    marker = tmp_path / "ran"
    for name in ("numpy", "mxnet", "mnist_gluon", "runpy"):
        (folder / f"{name}.py").write_text(
            f"open({str(marker)!r}, 'a').write('{name}\\n')\nraise SystemExit('hijacked')\n")
    process = subprocess.Popen(
        [str(BIN / "mnist-launch"), "-n", "1", "-s", "1", "--", str(BIN / "mnist-train"),
         "--config", str(small_config), "--out", str(tmp_path / "run"), "--quiet", "--set",
         "train.kvstore=dist_sync", "--set", "train.epochs=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=folder)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert not marker.exists(), marker.read_text()
    assert (tmp_path / "run" / "best.params").is_file()
