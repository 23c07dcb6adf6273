"""Three ways to compute the deep equilibrium linear model at MNIST size, forward + backward.

n = 60,000 synthetic inputs of MNIST's shape (m = 784, m_y = 10), square loss, full batch:
(1) the closed form: one Cholesky factorisation of I − S and m_y right-hand sides, with the
backward written from the gradient formulas (deqlib's default); (2) an iterative solve of
z = Sz + x by Picard iteration with the implicit backward (DeepEquilibriumLinear(solver=
"picard"); with a Gaussian A, ‖S‖₂ ≈ 0.08 and a handful of steps suffice. Anderson would keep
2 × memory × n × m floats of history, about 7 GB here); (3) the equilibrium solved per sample
(a general solve with n right-hand sides).
Median wall times, interleaved; ratios against the closed form.

    python benchmarks/bench_delm_paths.py [--repeats 3] [--device auto]
"""

import argparse
import os

import torch
from common import interleaved_medians, save

import deqlib
from deqlib.train import resolve_device


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    n, m, m_y = 60_000, 784, 10
    X = torch.rand(n, m, device=device)
    Y = torch.nn.functional.one_hot(torch.randint(0, m_y, (n,), device=device), m_y).float()
    closed = deqlib.DeepEquilibriumLinear(m, m_y, device=device)
    solves = []  # (phase, steps) of every solve of the iterative path, from its callback
    iterative = deqlib.DeepEquilibriumLinear(
        m,
        m_y,
        solver=deqlib.Picard(tol=1e-5, max_iter=100),
        device=device,
        callback=lambda result, phase: solves.append((phase, result.steps)),
    )
    iterative.load_state_dict(closed.state_dict())

    def step(model):
        def fn():
            model.zero_grad(set_to_none=True)
            (model(X) - Y).pow(2).sum().backward()

        return fn

    def per_sample():
        closed.zero_grad(set_to_none=True)
        Z = torch.linalg.solve(torch.eye(m, device=device) - closed.S(), X.T).T
        ((Z @ closed.B.T) - Y).pow(2).sum().backward()

    times = interleaved_medians(
        {
            "closed_form": step(closed),
            "iterative_implicit": step(iterative),
            "per_sample": per_sample,
        },
        args.repeats,
        device,
    )
    solves.clear()
    iterative(X).sum().backward()
    steps = dict(solves)
    stats = {
        "forward_steps": steps["forward"],
        "backward_steps": steps["backward"],
        "S_norm": torch.linalg.matrix_norm(closed.S().detach(), ord=2).item(),
    }
    ratios = {
        "iterative/closed": times["iterative_implicit"] / times["closed_form"],
        "per_sample/closed": times["per_sample"] / times["closed_form"],
    }
    path = save(
        "delm_paths",
        {
            # a shared machine: the 1-minute load average after the run says how busy it was
            "load_average": os.getloadavg()[0],
            "shape": {"n": n, "m": m, "m_y": m_y},
            "seconds": times,
            "iterative": stats,
            "ratios": ratios,
        },
        device,
    )
    for name, t in times.items():
        print(f"{name:20} {1e3 * t:9.1f} ms")
    print(
        f"iterative: {stats['forward_steps']} forward and {stats['backward_steps']} adjoint "
        f"Picard steps, "
        f"‖S‖₂ = {stats['S_norm']:.3f}"
    )
    print(f"results: {path}")
    for name, value in ratios.items():
        print(f"ratio {name}: {value:.1f}")


if __name__ == "__main__":
    main()
