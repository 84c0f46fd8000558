"""MXNet's engine and OpenMP threads are chosen per command (mnist_gluon.engine): training on
the config's `threads` (auto: every core for a LeNet and for the MLP's compiled step, one
otherwise), recording the count that its numbers may depend on; evaluation on every core. What
a command computes does not depend on the engine."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from support import BIN, write_small_config

THREADED = {"MXNET_ENGINE_TYPE": "ThreadedEnginePerDevice"}
NAIVE = {"MXNET_ENGINE_TYPE": "NaiveEngine"}


def command(name: str, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("MXNET_ENGINE_TYPE", "OMP_NUM_THREADS")}
    return subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True,
                          env={**clean, **(env or {})}, timeout=300)


def train(config, out, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    result = command("mnist-train", "--config", config, "--out", out, "--quiet", *args, env=env)
    assert result.returncode == 0, result.stderr
    return result


def recorded_threads(run_dir) -> int:
    return json.loads((run_dir / "last.json").read_text())["threads"]


def thread_sensitive_config(small_mnist, tmp_path):
    # The document's 128 hidden units in batches of 64: where 1 and 2 OpenMP threads give
    # other parameters on this project's machines (MKLDNN splits the gradient sums).
    path = write_small_config(tmp_path / "small.yaml", small_mnist)
    path.write_text(path.read_text().replace("batch_size: 50", "batch_size: 64")
                    .replace("hidden: 32", "hidden: 128"))
    return path


def test_training_runs_on_one_openmp_thread_and_records_it(small_config, tmp_path):
    train(small_config, tmp_path / "run")
    assert recorded_threads(tmp_path / "run") == 1
    assert json.loads((tmp_path / "run" / "best.json").read_text())["threads"] == 1


def test_threads_auto_trains_the_compiled_step_on_every_core_and_records_it(small_config,
                                                                           tmp_path):
    train(small_config, tmp_path / "run", "--set", "train.optimizer=nag")
    assert recorded_threads(tmp_path / "run") == len(os.sched_getaffinity(0))
    train(small_config, tmp_path / "mxnet", "--set", "train.optimizer=nag",
          "--set", "kernels=mxnet")
    assert recorded_threads(tmp_path / "mxnet") == 1


def test_a_forced_run_chooses_its_threads_before_mxnet_starts(small_config, tmp_path):
    train(small_config, tmp_path / "run")
    train(small_config, tmp_path / "run", "--force")
    assert recorded_threads(tmp_path / "run") == 1


RANGE = "it must be auto, or a number of threads in [1, 1024]"


@pytest.mark.parametrize("value, said", [
    ("0", f"threads is 0; {RANGE}"),
    ("1025", f"threads is 1025; {RANGE}"),
    ("lots", f"threads is 'lots'; {RANGE}"),
    ("true", "threads must be a number or a word, got True"),
])
def test_a_thread_count_the_config_cannot_use_is_one_line_naming_the_key(small_config, tmp_path,
                                                                         value, said):
    result = command("mnist-train", "--config", small_config, "--out", tmp_path / "run",
                     "--set", f"threads={value}")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"mnist-train: error: {said}"]
    assert not (tmp_path / "run").exists()


def test_a_thread_count_set_in_the_environment_stands_and_is_recorded(small_config, tmp_path):
    train(small_config, tmp_path / "run", env={"OMP_NUM_THREADS": "2"})
    assert recorded_threads(tmp_path / "run") == 2


def rewound_to_epoch_1(run_dir, copy):
    """A copy of a finished 2-epoch run as it stood after its first epoch (checkpoint.keep=2
    kept that epoch's checkpoint): the run, interrupted there."""
    shutil.copytree(run_dir, copy)
    for suffix in (".params", ".states", ".json"):
        shutil.copy(copy / f"epoch-0001{suffix}", copy / f"last{suffix}")
        (copy / f"epoch-0002{suffix}").unlink()
    return copy


def test_a_resume_continues_on_the_recorded_count_whatever_the_environment_asks(
        small_mnist, tmp_path):
    config = thread_sensitive_config(small_mnist, tmp_path)
    train(config, tmp_path / "whole", "--set", "checkpoint.keep=2")
    train(config, tmp_path / "two-threads", env={"OMP_NUM_THREADS": "2"})
    resumed = rewound_to_epoch_1(tmp_path / "whole", tmp_path / "resumed")
    result = command("mnist-train", "--resume", resumed, "--quiet",
                     env={"OMP_NUM_THREADS": "2"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "mnist-train: resuming on the 1 OpenMP thread this run was trained on, not "
        "OMP_NUM_THREADS=2: its numbers depend on the count"]
    assert recorded_threads(resumed) == 1
    whole = (tmp_path / "whole" / "last.params").read_bytes()
    assert (resumed / "last.params").read_bytes() == whole
    # The count matters here: had the resume taken the environment's, it would differ.
    assert (tmp_path / "two-threads" / "last.params").read_bytes() != whole


def test_a_resume_where_mxnet_already_runs_on_another_count_is_refused_in_one_line(
        small_config, tmp_path):
    run_dir = tmp_path / "run"
    train(small_config, run_dir, "--set", "train.epochs=1")
    kept = (run_dir / "last.params").read_bytes()
    script = ("import mnist_gluon\n"
              "mnist_gluon.mx.nd.zeros(1)\n"
              "try:\n"
              f"    mnist_gluon.train(out={str(run_dir)!r}, resume=True, train={{'epochs': 2}},"
              " quiet=True)\n"
              "except mnist_gluon.UserError as error:\n"
              "    print(error)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "2"}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{run_dir} was trained on 1 OpenMP thread, and its numbers depend on the count, but "
        "MXNet was imported here on 2 OpenMP threads before the run could "
        f"choose; resume it in a new process: mnist_gluon.train(out=\"{run_dir}\", "
        "resume=True)"]
    assert (run_dir / "last.params").read_bytes() == kept


def test_a_thread_count_that_is_not_a_number_is_one_line_naming_the_variable(small_config,
                                                                             tmp_path):
    result = command("mnist-train", "--config", small_config, "--out", tmp_path / "run",
                     env={"OMP_NUM_THREADS": "two"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "mnist-train: error: OMP_NUM_THREADS='two' is not a number of threads; set it to a "
        "whole number such as 1, or unset it (training uses 1)"]
    assert not (tmp_path / "run").exists()


def test_training_on_either_engine_writes_the_same_parameters(small_config, tmp_path):
    runs = {}
    for name, env in (("chosen", None), ("synchronous", NAIVE)):
        result = train(small_config, tmp_path / name, "--set", "train.batch_size=256", env=env)
        assert "engine" not in result.stderr  # MXNet's "start using engine" line is kept quiet
        runs[name] = (tmp_path / name / "last.params").read_bytes()
    assert runs["chosen"] == runs["synchronous"]


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
