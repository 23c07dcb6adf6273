"""Helpers shared by the benchmarks: interleaved medians, reference maps, device names, JSON."""

import json
import platform
import statistics
import time
from pathlib import Path

import torch

import deqlib
from deqlib.functional import tanh_map

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


def reference_map(rho: float, *, batch: int = 64, width: int = 256, dtype=torch.float32,
                  device="cpu"):
    """The pinned tanh DEQ's map f(z) = tanh(W_z z + W_x x) and its start z0 = 0.

    The weights and inputs are deqlib.reference_tanh_problem's; the injection W_x x is computed
    once, as the TanhDEQ layer does, so that one evaluation of f is one matmul and one tanh
    (the cheapest honest map, against which a solver's own overhead shows the most).
    """
    problem = deqlib.reference_tanh_problem(rho, batch=batch, width=width, dtype=dtype,
                                            device=device)
    injection = problem.x @ problem.W_x.T
    return (lambda z: tanh_map(z, problem.W_z, injection)), problem.z0()


def map_seconds(f, z, evaluations: int):
    """A contender for interleaved_medians: `evaluations` evaluations of f (divide to get one)."""
    def run():
        for _ in range(evaluations):
            f(z)
    return run


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"


def save(name: str, results: dict, device) -> Path:
    """Write results/<name>.json (results/<name>_cuda.json on a GPU) with device, torch, date."""
    RESULTS.mkdir(exist_ok=True)
    device = torch.device(device)
    results = {"device": device_name(device), "torch": torch.__version__,
               "date": time.strftime("%Y-%m-%d"), **results}
    path = RESULTS / (f"{name}.json" if device.type == "cpu" else f"{name}_{device.type}.json")
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
