"""Models: the deep equilibrium linear model (DELM) and its explicit peers.

Notation (the same in every chapter): φ(x) the features, of dimension m (the width),
m_y = out_features, σ(A) = AᵀA / (‖AᵀA‖_F + δ), S = γσ(A), U = (I − S)⁻¹, W = BU the
end-to-end matrix. The formulas live in :mod:`deqlib.functional`; the modules wrap them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch import Tensor, nn

from . import functional as F
from .backward import Implicit, OneStep, Unrolled, refuse_moved
from .functional import _gaussian
from .implicit import DEQ
from .solvers import _BY_NAME as _SOLVERS
from .solvers import Solver, as_solver
from .solvers.rule import running_transforms, torch_func_error

SOLVER_NAMES = tuple(sorted(_SOLVERS))

__all__ = ["DeepEquilibriumLinear", "LinearModel", "DeepLinearNetwork"]


def _check_features(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {name}={value!r}")
    return int(value)


def _check_input(
    x: Tensor, in_features: int, model: str, dtype: torch.dtype | None = None
) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{model} expects a torch.Tensor of shape (batch, {in_features}); "
            f"got {type(x).__name__}"
        )
    if x.dim() != 2 or x.shape[1] != in_features:
        raise ValueError(
            f"{model} expects input of shape (batch, {in_features}); got {tuple(x.shape)}"
        )
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{model} has {dtype} parameters but the input is {x.dtype}: "
            f"convert the input with x.to({dtype})"
        )


def _check_float_dtype(model: str, dtype: torch.dtype | None) -> None:
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if dtype not in F.DTYPES:
        raise TypeError(
            f"{model} computes in float32 or float64 (the Cholesky factorisation has "
            f"no half-precision or integer kernel); got dtype={dtype}"
        )


# --- the paper's model


class DeepEquilibriumLinear(nn.Module):
    r"""The deep equilibrium linear model (Kawaguchi, 2021): an infinitely deep,
    weight-tied linear network whose nonlinearity sits on the weight.

    .. math::

        z^{(l)} = \gamma\,\sigma(A)\, z^{(l-1)} + \phi(x), \qquad
        \sigma(A) = \frac{A^\top A}{\lVert A^\top A\rVert_F + \delta}, \qquad
        f(x) = B z^*,

    with z* = Uφ(x), U = (I − γσ(A))⁻¹, so f(x) = Wφ(x) with W = BU. S = γσ(A) is
    symmetric PSD with ‖S‖₂ < γ < 1: the equilibrium exists, is unique, and Picard
    iteration converges from any start. The exact form of σ(A) is the book's
    reconstruction (see :mod:`deqlib.functional`).

    The features: without ``width``, φ is the identity and the width m is
    ``in_features``. With ``width=m``, φ(x) = Rx with a fixed Gaussian R of shape
    (m, in_features), entries N(0, 1/in_features) (so each coordinate of φ(x) has the size
    of x's), drawn once from ``generator`` and kept as the buffer ``R``: it is saved in the
    ``state_dict`` and never trained. Then m may be smaller than m_y and than the number
    of samples, the regime of the convergence theorem.

    The default forward (``solver="cholesky"``) never iterates: one Cholesky
    factorisation of I − S and m_y right-hand sides give every prediction in the batch,
    and its backward is written from the closed-form gradients
    (:func:`~deqlib.functional.deep_equilibrium_linear`). A solver object
    (``solver=Picard(tol=1e-8)``, ``Anderson()``, ``Broyden()``, or a solver's name for its
    defaults) instead solves z = Sz + φ(x) with :class:`~deqlib.implicit.DEQ` and its
    implicit backward; both paths agree.

    Args:
        in_features: the input dimension.
        out_features: m_y.
        width: m, the dimension of φ(x); ``None`` (default) makes φ the identity.
        gamma: γ in (0, 1) (a Python or numpy number).
        delta: δ > 0.
        solver: ``"cholesky"`` (closed form), or a fixed-point solver object of
            :mod:`deqlib.solvers` (or its name) for the iterative path.
        backward: the iterative path's backward, as in :class:`~deqlib.implicit.DEQ`
            (default ``Implicit()``). Refused with ``solver="cholesky"``, where nothing
            iterates.
        callback: called as ``callback(result, phase)`` after each solve of the iterative
            path (see :class:`~deqlib.implicit.DEQ`).
        init: ``"gaussian"`` or ``"low_rank"`` (see :meth:`reset_parameters`).
        generator: optional ``torch.Generator`` for R and the initialisation (``None``:
            torch's global generator).
        dtype: float32 or float64 (half precision and integers are refused); ``None``:
            torch's default dtype.
        device: the parameters' device; ``None``: torch's default device.
        **removed: no other keyword is accepted. One that moved into the solver or backward
            object (``tol``, ``max_iter``, ``backward_tol``, …) raises a TypeError that shows
            the object to write instead.

    Shape:
        input ``(batch, in_features)``, output ``(batch, out_features)``;
        A ``(m, m)``, B ``(out_features, m)``, R ``(m, in_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        width: int | None = None,
        gamma: float = 0.8,
        delta: float = 1e-6,
        solver: Solver | str = "cholesky",
        backward: Implicit | Unrolled | OneStep | str | None = None,
        callback: Callable | None = None,
        init: str = "gaussian",
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device=None,
        **removed,
    ):
        refuse_moved("DeepEquilibriumLinear", removed,
                     "anderson" if solver == "cholesky" else solver)
        super().__init__()
        in_features = _check_features("in_features", in_features)
        out_features = _check_features("out_features", out_features)
        m = in_features if width is None else _check_features("width", width)
        gamma, delta = F.check_constants(gamma, delta)
        _check_float_dtype("DeepEquilibriumLinear", dtype)
        if isinstance(solver, str) and solver not in ("cholesky", *SOLVER_NAMES):
            raise ValueError(f"solver must be 'cholesky' (closed form), a solver object such as "
                             f"Picard(tol=1e-8), or one of {SOLVER_NAMES}; got solver={solver!r}")
        if not (isinstance(solver, str) and solver == "cholesky"):
            solver = as_solver(solver)   # a solver object, or a name for its defaults
        self.in_features, self.out_features, self.width = in_features, out_features, m
        self.gamma, self.delta, self.solver = gamma, delta, solver
        factory = {"dtype": dtype, "device": device}
        R = None
        if width is not None:  # drawn before A and B, so a model without width is unchanged
            R = _gaussian(
                (m, in_features), 1 / math.sqrt(in_features), generator, torch.empty(0, **factory)
            )
        self.register_buffer("R", R)  # None: absent from the state_dict
        self.A = nn.Parameter(torch.empty(m, m, **factory))
        self.B = nn.Parameter(torch.empty(out_features, m, **factory))
        self.reset_parameters(generator=generator, init=init)
        self.deq = None
        if solver == "cholesky":
            given = sorted(k for k, v in (("backward", backward), ("callback", callback))
                           if v is not None)
            if given:
                raise TypeError(
                    f"{given} configure an iterative solve, but solver='cholesky' never "
                    f"iterates: drop them, or pass a solver object such as solver=Picard()"
                )
        else:
            self.deq = DEQ(self._equilibrium_map, solver=solver,
                           backward=Implicit() if backward is None else backward,
                           callback=callback)

    def reset_parameters(
        self, *, generator: torch.Generator | None = None, init: str = "gaussian"
    ) -> None:
        """Draw A and B ~ N(0, 1/m) entrywise (m the width); never A = 0, a stationary point.

        ``init="gaussian"`` keeps that A: ‖S‖₂ is then small at large m (since σ is
        scale-invariant and a Gaussian AᵀA spreads its spectrum, ‖S‖₂ shrinks like 1/√m),
        so U ≈ I and the model starts as almost the linear model.
        ``init="low_rank"`` replaces A by a rank-one matrix plus 1% of that Gaussian noise:
        AᵀA then has one dominant eigenvalue and ‖S‖₂ is close to γ, so the equilibrium
        matters from the first step. R (the features) is never redrawn.

        Args:
            generator: a ``torch.Generator`` to draw from; ``None``: torch's global generator.
            init: ``"gaussian"``: A with entries N(0, 1/m); or ``"low_rank"``:
                A = uvᵀ + 0.01·G, with u ∈ ℝᵐ of entries N(0, 1/m), v ∈ ℝᵐ of entries N(0, 1)
                and G the Gaussian A of ``"gaussian"``. B has entries N(0, 1/m) either way.
        """
        if init not in ("gaussian", "low_rank"):
            raise ValueError(f"init must be 'gaussian' or 'low_rank'; got init={init!r}")
        std = 1 / math.sqrt(self.width)
        with torch.no_grad():
            A = _gaussian(self.A.shape, std, generator, self.A)
            if init == "low_rank":
                u = _gaussian((self.width, 1), std, generator, self.A)
                v = _gaussian((1, self.width), 1.0, generator, self.A)
                A = u @ v + 0.01 * A
            self.A.copy_(A)
            self.B.copy_(_gaussian(self.B.shape, std, generator, self.B))

    def extra_repr(self) -> str:
        width = "" if self.R is None else f", width={self.width}"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}{width}, "
            f"gamma={self.gamma}, delta={self.delta:g}, solver={self.solver!r}"
        )

    # gamma and delta travel with the state: A and B mean nothing without them
    _CONSTANTS = ("gamma", "delta")

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for name in self._CONSTANTS:   # float64 on the CPU: exact for a Python float
            destination[prefix + name] = torch.tensor(getattr(self, name), dtype=torch.float64)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for name in self._CONSTANTS:   # absent from a state saved before they were stored
            saved = state_dict.pop(prefix + name, None)
            if saved is None:
                continue
            saved = float(saved)
            if saved != getattr(self, name):
                error_msgs.append(
                    f"DeepEquilibriumLinear: the state was saved from a model with "
                    f"{name}={saved:g}, but this model has {name}={getattr(self, name):g}, so "
                    f"its A and B would compute another function. Build the model with "
                    f"{name}={saved:g} before loading; to reuse the weights under the new "
                    f"{name} on purpose, delete {prefix + name!r} from the state_dict first.")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    # the quantities of the theory, each differentiable
    def features(self, x: Tensor) -> Tensor:
        """φ(x): ``x @ R.T`` with a width, else x itself. Shape (batch, m).

        Args:
            x: the inputs, ``(batch, in_features)``.

        Returns:
            φ(x), ``(batch, m)`` (samples as rows; the theory's Φ is its transpose).
        """
        _check_input(x, self.in_features, "DeepEquilibriumLinear", self.A.dtype)
        return x if self.R is None else x @ self.R.T

    def sigma(self) -> Tensor:
        """σ(A) = AᵀA / (‖AᵀA‖_F + δ), shape (m, m)."""
        return F.sigma(self.A, self.delta)

    def S(self) -> Tensor:
        """S = γσ(A), shape (m, m): symmetric PSD, ‖S‖₂ < γ (differentiable in A)."""
        return F.equilibrium_weight(self.A, self.gamma, self.delta)

    def U(self) -> Tensor:
        """U = (I − S)⁻¹, shape (m, m): symmetric, eigenvalues in [1, 1/(1 − γ)). Forms the
        m×m inverse (differentiable in A)."""
        return F.equilibrium_matrix(self.A, self.gamma, self.delta)

    def end_to_end(self) -> Tensor:
        """W = BU, shape (m_y, m): the model is the linear map φ(x) ↦ Wφ(x)."""
        return F.end_to_end(self.A, self.B, self.gamma, self.delta)

    @staticmethod
    def _equilibrium_map(z: Tensor, context: tuple[Tensor, Tensor]) -> Tensor:
        S, features = context
        return F.delm_map(z, S, features)

    def forward(self, x: Tensor) -> Tensor:
        if "vmap" in (running_transforms() or ()):   # torch.func.grad and jacrev work
            raise torch_func_error(
                "DeepEquilibriumLinear", "torch.func.vmap",
                "it checks its input, its I − γσ(A) and its output for NaN and Inf (and an "
                "iterative solver stops when a residual is small): data-dependent decisions "
                "read on the host")
        Phi = self.features(x)
        if self.deq is None:
            return F.deep_equilibrium_linear(Phi, self.A, self.B, self.gamma, self.delta)
        if Phi.shape[0] == 0:  # an empty batch has an empty equilibrium
            return Phi @ self.B.T
        F.check_finite_features(Phi)  # before the solver, which would only see NaN
        S = self.S()  # formed once per forward, not at every iteration
        if not bool(torch.isfinite(S).all()):
            raise FloatingPointError(
                "DeepEquilibriumLinear: A holds NaN or Inf, or is so large "
                "that AᵀA overflows (if training diverged, lower the "
                "learning rate)"
            )
        z = self.deq((S, Phi), torch.zeros_like(Phi))
        out = z @ self.B.T
        F.check_finite_output(out, Phi, self.A, self.B)
        return out


