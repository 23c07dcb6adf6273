"""What produced a run: device, versions, date, command, wall time and load."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    name = platform.processor() or dev.type
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads)"


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _code_version() -> str | None:
    """The git commit of the deqlib that ran, with "+dirty" if deqlib/ has uncommitted edits."""
    import subprocess

    here = Path(__file__).resolve().parent.parent      # deqlib/, not deqlib/experiments/
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, timeout=10,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here,
                               timeout=10, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _provenance(dev: torch.device, command: str | None, start: float, load0) -> dict:
    return {"device": _device_name(dev), "torch": torch.__version__, "code": _code_version(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": command, "wall_time_s": round(time.perf_counter() - start, 3),
            "load_average_1min": [load0, _load_average()]}

