"""deqlib's forward solvers against torchdeq 0.1 at its defaults and at its best settings.

Problems: the pinned tanh DEQ (deqlib.reference_tanh_problem; batch 64, width 256) and a
width-512, batch-32 variant drawn the same way, float32, spectral radius ρ = 0.9 and 0.99,
relative tolerance 1e-4 and 1e-6, max_iter 2000. The map is f(z) = tanh(W_z z + W_x x) with
the injection W_x x computed once (benchmarks/common.py).

torchdeq is called as its users call it: get_solver(name)(f, z0, max_iter=2000, tol=tol,
stop_mode='rel'), at its defaults, and for Anderson also over m ∈ {5, 6, 10, 20},
λ ∈ {1e-4, 1e-8}; "torchdeq anderson best" is the fastest of those that reached tol.

In every configuration all contenders run in turns (interleaved, so that the noise of a shared
machine hits all alike), and so does a loop of evaluations of f alone: the cost of a solver
step is printed in units of one evaluation of f measured in the same run (the floor is 1).
Also: Picard with a host synchronisation (.item()) every step against every 10 steps.

    python benchmarks/bench_solvers.py [--repeats 5] [--device auto] [--out solvers] [--threads N]
        [--shape 256x1024] [--check-every 10]
    python benchmarks/bench_solvers.py --sweep     # deqlib's own memory/λ grid: the defaults
    python benchmarks/bench_solvers.py --shape 1x256 --out solvers_batch1   # batch 1; without
        # --out, a --shape run rewrites results/solvers.json, which the performance page reads
"""

import argparse
import warnings

import torch
from common import interleaved_medians, map_seconds, reference_map, save

import deqlib
from deqlib.train import resolve_device

PROBLEMS = {"reference": {"batch": 64, "width": 256}, "wide": {"batch": 32, "width": 512}}
RHOS, TOLS, MAX_ITER = (0.9, 0.99), (1e-4, 1e-6), 2000
METHODS = ("picard", "anderson", "broyden")
THEIRS = {"picard": "fixed_point_iter", "anderson": "anderson", "broyden": "broyden"}
GRID = [(m, lam) for m in (5, 6, 10, 20) for lam in (1e-4, 1e-8)]
TORCHDEQ_DEFAULT = (6, 1e-4)   # torchdeq 0.1's anderson_solver defaults m=6, lam=1e-4
MAP_EVALUATIONS = 50


def configurations():
    for problem, shape in PROBLEMS.items():
        for rho in RHOS:
            for tol in TOLS:
                yield problem, shape, rho, tol


def deqlib_run(f, z0, tol, method, **options):
    def run():
        with warnings.catch_warnings():   # a non-converged run is recorded, not printed
            warnings.simplefilter("ignore")
            return deqlib.solve(f, z0, method=method, tol=tol, max_iter=MAX_ITER, **options)
    return run


def torchdeq_available() -> bool:
    try:
        import torchdeq  # noqa: F401
    except ImportError:
        print("torchdeq is not installed (pip install -r benchmarks/requirements.txt): "
              "its contenders are skipped")
        return False
    return True


def torchdeq_run(f, z0, tol, name, **options):
    from torchdeq.solver import get_solver
    return lambda: get_solver(name)(f, z0, max_iter=MAX_ITER, tol=tol, stop_mode="rel",
                                    **options)


def steps_and_verdict(output, tol):
    """(steps, reached tol) of a deqlib SolverResult or a torchdeq (z, [], info) triple."""
    if isinstance(output, tuple):
        info = output[2]
        return int(info["nstep"].max().item()), bool(info["rel_lowest"].max().item() < tol)
    return output.steps, output.converged


def grid_name(m, lam):
    return f"torchdeq anderson m={m} lam={lam:.0e}"


