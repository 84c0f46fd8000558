"""A run survives being stopped, killed, crashing mid-write or diverging, and resumes exactly."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import snapshot
from mnist_gluon.cli import run, train_command
from mnist_gluon.config import load_config
from mnist_gluon.errors import Stopped
from mnist_gluon.mxnet_compat import mx
from mnist_gluon.stopping import StopSignals
from mnist_gluon.train import run_training

BIN = Path(sys.executable).parent
STEPS_PER_EPOCH = 50  # small_config: 2,500 training images in batches of 50


def params_of(path: Path) -> dict:
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def assert_bit_identical(a: Path, b: Path) -> None:
    left, right = params_of(a), params_of(b)
    assert left.keys() == right.keys()
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


def reference_run(small_config, tmp_path, *overrides) -> Path:
    run_dir = tmp_path / "reference"
    run_training(load_config(small_config, list(overrides)), run_dir, quiet=True)
    return run_dir


def stop_at(step: int, signum: int = signal.SIGTERM):
    """A stop_signal that reports `signum` once the loop has finished `step` steps."""
    calls = [0]

    def stop_signal():
        calls[0] += 1
        return signum if calls[0] >= step else None

    return stop_signal


def mnist_train(*args) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "mnist-train"), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


# --- exact resume from any step ----------------------------------------------------------------

@pytest.mark.parametrize("step", [1, 23, STEPS_PER_EPOCH, 77])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_a_run_stopped_at_any_step_resumes_to_bit_identical_parameters(small_config, tmp_path,
                                                                        step, dropout):
    overrides = [f"model.dropout={dropout}"]
    reference = reference_run(small_config, tmp_path, *overrides)
    run_dir = tmp_path / "stopped"
    with pytest.raises(Stopped, match=f"stopped by SIGTERM at epoch {1 + step // 51}, "
                                      f"step {step}; saved"):
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
                                                                             tmp_path, capsys):
    reference = reference_run(small_config, tmp_path)
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


# --- real signals --------------------------------------------------------------------------------

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
    match = re.fullmatch(rf"mnist-train: stopped by {name} at epoch (\d+), step (\d+); saved "
                         rf"{re.escape(str(run_dir / 'last.params'))}; continue with: "
                         rf"mnist-train --resume {re.escape(str(run_dir))}", last)
    assert match, err
    assert "Traceback" not in err
    meta = json.loads((run_dir / "last.json").read_text())
    assert meta["step"] == int(match[2]) and meta["in_epoch"]["epoch"] == int(match[1])
    epochs = int(match[1])
    assert run(train_command, ["--resume", str(run_dir), "--set", f"train.epochs={epochs}",
                               "--quiet"]) == 0
    assert json.loads((run_dir / "last.json").read_text())["epoch"] == epochs


def test_the_first_ctrl_c_is_noted_and_a_second_quits_at_once():
    with StopSignals("mnist-train") as signals:
        assert signals.received() is None
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert signals.received() == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigkill_at_a_random_moment_then_resume_gives_bit_identical_parameters(small_config,
                                                                              tmp_path):
    overrides = ["model.dropout=0.2", "train.epochs=3"]
    reference = reference_run(small_config, tmp_path, *overrides)
    run_dir = tmp_path / "killed"
    rng = random.Random()
    seed = rng.randrange(10**6)
    delay = random.Random(seed).uniform(0.0, 1.5)
    # A checkpoint after every step: the run is slow enough to be killed anywhere, including
    # in the middle of writing a checkpoint.
    process = mnist_train("--config", small_config, "--out", run_dir, "--quiet",
                          *[f"--set={o}" for o in overrides], "--set",
                          "checkpoint.every_steps=1")
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / "last.json").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL, f"the run ended before the kill (seed {seed})"
    assert run(train_command, ["--resume", str(run_dir), "--quiet"]) == 0, f"seed {seed}"
    assert_bit_identical(run_dir / "last.params", reference / "last.params")


# --- divergence ----------------------------------------------------------------------------------

def test_divergence_stops_with_exit_1_naming_the_step_and_the_intact_checkpoint(small_config,
                                                                               tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_training(load_config(small_config, ["train.epochs=1"]), run_dir, quiet=True)
    kept = snapshot(run_dir, exclude={"config.yaml"})
    code = run(train_command, ["--resume", str(run_dir), "--set", "train.epochs=2",
                               "--set", "train.lr=1e38", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip() == (
        f"mnist-train: error: the loss became non-finite at step 52 (epoch 2); "
        f"the last good checkpoint is {run_dir / 'last.params'} (end of epoch 1); lower "
        "train.lr, set train.clip_gradient, or set train.skip_nonfinite=true")
    assert snapshot(run_dir, exclude={"config.yaml"}) == kept


def test_skip_nonfinite_skips_the_bad_batches_and_keeps_the_parameters_finite(small_config,
                                                                              tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = run(train_command, ["--config", str(small_config), "--out", str(run_dir),
                               "--set", "train.lr=1e38", "--set", "train.skip_nonfinite=true",
                               "--set", "train.epochs=1", "--quiet"])
    assert code == 0
    assert re.search(r"\((\d+) non-finite batches skipped\)", capsys.readouterr().out)
    assert all(np.isfinite(v).all() for v in params_of(run_dir / "last.params").values())
