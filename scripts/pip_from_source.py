"""mnist-gluon installed from a clone the way Python users install it, `pip install CLONE` and
`pip install -e CLONE`, each in a fresh venv with a fresh per-user cache: one epoch each of
best.yaml and lenet.yaml trains on the compiled kernels, built at first use; then, with no
compiler on the PATH and an empty cache, best.yaml trains on MXNet's operators with one note.

    python3 scripts/pip_from_source.py CLONE --data-root DIR

CLONE is a fresh clone where nothing was built. CI runs it with the machine's python3.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def train(venv: Path, config: str, out: Path, data_root: str, env: dict) -> str:
    command = [str(venv / "bin" / "mnist-train"), "--config", config, "--epochs", "1",
               "--out", str(out), "--data-root", data_root, "--quiet"]
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=out.parent,
                          timeout=1200)
    print(done.stdout + done.stderr, end="", flush=True)
    if done.returncode != 0:
        sys.exit(f"pip_from_source: {config} failed ({done.returncode})")
    return done.stdout + done.stderr


def kernels(out: Path) -> dict:
    return json.loads((out / "last.json").read_text())["kernels"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("clone", type=Path)
    parser.add_argument("--data-root", required=True)
    args = parser.parse_args()
    if list(args.clone.glob("src/mnist_gluon/kernels/*.so")):
        sys.exit(f"pip_from_source: {args.clone} holds a built library; pass a fresh clone")
    compiled = {"update": "compiled", "elastic": "compiled"}
    # best.yaml's MLP trains through the compiled step, on whichever instruction set it found.
    steps = ({**compiled, "mlp_step": isa} for isa in ("avx512", "avx2"))
    expected = {"best": list(steps), "lenet": [compiled]}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for how in ([], ["-e"]):
            name = "editable" if how else "plain"
            venv, cache = scratch / f"venv-{name}", scratch / f"cache-{name}"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            print(f"$ pip install {' '.join(how)} {args.clone}", flush=True)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                            *how, str(args.clone)], check=True)
            env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
            for config in ("best", "lenet"):
                out = scratch / f"{name}-{config}"
                said = train(venv, config, out, args.data_root, env)
                if kernels(out) not in expected[config]:
                    sys.exit(f"pip_from_source: {name} {config} ran {kernels(out)}")
                if "not available" in said:
                    sys.exit(f"pip_from_source: {name} {config} said the kernels were missing")
            print(f"ok: pip install {' '.join(how)} CLONE: best and lenet on the compiled "
                  "kernels, built at first use", flush=True)
        # No compiler: the PATH holds the venv alone, and the cache is empty.
        venv = scratch / "venv-plain"
        env = {**os.environ, "PATH": str(venv / "bin"), "XDG_CACHE_HOME": str(scratch / "none")}
        assert not any(shutil.which(c, path=env["PATH"]) for c in ("g++", "c++", "gcc", "cc"))
        out = scratch / "no-compiler-best"
        said = train(venv, "best", out, args.data_root, env)
        notes = [line for line in said.splitlines() if "kernels" in line]
        if len(notes) != 1 or kernels(out) != {"update": "mxnet", "elastic": "mxnet"}:
            sys.exit(f"pip_from_source: without a compiler: {notes}, {kernels(out)}")
        print("ok: without a compiler, best.yaml trained on MXNet's operators with one note")
    return 0


if __name__ == "__main__":
    sys.exit(main())
