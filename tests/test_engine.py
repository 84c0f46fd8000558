"""MXNet's engine is chosen per command for speed (mnist_gluon.engine); what a command computes
and prints does not depend on the choice."""

import json
import os
import subprocess

import pytest

from mnist_gluon import engine
from support import BIN

THREADED = {"MXNET_ENGINE_TYPE": "ThreadedEnginePerDevice"}


def command(name: str, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("MXNET_ENGINE_TYPE", "OMP_NUM_THREADS")}
    return subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True,
                          env={**clean, **(env or {})}, timeout=300)


@pytest.mark.parametrize(("batch_size", "device", "kvstore", "synchronous"), [
    (256, "cpu", "local", True),
    (512, "auto", "local", True),  # the mxnet package installed here is the CPU build
    (128, "cpu", "local", False),  # small steps: Python queues the next while one runs
    (256, "cpu:0,1", "local", False),  # several devices run side by side on worker threads
    (256, "cpu", "dist_sync", False),
    (256, "gpu", "local", False),
])
def test_training_takes_every_core_for_big_steps_on_one_cpu(batch_size, device, kvstore,
                                                            synchronous):
    settings = engine.training_settings(batch_size, device, kvstore)
    assert bool(settings) == synchronous
    if synchronous:
        assert settings["MXNET_ENGINE_TYPE"] == "NaiveEngine"
        assert int(settings["OMP_NUM_THREADS"]) == len(os.sched_getaffinity(0))


def test_side_by_side_trials_keep_the_threaded_engine():
    assert engine.shared_settings(1) == {}
    assert engine.shared_settings(2) == THREADED


def test_training_on_either_engine_writes_the_same_parameters(small_config, tmp_path):
    runs = {}
    for name, env in (("chosen", None), ("threaded", THREADED)):
        result = command("mnist-train", "--config", small_config, "--out", tmp_path / name,
                         "--set", "train.batch_size=256", "--quiet", env=env)
        assert result.returncode == 0, result.stderr
        assert "engine" not in result.stderr  # MXNet's "start using engine" line is kept quiet
        runs[name] = (tmp_path / name / "last.params").read_bytes()
    assert runs["chosen"] == runs["threaded"]


def test_evaluation_on_either_engine_reports_the_same_figures(model, mnist_dir):
    reports = []
    for env in (None, THREADED):
        result = command("mnist-eval", "--checkpoint", model, "--data-root", mnist_dir,
                         "--json", env=env)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        reports.append(json.loads(result.stdout))
    assert reports[0] == reports[1]
    assert reports[0]["accuracy"] > 0.9
