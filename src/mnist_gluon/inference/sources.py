"""What a path given as a checkpoint stands for: a run folder means its best.params,
mnist-export's folder or parameter file its float model (read with the normalisation folded
into its weights) or its compressed model.mnc, and a file that belongs to a checkpoint or an
export but is not a model to score (a `.states`, model.json, the int8 and ONNX models) is
named for what it is, and refused, never scored as something else."""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError
from ..files import sha256_of
from ..reading import MAX_SIDECAR_BYTES, read_json

EXPORT_DESCRIPTION = "model.json"  # what mnist-export writes beside its files
COMPRESSED = "model.mnc"  # mnist-export --format compressed: one file, its description inside


def checkpoint_file(path: Path) -> tuple[Path, dict | None]:
    """The parameter file that `path` stands for, and model.json's content when that file is
    mnist-export's model: a run folder means its best.params, an export's folder its model;
    a file that is part of a checkpoint or an export but not its parameters is named for what
    it is, and refused."""
    if path.is_dir():
        if (path / "best.params").exists():
            return path / "best.params", None
        if (path / EXPORT_DESCRIPTION).is_file():
            description = export_description(path / EXPORT_DESCRIPTION)
            params = [name for name in description.get("files", {}) if name.endswith(".params")]
            if not params:
                raise CheckpointError(f"{path} holds mnist-export's {description.get('format')} "
                                      f"model, which mnist-gluon does not load; "
                                      f"{exported_from(description)}")
            return exported_params(path / params[0], description), description
        if (path / COMPRESSED).is_file():
            return path / COMPRESSED, None
        raise CheckpointError(f"checkpoint {path} is a folder that holds no run (best.params) "
                              f"and no export (model.json or {COMPRESSED}); pass a .params "
                              "file or such a folder")
    parts = {".states": "optimizer state (it resumes a run)",
             ".average": "weight average (it resumes a run)"}
    if path.suffix in parts and path.with_suffix(".params").exists():
        raise CheckpointError(f"{path} is a checkpoint's {parts[path.suffix]}; pass its "
                              f"parameter file, {path.with_suffix('.params')}")
    if path.name == EXPORT_DESCRIPTION and path.is_file():
        raise CheckpointError(f"{path} is mnist-export's description of the model beside it; "
                              f"pass its folder, {path.parent}")
    beside = path.parent / EXPORT_DESCRIPTION
    if path.is_file() and beside.is_file():
        description = export_description(beside)
        if path.name in description.get("files", {}):
            if path.suffix != ".params":
                raise CheckpointError(f"{path} is a file of mnist-export's "
                                      f"{description.get('format')} model; pass its folder, "
                                      f"{path.parent}, or {exported_from(description)}")
            return exported_params(path, description), description
    return path, None


def export_description(path: Path) -> dict:
    description = read_json(path, MAX_SIDECAR_BYTES, CheckpointError, "export description",
                            "export the model again")
    if not isinstance(description, dict) or not isinstance(description.get("files"), dict):
        raise CheckpointError(f"{path} is not mnist-export's model.json; move it away, or "
                              "export the model again")
    return description


def exported_from(description: dict) -> str:
    source = (description.get("checkpoint") or {}).get("path")
    return (f"pass the checkpoint it was exported from ({source})" if source else
            "pass the checkpoint it was exported from")


def exported_params(path: Path, description: dict) -> Path:
    """An export's parameter file, once model.json says it is the float MXNet model it
    describes."""
    if description.get("format") != "mxnet":
        raise CheckpointError(f"{path} is mnist-export's {description.get('format')} model, "
                              f"which mnist-gluon does not load; {exported_from(description)}")
    if path.is_file() and sha256_of(path) != description["files"].get(path.name):
        raise CheckpointError(f"{path} does not match the checksum in {EXPORT_DESCRIPTION}: "
                              "it was changed after it was exported; export the model again")
    return path
