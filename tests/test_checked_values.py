"""Every value is checked alike, whether it comes from a config file, a flag or the Python API:
a number float32 cannot hold as it is (too large, or so small that it becomes 0 or a
subnormal), a normalisation that is not two finite numbers with a positive std, a dataset or a
quantization this version does not make, a control character in a config file. Each is one
line and exit status 2 from a command, a UserError from the API, and nothing written."""

import json
import shutil

import pytest

import mnist_gluon
from mnist_gluon.checkpoint import signed
from mnist_gluon.cli import eval_command, export_command, predict_command, run, train_command
from mnist_gluon.errors import ConfigError


@pytest.mark.parametrize("key", ["train.lr", "model.dropout", "train.label_smoothing",
                                 "train.momentum", "data.augment.rotate"])
@pytest.mark.parametrize("value", ["1e-320", "1e-39", "-1e-40"])
def test_a_number_float32_would_make_0_or_subnormal_is_refused_naming_its_key(key, value,
                                                                              capsys):
    assert run(train_command, ["--config", "base", "--set", f"{key}={value}",
                               "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{key} is {float(value)!r}; MXNet computes in float32, whose smallest normal " \
           "number is 1.175e-38: use 0 or a larger value" in err


def test_the_smallest_normal_float32_and_zero_are_taken(capsys):
    assert run(train_command, ["--config", "base", "--set", "train.lr=1.2e-38", "--set",
                               "model.dropout=0", "--print-config"]) == 0
    assert "lr: 1.2e-38" in capsys.readouterr().out


def test_a_control_character_in_a_config_file_is_one_line(tmp_path, capsys):
    config = tmp_path / "bell.yaml"
    config.write_bytes(b"seed: 1\ntrain:\n  lr: 0.1\x07\n")
    assert run(train_command, ["--config", str(config), "--print-config"]) == 2
    assert capsys.readouterr().err == (
        f"mnist-train: error: config file {config} is not valid YAML: it holds the control "
        "character '\\x07' at character 25; remove it\n")


@pytest.fixture
def bare(model, tmp_path):
    """The model's parameters without their sidecar, as a plain Gluon script saves them."""
    shutil.copy(model, tmp_path / "bare.params")
    return tmp_path / "bare.params"


@pytest.mark.parametrize("given, words", [
    ("nan,0.3081", "--normalize's mean must be a finite number, got 'nan'"),
    ("0.1307,inf", "--normalize's std must be a finite number, got 'inf'"),
    ("0.1307,0", "--normalize's std is 0; it must be greater than 0"),
    ("0.1307,-1", "--normalize's std is -1; it must be greater than 0"),
    ("0.1307,1e-45", "--normalize's std is 1e-45; MXNet computes in float32"),
    ("0.1307", "--normalize must be two numbers, MEAN,STD"),
])
def test_a_normalisation_that_cannot_mean_anything_is_refused_by_every_command(
        bare, given, words, tmp_path, capsys):
    digit = tmp_path / "digit.npy"
    import numpy as np

    np.save(digit, np.eye(28) * 255)
    for command, args in ((predict_command, [str(bare), str(digit)]),
                          (eval_command, [str(bare)]),
                          (export_command, [str(bare), "--out", str(tmp_path / "export")])):
        assert run(command, [*args, "--normalize", given]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("normalization, words", [
    ((0.1307, 0), "normalization's std is 0; it must be greater than 0"),
    ((float("nan"), 0.3081), "normalization's mean must be a finite number"),
    ((0.1307,), "normalization must be a Normalization or a (mean, std) pair or None"),
    ("0.1,0.3", "normalization must be a Normalization or a (mean, std) pair or None"),
])
def test_the_api_checks_a_normalisation_as_the_flag_does(bare, normalization, words):
    import re

    with pytest.raises(ConfigError, match=re.escape(words)):
        mnist_gluon.load(bare, normalization=normalization)
    with pytest.raises(ConfigError, match=re.escape(words)):
        mnist_gluon.evaluate(bare, normalization=normalization)


def test_export_refuses_a_quantization_it_does_not_make(model, tmp_path):
    with pytest.raises(ConfigError, match="quantize='int4': choose int8"):
        mnist_gluon.export(model, tmp_path / "out", "mxnet", "int4")
    assert not (tmp_path / "out").exists()


def test_an_unknown_dataset_is_named_not_a_key_error(model, tmp_path, capsys):
    with pytest.raises(ConfigError, match="dataset='kmnist' is not a dataset mnist-gluon knows; "
                                          "choose one of mnist, fashion-mnist"):
        mnist_gluon.evaluate(model, "kmnist")
    copy = tmp_path / "run"
    copy.mkdir()
    for suffix in (".params", ".json"):
        shutil.copy(model.with_suffix(suffix), copy / f"best{suffix}")
    sidecar = json.loads((copy / "best.json").read_text())
    sidecar["data"]["name"] = "kmnist"
    (copy / "best.json").write_text(json.dumps(signed(sidecar)))
    for command, args in ((eval_command, [str(copy)]),
                          (export_command, [str(copy), "--out", str(tmp_path / "export")])):
        assert run(command, args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "holds an impossible dataset 'kmnist'" in err, err
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("command, args, words", [
    ("mnist-sweep", ["--config", "smoke", "--out", "x", "--grid", "train.lr=1", "--jobs", "1000"],
     "1000 is not in the range 1<=x<=64"),
    ("mnist-serve", ["model", "--header-timeout", "1e308"], "is not in the range 0<x<=86400"),
    ("mnist-serve", ["model", "--keep-alive-timeout", "inf"], "is not in the range 0<x<=86400"),
])
def test_how_many_processes_and_how_long_a_timer_are_bounded(command, args, words, tmp_path):
    import subprocess

    from support import BIN

    done = subprocess.run([str(BIN / command), *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and words in done.stderr
    assert list(tmp_path.iterdir()) == []
