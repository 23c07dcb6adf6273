"""Training end to end: deqlib's DEQ layers against the same maps wrapped by torchdeq 0.1.0.

Models (chapter 4's, on the embedded digits, 1,347 training and 450 test images of 8 × 8):
``deqlib.TanhDEQ(64, 32, 10, solver=Anderson(tol=1e-4))`` (Anderson, relative tolerance 1e-4,
max_iter 100, implicit backward with the same solver, tolerance and max_iter) and
``deqlib.ConvDEQ((8, 8), 10, channels=8, pool=4)`` (Anderson, tol 1e-4, max_iter 50, the same
implicit backward). Both are trained for 3 epochs with Adam (lr 1e-2), batches of 64 drawn in
the order deqlib.train.fit draws them (one torch.Generator seeded 0), the batch mean of the
cross-entropy; the loop below is fit's inner loop, shared by both contenders.

The torchdeq contender is the SAME module: a deep copy of the deqlib model (same weights at the
start, the same W_z or K rescaled into the contraction bound before each forward, the same
injection, the same map z ↦ tanh(W_z' z + W_x x + b) through the layer's own ``_context`` and
``_map``, the same readout), whose forward calls ``torchdeq.get_deq(...)`` instead of deqlib's
DEQ, as torchdeq's users call it: ``deq = get_deq(f_solver="anderson", b_solver="anderson",
f_tol=tol, b_tol=tol, f_max_iter=max_iter, b_max_iter=max_iter, f_stop_mode="rel",
b_stop_mode="rel", ift=True)`` and ``z_out, info = deq(f, z0)``; ``z_out[-1]`` goes to the
readout. torchdeq's Anderson runs at its defaults (m = 6, λ = 1e-4), deqlib's at its own
(memory 12, a mixing step every 6 steps): the same named solver, tolerance, stopping rule and
implicit backward, each library's own Anderson (benchmarks/bench_solvers.py compares those).

Contenders: deqlib's Anderson against torchdeq's at its defaults and at m = 5, λ = 1e-8
(TUNED below), and deqlib's Picard against torchdeq's fixed_point_iter (the same iteration, so
the same number of evaluations of f: the cleanest measure of what each library adds). And the
floor: each deqlib run's evaluations of f and VJPs alone, without any solver (maps_only).

All contenders train in turns (interleaved, so that the noise of a shared machine hits all
alike), each run from the same initial weights; the medians of ``--repeats`` runs (and every
run's time) go to results/training.json. An untimed run of each also counts the solver steps
(forward and backward, per batch) and evaluates the test accuracy after training.

    python benchmarks/bench_training.py [--repeats 7] [--epochs 3] [--threads 1]
    python benchmarks/bench_training.py --profile tanh     # where deqlib's training step goes
"""

import argparse
import copy
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from common import save
from torch import nn

import deqlib

LR, BATCH, SEED = 1e-2, 64, 0


#: torchdeq's name for each deqlib solver
THEIRS = {"anderson": "anderson", "picard": "fixed_point_iter"}
#: torchdeq's Anderson at the setting that was fastest on bench_solvers.py's reference problem
#: (m = 5, λ = 1e-8; its default λ = 1e-4 is absolute, large against the squared residuals
#: of a 32-wide z or of a gradient of a batch-mean loss), registered under its own name because
#: get_deq passes only max_iter, tol and stop_mode to the backward solver
TUNED = "anderson_m5_lam1e-8"


SOLVER_CLASSES = {"anderson": deqlib.Anderson, "picard": deqlib.Picard}


def make_model(name, data, solver="anderson"):
    """A deqlib model, initialised from a fixed generator (chapter 4's settings)."""
    generator = torch.Generator().manual_seed(0)
    if name == "tanh":
        return deqlib.TanhDEQ(data.in_features, 32, data.num_classes,
                              solver=SOLVER_CLASSES[solver](tol=1e-4), generator=generator)
    return deqlib.ConvDEQ(data.image_shape, data.num_classes, channels=8, pool=4,
                          solver=SOLVER_CLASSES[solver](tol=1e-4, max_iter=50),
                          generator=generator)


def register_tuned():
    import functools

    from torchdeq.solver import get_solver, register_solver
    register_solver(TUNED, functools.partial(get_solver("anderson"), m=5, lam=1e-8))


