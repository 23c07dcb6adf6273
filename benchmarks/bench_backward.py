"""Backward passes of a DEQ: memory and time of the implicit backward, against the forward solve
and against torchdeq's implicit backward; and implicit vs unrolled vs one-step as iterations grow.

All on the pinned reference problem (deqlib.reference_tanh_problem; batch 64, width 256), in
float32, with W_z and the injection W_x x as the parameters being differentiated.

1. Memory: the bytes autograd saves for backward during one DEQ forward (saved_tensors_hooks,
   each storage once), divided by the bytes saved by ONE application of f with the graph on
   (z requiring grad, as the Jacobian J = ∂f/∂z needs). Also on a width-512 map, batch 32.
2. Time, at ρ = 0.9 and 0.99: first one evaluation of f against one step of the adjoint map
   (Jᵀu + g, a vector-Jacobian product of the one retained graph); then, with Anderson forward
   and backward to the same tolerance 1e-6 (relative residual), the median over interleaved
   repeats of the forward (the solve and the one application of f) and of the backward (the
   adjoint solve and the product (∂f/∂θ)ᵀu), and their ratio. Next to them, torchdeq 0.1.0's
   implicit backward on the same map, called as its users do: get_deq(ift=True,
   f_solver="anderson", b_solver="anderson", f_tol=b_tol=1e-6, f_stop_mode=b_stop_mode="rel"),
   its defaults otherwise (m = 6, λ = 1e-4).
3. For 10 to 200 forward Picard iterations (ρ = 0.9): each backward mode's gradient error against
   the exact gradient (float64, tolerance 1e-12), its time and its memory.

    python benchmarks/bench_backward.py [--repeats 5] [--threads 1] [--device auto]
"""

import argparse
import os
import statistics
import time
import warnings

import torch
from common import interleaved_medians, save, sync

import deqlib
from deqlib.functional import tanh_map
from deqlib.memory import cuda_peak_bytes, saved_tensor_bytes
from deqlib.train import resolve_device

MODES = ("implicit", "unrolled", "one_step")
COUNTS = (10, 25, 50, 100, 200)
TOL = 1e-6


def f_tanh(z, context):
    return tanh_map(z, *context)


def parameters(problem):
    """W_z and the injection W_x x, as leaves that require grad."""
    W = problem.W_z.clone().requires_grad_()
    injection = (problem.x @ problem.W_x.T).detach().requires_grad_()
    return W, injection


def memory_ratio(problem) -> dict:
    """Bytes saved by a DEQ forward / bytes saved by one application of f, in float32."""
    p = problem.to(dtype=torch.float32)
    W, injection = parameters(p)
    one = saved_tensor_bytes(lambda: f_tanh(p.z0().requires_grad_(), (W, injection)))
    deq = deqlib.DEQ(f_tanh, solver=deqlib.Anderson(tol=TOL, max_iter=1000))
    kept = saved_tensor_bytes(lambda: deq((W, injection), p.z0()))
    return {"deq_bytes": kept, "one_application_bytes": one, "ratio": kept / one}


