"""The price of the precision-floor safeguards (issue 16): today's solvers against the solvers
of a commit before them, on the pinned reference problems, interleaved in one run.

    python benchmarks/bench_safeguards.py [--before b21f901] [--repeats 7] [--out safeguards]

The solvers before are read from git (`git archive COMMIT deqlib`, imported as the package
`deqlib_before`, so that a module or a package `deqlib.solvers` both work). For each problem
(the pinned tanh DEQ, batch 64 × width 256 and 32 × 512, ρ ∈ {0.9, 0.99}, tol ∈ {1e-4, 1e-6},
float32, one thread) and solver, it prints the steps of both, the median time of a solve, the
ratio after/before and the cost of a step in units of one evaluation of f (measured in the same
run). Results: results/<out>.json (results/safeguards.json by default).
"""

import argparse
import functools
import importlib.util
import io
import subprocess
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path

import torch
from common import interleaved_medians, map_seconds, reference_map, save

import deqlib

PROBLEMS = {"reference": {"batch": 64, "width": 256}, "wide": {"batch": 32, "width": 512}}
METHODS = ("picard", "anderson", "broyden")
EVALUATIONS = 50


def solvers_at(commit: str):
    """deqlib.solvers as it was at `commit`, imported beside today's package."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "archive", commit, "deqlib"], cwd=root, check=True,
                             capture_output=True).stdout
    folder = Path(tempfile.mkdtemp())
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    package = folder / "deqlib"
    spec = importlib.util.spec_from_file_location(
        "deqlib_before", package / "__init__.py", submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["deqlib_before"] = module
    spec.loader.exec_module(module)
    return module.solvers


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="b21f901", help="the commit to compare against")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="safeguards", help="results/<out>.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    before = solvers_at(args.before)
    rows = []
    print(f"{'problem':>9} {'ρ':>4} {'tol':>5} {'solver':>8} {'steps':>9} {'ratio':>6} "
          f"{'step/f':>11}")
    for problem, shape in PROBLEMS.items():
        for rho in (0.9, 0.99):
            f, z0 = reference_map(rho, **shape)
            for tol in (1e-4, 1e-6):
                for method in METHODS:
                    runs = {name: functools.partial(getattr(module, method), f, z0, tol=tol,
                                                    max_iter=2000)
                            for name, module in (("before", before), ("after", deqlib.solvers))}
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        steps = {k: run().steps for k, run in runs.items()}
                        times = interleaved_medians({**runs, "f": map_seconds(f, z0,
                                                                             EVALUATIONS)},
                                                    args.repeats)
                    per_f = times["f"] / EVALUATIONS
                    cost = {k: times[k] / steps[k] / per_f for k in runs}
                    ratio = times["after"] / times["before"]
                    rows.append({"problem": problem, "rho": rho, "tol": tol, "method": method,
                                 "steps_before": steps["before"], "steps_after": steps["after"],
                                 "seconds_before": times["before"],
                                 "seconds_after": times["after"], "ratio": ratio,
                                 "step_cost_before": cost["before"],
                                 "step_cost_after": cost["after"]})
                    print(f"{problem:>9} {rho:4} {tol:5.0e} {method:>8} "
                          f"{steps['before']:4d}→{steps['after']:<4d} {ratio:6.3f} "
                          f"{cost['before']:5.2f}→{cost['after']:<5.2f}")
    ratios = torch.tensor([r["ratio"] for r in rows])
    geo = ratios.log().mean().exp().item()
    print(f"time after/before: geometric mean {geo:.3f}, range {ratios.min():.3f}–"
          f"{ratios.max():.3f}")
    save(args.out, {"before": args.before, "rows": rows, "geometric_mean_ratio": geo},
         "cpu")


if __name__ == "__main__":
    main()
