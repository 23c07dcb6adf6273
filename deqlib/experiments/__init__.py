"""The DELM against its explicit peers on one dataset: a runner whose results can be trusted.

The comparison: the deep equilibrium linear model (DELM) with a Gaussian and with a low-rank
start, the linear model started from the DELM's own function W₀ = B₀U₀, and deep linear networks
of depth 2 and 3 (width m), on the square loss and the cross-entropy, over several seeds::

    python -m deqlib.experiments --out results/mnist10k --download
    python -m deqlib.experiments run --dataset digits --epochs 20 --out results/digits

The first runs :func:`paper_comparison` (mnist10k by default): every model with the SAME
learning rate (the controlled comparison), every model with its own tuned learning rate, and
full-batch gradient descent from the same W₀ for the DELM and the linear model. The second
runs one set of (loss, model, seed) runs (:func:`run_experiment`).

Every run is keyed by ALL of its settings (dataset, subset sizes, model, its initialisation,
width, loss, optimizer, learning rate, epochs, batch size, γ, δ, seed, dtype) and written to
``OUT/runs/<loss>__<model>__seed<k>__<key>.json`` as soon as it finishes, with the command,
device, date and wall time that produced it. A rerun finds a finished run only if every
setting matches; change any setting and it runs again (the old file stays, under its own key).
The dtype in the key is the one the run trained in: torch's default dtype at the call. A file
that is not a whole run of exactly those settings (unreadable, a folder, wrong types, NaN in
its history, partial) is named in a :class:`CorruptRunWarning` and run again, and the other
runs still resume. Each file is written through a temporary file of its own, then renamed, so
an interrupted comparison restarts where it stopped and concurrent runs never collide.

Protocol (our defaults; the paper's exact hyper-parameters were not available to us): images
flattened to [0, 1], φ(x) = x, γ = 0.8, δ = 1e-6, A, B ~ N(0, 1/m); SGD with a fixed step on the
MEAN loss over a mini-batch; train and test loss and accuracy every epoch, and for the DELM
‖S_t‖₂, s_min(U_t)² and ‖U_t‖₂. With a Gaussian A₀ at m = 784, ‖S₀‖₂ ≈ 0.08 and the DELM starts
almost as the linear model; the low-rank start puts ‖S₀‖₂ near γ.

The figures (:func:`plot_curves`, :func:`plot_S_norm`, :func:`plot_gd_gap`) and the table
(:func:`summary_table`) are drawn from the stored records, on their own Figures, with no
global matplotlib state.

The package, one module per job: ``catalog`` (the models and defaults), ``store`` (keys, run
files, :func:`load_runs`), ``provenance``, ``runner`` (:func:`run_experiment`,
:func:`run_full_datasets`), ``tuning`` (:func:`tune_learning_rates`, :func:`paper_comparison`),
``gd_gap``, ``reports`` (tables), ``figures`` and ``cli`` (``main``, the command line); every
public name is imported here.
"""

from __future__ import annotations

from . import catalog
from .catalog import MODEL_LABELS, MODELS, delm_spectra, make_model
from .cli import main
from .figures import plot_curves, plot_gd_gap, plot_S_norm
from .gd_gap import gd_loss_gap, run_gd_gaps
from .reports import summary_table, summary_text, write_summary
from .runner import run_experiment, run_full_datasets
from .store import CorruptRunWarning, load_runs, run_key, run_settings
from .tuning import paper_comparison, tune_learning_rates

#: The datasets :func:`run_full_datasets` trains on (downloaded by torchvision).
FULL_DATASETS = catalog.FULL_DATASETS
PAPER_DEFAULTS = catalog.PAPER_DEFAULTS      # a module attribute before the split: kept

__all__ = [
    "MODELS", "MODEL_LABELS", "FULL_DATASETS", "CorruptRunWarning", "make_model", "delm_spectra",
    "run_settings", "run_key", "run_experiment", "load_runs", "tune_learning_rates",
    "gd_loss_gap", "run_gd_gaps", "paper_comparison", "run_full_datasets", "summary_table",
    "summary_text", "write_summary", "plot_curves", "plot_S_norm", "plot_gd_gap",
    "main",
]
