"""A run folder's files are written in the folder, never through a symbolic link: a link
where the command would write or read (`.lock`, `metrics.jsonl`, a checkpoint, the sweep's
files) is refused in one line, before any work, and its target is left as it was."""

import os
import subprocess

import pytest

from support import BIN


@pytest.mark.parametrize("name", [".lock", "metrics.jsonl", "last.params", "config.yaml"])
@pytest.mark.parametrize("dangling", [False, True], ids=["to a file", "dangling"])
def test_a_link_in_the_run_folder_is_refused_and_its_target_untouched(small_config, tmp_path,
                                                                     name, dangling):
    target = tmp_path / "precious"
    if not dangling:
        target.write_text("the user's own file\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.symlink(target, run_dir / name)
    for extra in ([], ["--force"]):
        done = subprocess.run([str(BIN / "mnist-train"), "--config", str(small_config), "--out",
                               str(run_dir), "--quiet", *extra], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 2
        assert done.stderr == (f"mnist-train: error: {run_dir / name} is a symbolic link; "
                               "mnist-train writes only real files in its folder: remove the "
                               "link, or pass --out DIR\n")
    assert sorted(p.name for p in run_dir.iterdir()) == [name]
    if dangling:
        assert not target.exists()
    else:
        assert target.read_text() == "the user's own file\n"


def test_a_link_in_a_sweep_folder_is_refused(small_config, tmp_path):
    out = tmp_path / "sweep"
    sweep = [str(BIN / "mnist-sweep"), "--config", str(small_config), "--out", str(out),
             "--grid", "train.lr=0.003", "--set", "train.epochs=1"]
    assert subprocess.run(sweep, capture_output=True, timeout=300).returncode == 0
    (tmp_path / "elsewhere").write_text("the user's own file\n")
    (out / ".lock").unlink()
    os.symlink(tmp_path / "elsewhere", out / ".lock")
    done = subprocess.run(sweep, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"mnist-sweep: error: {out / '.lock'} is a symbolic link; mnist-sweep "
                           "writes only real files in its folder: remove the link, or pass "
                           "--out DIR\n")
    assert (tmp_path / "elsewhere").read_text() == "the user's own file\n"
