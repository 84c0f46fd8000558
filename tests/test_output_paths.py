"""Where a command writes is checked before it works: a name over 255 bytes, a name that is
not UTF-8 (MXNet cannot open it) and a folder that cannot be written are one line and exit
status 2 before any training or evaluation; a stop by SIGTERM takes away what was half-made;
and --force never clears a run's own teacher."""

import os
import signal
import subprocess
import time

import pytest

import mnist_gluon
from mnist_gluon.errors import OutputError
from support import BIN, unwritable


def command(*args, cwd=None, timeout=300):
    return subprocess.run([str(BIN / args[0]), *map(os.fsdecode, args[1:])], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


LONG = "x" * 300
NOT_UTF8 = os.fsdecode(b"run-\xff")


@pytest.mark.parametrize("name, words", [
    (LONG, "has 300 bytes, over the 255 a file system takes; choose a shorter one"),
    (NOT_UTF8, "has a name that is not UTF-8, which MXNet cannot open; rename it"),
])
def test_an_output_name_no_file_system_or_mxnet_takes_is_refused_before_training(
        small_config, model, tmp_path, name, words):
    started = time.monotonic()
    done = command("mnist-train", "--config", small_config, "--out", tmp_path / name,
                   "--set", "train.epochs=50")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and words in done.stderr
    assert time.monotonic() - started < 30  # refused up front, not after 50 epochs
    for args in (["mnist-export", model, "--out", tmp_path / name],
                 ["mnist-eval", model, "--plot", tmp_path / name]):
        done = command(*args)
        assert done.returncode == 2 and words in done.stderr, done.stderr
    assert sorted(os.listdir(tmp_path)) == [small_config.name]
    with pytest.raises(OutputError, match="not UTF-8"):
        mnist_gluon.export(model, tmp_path / NOT_UTF8)


def test_an_unwritable_plot_folder_is_refused_before_evaluating(model, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    with unwritable(locked):
        done = command("mnist-eval", model, "--plot", locked / "plots")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"mnist-eval: error: --plot folder {locked / 'plots'} is not "
                                  "writable (") and done.stderr.count("\n") == 1


def test_sigterm_during_an_export_leaves_no_staging_folder(model, mnist_dir, tmp_path):
    out = tmp_path / "export"
    process = subprocess.Popen([str(BIN / "mnist-export"), str(model), "--out", str(out),
                                "--quantize", "int8", "--data-root", str(mnist_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.iterdir())):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert err == "mnist-export: stopped by SIGTERM; nothing half-written was kept\n"
    assert list(out.iterdir()) == []


def test_force_never_clears_the_runs_own_teacher(small_config, tmp_path):
    run_dir = tmp_path / "run"
    assert command("mnist-train", "--config", small_config, "--out", run_dir,
                   "--quiet").returncode == 0
    before = (run_dir / "best.params").read_bytes()
    done = command("mnist-train", "--config", small_config, "--out", run_dir, "--force",
                   "--set", f"train.distill.teacher={run_dir / 'best.params'}")
    assert done.returncode == 2 and done.stderr == (
        f"mnist-train: error: train.distill.teacher {run_dir / 'best.params'} is in {run_dir}, "
        "which --force clears; copy the teacher elsewhere and name the copy, or pass --out "
        "DIR\n")
    assert (run_dir / "best.params").read_bytes() == before
