r"""The quantities of the convergence theory of deep equilibrium linear models.

Conventions (used by every function here):

* Features as COLUMNS: Φ = [φ(x_1) … φ(x_n)] ∈ ℝ^{m×n} and targets Y ∈ ℝ^{m_y×n}. The
  library's tensors hold samples as rows, so for a model ``Phi = model.features(X).T``
  (with a ``width``, Φ = φ(X)ᵀ = RXᵀ; without one, Φ = Xᵀ) and ``Y = Y_rows.T``.
* The loss is a SUM over samples: L(A, B) = ℒ(BU) with ℒ(W) = Σ_i ℓ(Wφ(x_i), y_i)
  (torch's default mean would rescale the PL constant and time by n).
* vec is ROW-MAJOR: vec(W) stacks the rows of W (``W.reshape(-1)``), so
  vec(XYZ) = (X ⊗ Zᵀ) vec(Y). In this convention the B-channel of the preconditioner is
  I_{m_y} ⊗ UᵀU and the Hessian of the square loss is 2 I_{m_y} ⊗ ΦΦᵀ.
* Singular values are written s_min(·), s_max(·); σ(A) is the weight nonlinearity.

σ(A), S, U = (I − S)⁻¹, W = BU and the gradients ∂L/∂A, ∂L/∂B are the formulas of
:mod:`deqlib.functional`; they can also be reached from here (``theory.end_to_end`` is
``functional.end_to_end``), so that a chapter imports one module.
"""

# σ(A), U, W = BU and the gradients are functional's, reachable from here (module docstring)
from ..functional import (  # noqa: F401
    delm_gradients,
    end_to_end,
    equilibrium_matrix,
    sigma,
)
from .dynamics import (
    Descent,
    DescentStep,
    FlowRecord,
    delm_gradient_descent,
    gradient_descent,
    gradient_flow,
    jacobian,
    linear_gradient_flow,
    preconditioner,
)
from .objective import (
    optimum_cross_entropy,
    optimum_square_loss,
    pl_constant_square,
    s_min_U_squared,
    shallow_gradient,
    shallow_hessian,
    shallow_loss,
    square_loss,
)
from .trust_region import TrustRegionCheck, solve_trust_region, trust_region_check

__all__ = [
    "shallow_loss",
    "shallow_gradient",
    "shallow_hessian",
    "square_loss",
    "optimum_square_loss",
    "optimum_cross_entropy",
    "pl_constant_square",
    "s_min_U_squared",
    "jacobian",
    "preconditioner",
    "FlowRecord",
    "Descent",
    "DescentStep",
    "gradient_descent",
    "gradient_flow",
    "linear_gradient_flow",
    "delm_gradient_descent",
    "solve_trust_region",
    "TrustRegionCheck",
    "trust_region_check",
]
