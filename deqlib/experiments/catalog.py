"""The models of the comparison (names, labels, seeded initialisations) and the defaults
of the mnist10k comparison."""

from __future__ import annotations

import torch

from .. import validate
from ..models import DeepEquilibriumLinear, DeepLinearNetwork, LinearModel

MODELS = ("delm", "delm_low_rank", "linear", "deep2", "deep3")
#: Models run only on request, outside the default comparison: the linear model started at the
#: low-rank DELM's W₀, so that the low-rank DELM too has a partner with its start.
EXTRA_MODELS = ("linear_low_rank",)
ALL_MODELS = MODELS + EXTRA_MODELS
MODEL_LABELS = {
    "delm": "DELM, Gaussian A₀", "delm_low_rank": "DELM, low-rank A₀",
    "linear": "linear, same W₀", "deep2": "deep linear, depth 2", "deep3": "deep linear, depth 3",
    "linear_low_rank": "linear, low-rank W₀",
}
_INITS = {"delm": "gaussian", "delm_low_rank": "low_rank", "linear": "W0 of the gaussian DELM",
          "deep2": "gaussian 1/fan_in", "deep3": "gaussian 1/fan_in",
          "linear_low_rank": "W0 of the low_rank DELM"}
#: The datasets :func:`run_full_datasets` trains on (downloaded by torchvision).
FULL_DATASETS = ("mnist", "kmnist", "cifar10", "cifar100")
_ROW_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "time")

# ----------------------------------------------------------------------------- models


def make_model(name: str, in_features: int, out_features: int, *, seed: int, gamma: float = 0.8,
               delta: float = 1e-6, width: int | None = None):
    """The model ``name`` with a seeded initialisation.

    ``"delm"`` / ``"delm_low_rank"``: a :class:`~deqlib.models.DeepEquilibriumLinear` with a
    Gaussian or a low-rank A₀; ``"linear"``: a linear model started at the Gaussian DELM's
    W₀ = B₀U₀ for the same seed (the same function); ``"linear_low_rank"``: the same at the
    low-rank DELM's W₀; ``"deep2"``, ``"deep3"``: deep linear networks of that depth and hidden
    ``width`` (default ``in_features``).

    Args:
        name: one of ``ALL_MODELS``: ``"delm"``, ``"delm_low_rank"``, ``"linear"``,
            ``"linear_low_rank"``, ``"deep2"``, ``"deep3"``.
        in_features: the input dimension (the DELM's width m: φ is the identity).
        out_features: the number of outputs (classes).
        seed: seeds the initialisation (the same seed gives ``"delm"`` and ``"linear"`` the
            same function W₀).
        gamma: the DELM's γ (also used to draw the linear model's W₀).
        delta: the DELM's δ.
        width: the deep linear networks' hidden width; ``None``: ``in_features`` (ignored by
            the other models).

    Returns:
        The model, an ``nn.Module`` in torch's default dtype.
    """
    name = validate.choice("name", name, ALL_MODELS)
    g = torch.Generator().manual_seed(validate.integer("seed", seed, minimum=0))
    if name in ("delm", "delm_low_rank", "linear", "linear_low_rank"):
        low_rank = name in ("delm_low_rank", "linear_low_rank")
        delm = DeepEquilibriumLinear(in_features, out_features, gamma=gamma, delta=delta,
                                     generator=g, init="low_rank" if low_rank else "gaussian")
        if name.startswith("linear"):
            with torch.no_grad():
                return LinearModel.from_matrix(delm.end_to_end().detach())
        return delm
    return DeepLinearNetwork(in_features, out_features, depth=int(name[-1]), width=width,
                             generator=g)


@torch.no_grad()
def delm_spectra(model) -> dict:
    """‖S‖₂, s_min(U)² and ‖U‖₂ of a DELM (from the eigenvalues of the symmetric S); {} else.

    S is symmetric PSD, so U = (I − S)⁻¹ has s_min(U) = 1 / (1 − λ_min(S)) and
    ‖U‖₂ = 1 / (1 − λ_max(S)).

    Args:
        model: any model; only a :class:`~deqlib.models.DeepEquilibriumLinear` has spectra.

    Returns:
        ``{"S_norm": ‖S‖₂, "s_min_U_sq": s_min(U)², "U_norm": ‖U‖₂}`` (floats), or ``{}``.
    """
    if not isinstance(model, DeepEquilibriumLinear):
        return {}
    s = torch.linalg.eigvalsh(model.S().double())
    return {"S_norm": s[-1].item(), "s_min_U_sq": float(1 / (1 - s[0].item()) ** 2),
            "U_norm": float(1 / (1 - s[-1].item()))}



#: The defaults of :func:`paper_comparison` on mnist10k (8,000 training digits, m = 784).
#: Chosen so that the whole comparison fits in one sitting on 2 CPU cores: the DELM's step costs
#: O(m³) whatever the batch, so few large batches. The same rate for all models is the largest
#: of {0.003, 0.01, 0.03} (square) / {0.05, 0.1, 0.3, 1} (cross-entropy) at which no model
#: diverged in a 3-epoch probe on seed 0 (at 0.03 every model diverged, at 1 the depth-3
#: network did); the tuning grid brackets it. The grid was first {0.005, 0.01, 0.02} /
#: {0.1, 0.3, 0.6}; three models chose its top, so it was extended upward by doublings until
#: every chosen rate is interior or the next rate diverges (on the square loss every model
#: diverged at 0.04; on the cross-entropy the DELM and the linear model chose 2.4 of 0.1–2.4 and
#: did far worse at 4.8).
PAPER_DEFAULTS = {
    "epochs": 10, "batch_size": 500,
    "lr": {"square": 0.01, "cross_entropy": 0.3},
    "lr_grid": {"square": [0.005, 0.01, 0.02, 0.04, 0.08],
                "cross_entropy": [0.1, 0.3, 0.6, 1.2, 2.4, 4.8]},
    "gd_steps": 100, "gd_lr": {"square": 0.02, "cross_entropy": 0.3}, "gd_record_every": 20,
}

