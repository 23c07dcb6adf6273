"""Re-execute chapters in place, saving outputs and widget state (what nbval and the site use).

    python scripts/execute_notebooks.py book/01_implicit_layers.ipynb [...]

Runs each notebook top to bottom in a fresh python3 kernel, from the book/ folder, and
prints how long it took (each chapter must run in at most 45 s on 2 CPU cores).
"""

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    client = NotebookClient(
        nb,
        timeout=900,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    nbformat.write(nb, path)
    return elapsed


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for arg in sys.argv[1:]:
        seconds = execute(Path(arg))
        print(f"{arg}: executed in {seconds:.1f} s")
