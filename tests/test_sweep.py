"""mnist-sweep on Optuna: every trial a run folder, chosen on validation, continued when run
again, shared by processes through one study, pruned from inside the runs."""

import json
import signal
import subprocess
import time

import numpy as np
import optuna
import pytest
import yaml

from mnist_gluon.checkpoint import read_checkpoint
from mnist_gluon.cli import run, sweep_command
from mnist_gluon.config import load_config
from mnist_gluon.training.run import run_training
from support import BIN, check_install_hint, snapshot, without_module


def sweep(tmp_path, small_config, *extra, out="sweep") -> list[str]:
    return ["--config", str(small_config), "--out", str(tmp_path / out),
            "--grid", "train.lr=0.0003,0.003", "--set", "train.epochs=1", *extra]


def mnist_sweep(*args) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "mnist-sweep"), *map(str, args)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def checkpointed_sweep(args, out) -> subprocess.Popen:
    """mnist-sweep started, once its first trial has written a checkpoint."""
    process = mnist_sweep(*args)
    deadline = time.monotonic() + 60
    while not (out / "trial-000" / "last.json").exists():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    return process


def test_a_grid_sweep_runs_every_point_and_picks_the_best_on_validation(small_config,
                                                                       tmp_path, capsys):
    assert run(sweep_command, sweep(tmp_path, small_config, "--jobs", "2")) == 0
    out = tmp_path / "sweep"
    rows = json.loads((out / "results.json").read_text())
    assert [r["trial"] for r in rows] == ["trial-000", "trial-001"]
    assert sorted(r["train.lr"] for r in rows) == [0.0003, 0.003]
    assert all(r["state"] == "complete" and r["epochs_run"] == 1 for r in rows)
    best = max(rows, key=lambda r: r["best_val_accuracy"])
    for row in rows:
        sidecar = read_checkpoint(out / row["trial"] / "best.params").sidecar
        assert row["best_val_accuracy"] == sidecar.best_val_accuracy
        assert sidecar.config.train.lr == row["train.lr"]
    assert yaml.safe_load((out / "best.yaml").read_text())["train"]["lr"] == best["train.lr"]
    assert (out / "results.csv").read_text().splitlines()[0] == (
        "trial,train.lr,best_val_accuracy,best_epoch,epochs_run,finished,state")
    assert f"# best: {best['trial']}" in capsys.readouterr().out
    assert (out / "study.db").exists()  # SQLite, in the sweep folder, unless --storage


def test_a_sweep_run_again_skips_finished_trials(small_config, tmp_path, capsys):
    assert run(sweep_command, sweep(tmp_path, small_config)) == 0
    first = snapshot(tmp_path / "sweep", exclude={"study.db"})
    capsys.readouterr()
    assert run(sweep_command, sweep(tmp_path, small_config)) == 0
    err = capsys.readouterr().err
    assert "trial-000: complete earlier, skipped" in err and "started" not in err
    after = snapshot(tmp_path / "sweep", exclude={"study.db"})
    assert {k: v for k, v in after.items() if "trial-" in k} == {
        k: v for k, v in first.items() if "trial-" in k}


def test_a_killed_sweep_resumes_its_trial_from_the_checkpoint(small_config, tmp_path):
    """SIGKILL to the sweep: its trial is told (SIGTERM) and checkpoints; the same command
    run again resumes that trial, which ends where an uninterrupted run ends."""
    args = ["--config", small_config, "--out", tmp_path / "sweep", "--grid", "train.lr=0.003",
            "--set", "train.epochs=3", "--set", "checkpoint.every_steps=5"]
    first = mnist_sweep(*args)
    log = tmp_path / "sweep" / "trial-000.log"
    deadline = time.monotonic() + 60
    while not (tmp_path / "sweep" / "trial-000" / "last.json").exists():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    while "stopped by SIGTERM" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    again = mnist_sweep(*args)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert "trial-000: resumed  train.lr=0.003" in err
    assert "resuming at epoch" in log.read_text()
    rows = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert [(r["trial"], r["state"], r["epochs_run"]) for r in rows] == [
        ("trial-000", "complete", 3)]
    reference = tmp_path / "reference"
    run_training(load_config(small_config, ["train.lr=0.003", "train.epochs=3"]), reference,
                 quiet=True)
    resumed = read_checkpoint(tmp_path / "sweep" / "trial-000" / "last.params").arrays
    for name, array in read_checkpoint(reference / "last.params").arrays.items():
        np.testing.assert_array_equal(resumed[name], array, err_msg=name)


