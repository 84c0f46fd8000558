"""MXNet 1.9.1 on numpy 1.26 and on numpy 2: what mxnet_compat puts back, and host-side
arithmetic that numpy 2's promotion rules (NEP 50) leave unchanged.

CI runs the whole suite on each line; scripts/numpy_lines.py compares the two lines' trained
parameters and command outputs bit for bit."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from mnist_gluon import mxnet_compat
from mnist_gluon.cli import eval_command, export_command, predict_command, run, train_command

NUMPY_2 = int(np.__version__.split(".")[0]) >= 2
# What a Gluon user can reach; each is walked with all its submodules. mxnet.onnx's setup.py
# is a packaging script, not a module.
PACKAGES = ("gluon", "contrib", "numpy", "numpy_extension", "onnx", "image", "io", "kvstore",
            "ndarray", "symbol", "optimizer", "module", "model")
WALK = """
import importlib, pkgutil, sys, warnings
warnings.simplefilter("ignore")
PREPARE
try:
    import mnist_gluon.mxnet_compat
except Exception as error:
    print(f"mxnet: {type(error).__name__}: {error}")
    sys.exit()
failed = []
for package in PACKAGES:
    package = "mxnet." + package
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), package + "."):
        if info.name == "mxnet.onnx.setup":
            continue
        try:
            importlib.import_module(info.name)
        except Exception as error:
            failed.append(f"{info.name}: {type(error).__name__}: {error}")
print("\\n".join(failed))
"""
# Run before `import mxnet` begins: takes one name that mxnet_compat restored away again.
TAKE_AWAY = """
import numpy
class TakeAway:
    def find_spec(self, module, path=None, target=None):
        if module == "mxnet":
            compat = sys.modules["mnist_gluon.mxnet_compat"]
            compat.FINANCIAL = tuple(n for n in compat.FINANCIAL if n != {name!r})
            numpy.__dict__.pop({name!r}, None)
        return None