class TorchDEQModel(nn.Module):
    """A deqlib layer's parameters, map and readout; the equilibrium found by torchdeq's DEQ."""

    def __init__(self, layer, writer=None, solver=None):
        super().__init__()
        from torchdeq import get_deq
        self.layer = copy.deepcopy(layer)   # the same weights, the same parameterisation
        ours = self.layer.deq.solver
        backward = self.layer.deq.backward.solver or ours   # Implicit(): the forward's
        solver = solver or THEIRS[ours.method]
        self.deq = get_deq(f_solver=solver, b_solver=solver,
                           f_tol=ours.tol, b_tol=backward.tol,
                           f_max_iter=ours.max_iter, b_max_iter=backward.max_iter,
                           f_stop_mode="rel", b_stop_mode="rel", ift=True)
        self.writer = writer   # torchdeq's backward_writer: gets the adjoint solve's info

    def forward(self, x):
        layer = self.layer
        context = layer._context(x)    # W_z (or K) rescaled into the bound, and the injection
        if isinstance(layer, deqlib.TanhDEQ):
            z0 = x.new_zeros(len(x), layer.width)
        else:
            z0 = x.new_zeros(len(x), layer.channels, *layer.image_shape[1:])
        z_out, info = self.deq(lambda z: layer._map(z, context), z0,
                               backward_writer=self.writer)
        if self.training and self.writer is not None:
            self.writer(info, "forward")
        z = z_out[-1]
        if isinstance(layer, deqlib.TanhDEQ):
            return layer.readout(z)
        return layer.readout(nn.functional.adaptive_avg_pool2d(z, layer.pool).flatten(1))


def train(model, data, epochs):
    """deqlib.train.fit's inner loop: Adam, shuffled batches of 64 (seed 0), mean cross-entropy."""
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    shuffle = torch.Generator().manual_seed(SEED)
    n = len(data.X_train)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=shuffle)
        for i in range(0, n, BATCH):
            idx = perm[i:i + BATCH]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(data.X_train[idx]), data.y_train[idx])
            loss.backward()
            opt.step()
    return model


@torch.no_grad()
def accuracy(model, X, y):
    model.eval()
    return float((model(X).argmax(dim=1) == y).float().mean())


class Steps:
    """Solver steps per training batch, from deqlib's callback and torchdeq's infos."""

    def __init__(self):
        self.steps = {"forward": [], "backward": []}

    def deqlib(self, result, phase):
        if phase == "backward" or torch.is_grad_enabled():
            self.steps[phase].append(result.steps)

    def torchdeq(self, info, phase="backward"):
        self.steps[phase].append(int(info["nstep"].max()))

    def means(self):
        return {phase: statistics.fmean(s) for phase, s in self.steps.items()}


def contenders(name, data):
    """name -> (a model built afresh from the same initial weights, with a Steps recorder)."""
    anderson, picard = make_model(name, data), make_model(name, data, solver="picard")

    def deqlib_model(layer):
        def build(steps=None):
            model = copy.deepcopy(layer)
            if steps is not None:
                model.deq.callback = steps.deqlib
            return model
        return build

    def torchdeq_model(layer, solver=None):
        return lambda steps=None: TorchDEQModel(layer, steps and steps.torchdeq, solver)

    return {"deqlib anderson": deqlib_model(anderson),
            "torchdeq anderson": torchdeq_model(anderson),
            "torchdeq anderson m=5 lam=1e-8": torchdeq_model(anderson, TUNED),
            "deqlib picard": deqlib_model(picard),
            "torchdeq picard": torchdeq_model(picard)}


def untimed_check(builders, data, epochs):
    """Steps per batch, accuracies and trained parameters of one training run of each."""
    rows, params = {}, {}
    for who, build in builders.items():
        steps = Steps()
        model = build(steps)
        train(model, data, epochs)
        rows[who] = {"test_acc": accuracy(model, data.X_test, data.y_test),
                     "train_acc": accuracy(model, data.X_train, data.y_train),
                     "steps_per_batch": steps.means()}
        layer = model.layer if isinstance(model, TorchDEQModel) else model
        params[who] = [p.detach() for p in layer.parameters()]
    for who in builders:   # how far each run's trained weights are from deqlib anderson's
        rows[who]["max_parameter_difference_from_deqlib_anderson"] = max(
            float((p - q).abs().max()) for p, q in zip(params[who], params["deqlib anderson"]))
    return rows


def maps_only(layer, data, epochs, forward_steps, backward_steps):
    """The floor of a training run: per batch, only the solves' evaluations of f and VJPs.

    For every batch of the same epochs: the context (W_z or K in the bound, the injection),
    ``forward_steps`` evaluations of f without graph, one with graph, and ``backward_steps``
    vector-Jacobian products through it (u ← Jᵀu + g, autograd.grad as a user would write it),
    the counts rounded from a real run's means. No solver arithmetic, no loss, readout,
    parameter gradient or optimiser step: what the training would cost if the solvers' own work
    were free.
    """
    n_f, n_b = round(forward_steps), round(backward_steps)

    def run():
        model = copy.deepcopy(layer)
        shuffle = torch.Generator().manual_seed(SEED)
        n = len(data.X_train)
        for _ in range(epochs):
            perm = torch.randperm(n, generator=shuffle)
            for i in range(0, n, BATCH):
                x = data.X_train[perm[i:i + BATCH]]
                context = model._context(x)
                with torch.no_grad():
                    z = x.new_zeros(len(x), model.width) if hasattr(model, "width") else \
                        x.new_zeros(len(x), model.channels, *model.image_shape[1:])
                    for _ in range(n_f):
                        z = model._map(z, context)
                z = z.requires_grad_()
                f_z = model._map(z, context)
                g = torch.ones_like(f_z)
                u = g
                for _ in range(n_b):
                    u = torch.autograd.grad(f_z, z, u, retain_graph=True)[0] + g
    return run