def test_the_pruner_stops_poor_trials_early_from_inside_their_runs(small_config, tmp_path):
    out = tmp_path / "sweep"
    assert run(sweep_command, [
        "--config", str(small_config), "--out", str(out), "--range",
        "train.lr=0.00001:0.01:log", "--sampler", "random", "--pruner", "median",
        "--trials", "5", "--set", "train.epochs=3"]) == 0
    rows = json.loads((out / "results.json").read_text())
    pruned = [r for r in rows if r["state"] == "pruned"]
    assert pruned and all(r["epochs_run"] < 3 for r in pruned)
    for row in pruned:
        sidecar = read_checkpoint(out / row["trial"] / "last.params").sidecar
        assert sidecar.early_stopping.stopped and sidecar.epoch == row["epochs_run"]
        assert "pruned: the sweep's median pruner stopped the run after epoch" in (
            out / f"{row['trial']}.log").read_text()
    best = yaml.safe_load((out / "best.yaml").read_text())
    complete = max((r for r in rows if r["state"] == "complete"),
                   key=lambda r: r["best_val_accuracy"])
    assert best["train"]["lr"] == pytest.approx(complete["train.lr"])


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_two_sweeps_share_one_study_in_postgresql(small_config, tmp_path, postgres, sampler):
    """Two processes, each in its own folder as on two machines, run 4 trials each of one
    study; none runs a trial another ran, no two trials try the same point (both samplers
    once proposed the same learning rates in lockstep: 8 trials, 4 distinct), and best.yaml
    trains to what the study says."""
    common = ["--config", small_config, "--range", "train.lr=0.0001:0.01:log", "--sampler",
              sampler, "--trials", "4", "--set", "train.epochs=1", "--storage", postgres,
              "--study", f"shared-{sampler}"]
    sweeps = [mnist_sweep(*common, "--out", tmp_path / name) for name in ("a", "b")]
    for process in sweeps:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    study = optuna.load_study(study_name=f"shared-{sampler}", storage=postgres)
    ran = [t for t in study.trials if "discarded" not in t.user_attrs]
    assert len(ran) == 8
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in ran)
    assert len({t.params["train.lr"] for t in ran}) == 8
    folders = {name: sorted(p.name for p in (tmp_path / name).glob("trial-*") if p.is_dir())
               for name in ("a", "b")}
    assert len(folders["a"]) == len(folders["b"]) == 4
    assert not set(folders["a"]) & set(folders["b"])
    best = tmp_path / "best"
    run_training(load_config(tmp_path / "a" / "best.yaml"), best, quiet=True)
    assert read_checkpoint(best / "best.params").sidecar.best_val_accuracy == study.best_value


def test_two_sweeps_share_a_grid_and_run_each_point_once(small_config, tmp_path, postgres):
    common = ["--config", small_config, "--grid", "train.lr=0.001,0.002,0.003",
              "--grid", "model.hidden=8,16", "--set", "train.epochs=1", "--storage", postgres,
              "--study", "shared-grid"]
    sweeps = [mnist_sweep(*common, "--out", tmp_path / name) for name in ("a", "b")]
    for process in sweeps:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    study = optuna.load_study(study_name="shared-grid", storage=postgres)
    points = [tuple(sorted(t.params.items())) for t in study.trials
              if "discarded" not in t.user_attrs]
    assert len(points) == len(set(points)) == 6


def test_the_up_front_check_of_many_ranges_is_linear_not_one_config_per_corner():
    """17 --range keys once meant 131,072 config loads before the first trial."""
    from mnist_gluon.config import config_file
    from mnist_gluon.sweep.search import Axis, Search

    keys = ["train.lr", "train.momentum", "train.weight_decay", "train.warmup_epochs",
            "train.lr_decay", "train.label_smoothing", "model.dropout", "model.hidden",
            "train.clip_gradient", "data.augment.rotate", "data.augment.scale",
            "data.augment.shift", "data.augment.elastic.alpha", "data.augment.elastic.sigma",
            "train.early_stopping.min_delta", "train.epochs", "train.batch_size"]
    axes = tuple(Axis(key, low=1, high=2) for key in keys)
    search = Search(config_file("base"), (), axes, "tpe", "none", 0)
    points = search.check_points()
    assert len(points) <= 4 * len(keys)
    for key in keys:  # each end of each range is in some point
        for end in (1, 2):
            assert any(f"{key}={end}" in point for point in points)


