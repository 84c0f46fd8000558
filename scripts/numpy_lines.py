"""Same numbers on both numpy lines: every path of the training graph, and what each command
gives from a checkpoint, digested in two environments and compared bit for bit.

    python scripts/numpy_lines.py --data-root DIR PYTHON_A PYTHON_B

PYTHON_A and PYTHON_B are the pythons of two venvs with mnist-gluon and its extras installed,
say one with numpy 1.26 (`make NUMPY=1`) and one with numpy 2. Each runs this script with
`--digest`: real commands from an empty folder, full MNIST. Parameters and exported files must
be the same bit for bit. The float64 figures computed on the host (eval's loss and per-class
scores, predict's and serve's probabilities) must hold the same labels and counts, and each
float within MAX_ULPS: numpy 2's float64 `exp` differs from numpy 1.26's in the last bit for
some inputs. Exit status 1 on any difference beyond that.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
MAX_ULPS = 4
EPOCH = ("--set", "train.epochs=1")
# The training graph's paths: base.yaml and best.yaml for two epochs, then each feature alone.
TRAININGS = {
    "base": ("base", "--set", "train.epochs=2"),
    "best (shift 1, elastic, averaging)": (
        "best", "--set", "train.epochs=2", "--set", "train.average.start_epoch=2"),
    "shift 2 (shifted copies)": ("base", *EPOCH, "--set", "data.augment.shift=2"),
    "shift 2 with flips (0/1 selectors)": (
        "base", *EPOCH, "--set", "data.augment.shift=2", "--set", "data.augment.flip=true"),
    "rotate and scale": (
        "base", *EPOCH, "--set", "data.augment.rotate=10", "--set", "data.augment.scale=0.1"),
    "elastic alone": ("base", *EPOCH, "--set", "data.augment.elastic.alpha=20"),
    "dropout": ("base", *EPOCH, "--set", "model.dropout=0.2"),
    "label smoothing": ("base", *EPOCH, "--set", "train.label_smoothing=0.1"),
    "averaging": ("base", "--set", "train.epochs=2", "--set", "train.average.start_epoch=1"),
    "two devices": ("base", *EPOCH, "--set", "device=cpu:0,1"),
    "adam": ("base", *EPOCH, "--set", "train.optimizer=adam", "--set", "train.lr=0.003"),
}


def floats_apart(value):
    """A JSON value -> (its digest with every float blanked, the floats in order)."""
    found: list[float] = []

    def blank(item):
        if isinstance(item, float):
            found.append(item)
            return None
        if isinstance(item, dict):
            return {key: blank(item[key]) for key in sorted(item)}
        if isinstance(item, list):
            return [blank(element) for element in item]
        return item

    shape = json.dumps(blank(value)).encode()
    return {"exact": hashlib.sha256(shape).hexdigest()[:16], "floats": found}


def run_files(out: Path) -> list[Path]:
    """A run's parameters: every checkpoint's, and the weight average beside them."""
    return sorted([*out.glob("*.params"), *out.glob("*.average")])


def sha256(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def command(*args: str, cwd: Path) -> str:
    done = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, capture_output=True,
                          text=True, timeout=1200)
    if done.returncode != 0:
        sys.exit(f"{args[0]} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def train(name: str, config: str, *overrides: str, data_root: str, work: Path,
          workers: int = 0) -> Path:
    """One run of mnist-train, or of a cluster of `workers` under mnist-launch."""
    out = work / re.sub(r"\W+", "-", name)
    args = ["--config", config, "--data-root", data_root, "--out", str(out), "--quiet",
            "--set", "track.tensorboard=false", *overrides]
    if workers:
        command("mnist-launch", "-n", str(workers), "-s", "1", "--", str(BIN / "mnist-train"),
                *args, cwd=work)
    else:
        command("mnist-train", *args, cwd=work)
    return out


def served(checkpoint: Path, png: Path, pixels: list) -> dict:
    from load import start_server  # scripts/load.py: mnist-serve on a free port, its URL

    server, url = start_server(str(checkpoint), [])
    try:
        answers = []
        for body, kind in ((png.read_bytes(), "image/png"),
                           (json.dumps({"pixels": pixels}).encode(), "application/json")):
            request = urllib.request.Request(url + "v1/predict", data=body,
                                             headers={"Content-Type": kind})
            with urllib.request.urlopen(request, timeout=60) as answer:
                answers.append(json.load(answer)["predictions"])
        return floats_apart(answers)
    finally:
        server.terminate()
        server.wait(timeout=30)


def digests(data_root: str) -> dict[str, str]:
    import numpy as np
    from PIL import Image

    from mnist_gluon.data import DATASETS, read_split

    found: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for name, (config, *overrides) in TRAININGS.items():
            out = train(name, config, *overrides, data_root=data_root, work=work)
            found[f"train: {name}"] = sha256(*run_files(out))
        out = train("dist_sync", "base", *EPOCH, "--set", "train.kvstore=dist_sync",
                    data_root=data_root, work=work, workers=2)
        found["train: dist_sync, 2 workers"] = sha256(*run_files(out))

        best = work / "base" / "best.params"
        report = json.loads(command("mnist-eval", "--checkpoint", str(best), "--json",
                                    "--data-root", data_root, cwd=work))
        found["eval"] = floats_apart({k: v for k, v in report.items() if k != "checkpoint"})

        test = read_split(DATASETS["mnist"], "test", data_root, download=False)
        np.save(work / "digits.npy", test.images[:200])
        png = work / "digit.png"
        Image.fromarray(255 - test.images[0]).resize((200, 200)).save(png)
        predicted = command("mnist-predict", "--checkpoint", str(best), "--json", "digits.npy",
                            str(png), cwd=work).replace(str(work), "")
        found["predict"] = floats_apart(json.loads(predicted))

        command("mnist-export", "--checkpoint", str(best), "--out", "symbol", cwd=work)
        found["export: symbol"] = sha256(*sorted((work / "symbol").glob("mnist-mlp-*")))
        command("mnist-export", "--checkpoint", str(best), "--format", "onnx", "--out", "onnx",
                cwd=work)
        import onnxruntime

        session = onnxruntime.InferenceSession(str(work / "onnx/mnist-mlp.onnx"))
        logits = session.run(None, {session.get_inputs()[0].name:
                                    test.images[:200].reshape(200, 784).astype(np.float32)})[0]
        found["export: onnx logits"] = hashlib.sha256(logits.tobytes()).hexdigest()[:16]
        command("mnist-export", "--checkpoint", str(best), "--out", "int8", "--quantize",
                "int8", "--data-root", data_root, cwd=work)
        found["export: int8"] = sha256(*sorted((work / "int8").glob("mnist-mlp-int8-*")))

        found["serve"] = served(best, png, test.images[1:9].reshape(8, 784).tolist())
    return found


def compare(pythons: list[str], data_root: str) -> int:
    results = []
    for python in pythons:
        probe = "import numpy, sys; print(numpy.__version__, '%d.%d' % sys.version_info[:2])"
        numpy_version, python_version = subprocess.run(
            [python, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
        print(f"digesting with numpy {numpy_version} on Python {python_version} ({python})",
              flush=True)
        done = subprocess.run([python, __file__, "--digest", "--data-root", data_root],
                              stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            return done.returncode
        results.append(json.loads(done.stdout))
    first, second = results
    differ = 0
    for name, a in first.items():
        b = second.get(name)
        mark = verdict(a, b)
        differ += mark is None
        print(f"{name:42s} {shown(a)}  {shown(b)}  {mark or 'DIFFERENT'}")
    print(f"{len(first) - differ} of {len(first)} the same")
    return 1 if differ else 0


def verdict(a, b) -> str | None:
    """How one check's two digests compare: "same" (for floats, within how many ulp), or None."""
    if not isinstance(a, dict):
        return "same" if a == b else None
    if b is None or a["exact"] != b["exact"]:
        return None
    ulps = ulps_apart(a["floats"], b["floats"])
    if ulps is None or ulps > MAX_ULPS:
        return None
    return f"same, {len(a['floats'])} floats within {ulps} ulp"


def shown(digest) -> str | None:
    return digest["exact"] if isinstance(digest, dict) else digest


def ulps_apart(a: list[float], b: list[float]) -> int | None:
    """The largest distance between matching floats, in units of the last place."""
    import numpy as np

    if len(a) != len(b):
        return None
    x, y = np.array(a, dtype=np.float64), np.array(b, dtype=np.float64)
    gap = np.abs(x - y) / np.spacing(np.maximum(np.abs(x), np.abs(y)))
    return int(np.ceil(gap.max())) if len(a) else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--digest", action="store_true",
                        help="print this environment's digests as JSON (what each python runs)")
    parser.add_argument("pythons", nargs="*", help="the two pythons to compare")
    options = parser.parse_args()
    data_root = str(Path(options.data_root).resolve())
    if options.digest:
        print(json.dumps(digests(data_root), indent=1))
        return
    if len(options.pythons) != 2:
        parser.error("give two pythons to compare (or --digest)")
    sys.exit(compare(options.pythons, data_root))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
