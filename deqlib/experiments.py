"""The paper's comparison as a runner: the deep equilibrium linear model (DELM) against the
linear model started from the same function and deep linear networks, on one dataset.

    python -m deqlib.experiments --dataset digits --epochs 20 --seeds 0 1 2 --out results/digits
    python -m deqlib.experiments --dataset mnist --download --device cuda --out results/mnist

For every (loss, model, seed) it trains with :func:`deqlib.train.fit`, logs train/test loss and
accuracy per epoch, and for the DELM also ‖S_t‖₂, σ_min(U_t)² and ‖U_t‖₂. Each run is written to
``OUT/runs/<loss>__<model>__seed<k>.json`` as soon as it finishes, with the command, device and
date that produced it; a run whose file exists is skipped, so an interrupted run resumes where
it stopped. ``OUT/summary.csv`` holds the last epoch of every run and ``OUT/summary.png`` the
test accuracy per epoch (mean over seeds).

Protocol (MATH.md §6; the paper's exact hyper-parameters were not available to us): images
flattened to [0, 1], φ(x) = x, γ = 0.8, δ = 1e-6, A, B ~ N(0, 1/m); the linear model starts at
W_0 = B_0 U_0; deep linear networks of depth 2 and 3 and width m; SGD with the SAME fixed learning
rate for every model (the controlled comparison). ``--tune`` instead picks each model's learning
rate from ``--lr-grid`` by its final training loss on the first seed, and writes to ``OUT/tuned``.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from .data import DATASETS, load
from .models import DeepEquilibriumLinear, DeepLinearNetwork, LinearModel
from .train import LOSSES, fit, resolve_device

__all__ = ["MODELS", "make_model", "delm_spectra", "run_experiment", "load_runs", "write_summary", "main"]

MODELS = ("delm", "delm_low_rank", "linear", "deep2", "deep3")


def make_model(name: str, in_features: int, out_features: int, *, seed: int, gamma: float = 0.8,
               delta: float = 1e-6):
    """The model ``name`` with a seeded initialisation; "linear" starts at the DELM's W_0 = B_0 U_0."""
    g = torch.Generator().manual_seed(seed)
    if name in ("delm", "delm_low_rank", "linear"):
        delm = DeepEquilibriumLinear(in_features, out_features, gamma=gamma, delta=delta, generator=g,
                                     init="low_rank" if name == "delm_low_rank" else "gaussian")
        if name == "linear":
            return LinearModel.from_matrix(delm.end_to_end().detach())
        return delm
    if name in ("deep2", "deep3"):
        return DeepLinearNetwork(in_features, out_features, depth=int(name[-1]), generator=g)
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


@torch.no_grad()
def delm_spectra(model) -> dict:
    """‖S‖₂, σ_min(U)² and ‖U‖₂ of a DELM (from the eigenvalues of the symmetric S)."""
    if not isinstance(model, DeepEquilibriumLinear):
        return {}
    s = torch.linalg.eigvalsh(model.S().double())
    return {"S_norm": s[-1].item(), "sigma_min_U_sq": float(1 / (1 - s[0].item()) ** 2),
            "U_norm": float(1 / (1 - s[-1].item()))}


def _run_file(out: Path, loss: str, model: str, seed: int) -> Path:
    return out / "runs" / f"{loss}__{model}__seed{seed}.json"


def run_experiment(*, dataset: str = "digits", models=MODELS, losses=LOSSES, seeds=(0, 1, 2), epochs: int = 20,
                   lr: float = 0.05, batch_size: int | None = 128, out: str | Path = "results/digits",
                   device="auto", root=None, download: bool = False, train_size: int | None = None,
                   test_size: int | None = None, gamma: float = 0.8, delta: float = 1e-6,
                   progress: bool = True, command: str | None = None) -> list[dict]:
    """Train every (loss, model, seed) not already in ``out`` and return all runs' records."""
    for name in models:
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
    for loss in losses:
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose from {LOSSES}")
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    data = load(dataset, root=root, download=download, train_size=train_size, test_size=test_size)
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or dev.type)
    todo = [(loss, name, seed) for loss in losses for name in models for seed in seeds]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo), desc=f"{dataset} runs")
    records = []
    for loss, name, seed in todo:
        path = _run_file(out, loss, name, seed)
        if path.exists():   # resume: finished runs are kept as they are
            records.append(json.loads(path.read_text()))
        else:
            model = make_model(name, data.in_features, data.num_classes, seed=seed, gamma=gamma, delta=delta)
            history = fit(model, data, loss=loss, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed,
                          device=dev, progress=False, callback=delm_spectra)
            record = {"dataset": dataset, "model": name, "loss": loss, "seed": seed, "lr": lr,
                      "epochs": epochs, "batch_size": batch_size, "gamma": gamma, "delta": delta,
                      "train_size": len(data.X_train), "test_size": len(data.X_test),
                      "device": device_name, "torch": torch.__version__,
                      "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command,
                      "history": history.rows}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record) + "\n")
            tmp.replace(path)            # atomic: an interrupted write never looks finished
            records.append(record)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    write_summary(load_runs(out), out)
    return records


