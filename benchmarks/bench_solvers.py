"""deqlib's forward solvers against torchdeq 0.1, on the pinned reference problem.

The tanh DEQ of DESIGN.md (batch 64, width 256, float32), spectral radius 0.9 and 0.99,
relative tolerance 1e-4 and 1e-6, max_iter 2000. torchdeq is called as its users call it:
get_solver(name)(f, z0, max_iter=2000, tol=tol, stop_mode='rel'), defaults otherwise.
Steps to tolerance and median wall time (contenders interleaved), the deqlib/torchdeq
ratios, and the cost of an Anderson step relative to a Picard step (one evaluation of f).
Also: the cost of a host synchronisation (.item()) at every step, against one every 10 steps.

    python benchmarks/bench_solvers.py [--repeats 7] [--device auto]
"""

import argparse

import torch
from common import interleaved_medians, save

import deqlib
from deqlib.train import resolve_device

PAIRS = {"picard": "fixed_point_iter", "anderson": "anderson", "broyden": "broyden"}


def picard_sync_every(f, z0, tol, max_iter, every):
    """Picard iteration that reads the residual on the host only every `every` steps."""
    z = z0
    for k in range(1, max_iter + 1):
        fz = f(z)
        res = ((fz - z).norm(dim=1) / fz.norm(dim=1)).max()
        z = fz
        if k % every == 0 and res.item() <= tol:
            break
    return k


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    from torchdeq.solver import get_solver

    rows = []
    for rho in (0.9, 0.99):
        problem = deqlib.reference_tanh_problem(rho, dtype=torch.float32, device=device)
        f, z0 = problem.f, problem.z0()
        for tol in (1e-4, 1e-6):
            contenders, steps = {}, {}
            for ours, theirs in PAIRS.items():
                steps[f"deqlib {ours}"] = deqlib.solve(f, z0, method=ours, tol=tol, max_iter=2000).steps
                info = get_solver(theirs)(f, z0, max_iter=2000, tol=tol, stop_mode="rel")[2]
                steps[f"torchdeq {ours}"] = int(info["nstep"].max().item())
                contenders[f"deqlib {ours}"] = (lambda m=ours: deqlib.solve(f, z0, method=m, tol=tol, max_iter=2000))
                contenders[f"torchdeq {ours}"] = (lambda s=theirs: get_solver(s)(f, z0, max_iter=2000, tol=tol,
                                                                                 stop_mode="rel"))
            times = interleaved_medians(contenders, args.repeats, device)
            rows.append({"rho": rho, "tol": tol, "steps": steps, "seconds": times})
            print(f"ρ = {rho}, tol = {tol:.0e}")
            for name in contenders:
                print(f"  {name:18} {steps[name]:5d} steps {1e3 * times[name]:9.1f} ms")

    sync_rows = {}
    problem = deqlib.reference_tanh_problem(0.99, dtype=torch.float32, device=device)
    sync_times = interleaved_medians(
        {f"every {k}": (lambda k=k: picard_sync_every(problem.f, problem.z0(), 1e-6, 2000, k)) for k in (1, 10)},
        args.repeats, device)
    sync_rows = {"picard_seconds_sync_every_1": sync_times["every 1"],
                 "picard_seconds_sync_every_10": sync_times["every 10"]}

    ratios = {}
    for row in rows:
        key = f"rho{row['rho']}_tol{row['tol']:.0e}"
        s, t = row["steps"], row["seconds"]
        for m in PAIRS:
            ratios[f"{key} {m} steps deqlib/torchdeq"] = s[f"deqlib {m}"] / s[f"torchdeq {m}"]
            ratios[f"{key} {m} time deqlib/torchdeq"] = t[f"deqlib {m}"] / t[f"torchdeq {m}"]
        ratios[f"{key} anderson/picard time (deqlib)"] = t["deqlib anderson"] / t["deqlib picard"]
        picard_step = t["deqlib picard"] / s["deqlib picard"]
        ratios[f"{key} anderson step / picard step (deqlib)"] = (t["deqlib anderson"] / s["deqlib anderson"]) / picard_step
        ratios[f"{key} broyden step / picard step (deqlib)"] = (t["deqlib broyden"] / s["deqlib broyden"]) / picard_step
    ratios["sync every step / every 10 steps (picard, rho 0.99)"] = (sync_rows["picard_seconds_sync_every_1"]
                                                                     / sync_rows["picard_seconds_sync_every_10"])
    path = save("solvers", {"rows": rows, "sync": sync_rows, "ratios": ratios}, device)
    print(f"results: {path}")
    for name, value in ratios.items():
        print(f"ratio {name}: {value:.2f}")


if __name__ == "__main__":
    main()
