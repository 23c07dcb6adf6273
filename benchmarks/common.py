"""Helpers shared by the benchmarks: interleaved medians, device names, JSON output."""

import json
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved_medians(contenders: dict, repeats: int, device="cpu") -> dict:
    """Median wall time of each contender, run in turns (noise hits all alike), after a warm-up."""
    for fn in contenders.values():
        fn()
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"


def save(name: str, results: dict, device) -> Path:
    RESULTS.mkdir(exist_ok=True)
    device = torch.device(device)
    results = {"device": device_name(device), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
               **results}
    path = RESULTS / (f"{name}.json" if device.type == "cpu" else f"{name}_{device.type}.json")
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
