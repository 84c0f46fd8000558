"""The set-up a newcomer runs: `make train`'s script reports a run folder it finds instead of
refusing it in mnist-train's words, and ends by saying how to use the commands; scripts/install
gives uv pip's settings with pip's leniency."""

import os
import subprocess
import sys

from support import REPO


def make_train(cwd, config, *args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "make-train"), str(config),
                           "", "--", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_make_train_trains_then_says_how_to_run_the_commands(small_config, tmp_path):
    done = make_train(tmp_path, small_config, "--quiet")
    assert done.returncode == 0, done.stderr
    run_dir = f"runs/{small_config.stem}"
    assert (tmp_path / run_dir / "best.params").is_file()
    venv = os.path.relpath(os.path.dirname(os.path.dirname(sys.executable)), tmp_path)
    assert f"activate it with `source {venv}/bin/activate`" in done.stdout
    assert f"mnist-eval {run_dir}" in done.stdout
    # Again: the finished run is reported, with the make command that trains it again.
    again = make_train(tmp_path, small_config)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"{run_dir} holds a finished run of 2 epochs; best "
                                   "validation accuracy ")
    assert "train it again:  make train ARGS=--force" in again.stdout
    assert "continue it" not in again.stdout and "--force" not in again.stderr
    forced = make_train(tmp_path, small_config, "--force", "--quiet")
    assert forced.returncode == 0 and "done: best validation accuracy" in forced.stdout


def test_make_train_on_a_stopped_run_says_how_to_continue_it(small_config, tmp_path):
    assert make_train(tmp_path, small_config, "--quiet").returncode == 0
    run_dir = tmp_path / "runs" / small_config.stem
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("epochs: 2\n", "epochs: 5\n"))
    done = make_train(tmp_path, small_config)
    assert done.returncode == 0
    assert done.stdout.startswith(f"runs/{small_config.stem} holds a run stopped at epoch 2 of 5")
    assert f"mnist-train --resume runs/{small_config.stem}" in done.stdout


def test_install_skips_a_find_links_folder_that_is_not_there_as_pip_does(tmp_path):
    """uv stopped at once: "Failed to read --find-links directory"."""
    env = {**os.environ, "PIP_FIND_LINKS": str(tmp_path / "gone")}
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "install"), "--dry-run",
                           "pyyaml"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"install: skipping the find-links location {tmp_path / 'gone'}: it does not exist" \
        in done.stderr
    assert str(tmp_path / "gone") not in done.stdout  # not passed to uv


def test_the_repository_carries_its_license():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