sys.meta_path.insert(0, TakeAway())
"""


def walk_mxnet(prepare: str = "") -> list[str]:
    """Import every submodule of the PACKAGES in a fresh interpreter: the ones that failed."""
    script = WALK.replace("PREPARE", prepare).replace("PACKAGES", repr(PACKAGES))
    done = subprocess.run([sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_every_mxnet_submodule_a_gluon_user_can_reach_imports():
    assert walk_mxnet() == []


@pytest.mark.parametrize("name", [*mxnet_compat.RESTORED, *mxnet_compat.FINANCIAL])
def test_each_restored_name_is_one_that_mxnet_reads(name):
    if NUMPY_2:
        failed = walk_mxnet(TAKE_AWAY.format(name=name))
        assert failed and all(name in line for line in failed), failed
    else:  # numpy 1.26 has them all, and mxnet_compat leaves numpy's own alone
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = getattr(np, name)
        assert value is not mxnet_compat.RESTORED.get(name)
        assert getattr(value, "__module__", "numpy") == "numpy"


def test_restored_constants_are_numpy_1_26s():
    assert np.PZERO == 0.0 and math.copysign(1, np.PZERO) == 1
    assert np.NZERO == 0.0 and math.copysign(1, np.NZERO) == -1
    assert np.PINF == np.Inf == math.inf
    assert math.isinf(np.NINF) and np.NINF < 0
    assert math.isnan(np.NAN) and math.isnan(np.NaN)


@pytest.mark.parametrize(("name", "replacement", "args", "expected"), [
    ("alltrue", "all", ([True, False],), False),
    ("sometrue", "any", ([True, False],), True),
    ("product", "prod", ([2, 3, 4],), 24),
    ("round_", "round", ([1.256, 2.5], 1), [1.3, 2.5]),
])
def test_restored_aliases_compute_and_warn_as_numpy_1_26s(name, replacement, args, expected):
    with pytest.warns(DeprecationWarning, match=(
            f"`{name}` is deprecated as of NumPy 1.25.0, and will be removed in NumPy 2.0. "
            f"Please use `{replacement}` instead.")):
        result = getattr(np, name)(*args)
    assert np.array_equal(result, expected)


def test_restored_msort_sorts_along_the_first_axis_and_warns():
    with pytest.warns(DeprecationWarning, match=r"msort is deprecated, use np.sort\(a, axis=0\)"):
        result = np.msort([[3, 1], [1, 2]])
    assert result.tolist() == [[1, 1], [3, 2]]


@pytest.mark.parametrize("name", mxnet_compat.FINANCIAL)
def test_financial_names_are_stubs_that_warn_when_taken_and_raise_when_called(name):
    with pytest.warns(DeprecationWarning, match=f"the function {name} was removed"):
        stub = getattr(np, name)
    with pytest.raises(RuntimeError, match="numpy_financial library"):
        stub(0.1, [1.0])


@pytest.mark.parametrize("name", ["fv", "irr", "float_", "cast"])
def test_names_numpy_2_removed_and_mxnet_does_not_read_stay_removed(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert hasattr(np, name) is not NUMPY_2


def test_the_onnx_exporter_finds_the_type_tables_it_reads():
    import onnx

    mxnet_compat.onnx_exporter()
    mapping = onnx.mapping
    assert mapping.NP_TYPE_TO_TENSOR_TYPE[np.dtype("float32")] == onnx.TensorProto.FLOAT
    assert mapping.NP_TYPE_TO_TENSOR_TYPE[np.dtype("int64")] == onnx.TensorProto.INT64
    assert mapping.TENSOR_TYPE_TO_NP_TYPE[onnx.TensorProto.BOOL] == np.dtype("bool")


# --- numpy 2's promotion rules ---------------------------------------------------------------

RUNS = {  # every host-side path of the training graph, on the small slice of MNIST
    "base": [],
    "shift": ["--set", "data.augment.shift=2"],
    "shift and flip": ["--set", "data.augment.shift=2", "--set", "data.augment.flip=true"],
    "rotate and scale": ["--set", "data.augment.rotate=10", "--set", "data.augment.scale=0.1"],
    "elastic": ["--set", "data.augment.elastic.alpha=20"],
    "dropout, smoothing, averaging": [
        "--set", "model.dropout=0.2", "--set", "train.label_smoothing=0.1", "--set",
        "train.average.start_epoch=1", "--set", "train.optimizer=nag", "--set",
        "train.warmup_epochs=0.5"],
}


@pytest.fixture
def promotion_watch():
    """On numpy 1.26, every operation whose result NEP 50 (numpy 2's rules for Python and
    numpy scalars) would change warns, and the warning fails the test. On numpy 2 those
    rules are in force already, and any warning numpy raises fails the test."""
    with warnings.catch_warnings():
        if NUMPY_2:
            warnings.filterwarnings("error", category=RuntimeWarning, module="numpy")
            yield
        else:
            warnings.filterwarnings("error", message="result dtype changed due to the removal")
            np._set_promotion_state("weak_and_warn")
            try:
                yield
            finally:
                np._set_promotion_state("legacy")


@pytest.mark.parametrize("overrides", RUNS.values(), ids=RUNS.keys())
def test_training_does_the_same_arithmetic_under_numpy_2_promotion(
        overrides, small_config, tmp_path, promotion_watch):
    out = tmp_path / "run"
    assert run(train_command, [
        "--config", str(small_config), "--out", str(out), "--quiet", "--set",
        "track.tensorboard=false", *overrides]) == 0
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and all(math.isfinite(row["val_loss"]) for row in history)


def test_eval_predict_and_int8_do_the_same_arithmetic_under_numpy_2_promotion(
        model, mnist_dir, test_set, tmp_path, promotion_watch, capsys):
    assert run(eval_command, ["--checkpoint", str(model), "--data-root", str(mnist_dir),
                              "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.95
    np.save(tmp_path / "digits.npy", test_set.images[:50])
    Image.fromarray(255 - test_set.images[0]).resize((120, 90)).save(tmp_path / "digit.png")
    assert run(predict_command, ["--checkpoint", str(model), "--json",
                                 str(tmp_path / "digits.npy"), str(tmp_path / "digit.png")]) == 0
    labels = [p["label"] for p in json.loads(capsys.readouterr().out)]
    assert np.mean(np.array(labels[:50]) == test_set.labels[:50]) > 0.9
    assert labels[50] == test_set.labels[0]
    assert run(export_command, ["--checkpoint", str(model), "--out", str(tmp_path / "int8"),
                                "--quantize", "int8", "--data-root", str(mnist_dir)]) == 0
