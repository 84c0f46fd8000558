"""A run survives being stopped, killed or crashing mid-write, and resumes exactly."""

import json
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_gluon.cli import run, train_command
from mnist_gluon.config import load_config
from mnist_gluon.errors import Stopped
from mnist_gluon.mxnet_compat import mx
from mnist_gluon.training.run import run_training
from support import (
    BIN,
    kill_once_saved,
    saved_step,
    snapshot,
    stop_at,
    tiny_disk,
    write_small_config,
)

STEPS_PER_EPOCH = 50  # small_config: 2,500 training images in batches of 50


def params_of(path: Path) -> dict:
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def assert_bit_identical(a: Path, b: Path) -> None:
    left, right = params_of(a), params_of(b)
    assert left.keys() == right.keys()
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


@pytest.fixture(scope="module")
def uninterrupted(small_mnist, tmp_path_factory):
    """The run that never stopped, for a set of overrides of small_config's: each is
    trained once, and every test that stops, kills or crashes that run compares with it."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    config = write_small_config(folder / "small.yaml", small_mnist)
    runs: dict[tuple[str, ...], Path] = {}

    def reference(*overrides: str) -> Path:
        if overrides not in runs:
            runs[overrides] = folder / f"run-{len(runs)}"
            run_training(load_config(config, list(overrides)), runs[overrides], quiet=True)
        return runs[overrides]

    return reference


def mnist_train(*args) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "mnist-train"), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.parametrize("step", [1, 23, STEPS_PER_EPOCH, 77])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_a_run_stopped_at_any_step_resumes_to_bit_identical_parameters(small_config, tmp_path,
                                                                        uninterrupted, step,
                                                                        dropout):
    overrides = [f"model.dropout={dropout}"]
    reference = uninterrupted(*overrides)
    run_dir = tmp_path / "stopped"
    with pytest.raises(Stopped, match=f"stopped by SIGTERM at epoch {1 + step // 51}, "
                                      f"step {(step - 1) % 50 + 1} of 50; saved"):
        run_training(load_config(small_config, overrides), run_dir, quiet=True,
                     stop_signal=stop_at(step))
    meta = json.loads((run_dir / "last.json").read_text())
    assert meta["step"] == step and meta["in_epoch"]["steps_done"] == step - 50 * meta["epoch"]

    assert run(train_command, ["--resume", str(run_dir), "--quiet"]) == 0
    assert_bit_identical(run_dir / "last.params", reference / "last.params")
    assert_bit_identical(run_dir / "best.params", reference / "best.params")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    keys = ("epoch", "step", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
    assert [[r[k] for k in keys] for r in rows] == [[r[k] for k in keys] for r in expected]


def test_mid_epoch_checkpoints_are_written_every_n_steps(small_config, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(Stopped):
        run_training(load_config(small_config, ["checkpoint.every_steps=7"]), run_dir,
                     quiet=True, stop_signal=stop_at(30, signal.SIGINT))
    previous = json.loads((run_dir / "previous.json").read_text())
    assert previous["step"] == 28 and previous["in_epoch"]["steps_done"] == 28
    assert json.loads((run_dir / "last.json").read_text())["step"] == 30


def test_a_crash_while_last_is_replaced_resumes_from_the_previous_checkpoint(small_config,
                                                                             tmp_path, capsys,
                                                                             uninterrupted):
    reference = uninterrupted("model.dropout=0.0")
    run_dir = tmp_path / "run"
    with pytest.raises(Stopped):
        run_training(load_config(small_config, ["checkpoint.every_steps=10"]), run_dir,
                     quiet=True, stop_signal=stop_at(35))
    # What a crash between the renames leaves: the new parameters beside the old sidecar.
    (run_dir / "last.params").write_bytes(b"half of a new checkpoint")
    assert run(train_command, ["--resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "step 31 of 50 from previous.params (last.params was incomplete)" in out
    assert_bit_identical(run_dir / "last.params", reference / "last.params")


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_finishes_the_step_saves_and_says_how_to_resume(small_config, tmp_path, signum,
                                                                 status):
    run_dir = tmp_path / "run"
    process = mnist_train("--config", small_config, "--out", run_dir, "--set", "train.epochs=1000")
    try:
        for line in process.stdout:
            if line.startswith("epoch 1/1000"):
                break
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == status, err
    name = signal.Signals(signum).name
    last = err.strip().splitlines()[-1]
    match = re.fullmatch(rf"mnist-train: stopped by {name} at epoch (\d+), step (\d+) of 50; saved "
                         rf"{re.escape(str(run_dir / 'last.params'))}; continue with: "
                         rf"mnist-train --resume {re.escape(str(run_dir))}", last)
    assert match, err
    assert "Traceback" not in err
    meta = json.loads((run_dir / "last.json").read_text())
    # The step is counted within its epoch, as the resume counts it.
    assert meta["in_epoch"]["steps_done"] == int(match[2])
    assert meta["in_epoch"]["epoch"] == int(match[1])
    epochs = int(match[1])
    resumed = subprocess.run([str(BIN / "mnist-train"), "--resume", str(run_dir), "--set",
                              f"train.epochs={epochs}"], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at epoch {epochs}, step {int(match[2]) + 1} of 50" in resumed.stdout
    assert json.loads((run_dir / "last.json").read_text())["epoch"] == epochs


def test_sigkill_at_a_random_moment_then_resume_gives_bit_identical_parameters(small_config,
                                                                              tmp_path,
                                                                              uninterrupted):
    overrides = ["model.dropout=0.2", "train.epochs=3"]
    reference = uninterrupted(*overrides)
    run_dir = tmp_path / "killed"
    seed = random.Random().randrange(10**6)
    draw = random.Random(seed)
    # Killed once the run has passed a random step (of 150), a random moment later: with a
    # checkpoint after every step, that is anywhere, the middle of writing one included.
    target, delay = draw.randrange(1, 140), draw.uniform(0.0, 0.02)
    process = mnist_train("--config", small_config, "--out", run_dir, "--quiet",
                          *[f"--set={o}" for o in overrides], "--set",
                          "checkpoint.every_steps=1")
    kill_once_saved(process, run_dir, target, delay)
    assert process.returncode == -signal.SIGKILL, f"the run ended before the kill (seed {seed})"
    assert run(train_command, ["--resume", str(run_dir), "--quiet"]) == 0, f"seed {seed}"
    assert_bit_identical(run_dir / "last.params", reference / "last.params")


def test_temporaries_a_killed_run_left_are_swept_at_its_resume(small_config, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(Stopped):
        run_training(load_config(small_config), run_dir, quiet=True, stop_signal=stop_at(30))
    ended = subprocess.Popen(["true"])
    ended.wait()  # its PID now names no process, as a killed writer's does
    stale = run_dir / f".last.params.tmp-{ended.pid}"
    stale.write_bytes(b"half a checkpoint")
    live = run_dir / ".last.params.tmp-1"  # PID 1 is alive: a writer at work
    live.write_bytes(b"being written")
    assert run(train_command, ["--resume", str(run_dir), "--quiet"]) == 0
    assert not stale.exists() and live.exists()


def test_a_folder_in_use_is_refused_to_resume_and_force_naming_its_process(small_config,
                                                                          tmp_path):
    """Two runs writing one folder left a config of one and checkpoints of the other."""
    run_dir = tmp_path / "run"
    first = mnist_train("--config", small_config, "--out", run_dir, "--set",
                        "train.epochs=1000", "--quiet")
    try:
        deadline = time.monotonic() + 60
        while saved_step(run_dir) < 1:
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        for args in (["--resume", run_dir], ["--config", small_config, "--out", run_dir,
                                              "--force"]):
            second = subprocess.run([str(BIN / "mnist-train"), *map(str, args)],
                                    capture_output=True, text=True, timeout=120)
            assert second.returncode == 2
            assert second.stderr.strip() == (
                f"mnist-train: error: {run_dir} is in use by a running mnist-train (PID "
                f"{first.pid}); wait for it to end, stop it, or pass --out DIR for a new run")
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 143
    assert run(train_command, ["--resume", str(run_dir), "--set", "train.epochs=1",
                               "--quiet"]) == 0  # free again once its run has ended


@pytest.fixture
def small_disk(tmp_path):
    """Room for a run's config and metrics, not for its first checkpoint."""
    with tiny_disk(tmp_path / "disk", "160k") as mount:
        yield mount


