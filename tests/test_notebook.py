"""docs/quickstart.ipynb: committed without outputs, written against the public API only, and
executed from a clean kernel to the end."""

import ast
import json
import re
import subprocess
import sys

import mnist_gluon
from support import REPO

NOTEBOOK = REPO / "docs" / "quickstart.ipynb"


def code_cells(notebook: dict) -> list[str]:
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]


def test_the_committed_notebook_holds_no_outputs_a_fresh_run_would_change():
    notebook = json.loads(NOTEBOOK.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def test_the_notebook_uses_nothing_of_mnist_gluon_but_its_public_names():
    used = set()
    for source in code_cells(json.loads(NOTEBOOK.read_text())):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Attribute) and getattr(node.value, "id", "") == "mnist_gluon":
                used.add(node.attr)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mnist_gluon"):
                assert node.module == "mnist_gluon", node.module
                used.update(alias.name for alias in node.names)
    assert used and used <= set(mnist_gluon.__all__)


def test_the_notebook_runs_from_a_clean_kernel_to_its_onnx_check(mnist_dir, tmp_path):
    executed = tmp_path / "executed.ipynb"
    done = subprocess.run([sys.executable, REPO / "scripts" / "run_notebook.py", NOTEBOOK,
                           "--data-root", mnist_dir, "--out", executed],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    printed = "".join("".join(output.get("text", ""))  # a string, or a list of lines
                      for cell in json.loads(executed.read_text())["cells"]
                      for output in cell.get("outputs", []))
    accuracy = float(re.search(r"accuracy (0\.\d+) +loss", printed).group(1))
    assert accuracy > 0.95  # base.yaml for 3 epochs
    assert "same label on 10000 of 10000" in printed
