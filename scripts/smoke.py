"""Real commands end to end with an installed mnist-gluon, from an empty folder outside the
checkout: train base.yaml (the bundled one) for one epoch with TensorBoard logs, evaluate it,
predict a PNG and a .npy, export to ONNX and run it in onnxruntime, serve it for two requests,
and run a one-trial sweep.

    python scripts/smoke.py --data-root DIR   # with the python of the venv to check

CI runs it on Python 3.10 and 3.13 in a venv that holds only the built wheel and its extras.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent


def run(*args: str, cwd: Path) -> str:
    print("$", " ".join(args), flush=True)
    done = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        sys.exit(f"{args[0]} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def check(ok: bool, what: str) -> None:
    if not ok:
        sys.exit(f"smoke: {what}")
    print(f"ok: {what}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="folder with the MNIST IDX files")
    data_root = str(Path(parser.parse_args().data_root).resolve())
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        print(run("mnist", "--version", cwd=work).strip())
        run("mnist-train", "--config", "base", "--set", "train.epochs=1", "--data-root",
            data_root, "--quiet", cwd=work)
        best = work / "runs/base/best.params"
        check(any((work / "runs/base").glob("events.out.tfevents.*")),
              "mnist-train writes TensorBoard event files")
        report = json.loads(run("mnist-eval", "--checkpoint", str(best), "--json", cwd=work))
        check(report["examples"] == 10000 and report["accuracy"] > 0.95,
              f"one epoch of base.yaml: test accuracy {report['accuracy']:.4f}")

        from PIL import Image

        from mnist_gluon.data import DATASETS, read_split

        test = read_split(DATASETS["mnist"], "test", data_root)
        np.save(work / "digits.npy", test.images[:100])
        Image.fromarray(255 - test.images[0]).resize((200, 200)).save(work / "digit.png")
        predicted = json.loads(run("mnist-predict", "--checkpoint", str(best), "--json",
                                   "digits.npy", "digit.png", cwd=work))
        labels = [p["label"] for p in predicted]
        check(np.mean(np.array(labels[:100]) == test.labels[:100]) > 0.9,
              "mnist-predict labels a .npy of test digits")
        check(labels[100] == test.labels[0], "mnist-predict reads a dark-on-light PNG")

        run("mnist-export", "--checkpoint", str(best), "--format", "onnx", "--out", "onnx",
            cwd=work)
        import onnxruntime

        session = onnxruntime.InferenceSession(str(work / "onnx/mnist-mlp.onnx"))
        logits = session.run(None, {session.get_inputs()[0].name:
                                    test.images[:100].reshape(100, 784).astype(np.float32)})[0]
        check(np.array_equal(logits.argmax(1), labels[:100]), "the ONNX export agrees")

        serve(best, work)

        run("mnist-sweep", "--config", "base", "--grid", "train.lr=0.1", "--set",
            "train.epochs=1", "--data-root", data_root, "--out", "sweep", cwd=work)
        rows = json.loads((work / "sweep/results.json").read_text())
        check([r["state"] for r in rows] == ["complete"] and (work / "sweep/best.yaml").exists(),
              "mnist-sweep runs a trial in an Optuna study")


def serve(checkpoint: Path, work: Path) -> None:
    server = subprocess.Popen([str(BIN / "mnist-serve"), "--checkpoint", str(checkpoint),
                               "--port", "0"], cwd=work, stderr=subprocess.PIPE, text=True)
    try:
        first = server.stderr.readline()
        match = re.search(r" on (http://\S+/) ", first)
        check(match is not None, f"mnist-serve starts: {first.strip()}")
        with urllib.request.urlopen(match.group(1), timeout=30) as page:
            check(page.status == 200 and b"<canvas" in page.read(), "mnist-serve answers /")
        request = urllib.request.Request(match.group(1) + "v1/predict",
                                         data=(work / "digit.png").read_bytes(),
                                         headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = json.load(answer)
        check("label" in body["predictions"][0], "mnist-serve labels a PNG upload")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