def measure(problem, shape, rho, tol, repeats, device, check_every=1, peer=True):
    f, z0 = reference_map(rho, **shape, device=device)
    runs = {}
    for m in METHODS:
        runs[f"deqlib {m}"] = deqlib_run(f, z0, tol, m)
        if peer:
            runs[f"torchdeq {m}"] = torchdeq_run(f, z0, tol, THEIRS[m])
        if check_every > 1:
            runs[f"deqlib {m} check_every={check_every}"] = deqlib_run(
                f, z0, tol, m, check_every=check_every)
    for m, lam in GRID if peer else ():
        if (m, lam) != TORCHDEQ_DEFAULT:
            runs[grid_name(m, lam)] = torchdeq_run(f, z0, tol, "anderson", m=m, lam=lam)
    verdicts = {name: steps_and_verdict(run(), tol) for name, run in runs.items()}
    z_typical = deqlib_run(f, z0, 1e-2, "picard")().z   # an iterate like the solvers' own
    contenders = {"map": map_seconds(f, z_typical, MAP_EVALUATIONS), **runs}
    times = interleaved_medians(contenders, repeats, device)
    one_map = times.pop("map") / MAP_EVALUATIONS

    grid = {}
    for m, lam in GRID if peer else ():
        name = "torchdeq anderson" if (m, lam) == TORCHDEQ_DEFAULT else grid_name(m, lam)
        steps, ok = verdicts[name]
        grid[f"m={m} lam={lam:.0e}"] = {"steps": steps, "seconds": times[name], "converged": ok}
    main = [f"{who} {m}" for m in METHODS for who in ("deqlib", "torchdeq") if peer or
            who == "deqlib"]
    row = {
        "problem": problem, **shape, "rho": rho, "tol": tol, "map_seconds": one_map,
        "steps": {n: verdicts[n][0] for n in main}, "seconds": {n: times[n] for n in main},
        "converged": {n: verdicts[n][1] for n in main},
    }
    if peer:
        best = min((k for k in grid if grid[k]["converged"]), key=lambda k: grid[k]["seconds"])
        row.update(torchdeq_anderson_grid=grid, torchdeq_anderson_best=best)
        row["steps"]["torchdeq anderson best"] = grid[best]["steps"]
        row["seconds"]["torchdeq anderson best"] = grid[best]["seconds"]
        row["converged"]["torchdeq anderson best"] = True
    row["step_in_maps"] = {n: row["seconds"][n] / row["steps"][n] / one_map for n in row["steps"]}
    if check_every > 1:
        row["check_every"] = {
            n: {"steps": verdicts[n][0], "seconds": times[n], "converged": verdicts[n][1]}
            for n in runs if "check_every" in n}

    print(f"\n{problem} (batch {shape['batch']}, width {shape['width']}), ρ = {rho}, "
          f"tol = {tol:.0e}: one evaluation of f = {1e6 * one_map:.0f} µs")
    for name in [*row["steps"], *(grid_name(m, lam) for m, lam in GRID
                                  if peer and (m, lam) != TORCHDEQ_DEFAULT),
                 *(n for n in runs if "check_every" in n)]:
        steps, ok = verdicts.get(name, (row["steps"].get(name), True))
        seconds = times[name] if name in times else row["seconds"][name]
        print(f"  {name:34} {steps:5d} steps {'' if ok else '(NOT converged)':15}"
              f"{1e3 * seconds:9.1f} ms {seconds / steps / one_map:6.2f} maps/step")
    return row


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


def ratios_of(rows, sync):
    ratios = {}
    for row in rows:
        key = f"{row['problem']} rho{row['rho']} tol{row['tol']:.0e}"
        s, t, c = row["seconds"], row["steps"], row["step_in_maps"]
        for m in METHODS:
            ratios[f"{key} {m} step in map evaluations (deqlib)"] = c[f"deqlib {m}"]
        ratios[f"{key} anderson/picard time (deqlib)"] = s["deqlib anderson"] / s["deqlib picard"]
        ratios[f"{key} anderson/picard steps (deqlib)"] = t["deqlib anderson"] / t["deqlib picard"]
        if "torchdeq anderson best" in s:
            ratios[f"{key} anderson time deqlib/torchdeq best"] = (
                s["deqlib anderson"] / s["torchdeq anderson best"])
            for m in METHODS:
                ratios[f"{key} {m} time deqlib/torchdeq default"] = (s[f"deqlib {m}"]
                                                                     / s[f"torchdeq {m}"])
    ratios["sync every step / every 10 steps (picard, first problem, rho 0.99)"] = (
        sync["picard_seconds_sync_every_1"] / sync["picard_seconds_sync_every_10"])
    return ratios


# ----------------------------------------------------------------------------- --sweep

