import pytest

from mnist_gluon.device import DeviceSpec, parse_device, resolve_contexts
from mnist_gluon.errors import ConfigError, DeviceError
from mnist_gluon.mxnet_compat import mx


@pytest.mark.parametrize(
    "text, spec",
    [
        ("auto", DeviceSpec("auto")),
        ("cpu", DeviceSpec("cpu", (0,))),
        ("gpu", DeviceSpec("gpu", (0,))),
        ("gpu:1", DeviceSpec("gpu", (1,))),
        ("GPU:0,1", DeviceSpec("gpu", (0, 1))),
        ("cpu:0,1", DeviceSpec("cpu", (0, 1))),
    ],
)
def test_device_strings_parse(text, spec):
    assert parse_device(text) == spec


@pytest.mark.parametrize("text", ["tpu", "gpu:a", "gpu:0,0", "cpu:-1", "gpu:", ""])
def test_bad_device_strings_are_config_errors(text):
    with pytest.raises(ConfigError, match="device"):
        parse_device(text)


def test_auto_is_the_cpu_without_a_gpu_and_gpu0_with_one():
    assert resolve_contexts("auto", num_gpus=0) == [mx.cpu(0)]
    assert resolve_contexts("auto", num_gpus=2) == [mx.gpu(0)]


def test_two_cpu_contexts_for_the_multi_device_path():
    assert resolve_contexts("cpu:0,1") == [mx.cpu(0), mx.cpu(1)]


def test_gpus_map_to_gpu_contexts_when_present():
    assert resolve_contexts("gpu:0,1", num_gpus=2) == [mx.gpu(0), mx.gpu(1)]


def test_asking_for_a_gpu_this_machine_lacks_is_a_clear_error():
    # No machine has a GPU 63: this holds on a CUDA build with GPUs too.
    with pytest.raises(DeviceError, match=r"asks for GPU 63 but this machine has .*"
                                          r"mnist-train: --set device=cpu; the other "
                                          r"commands: --device cpu"):
        resolve_contexts("gpu:63")
    with pytest.raises(DeviceError, match=r"asks for GPU 0 but this machine has no GPU visible"):
        resolve_contexts("gpu", num_gpus=0)
    with pytest.raises(DeviceError, match=r"asks for GPU 1 but this machine has 1 GPU"):
        resolve_contexts("gpu:0,1", num_gpus=1)