class LinearModel(nn.Module):
    """The shallow linear model x ↦ W x (no bias), the DELM's explicit peer.

    Args:
        in_features: the input dimension.
        out_features: the output dimension m_y.
        generator: a ``torch.Generator`` for W's entries, N(0, 1/in_features); ``None``:
            torch's global generator.
        dtype: W's dtype; ``None``: torch's default dtype.
        device: W's device; ``None``: torch's default device.

    Shape:
        input ``(batch, in_features)``, output ``(batch, out_features)``; W
        ``(out_features, in_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device=None,
    ):
        super().__init__()
        _check_features("in_features", in_features)
        _check_features("out_features", out_features)
        self.in_features, self.out_features = in_features, out_features
        self.W = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype, device=device))
        with torch.no_grad():
            self.W.copy_(_gaussian(self.W.shape, 1 / math.sqrt(in_features), generator, self.W))

    @classmethod
    def from_matrix(cls, W: Tensor) -> LinearModel:
        """A linear model computing x ↦ W x: start it from another model's function.

        Args:
            W: ``(out_features, in_features)``, copied (W's dtype and device).

        Returns:
            The :class:`LinearModel`.
        """
        if W.dim() != 2:
            raise ValueError(
                f"W must be a matrix (out_features, in_features); got shape {tuple(W.shape)}"
            )
        model = cls(W.shape[1], W.shape[0], dtype=W.dtype, device=W.device)
        with torch.no_grad():
            model.W.copy_(W)
        return model

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"

    def end_to_end(self) -> Tensor:
        """W itself, ``(out_features, in_features)`` (the parameter, not a copy)."""
        return self.W

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.in_features, "LinearModel")
        return x @ self.W.T


class DeepLinearNetwork(nn.Module):
    """x ↦ W_N ⋯ W_1 x, a product of N = ``depth`` matrices with hidden ``width`` (no biases).

    For depth ≥ 2 its hypothesis class is the linear maps of rank ≤ width: a width below
    min(in_features, out_features) is a rank bottleneck the DELM does not have. At depth 1
    ``width`` is ignored (there is no hidden layer) and every linear map is representable.
    Initialisation: W_j ~ N(0, 1/fan_in) entrywise.

    Args:
        in_features: the input dimension.
        out_features: the output dimension.
        depth: the number N of matrices, ≥ 1 (1 is the linear model).
        width: the size of every hidden layer; ``None``: ``in_features`` (then no rank
            bottleneck).
        generator: a ``torch.Generator`` for the initialisation; ``None``: torch's global
            generator.
        dtype: the weights' dtype; ``None``: torch's default dtype.
        device: the weights' device; ``None``: torch's default device.

    Shape:
        input ``(batch, in_features)``, output ``(batch, out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        depth: int = 2,
        width: int | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device=None,
    ):
        super().__init__()
        _check_features("in_features", in_features)
        _check_features("out_features", out_features)
        _check_features("depth", depth)
        width = in_features if width is None else width
        _check_features("width", width)
        self.in_features, self.out_features, self.depth, self.width = (
            in_features,
            out_features,
            depth,
            width,
        )
        dims = [in_features] + [width] * (depth - 1) + [out_features]
        self.weights = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            w = nn.Parameter(torch.empty(fan_out, fan_in, dtype=dtype, device=device))
            with torch.no_grad():
                w.copy_(_gaussian(w.shape, 1 / math.sqrt(fan_in), generator, w))
            self.weights.append(w)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"depth={self.depth}, width={self.width}"
        )

    def end_to_end(self) -> Tensor:
        """W = W_N ⋯ W_1, ``(out_features, in_features)``: the network is x ↦ Wx."""
        W = self.weights[0]
        for w in self.weights[1:]:
            W = w @ W
        return W

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.in_features, "DeepLinearNetwork")
        for w in self.weights:
            x = x @ w.T
        return x
