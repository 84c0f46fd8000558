"""mnist-sweep: every trial a run folder, chosen on validation, continued when run again."""

import json
import subprocess

import pytest
import yaml

from mnist_gluon.cli import run, sweep_command
from mnist_gluon.config import load_config
from mnist_gluon.errors import Stopped
from mnist_gluon.training.run import run_training
from support import BIN, snapshot


def sweep(tmp_path, small_config, *extra) -> list[str]:
    return ["--config", str(small_config), "--out", str(tmp_path / "sweep"),
            "--grid", "train.lr=0.0003,0.003", "--set", "train.epochs=1", *extra]


def test_a_sweep_runs_every_trial_and_picks_the_best_on_validation(small_config, tmp_path,
                                                                    capsys):
    assert run(sweep_command, sweep(tmp_path, small_config, "--jobs", "2")) == 0
    out = tmp_path / "sweep"
    rows = json.loads((out / "results.json").read_text())
    assert [r["trial"] for r in rows] == ["trial-000", "trial-001"]
    assert [r["train.lr"] for r in rows] == [0.0003, 0.003]
    best = max(rows, key=lambda r: r["best_val_accuracy"])
    for row in rows:
        meta = json.loads((out / row["trial"] / "best.json").read_text())
        assert row["best_val_accuracy"] == meta["best_val_accuracy"]
    assert yaml.safe_load((out / "best.yaml").read_text())["train"]["lr"] == best["train.lr"]
    assert (out / "results.csv").read_text().splitlines()[0] == (
        "trial,train.lr,best_val_accuracy,best_epoch,epochs_run,finished")
    assert f"# best: {best['trial']}" in capsys.readouterr().out


def test_a_sweep_run_again_skips_finished_trials_and_resumes_interrupted_ones(small_config,
                                                                           tmp_path, capsys):
    assert run(sweep_command, sweep(tmp_path, small_config)) == 0
    out = tmp_path / "sweep"
    first = snapshot(out / "trial-000")
    # trial-001 as a Ctrl-C would leave it: stopped inside its epoch, checkpointed.
    for path in (out / "trial-001").iterdir():
        path.unlink()
    (out / "trial-001").rmdir()
    with pytest.raises(Stopped):
        run_training(load_config(small_config, ["train.epochs=1", "train.lr=0.003"]),
                     out / "trial-001", quiet=True, stop_signal=iter([None] * 20 + [2]).__next__)
    capsys.readouterr()
    assert run(sweep_command, sweep(tmp_path, small_config)) == 0
    err = capsys.readouterr().err
    assert "trial-000: finished earlier, skipped" in err and "trial-001: started" in err
    assert "resuming at epoch 1, step 22 of 50" in (out / "trial-001.log").read_text()
    assert snapshot(out / "trial-000") == first


@pytest.mark.parametrize("args, message", [
    (["--grid", "train.lr"], "is not KEY=V1,V2"),
    (["--grid", "train.lr=-1,0.1"], r"train.lr is -1"),
    (["--grid", "train.lrate=0.1"], "did you mean train.lr"),
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
    assert result.returncode == 0 and "--grid" in result.stdout
