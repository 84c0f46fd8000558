"""Device strings (`auto`, `cpu`, `gpu`, `gpu:0`, `gpu:0,1`, `cpu:0,1`) to MXNet contexts."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError, DeviceError

DEVICE_FORMS = "auto, cpu, gpu, gpu:0, gpu:0,1 or cpu:0,1"
# Each id is a context holding a copy of the model: more than a machine has GPUs, and more
# CPU contexts than any data-parallel test of one needs, is a typo.
MAX_DEVICE_ID = 63


@dataclass(frozen=True)
class DeviceSpec:
    kind: str  # "auto", "cpu" or "gpu"
    ids: tuple[int, ...] = (0,)


def parse_device(text: str) -> DeviceSpec:
    """Parse a device string without touching MXNet, so config typos fail early."""
    text = text.strip().lower()
    if len(text) > 200:
        raise ConfigError(f"device is {text[:40]!r}... ({len(text)} characters); use one of "
                          f"{DEVICE_FORMS}")
    if text == "auto":
        return DeviceSpec("auto")
    kind, colon, ids_text = text.partition(":")
    if kind not in ("cpu", "gpu") or (colon and not ids_text):
        raise ConfigError(f"device is {text!r}; use one of {DEVICE_FORMS}")
    if not colon:
        return DeviceSpec(kind)
    try:
        ids = tuple(int(part) for part in ids_text.split(","))
    except ValueError:
        raise ConfigError(f"device is {text!r}; use one of {DEVICE_FORMS}") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"device {text!r} lists a negative or repeated id; use e.g. gpu:0,1")
    if max(ids) > MAX_DEVICE_ID:
        raise ConfigError(f"device {text!r} names id {max(ids)}; ids go from 0 to "
                          f"{MAX_DEVICE_ID}, e.g. gpu:0,1")
    return DeviceSpec(kind, ids)


def resolve_contexts(text: str, num_gpus: int | None = None) -> list:
    """MXNet contexts for a device string; `auto` picks GPU 0 when there is one, else the CPU."""
    from .mxnet_compat import mx

    spec = parse_device(text)
    if num_gpus is None:
        num_gpus = mx.context.num_gpus()
    if spec.kind == "auto":
        return [mx.gpu(0)] if num_gpus > 0 else [mx.cpu(0)]
    if spec.kind == "cpu":
        return [mx.cpu(i) for i in spec.ids]
    missing = [i for i in spec.ids if i >= num_gpus]
    if missing:
        have = f"{num_gpus} GPU(s)" if num_gpus else "no GPU visible to MXNet"
        raise DeviceError(
            f"device {text!r} asks for GPU {missing[0]} but this machine has {have}; "
            "use the CPU (mnist-train: --set device=cpu; the other commands: --device cpu), or "
            "install a CUDA build of MXNet (e.g. mxnet-cu117==1.9.1)"
        )
    return [mx.gpu(i) for i in spec.ids]
