"""The built wheel's compiled kernels, in a venv that holds only the wheel, with no compiler on
the PATH: one epoch of the bundled best.yaml (the MLP's compiled step, the fused update and the
elastic warp), and the sidecar says all three ran compiled.

    PATH=VENV/bin VENV/bin/python scripts/wheel_kernels.py --data-root DIR

CI runs it after installing the wheel with that PATH too.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", required=True)
    args = parser.parse_args()
    compilers = [name for name in ("gcc", "g++", "cc", "c++", "clang") if shutil.which(name)]
    if compilers:
        sys.exit(f"wheel_kernels: {', '.join(compilers)} on the PATH; run it without a compiler")
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "best"
        done = subprocess.run([str(BIN / "mnist-train"), "--config", "best", "--data-root",
                               args.data_root, "--set", "train.epochs=1", "--out", str(out),
                               "--quiet"], capture_output=True, text=True, timeout=600)
        print(done.stdout + done.stderr, end="")
        if done.returncode != 0:
            sys.exit(f"wheel_kernels: mnist-train failed ({done.returncode})")
        kernels = json.loads((out / "last.json").read_text())["kernels"]
    if kernels not in ({"update": "compiled", "elastic": "compiled", "mlp_step": isa}
                       for isa in ("avx512", "avx2")):
        sys.exit(f"wheel_kernels: the sidecar records {kernels}, not the compiled kernels")
    print(f"ok: best.yaml trained one epoch on the wheel's compiled kernels: {kernels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