def load_runs(out: str | Path) -> list[dict]:
    """Every finished run stored under ``out/runs`` (sorted by file name)."""
    return [json.loads(p.read_text()) for p in sorted((Path(out) / "runs").glob("*.json"))]


def write_summary(records: list[dict], out: Path) -> None:
    """``summary.csv`` (last epoch of every run) and ``summary.png`` (mean test accuracy per epoch)."""
    out = Path(out)
    fields = ["dataset", "loss", "model", "seed", "lr", "epochs", "train_loss", "train_acc", "test_loss",
              "test_acc", "S_norm", "time"]
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r in records:
            last = r["history"][-1]
            writer.writerow({**{k: r[k] for k in ("dataset", "loss", "model", "seed", "lr", "epochs")},
                             **{k: last.get(k, "") for k in fields[6:]}})
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .plot import PALETTE, use_style
    use_style()
    losses = sorted({r["loss"] for r in records})
    fig, axes = plt.subplots(1, len(losses), figsize=(5.5 * len(losses), 3.8), squeeze=False)
    for ax, loss in zip(axes[0], losses):
        for name in MODELS:
            runs = [r for r in records if r["loss"] == loss and r["model"] == name]
            if not runs:
                continue
            curves = torch.tensor([[row["test_acc"] for row in r["history"]] for r in runs])
            ax.plot(curves.mean(0), label=name, color=PALETTE.get(name.replace("_low_rank", "")),
                    linestyle="--" if "low_rank" in name else "-")
        ax.set(xlabel="epoch", ylabel="test accuracy (mean over seeds)", title=f"{records[0]['dataset']}, {loss}")
        ax.legend()
    fig.savefig(out / "summary.png", bbox_inches="tight")
    plt.close(fig)


def tune(*, models, losses, lr_grid, out, **kwargs) -> dict:
    """Each (loss, model)'s best learning rate from ``lr_grid`` by final training loss, first seed."""
    seed = kwargs.pop("seeds")[0]
    best = {}
    for loss in losses:
        for name in models:
            scores = {}
            for lr in lr_grid:
                recs = run_experiment(models=[name], losses=[loss], seeds=[seed], lr=lr,
                                      out=Path(out) / "tuning" / f"lr{lr:g}", progress=False, **kwargs)
                final = recs[0]["history"][-1]["train_loss"]
                scores[lr] = final if final == final else float("inf")   # NaN (diverged) loses
            best[f"{loss}__{name}"] = min(scores, key=scores.get)
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deqlib.experiments",
                                     description="DELM vs linear model vs deep linear networks on one dataset.")
    parser.add_argument("--dataset", default="digits", choices=DATASETS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05, help="the same SGD step for every model")
    parser.add_argument("--batch-size", type=int, default=128, help="0 for full batch")
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--test-size", type=int, default=None)
    parser.add_argument("--gamma", type=float, default=0.8)
    parser.add_argument("--delta", type=float, default=1e-6)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--root", default=None, help="dataset folder (default $DEQLIB_DATA or ~/.deqlib/data)")
    parser.add_argument("--download", action="store_true", help="download a missing dataset (needs the network)")
    parser.add_argument("--out", default=None, help="output folder (default results/<dataset>)")
    parser.add_argument("--tune", action="store_true", help="tune each model's learning rate over --lr-grid")
    parser.add_argument("--lr-grid", nargs="+", type=float, default=[0.01, 0.03, 0.1])
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out or f"results/{args.dataset}")
    common = dict(dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size or None,
                  device=args.device, root=args.root, download=args.download, train_size=args.train_size,
                  test_size=args.test_size, gamma=args.gamma, delta=args.delta,
                  command="python -m deqlib.experiments " + shlex.join(argv if argv is not None else sys.argv[1:]))
    if args.tune:
        best = tune(models=args.models, losses=args.losses, lr_grid=args.lr_grid, out=out / "tuned",
                    seeds=args.seeds, **common)
        print("tuned learning rates:", best)
        for key, lr in best.items():
            loss, name = key.split("__")
            run_experiment(models=[name], losses=[loss], seeds=args.seeds, lr=lr, out=out / "tuned",
                           progress=not args.no_progress, **common)
        (out / "tuned" / "learning_rates.json").write_text(json.dumps(best, indent=2) + "\n")
        return
    records = run_experiment(models=args.models, losses=args.losses, seeds=args.seeds, lr=args.lr, out=out,
                             progress=not args.no_progress, **common)
    print(f"{len(records)} runs in {out}; summary: {out / 'summary.csv'}")


if __name__ == "__main__":
    main()
