"""The whole loop through nothing but mnist-gluon's public API, with an installed mnist-gluon,
from an empty folder outside the checkout: train base.yaml for 2 epochs, evaluate, predict a PNG
and a numpy array, explain them, and use MXNet as `from mnist_gluon import mx`. Then
`mnist-eval --json` on the same checkpoint must report the same accuracy.

    python scripts/api_smoke.py --data-root DIR   # with the python of the venv to check

CI runs it in the venvs that hold only the built wheel, on Python 3.10, 3.13 and 3.14.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
from smoke import check  # scripts/smoke.py

import mnist_gluon
from mnist_gluon import mx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="folder with the MNIST IDX files")
    data_root = str(Path(parser.parse_args().data_root).resolve())
    with tempfile.TemporaryDirectory() as work:
        run = mnist_gluon.train("base", Path(work) / "run", data={"root": data_root},
                                train={"epochs": 2}, quiet=True)
        check([e.epoch for e in run.history] == [1, 2], "train ran 2 epochs")
        report = mnist_gluon.evaluate(run.best_checkpoint)
        check(report.accuracy > 0.95, f"evaluate: test accuracy {report.accuracy:.4f}")
        printed = subprocess.run([str(Path(sys.executable).parent / "mnist-eval"),
                                  "--checkpoint", str(run.best_checkpoint), "--json"],
                                 check=True, capture_output=True, text=True).stdout
        check(json.loads(printed)["accuracy"] == report.accuracy,
              "mnist-eval reports the same accuracy")

        classifier = mnist_gluon.load(run.best_checkpoint)
        seven = PIL.Image.new("L", (200, 200), color=255)
        PIL.ImageDraw.Draw(seven).line([(50, 40), (150, 40), (85, 170)], fill=0, width=14)
        png = Path(work) / "seven.png"
        seven.save(png)
        check(classifier.predict(png).labels.tolist() == [7], "a drawn 7 (PNG) is a 7")
        predicted = classifier.predict(report.images[:1000])
        check(np.array_equal(predicted.labels, report.logits[:1000].argmax(axis=1)),
              "predict on a uint8 array gives evaluate's labels")
        maps = classifier.explain(report.images[:100])
        targets = predicted.labels[:100]
        rise = (classifier.logits(report.images[:100])[np.arange(100), targets]
                - classifier.logits(np.zeros((28, 28)))[0, targets])
        check(maps.shape == (100, 28, 28) and np.allclose(maps.sum(axis=(1, 2)), rise,
                                                          rtol=1e-3, atol=1e-4),
              "explain's maps add up to the logit's rise from the blank image")
        check(classifier.explain(png, method="smoothgrad").shape == (1, 28, 28),
              "explain takes a PNG as predict does")
        logits = classifier.net(mx.nd.array(
            (report.images[:1000].reshape(-1, 784) / 255.0 - classifier.normalization.mean)
            / classifier.normalization.std)).asnumpy()
        check(np.array_equal(logits.argmax(axis=1), predicted.labels),
              f"the Gluon block on MXNet {mx.__version__} agrees")


if __name__ == "__main__":
    main()
