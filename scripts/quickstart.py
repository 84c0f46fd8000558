"""The README's quick start, verbatim, in the checkout where `make train` has just run: the
block's lines in one bash, the venv activated as the README says; the server's line in the
background, until its page and one prediction answer.

    python3 scripts/quickstart.py          # from the checkout, after make train

CI runs it in a fresh clone, in a clean Debian testing userland.
"""

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def quick_start() -> list[str]:
    """The commands of the first sh block after "## Quick start", comments dropped."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Quick start"):]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)[1]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def main() -> int:
    lines = quick_start()
    serve = [line for line in lines if line.startswith("mnist-serve")]
    assert lines[0] == "source .venv/bin/activate" and len(serve) == 1, lines
    steps = [line for line in lines[1:] if line not in serve]
    script = " && ".join([lines[0], *(f"echo '$ {line}' && {line}" for line in steps)])
    if subprocess.run(["bash", "-c", script], cwd=REPO).returncode != 0:
        sys.exit("quickstart: a line of the README's quick start failed")
    for made in ("plots/confusion.png", "plots/mistakes.png", "export/onnx/mnist-mlp.onnx"):
        assert (REPO / made).is_file(), made
    print(f"$ {serve[0]}  (in the background)", flush=True)
    server = subprocess.Popen(["bash", "-c", f"{lines[0]} && exec {serve[0]}"], cwd=REPO)
    try:
        url = "http://127.0.0.1:8000/"
        for _ in range(120):
            try:
                page = urllib.request.urlopen(url, timeout=5).read().decode()
                break
            except OSError:
                if server.poll() is not None:
                    sys.exit("quickstart: mnist-serve ended before it answered")
                time.sleep(0.5)
        else:
            sys.exit("quickstart: mnist-serve did not answer within a minute")
        assert "<canvas" in page, page[:200]
        request = urllib.request.Request(url + "v1/predict",
                                         data=(REPO / "docs" / "seven.png").read_bytes(),
                                         headers={"Content-Type": "image/png"})
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
        print("POST /v1/predict docs/seven.png:", json.dumps(answer)[:200])
        assert answer["predictions"][0]["label"] == 7, answer
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    print("ok: the README's quick start works as written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