def test_a_full_disk_is_one_line_and_the_folder_resumes_from_the_beginning(small_config,
                                                                            small_disk,
                                                                            tmp_path):
    run_dir = small_disk / "run"
    full = subprocess.run([str(BIN / "mnist-train"), "--config", str(small_config), "--out",
                           str(run_dir), "--quiet"], capture_output=True, text=True)
    assert full.returncode == 2
    error = full.stderr.strip().splitlines()[-1]
    assert error.startswith(f"mnist-train: error: cannot write {run_dir}/")
    assert error.endswith(f"the disk holding {run_dir} is full; free some space and run the "
                          "command again")
    assert "Traceback" not in full.stderr
    assert not list(run_dir.glob("*.params")) and not list(run_dir.glob(".*.tmp-*"))

    moved = tmp_path / "run"  # the same folder, once there is room
    subprocess.run(["cp", "-a", str(run_dir), str(moved)], check=True)
    again = subprocess.run([str(BIN / "mnist-train"), "--resume", str(moved), "--quiet"],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "holds no checkpoint yet; training it from the beginning" in again.stdout + again.stderr
    assert (moved / "best.params").exists()


def test_switching_the_optimizer_on_resume_is_refused(small_config, tmp_path, capsys):
    """NAG's saved momentum is not SGD's (SGD's holds lr-scaled steps): a switch from NAG to
    SGD was accepted silently, though one to Adam was refused."""
    run_dir = tmp_path / "run"
    run_training(load_config(small_config, ["train.epochs=1", "train.optimizer=nag",
                                            "train.lr=0.05"]), run_dir, quiet=True)
    kept = snapshot(run_dir)
    code = run(train_command, ["--resume", str(run_dir), "--set", "train.optimizer=sgd",
                               "--set", "train.epochs=2", "--quiet"])
    assert code == 2
    assert capsys.readouterr().err == (
        "mnist-train: error: train.optimizer was 'nag' in the run being resumed, now 'sgd'; it "
        "cannot change on --resume: start a new run with --out DIR\n")
    assert snapshot(run_dir) == kept


def test_metrics_a_newer_version_wrote_do_not_stop_a_resume_and_are_kept(small_config,
                                                                          tmp_path):
    run_dir = tmp_path / "run"
    run_training(load_config(small_config, ["train.epochs=1"]), run_dir, quiet=True)
    metrics = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    metrics.write_text("".join(json.dumps({**row, "val_top5": 0.99}) + "\n" for row in rows))
    assert run(train_command, ["--resume", str(run_dir), "--set", "train.epochs=2",
                               "--quiet"]) == 0
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [row["epoch"] for row in lines] == [1, 2]
    assert lines[0]["val_top5"] == 0.99  # the newer version's figure is not thrown away
