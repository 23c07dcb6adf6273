"""Re-execute chapters in place, saving outputs and widget state (what nbval and the site use).

    python scripts/execute_notebooks.py book/01_implicit_layers.ipynb [...]

Runs each notebook top to bottom in a fresh python3 kernel, from the book/ folder, and
prints how long it took (each chapter must run in at most 45 s on 2 CPU cores).

Each notebook records the machine that produced its outputs in its metadata,
metadata.deqlib.executed_on (see machine()): the notebook tests print it when a stored output
no longer matches (tests/nbval_numbers.py). It holds short strings only, and the date without
the time, so re-executing on the same machine on the same day leaves it unchanged. myst-nb
passes unknown notebook metadata to Sphinx as page metadata (docinfo), which no page shows.
"""

import os
import platform
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat
from nbclient import NotebookClient

#: Environment variables that change which code paths (and so which last digits) torch and
#: MKL use: recorded when set.
CODE_PATH_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_model() -> str:
    """/proc/cpuinfo's "model name" (Linux), else platform.processor(), else the machine."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def torch_blas(config: str) -> str:
    """The BLAS and LAPACK torch was built with, from torch.__config__.show(): e.g.
    "mkl 2024.2 (build 20240605), LAPACK mkl"."""
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    text = blas.group(1) if blas else "unknown"
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)(?:-Product Build (\d+))?", config)
    if mkl:
        text += f" {mkl.group(1)}" + (f" (build {mkl.group(2)})" if mkl.group(2) else "")
    lapack = re.search(r"LAPACK_INFO=(\w+)", config)
    return text + (f", LAPACK {lapack.group(1)}" if lapack else "")


def numpy_blas() -> str:
    import numpy

    try:
        blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas.get('version', '')}".strip()
    except Exception:  # numpy < 1.26 has no mode="dicts"
        return "unknown"


def machine() -> dict[str, str]:
    """What produced a notebook's outputs: versions, CPU, BLAS, torch's CPU code path and
    threads, the code-path environment variables that are set, and the date (UTC). This
    process's environment is the kernel's (the python3 kernel of the same environment, which
    inherits these variables)."""
    import numpy
    import torch

    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")
    record = {
        "date": datetime.now(timezone.utc).date().isoformat(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cpu": cpu_model(),
        "torch_cpu_capability": capability(),
        "torch_blas": torch_blas(torch.__config__.show()),
        "numpy_blas": numpy_blas(),
        "torch_threads": str(torch.get_num_threads()),
    }
    record.update({v: os.environ[v] for v in CODE_PATH_VARIABLES if os.environ.get(v)})
    return record


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
    nb.metadata.setdefault("deqlib", {})["executed_on"] = machine()
    nbformat.write(nb, path)
    return elapsed


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for arg in sys.argv[1:]:
        seconds = execute(Path(arg))
        print(f"{arg}: executed in {seconds:.1f} s")