@pytest.mark.parametrize("args, message", [
    (["--grid", "train.lr"], "is not KEY=V1,V2"),
    (["--grid", "train.lr=-1,0.1"], r"train.lr is -1"),
    (["--grid", "train.lrate=0.1"], "did you mean train.lr"),
    (["--range", "train.lr=0.5:0.1"], "LOW must be below HIGH"),
    (["--range", "train.lr=a:b"], "LOW and HIGH must be numbers"),
    (["--range", "train.lr=0.01:0.1", "--sampler", "grid"], "--sampler grid takes --grid"),
    (["--set", "train.epochs=2"], "give at least one --grid or --range"),
    (["--range", "train.lr=0.01:0.1", "--random", "1", "--sampler", "tpe"],
     "--random N is short for --sampler random --trials N; drop --sampler tpe"),
    (["--range", "train.lr=0.01:0.1", "--random", "2", "--trials", "3"], "drop --trials"),
    # each range's ends are checked beside the other ranges' ends
    (["--range", "train.lr=0.01:0.1", "--range", "train.momentum=0.5:1.5"],
     "train.momentum is 1.5"),
])
def test_bad_sweeps_are_one_line_exit_2_before_any_trial_runs(small_config, tmp_path, capsys,
                                                              args, message):
    code = run(sweep_command, ["--config", str(small_config), "--out", str(tmp_path / "s"),
                               *args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "s").exists()


def test_a_folder_holding_another_sweep_is_refused(small_config, tmp_path, capsys):
    assert run(sweep_command, sweep(tmp_path, small_config)) == 0
    before = snapshot(tmp_path / "sweep")
    args = sweep(tmp_path, small_config)
    args[args.index("train.lr=0.0003,0.003")] = "train.lr=0.01"
    assert run(sweep_command, args) == 2
    assert "holds another sweep" in capsys.readouterr().err
    assert snapshot(tmp_path / "sweep") == before


def test_mnist_sweep_is_installed():
    result = subprocess.run([str(BIN / "mnist-sweep"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--range" in result.stdout and "--storage" in result.stdout


def test_without_the_extra_mnist_sweep_says_how_to_install_it(small_config, tmp_path):
    result = without_module("optuna", tmp_path, "sweep_command", [
        "--config", small_config, "--grid", "train.lr=0.1", "--out", tmp_path / "sweep"])
    assert result.returncode == 2
    assert result.stderr.startswith("mnist-sweep: error: mnist-sweep needs optuna: ")
    assert len(result.stderr.splitlines()) == 1
    check_install_hint(result.stderr)
    assert not (tmp_path / "sweep").exists()


def test_sigterm_stops_the_sweep_and_its_trials_with_checkpoints(small_config, tmp_path):
    args = ["--config", small_config, "--out", tmp_path / "sweep", "--grid", "train.lr=0.003",
            "--set", "train.epochs=3", "--set", "checkpoint.every_steps=5"]
    process = checkpointed_sweep(args, tmp_path / "sweep")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == (
        "mnist-sweep: stopped by SIGTERM; the trials saved checkpoints: run the same command "
        "again to continue")
    assert "stopped by SIGTERM" in (tmp_path / "sweep" / "trial-000.log").read_text()
    again = mnist_sweep(*args)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0 and "trial-000: resumed" in err


def test_the_same_sweep_started_twice_on_one_folder_is_refused_and_the_first_goes_on(
        small_config, tmp_path):
    """The second marked the first's running trial failed, and the first crashed."""
    args = ["--config", small_config, "--out", tmp_path / "sweep", "--grid", "train.lr=0.003",
            "--set", "train.epochs=1000", "--set", "checkpoint.every_steps=5"]
    first = checkpointed_sweep(args, tmp_path / "sweep")
    second = mnist_sweep(*args)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 2
    assert err == (f"mnist-sweep: error: {tmp_path / 'sweep'} is in use by a running "
                   f"mnist-sweep (PID {first.pid}); wait for it to end, stop it, or pass "
                   "--out DIR for a new run\n")
    assert first.poll() is None  # still training its trial
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 143, err
    assert err.strip().splitlines()[-1] == (  # not "Cannot tell a FAIL trial"
        "mnist-sweep: stopped by SIGTERM; the trials saved checkpoints: run the same command "
        "again to continue")


def test_a_damaged_sweep_plan_is_one_line(small_config, tmp_path):
    args = ["--config", small_config, "--out", tmp_path / "sweep", "--grid", "train.lr=0.003",
            "--set", "train.epochs=1"]
    assert mnist_sweep(*args).wait(timeout=120) == 0
    plan = tmp_path / "sweep" / "sweep.json"
    plan.write_text(plan.read_text()[:40])
    process = mnist_sweep(*args)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert err.startswith(f"mnist-sweep: error: {plan} is damaged (") and err.count("\n") == 1
    assert err.endswith("; restore it to continue the sweep, or pass --out DIR for a new one\n")


@pytest.mark.parametrize("storage", [
    "postgresql://bob:{pw}@127.0.0.1:{port}/db",
    "postgresql://bob@127.0.0.1:{port}/db?sslmode=disable&password={pw}",
])
def test_a_storage_password_never_shows_in_a_message(small_config, tmp_path, storage):
    """Only user:pass@ was hidden; ?password= showed when the database could not be reached."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = storage.format(pw="Sesame-4711", port=port)
    process = mnist_sweep("--config", small_config, "--out", tmp_path / "sweep", "--grid",
                          "train.lr=0.003", "--storage", url)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2 and err.count("\n") == 1
    assert "cannot be opened in postgresql://bob" in err and "***" in err
    assert "Sesame-4711" not in out + err