def interleaved(runs: dict, repeats: int) -> dict:
    """Every run's wall time, the contenders in turns after one warm-up each."""
    for fn in runs.values():
        fn()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def profile(name, layer, data, steps=30):
    """cProfile of deqlib's training steps: the functions that take the time, by own time."""
    import cProfile
    import pstats
    model = copy.deepcopy(layer)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    X, y = data.X_train[:BATCH], data.y_train[:BATCH]

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(X), y).backward()
        opt.step()

    for _ in range(3):
        step()
    with torch.profiler.profile() as prof:
        for _ in range(steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)


PAIRS = {   # the ratios reported: (deqlib contender, torchdeq contender)
    "anderson, torchdeq at its defaults": ("deqlib anderson", "torchdeq anderson"),
    "anderson, torchdeq m=5 lam=1e-8": ("deqlib anderson", "torchdeq anderson m=5 lam=1e-8"),
    "picard (the same iteration in both)": ("deqlib picard", "torchdeq picard"),
}


def main(args):
    torch.set_num_threads(args.threads)
    data = deqlib.data.load("digits").to("cpu", dtype=torch.float32)
    if args.profile:
        return profile(args.profile, make_model(args.profile, data), data)
    register_tuned()
    results = {"epochs": args.epochs, "batch_size": BATCH, "optimizer": f"adam lr={LR}",
               "train_examples": len(data.X_train), "test_examples": len(data.X_test),
               "repeats": args.repeats, "threads": args.threads, "models": {}}
    for name in args.models:
        builders = contenders(name, data)
        layer = builders["deqlib anderson"]()
        with warnings.catch_warnings():   # a solve at max_iter is counted, not printed
            warnings.simplefilter("ignore")
            check = untimed_check(builders, data, args.epochs)
            runs = {who: (lambda b=b: train(b(), data, args.epochs))
                    for who, b in builders.items()}
            for who in ("deqlib anderson", "deqlib picard"):
                s = check[who]["steps_per_batch"]
                runs[f"{who}: maps and VJPs only"] = maps_only(
                    builders[who](), data, args.epochs, s["forward"], s["backward"])
            times = interleaved(runs, args.repeats)
        medians = {who: statistics.median(t) for who, t in times.items()}
        ratios = {}
        for pair, (ours, theirs) in PAIRS.items():
            per_round = [a / b for a, b in zip(times[ours], times[theirs])]
            ratios[pair] = {"median_ratio": medians[ours] / medians[theirs],
                            "per_round_min": min(per_round), "per_round_max": max(per_round)}
        results["models"][name] = {
            "model": repr(layer).splitlines()[0] + " ...",
            "deq": {"solver": layer.deq.solver.method, "tol": layer.deq.solver.tol,
                    "max_iter": layer.deq.solver.max_iter,
                    "backward": "implicit (same solver, tol, max_iter)", "stop": "rel"},
            "seconds": times, "median_seconds": medians, "ratios_deqlib_over_torchdeq": ratios,
            "runs": check,
        }
        print(f"\n{type(layer).__name__} ({name}): {args.epochs} epochs of "
              f"{len(data.X_train)} images in batches of {BATCH}; medians of {args.repeats}")
        for who, t in times.items():
            if who not in check:
                print(f"  {who:37} {medians[who]:6.3f} s (min {min(t):.3f}, max {max(t):.3f})")
                continue
            s, c = check[who]["steps_per_batch"], check[who]
            gap = c["max_parameter_difference_from_deqlib_anderson"]
            print(f"  {who:37} {medians[who]:6.3f} s (min {min(t):.3f}, max {max(t):.3f})  "
                  f"steps/batch fwd {s['forward']:5.1f} bwd {s['backward']:5.1f}  "
                  f"test acc {c['test_acc']:.4f}  Δθ {gap:.1e}")
        for who in ("deqlib anderson", "deqlib picard"):
            floor = medians[f"{who}: maps and VJPs only"]
            ratios[f"{who} / its maps and VJPs only"] = {"median_ratio": medians[who] / floor}
        for pair, r in ratios.items():
            if "per_round_min" not in r:
                print(f"  {pair:61} {r['median_ratio']:.3f}")
                continue
            print(f"  ratio deqlib/torchdeq, {pair:38} {r['median_ratio']:.3f} "
                  f"(per round {r['per_round_min']:.3f} to {r['per_round_max']:.3f})")
    path = save(args.out, results, "cpu")
    print(f"\nresults: {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=["tanh", "conv"],
                        choices=["tanh", "conv"])
    parser.add_argument("--out", default="training", help="results/<out>.json")
    parser.add_argument("--profile", choices=["tanh", "conv"],
                        help="profile deqlib's training steps of one model instead")
    main(parser.parse_args())
