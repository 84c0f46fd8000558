"""The folders are the architecture: imports point down the layers and form no cycle, the
package root holds the core alone, and no function or module outgrows what a reader takes in."""

import subprocess
import sys

from support import REPO


def test_the_layout_keeps_its_rules():
    checked = subprocess.run([sys.executable, REPO / "scripts" / "layout.py", REPO],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
    assert "0 upward, 0 cycles" in checked.stdout
