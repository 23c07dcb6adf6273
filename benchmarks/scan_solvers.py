"""Scan the solvers' defaults over contractions: seeds, widths 2-12, batch sizes 1-512, float32,
float64 and bfloat16 autocast. A failure is an exception, a non-finite iterate, or (where the
tolerance is above the dtype's resolution) a solve that did not converge.

    python benchmarks/scan_solvers.py [--quick]

Every map here is a contraction in the 2-norm (‖W_z‖₂ ≤ 0.9, tanh 1-Lipschitz), so each solve
has a unique fixed point that every solver should reach. Prints one line per (solver, dtype).
"""

import argparse
import warnings

import torch

import deqlib
from deqlib.solvers import ConvergenceWarning

WIDTHS = range(2, 13)
BATCHES = (1, 2, 5, 64, 512)
SEEDS = range(8)
MAX_ITER = 1000   # enough for Picard at q = 0.9 and tol 1e-10: the scan tests robustness
TOL = {"float32": 1e-6, "float64": 1e-10, "bfloat16": 1e-2}


def problem(width, batch, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(width, width, generator=g, dtype=torch.float64)
    W *= (0.3 + 0.6 * torch.rand((), generator=g, dtype=torch.float64)) / torch.linalg.matrix_norm(
        W, 2)
    U = torch.randn(width, 8, generator=g, dtype=torch.float64)
    x = torch.randn(batch, 8, generator=g, dtype=torch.float64) * (1 + 3 * seed % 4)
    inj = x @ U.T
    W, inj = W.to(dtype), inj.to(dtype)
    return lambda z: torch.tanh(z @ W.T + inj)


def run(method, name):
    dtype = torch.float64 if name == "float64" else torch.float32
    failures, total, steps = [], 0, 0
    for width in WIDTHS:
        for batch in BATCHES:
            for seed in SEEDS:
                total += 1
                f = problem(width, batch, seed, dtype)
                z0 = torch.zeros(batch, width, dtype=dtype)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("error", ConvergenceWarning)
                        if name == "bfloat16":
                            with torch.autocast("cpu", dtype=torch.bfloat16):
                                r = deqlib.solve(f, z0, method=method, tol=TOL[name],
                                               max_iter=MAX_ITER)
                        else:
                            r = deqlib.solve(f, z0, method=method, tol=TOL[name],
                                               max_iter=MAX_ITER)
                    if not (r.converged and torch.isfinite(r.z).all()):
                        failures.append((width, batch, seed, "not converged"))
                    steps += r.steps
                except Exception as e:  # noqa: BLE001 - every exception is a failure here
                    failures.append((width, batch, seed, f"{type(e).__name__}: {e}"[:120]))
    print(f"{method:9s} {name:9s} {total - len(failures):4d}/{total} converged, "
          f"{len(failures)} failures, mean steps {steps / max(total - len(failures), 1):.1f}")
    for fail in failures[:3]:
        print("   ", fail)
    return failures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args()
    torch.set_num_threads(1)
    bad = [run(m, d) for m in ("picard", "anderson", "broyden")
           for d in ("float32", "float64", "bfloat16")]
    raise SystemExit(1 if any(bad) else 0)
