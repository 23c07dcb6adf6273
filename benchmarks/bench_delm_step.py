"""The deep equilibrium linear model's training step against its baselines, at MNIST size.

Full batch: n = 60,000, m = 784, m_y = 10, forward + backward of the square loss, DELM vs the
linear model (target: ratio <= 2.0 on CPU). Mini-batch: batch 128, DELM step vs the floor of
its unavoidable dense work: forming AᵀA, one Cholesky factorisation of an m×m matrix and the
one further m×m product the backward needs (target: ratio <= 1.5). Also: letting autograd
differentiate through the Cholesky path, and solving the equilibrium per sample.

Synthetic tensors of MNIST's shape (no dataset needed). Contenders are interleaved and the
medians reported, since a shared machine is noisy. Prints the ratios last; writes JSON to
benchmarks/results/delm_step.json (delm_step_cuda.json on a GPU).

    python benchmarks/bench_delm_step.py [--repeats 15] [--device auto]
"""

import argparse
import os

import torch
from common import interleaved_medians, save

import deqlib
from deqlib import functional as F
from deqlib.train import resolve_device


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--per-sample", action="store_true", help="also time the per-sample solve (slow)"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    n, m, m_y, batch = 60_000, 784, 10, 128
    X = torch.rand(n, m, device=device)
    Y = torch.nn.functional.one_hot(torch.randint(0, m_y, (n,), device=device), m_y).float()
    delm = deqlib.DeepEquilibriumLinear(m, m_y, device=device)
    linear = deqlib.LinearModel(m, m_y, device=device)

    def step(model, xb, yb):
        def fn():
            model.zero_grad(set_to_none=True)
            (model(xb) - yb).pow(2).sum().backward()

        return fn

    def autograd_delm(xb, yb):  # autograd through the Cholesky path, for comparison
        def fn():
            delm.zero_grad(set_to_none=True)
            W = F.end_to_end(delm.A, delm.B, delm.gamma, delm.delta)
            ((xb @ W.T) - yb).pow(2).sum().backward()

        return fn

    A = delm.A.detach()

    def floor():  # the dense work no DELM step can avoid: AᵀA, its Cholesky, and A·(AᵀA)
        C, _, _ = F._factor(A, delm.gamma, delm.delta)
        A @ C

    full = interleaved_medians(
        {
            "delm": step(delm, X, Y),
            "linear": step(linear, X, Y),
            "delm_autograd": autograd_delm(X, Y),
        },
        args.repeats,
        device,
    )
    xb, yb = X[:batch], Y[:batch]
    mini = interleaved_medians(
        {
            "delm": step(delm, xb, yb),
            "floor": floor,
            "linear": step(linear, xb, yb),
            "delm_autograd": autograd_delm(xb, yb),
        },
        args.repeats,
        device,
    )
    results = {
        # a shared machine: the 1-minute load average after the run says how busy it was
        "load_average": os.getloadavg()[0],
        "threads": torch.get_num_threads(),
        "shape": {"n": n, "m": m, "m_y": m_y, "batch": batch},
        "full_batch_seconds": full,
        "mini_batch_seconds": mini,
        "ratios": {
            "full_batch_delm_over_linear": full["delm"] / full["linear"],
            "full_batch_autograd_over_linear": full["delm_autograd"] / full["linear"],
            "mini_batch_delm_over_floor": mini["delm"] / mini["floor"],
            "mini_batch_autograd_over_floor": mini["delm_autograd"] / mini["floor"],
        },
    }
    if args.per_sample:  # z* solved per sample: n right-hand sides through a general solve

        def per_sample():
            delm.zero_grad(set_to_none=True)
            S = delm.S()
            Z = torch.linalg.solve(torch.eye(m, device=device) - S, X.T).T
            ((Z @ delm.B.T) - Y).pow(2).sum().backward()

        ps = interleaved_medians({"per_sample": per_sample}, 3, device)["per_sample"]
        results["full_batch_seconds"]["delm_per_sample"] = ps
        results["ratios"]["full_batch_per_sample_over_linear"] = ps / full["linear"]
    path = save("delm_step", results, device)
    print(f"results: {path}")
    for k, v in {
        **{f"full {k}": v for k, v in full.items()},
        **{f"mini {k}": v for k, v in mini.items()},
    }.items():
        print(f"  {k:22} {1e3 * v:9.2f} ms")
    for k, v in results["ratios"].items():
        target = {
            "full_batch_delm_over_linear": " (target <= 2.0)",
            "mini_batch_delm_over_floor": " (target <= 1.5)",
        }
        print(f"ratio {k}: {v:.2f}{target.get(k, '')}")


if __name__ == "__main__":
    main()
