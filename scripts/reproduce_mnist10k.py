"""Train stored mnist10k runs again with today's code; write book/results/mnist10k/reproduced.json.

    python scripts/reproduce_mnist10k.py [--root DATA_ROOT]

The stored runs (same_lr and tuned) were made under several commits of deqlib, some ``+dirty``.
This trains again, on the CPU with one thread, the cheapest stored run of each code version and
of each model, compares each new history with the stored one
(deqlib.experiments.reproduce.history_difference), and records the results with the commit that
reproduced them and the training fingerprint on the embedded digits, which
tests/test_experiments.py compares with today's code. Run it from a clean checkout (the commit
is recorded); it needs mnist10k (deqlib.data.load("mnist10k", download=True) fetches it once).
About four minutes on one core.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from deqlib import data, experiments
from deqlib.experiments import PAPER_DEFAULTS, provenance, reproduce

STORED = Path(__file__).resolve().parent.parent / "book" / "results" / "mnist10k"


def choose(records):
    """The cheapest finished run (by its stored wall time) of each code version and model, among
    its runs at the lowest learning rate relative to the same rate of their loss: a run near the
    edge of stability (the top of the tuning grid) amplifies rounding, so a one-thread run of it
    need not match the two-thread run stored."""
    chosen = {}
    relative = {r["key"]: r["lr"] / PAPER_DEFAULTS["lr"][r["loss"]] for r in records}
    for group in ("code", "model"):
        for value in sorted({r[group] for r in records}):
            runs = [r for r in records if r[group] == value and not r["diverged"]]
            lowest = min(relative[r["key"]] for r in runs)
            best = min((r for r in runs if relative[r["key"]] == lowest),
                       key=lambda r: r["wall_time_s"])
            chosen[best["key"]] = best
    return sorted(chosen.values(), key=lambda r: (r["code"], r["model"], r["loss"], r["seed"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="where mnist10k is (deqlib.data.load)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    code = provenance._code_version()
    if code is None or code.endswith("+dirty"):
        raise SystemExit(f"deqlib's code version is {code!r}: commit first, so that the "
                         "reproduction names the code it ran")
    records = {r["key"]: r for part in ("same_lr", "tuned")
               for r in experiments.load_runs(STORED / part)}
    mnist = data.load("mnist10k", root=args.root)
    runs = []
    for record in choose(list(records.values())):
        runs.append(reproduce.reproduce_run(record, mnist))
        print(runs[-1], flush=True)
    result = {"reproduced_by": code, "date": time.strftime("%Y-%m-%d"),
              "torch": torch.__version__, "threads": 1, "runs": runs,
              "fingerprint_settings": {k: list(v) if isinstance(v, tuple) else v
                                       for k, v in reproduce.FINGERPRINT_SETTINGS.items()},
              "fingerprint": reproduce.training_fingerprint()}
    (STORED / "reproduced.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
