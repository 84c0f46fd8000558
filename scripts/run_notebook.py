"""Execute a notebook from a clean kernel, as CI does, and say how long it took.

    python scripts/run_notebook.py docs/quickstart.ipynb --data-root DIR [--out FILE]

The kernel is this Python's, started afresh in an empty temporary folder (the notebook's runs/
are written there), with MXNET_HOME a temporary cache whose datasets/mnist is DIR. Any cell's
error fails the run (exit status 1), and so does a cell that runs past --timeout or a whole run
past --total. The committed notebook keeps no outputs; --out writes the executed copy.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError


def execute(notebook: Path, data_root: Path, timeout: float) -> tuple[nbformat.NotebookNode,
                                                                      float]:
    """(the executed notebook, seconds from the kernel's start to the last cell's end)."""
    nb = nbformat.read(notebook, as_version=4)
    with tempfile.TemporaryDirectory(prefix="notebook-") as work:
        home = Path(work) / "mxnet-home"
        (home / "datasets").mkdir(parents=True)
        (home / "datasets" / "mnist").symlink_to(data_root.resolve())
        os.environ["MXNET_HOME"] = str(home)  # the kernel inherits it
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": work}})
        started = time.perf_counter()
        client.execute()
        return nb, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--data-root", type=Path, required=True,
                        help="folder with the MNIST IDX files")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per cell")
    parser.add_argument("--total", type=float, default=600, help="seconds for the whole run")
    parser.add_argument("--out", type=Path, help="write the executed notebook here")
    args = parser.parse_args()
    try:
        nb, seconds = execute(args.notebook, args.data_root, args.timeout)
    except (CellExecutionError, CellTimeoutError) as error:
        print(f"{args.notebook}: {error}", file=sys.stderr)
        return 1
    if args.out is not None:
        nbformat.write(nb, args.out)
    cells = sum(cell.cell_type == "code" for cell in nb.cells)
    print(f"{args.notebook}: {cells} code cells executed from a clean kernel in {seconds:.1f} s")
    if seconds > args.total:
        print(f"{args.notebook}: took longer than --total {args.total:.0f} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