def width_512_problem() -> deqlib.layers.ReferenceProblem:
    """A tanh map of width 512 and batch 32 with ‖W_z‖₂ = 0.5."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(512, 512, generator=g, dtype=torch.float64)
    return deqlib.layers.ReferenceProblem(
        0.5 * W / torch.linalg.matrix_norm(W, ord=2),
        torch.eye(512, dtype=torch.float64) / 4,
        torch.randn(32, 512, generator=g, dtype=torch.float64),
        0.5,
    )


def map_and_vjp_seconds(rho: float, repeats: int, device) -> dict:
    """Seconds of one evaluation of f (no graph) and of one vector-Jacobian product Jᵀu of the
    retained graph plus g (one step of the adjoint map), interleaved medians of 100 calls."""
    p = deqlib.reference_tanh_problem(rho, dtype=torch.float32, device=device)
    W, injection = parameters(p)
    with torch.no_grad():
        z = deqlib.solve(lambda z: f_tanh(z, (W, injection)), p.z0(), tol=TOL).z
    z_in = z.clone().requires_grad_()
    f_z = f_tanh(z_in, (W, injection))
    g = torch.randn(p.x.shape, generator=torch.Generator().manual_seed(1)).to(device)

    def evaluations():
        with torch.no_grad():
            for _ in range(100):
                f_tanh(z, (W, injection))

    def vjps():
        for _ in range(100):
            torch.autograd.grad(f_z, z_in, g, retain_graph=True)[0] + g

    times = interleaved_medians({"f": evaluations, "vjp": vjps}, repeats, device)
    return {
        "f_seconds": times["f"] / 100,
        "vjp_seconds": times["vjp"] / 100,
        "vjp_over_f": times["vjp"] / times["f"],
    }


def backward_times(rho: float, repeats: int, device) -> dict:
    """Forward and backward seconds (medians of interleaved repeats), steps and memory."""
    import torchdeq

    p = deqlib.reference_tanh_problem(rho, dtype=torch.float32, device=device)
    W, injection = parameters(p)
    weights = torch.randn(p.x.shape, generator=torch.Generator().manual_seed(0)).to(device)
    ours = {
        "deqlib": deqlib.DEQ(f_tanh, solver=deqlib.Anderson(tol=TOL, max_iter=1000)),
        # the adjoint problem is linear: Picard's cheap steps may beat Anderson's there
        "deqlib, picard adjoint": deqlib.DEQ(
            f_tanh, solver=deqlib.Anderson(tol=TOL, max_iter=1000),
            backward=deqlib.Implicit(solver=deqlib.Picard(tol=TOL, max_iter=5000))
        ),
    }
    theirs = torchdeq.get_deq(
        ift=True,
        f_solver="anderson",
        b_solver="anderson",
        f_tol=TOL,
        b_tol=TOL,
        f_stop_mode="rel",
        b_stop_mode="rel",
        f_max_iter=1000,
        b_max_iter=1000,
    )
    steps = {name: {} for name in (*ours, "torchdeq")}

    def run_deqlib(name):
        z, info = ours[name]((W, injection), p.z0(), return_info=True)
        return z, lambda: steps[name].update(
            forward=info.forward.steps, backward=info.backward.steps
        )

    def run_torchdeq():
        backward_info = {}
        z_out, info = theirs(
            lambda z: f_tanh(z, (W, injection)), p.z0(), backward_writer=backward_info.update
        )
        return z_out[-1], lambda: steps["torchdeq"].update(
            forward=int(info["nstep"].max()), backward=int(backward_info["nstep"].max())
        )

    contenders = {name: (lambda name=name: run_deqlib(name)) for name in ours}
    contenders["torchdeq"] = run_torchdeq
    times = {name: {"forward": [], "backward": []} for name in contenders}
    for repeat in range(repeats + 1):  # the first round warms up
        for name, run in contenders.items():
            sync(device)
            start = time.perf_counter()
            z, record = run()
            sync(device)
            middle = time.perf_counter()
            torch.autograd.grad((z * weights).sum(), (W, injection))
            sync(device)
            end = time.perf_counter()
            record()
            if repeat:
                times[name]["forward"].append(middle - start)
                times[name]["backward"].append(end - middle)
    out = {}
    for name, run in contenders.items():
        forward = statistics.median(times[name]["forward"])
        backward = statistics.median(times[name]["backward"])
        out[name] = {
            "forward_seconds": forward,
            "backward_seconds": backward,
            "backward_over_forward": backward / forward,
            "forward_steps": steps[name]["forward"],
            "backward_steps": steps[name]["backward"],
            "memory_bytes": (
                saved_tensor_bytes(lambda run=run: run()[0])
                if torch.device(device).type == "cpu"
                else None
            ),
        }
    return out


def iteration_sweep(repeats: int, device) -> list[dict]:
    """Implicit, unrolled and one-step backward after k Picard iterations (ρ = 0.9)."""
    p64 = deqlib.reference_tanh_problem(0.9, dtype=torch.float64, device=device)
    weights = torch.randn(
        p64.x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    ).to(device)
    W64, inj64 = parameters(p64)
    exact_deq = deqlib.DEQ(f_tanh, solver=deqlib.Anderson(tol=1e-12, max_iter=1000))
    exact = torch.autograd.grad((exact_deq((W64, inj64), p64.z0()) * weights).sum(), W64)[0]
    p = p64.to(dtype=torch.float32)
    W, inj = parameters(p)
    w32 = weights.float()

    def make(mode, k):
        # the forward runs exactly k Picard iterations in every mode (tol unreachable, the stall
        # rule off); the implicit adjoint is solved to the forward solves' tolerance TOL, which
        # float32 can meet (a tolerance float32 cannot meet would run it to its cap whatever k)
        backward = (deqlib.Implicit(solver=deqlib.Picard(tol=TOL, max_iter=1000))
                    if mode == "implicit" else mode)
        deq = deqlib.DEQ(f_tanh, solver=deqlib.Picard(tol=1e-30, max_iter=k, stall=None),
                         backward=backward)

        def step():
            loss = (deq((W, inj), p.z0()) * w32).sum()
            return torch.autograd.grad(loss, W)[0]

        return step, deq

    rows = []
    for k in COUNTS:
        made = {mode: make(mode, k) for mode in MODES}
        steps = {mode: step for mode, (step, _) in made.items()}
        row = {
            "iterations": k,
            "seconds": interleaved_medians(steps, repeats, device),
            "error": {},
            "memory_bytes": {},
        }
        z, info = made["implicit"][1]((W, inj), p.z0(), return_info=True)
        torch.autograd.grad((z * w32).sum(), W)
        row["adjoint"] = {"steps": info.backward.steps, "converged": info.backward.converged,
                          "stalled": info.backward.stalled}
        for mode, (step, deq) in made.items():
            grad = step().double()
            row["error"][mode] = ((grad - exact).norm() / exact.norm()).item()
            if torch.device(device).type == "cuda":
                row["memory_bytes"][mode] = cuda_peak_bytes(step, device)
            else:
                row["memory_bytes"][mode] = saved_tensor_bytes(lambda d=deq: d((W, inj), p.z0()))
        rows.append(row)
        print(
            f"{k:4d} iterations: "
            + "  ".join(
                f"{m} err {row['error'][m]:.1e} {1e3 * row['seconds'][m]:6.1f} ms "
                f"{row['memory_bytes'][m] / 2**20:5.2f} MiB"
                for m in MODES
            )
            + f"  (implicit adjoint: {row['adjoint']['steps']} steps)"
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads (default: torch's); 1 is steadier on a loaded machine",
    )
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    warnings.simplefilter(
        "ignore", deqlib.ConvergenceWarning
    )  # fixed iteration counts, on purpose

    memory = {
        "reference (batch 64, width 256)": memory_ratio(deqlib.reference_tanh_problem(0.9)),
        "width 512 (batch 32)": memory_ratio(width_512_problem()),
    }
    for name, m in memory.items():
        print(
            f"memory kept for backward, {name}: {m['deq_bytes']} B = {m['ratio']:.3f} x one "
            f"application of f ({m['one_application_bytes']} B)"
        )
    timing, per_step = {}, {}
    for rho in (0.9, 0.99):
        per_step[str(rho)] = s = map_and_vjp_seconds(rho, args.repeats, device)
        print(
            f"rho {rho}: one evaluation of f {1e6 * s['f_seconds']:.0f} us, one step of the "
            f"adjoint map (Jᵀu + g) {1e6 * s['vjp_seconds']:.0f} us: {s['vjp_over_f']:.2f}"
        )
        timing[str(rho)] = t = backward_times(rho, args.repeats, device)
        for name, r in t.items():
            print(
                f"rho {rho} {name:22}: forward {1e3 * r['forward_seconds']:6.1f} ms "
                f"({r['forward_steps']} steps), backward {1e3 * r['backward_seconds']:6.1f} ms "
                f"({r['backward_steps']} steps): backward/forward "
                f"{r['backward_over_forward']:.2f}"
            )
        print(
            f"rho {rho} deqlib/torchdeq backward time: "
            f"{t['deqlib']['backward_seconds'] / t['torchdeq']['backward_seconds']:.2f}"
        )
    rows = iteration_sweep(args.repeats, device)
    last = rows[-1]
    implicit_memory = [r["memory_bytes"]["implicit"] for r in rows]
    ratios = {
        "implicit memory / one application of f (width 256)": memory[
            "reference (batch 64, width 256)"
        ]["ratio"],
        "implicit memory / one application of f (width 512)": memory["width 512 (batch 32)"][
            "ratio"
        ],
        **{
            f"backward / forward time, rho {rho}": timing[rho]["deqlib"]["backward_over_forward"]
            for rho in timing
        },
        **{
            f"backward (picard adjoint) / forward time, rho {rho}": timing[rho][
                "deqlib, picard adjoint"
            ]["backward_over_forward"]
            for rho in timing
        },
        **{
            f"deqlib / torchdeq backward time, rho {rho}": timing[rho]["deqlib"][
                "backward_seconds"
            ]
            / timing[rho]["torchdeq"]["backward_seconds"]
            for rho in timing
        },
        "unrolled/implicit memory at 200 iterations": last["memory_bytes"]["unrolled"]
        / last["memory_bytes"]["implicit"],
        "implicit memory at 200 / at 10 iterations": implicit_memory[-1] / implicit_memory[0],
        "unrolled/implicit time at 200 iterations": last["seconds"]["unrolled"]
        / last["seconds"]["implicit"],
        "one_step relative gradient error at 200 iterations": last["error"]["one_step"],
    }
    memory_measure = "cuda_peak" if device.type == "cuda" else "saved_tensor_bytes"
    path = save(
        "backward",
        {
            "rows": rows,
            "ratios": ratios,
            "memory": memory,
            "timing": timing,
            # a shared machine: the 1-minute load average after the run says how busy it was
            "load_average": os.getloadavg()[0],
            "tol": TOL,
            "threads": torch.get_num_threads(),
            "memory_measure": memory_measure,
        },
        device,
    )
    print(f"results: {path}")
    for name, value in ratios.items():
        print(f"ratio {name}: {value:.3g}")


if __name__ == "__main__":
    main()
