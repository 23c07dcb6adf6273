"""Backward passes of a DEQ: implicit vs unrolled vs one-step, as the forward iterations grow.

The reference tanh DEQ (ρ = 0.9, batch 64, width 256) with W_z and the injection W_x x as the
parameters. For 10 to 200 forward Picard iterations: the gradient's relative error against
the exact gradient (implicit, float64, tolerance 1e-12), the time of forward + backward (median,
interleaved), and the memory of the backward pass: on the CPU the bytes of the tensors saved for
backward (saved_tensors_hooks), on CUDA the peak allocated memory. Float32.

    python benchmarks/bench_backward.py [--repeats 5] [--device auto]
"""

import argparse
import warnings

import torch
from common import interleaved_medians, save

import deqlib
from deqlib.memory import cuda_peak_bytes, saved_tensor_bytes
from deqlib.train import resolve_device

MODES = ("implicit", "unrolled", "one_step")
COUNTS = (10, 25, 50, 100, 200)


def tanh_map(z, ctx):
    W_z, injection = ctx
    return torch.tanh(z @ W_z.T + injection)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    warnings.simplefilter("ignore", deqlib.ConvergenceWarning)   # fixed iteration counts, on purpose

    p64 = deqlib.reference_tanh_problem(0.9, dtype=torch.float64, device=device)
    weights = torch.randn(64, 256, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device)
    W64 = p64.W_z.clone().requires_grad_()
    inj64 = (p64.x @ p64.W_x.T).requires_grad_()
    exact_deq = deqlib.DEQ(tanh_map, tol=1e-12, max_iter=1000)
    exact = torch.autograd.grad((exact_deq((W64, inj64), p64.z0()) * weights).sum(), W64)[0]

    p = p64.to(dtype=torch.float32)
    W = p.W_z.clone().requires_grad_()
    inj = (p.x @ p.W_x.T).detach().requires_grad_()
    w32 = weights.float()

    def make(mode, k):
        # the forward runs exactly k Picard iterations in every mode (tol unreachable)
        deq = deqlib.DEQ(tanh_map, solver="picard", backward=mode, tol=1e-30, max_iter=k,
                         backward_tol=1e-8, backward_max_iter=200)

        def step():
            loss = (deq((W, inj), p.z0()) * w32).sum()
            return torch.autograd.grad(loss, W)[0]
        return step

    rows = []
    for k in COUNTS:
        steps = {mode: make(mode, k) for mode in MODES}
        times = interleaved_medians(steps, args.repeats, device)
        row = {"iterations": k, "seconds": times, "error": {}, "memory_bytes": {}}
        for mode, step in steps.items():
            grad = step().double()
            row["error"][mode] = ((grad - exact).norm() / exact.norm()).item()
            if device.type == "cuda":
                row["memory_bytes"][mode] = cuda_peak_bytes(step, device)
            else:
                deq = deqlib.DEQ(tanh_map, solver="picard", backward=mode, tol=1e-30, max_iter=k)
                row["memory_bytes"][mode] = saved_tensor_bytes(lambda: deq((W, inj), p.z0()))
        rows.append(row)
        print(f"{k:4d} iterations: " + "  ".join(
            f"{m} err {row['error'][m]:.1e} {1e3 * row['seconds'][m]:6.1f} ms {row['memory_bytes'][m] / 2**20:6.2f} MiB"
            for m in MODES))
    last = rows[-1]
    implicit_memory = [r["memory_bytes"]["implicit"] for r in rows]
    ratios = {
        "unrolled/implicit memory at 200 iterations": last["memory_bytes"]["unrolled"] / last["memory_bytes"]["implicit"],
        "implicit memory at 200 / at 10 iterations": implicit_memory[-1] / implicit_memory[0],
        "unrolled/implicit time at 200 iterations": last["seconds"]["unrolled"] / last["seconds"]["implicit"],
        "one_step relative gradient error at 200 iterations": last["error"]["one_step"],
    }
    path = save("backward", {"rows": rows, "ratios": ratios,
                             "memory_measure": "cuda_peak" if device.type == "cuda" else "saved_tensor_bytes"}, device)
    print(f"results: {path}")
    for name, value in ratios.items():
        print(f"ratio {name}: {value:.3g}")


if __name__ == "__main__":
    main()