SWEEP_ANDERSON = [(m, k) for m in (5, 8, 10, 12, 16, 20) for k in sorted({1, (m + 1) // 2, m})]
SWEEP_LAM = (0.0, 1e-8, 1e-6, 1e-4, 1e-2)
SWEEP_BROYDEN = (10, 20, 30, 50)


def sweep(args, device):
    """deqlib's own settings over the 8 configurations: the measurement behind the defaults.

    Anderson (memory p, mix_every k) and Broyden's memory are timed (interleaved medians);
    each setting's score is the geometric mean over the configurations of its time divided by
    the fastest setting's time there (1 = fastest everywhere). λ changes the steps only (not
    the cost of a step), so λ is compared by steps at the chosen (p, k).
    """
    import statistics
    settings = {f"anderson p={m} k={k}": ("anderson", {"memory": m, "mix_every": k})
                for m, k in SWEEP_ANDERSON}
    settings.update({f"broyden memory={m}": ("broyden", {"memory": m}) for m in SWEEP_BROYDEN})
    settings["picard"] = ("picard", {})
    table = {name: {"steps": [], "seconds": []} for name in settings}
    configs = list(configurations())
    for problem, shape, rho, tol in configs:
        f, z0 = reference_map(rho, **shape, device=device)
        runs = {name: deqlib_run(f, z0, tol, m, **o) for name, (m, o) in settings.items()}
        steps = {name: run() for name, run in runs.items()}
        times = interleaved_medians(runs, args.repeats, device)
        for name in settings:
            table[name]["steps"].append(steps[name].steps if steps[name].converged else None)
            table[name]["seconds"].append(times[name])
        print(f"{problem} ρ={rho} tol={tol:.0e}: done", flush=True)

    def score(names):
        best = [min(table[n]["seconds"][i] for n in names) for i in range(len(configs))]
        return {n: statistics.geometric_mean([t / b for t, b in zip(table[n]["seconds"], best)])
                for n in names}
    anderson = score([n for n in settings if n.startswith("anderson")])
    broyden = score([n for n in settings if n.startswith("broyden")])
    for name, value in sorted({**anderson, **broyden}.items(), key=lambda x: x[1]):
        print(f"  {name:24} score {value:5.2f}  steps {table[name]['steps']}")
    chosen = min(anderson, key=anderson.get)
    m, k = settings[chosen][1]["memory"], settings[chosen][1]["mix_every"]
    lam_steps = {}
    for lam in SWEEP_LAM:
        lam_steps[f"{lam:g}"] = []
        for _, shape, rho, tol in configs:
            f, z0 = reference_map(rho, **shape, device=device)
            r = deqlib_run(f, z0, tol, "anderson", memory=m, mix_every=k, lam=lam)()
            lam_steps[f"{lam:g}"].append(r.steps if r.converged else None)
        print(f"  anderson p={m} k={k} lam={lam:g}: steps {lam_steps[f'{lam:g}']}")
    config_names = [f"{p} rho{r} tol{t:.0e}" for p, _, r, t in configs]
    save(args.out + "_defaults", {
        "configurations": config_names, "table": table, "score_anderson": anderson,
        "score_broyden": broyden, "lam_steps_at_best_anderson": lam_steps,
        "best_anderson": chosen, "best_broyden": min(broyden, key=broyden.get),
    }, device)


def main(args):
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.shape:
        PROBLEMS.clear()
        for text in args.shape:
            batch, width = (int(n) for n in text.lower().split("x"))
            PROBLEMS[text] = {"batch": batch, "width": width}
    if args.sweep:
        return sweep(args, device)
    peer = torchdeq_available()
    rows = [measure(*config, args.repeats, device, args.check_every, peer)
            for config in configurations()]
    f, z0 = reference_map(0.99, **next(iter(PROBLEMS.values())), device=device)
    sync_times = interleaved_medians(
        {k: (lambda k=k: picard_sync_every(f, z0, 1e-6, MAX_ITER, k)) for k in (1, 10)},
        args.repeats, device)
    sync = {"picard_seconds_sync_every_1": sync_times[1],
            "picard_seconds_sync_every_10": sync_times[10]}
    ratios = ratios_of(rows, sync)
    path = save(args.out, {"rows": rows, "sync": sync, "ratios": ratios}, device)
    print(f"\nresults: {path}")
    for name, value in ratios.items():
        print(f"ratio {name}: {value:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="solvers", help="results/<out>.json")
    parser.add_argument("--shape", action="append", metavar="BATCHxWIDTH",
                        help="problem shape(s) instead of 64x256 and 32x512 (repeatable)")
    parser.add_argument("--check-every", type=int, default=1,
                        help="also time deqlib's solvers reading the rule every N steps")
    parser.add_argument("--sweep", action="store_true",
                        help="time deqlib's own memory / mix_every / λ grid (the defaults)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads (default: torch's); 1 is steadier on a loaded machine")
    main(parser.parse_args())
