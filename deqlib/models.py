"""Models: the paper's deep equilibrium linear model, its explicit peers, and a tanh DEQ.

Notation (the same in every chapter): φ(x) = x the features (m = in_features),
m_y = out_features, σ(A) = AᵀA / (‖AᵀA‖_F + δ), S = γσ(A), U = (I − S)⁻¹,
W = B U the end-to-end matrix. W_z, W_x are the tanh DEQ's weights (W and U belong
to the paper's model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from .implicit import DEQ
from .solvers import SOLVERS

__all__ = [
    "DeepEquilibriumLinear",
    "LinearModel",
    "DeepLinearNetwork",
    "TanhDEQ",
    "ReferenceProblem",
    "reference_tanh_problem",
]


def _check_features(name: str, value) -> None:
    if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{name} must be a positive integer; got {name}={value!r}")


def _check_input(x: Tensor, in_features: int, model: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{model} expects a torch.Tensor of shape (batch, {in_features}); got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != in_features:
        raise ValueError(f"{model} expects input of shape (batch, {in_features}); got {tuple(x.shape)}")


def _gaussian(shape, std: float, generator: torch.Generator | None, like: Tensor) -> Tensor:
    out = torch.randn(shape, generator=generator, dtype=like.dtype)
    return (out * std).to(like.device)


# ----------------------------------------------------------------------------- the paper's model


class _DELMClosedForm(torch.autograd.Function):
    """out = X U Bᵀ with U = (I − γσ(A))⁻¹, and a backward written from the gradient formulas.

    Forward: C = AᵀA, N = ‖C‖_F, I − S = LLᵀ (Cholesky; I − S is symmetric positive
    definite because S is PSD with ‖S‖₂ < γ < 1), V = U Bᵀ by one solve with m_y
    right-hand sides, out = X V.
    Backward (MATH.md §2), with Ĝ = ∂ℓ/∂out and G = Ĝᵀ X = ∇ℒ(W):
        ∂X = Ĝ Vᵀ,   P = U Gᵀ (one more solve),   ∂B = Pᵀ = G U,
        M = γ V Pᵀ (rank m_y, never formed),
        ∂A = A(K + Kᵀ) = γ[(A V)Pᵀ + (A P)Vᵀ]/(N + δ) − 2 ⟨M, C⟩/(N (N + δ)²) · A C.
    A C = AAᵀA is the one further m×m product; at A = 0 the last term is 0 (not 0/0).
    """

    @staticmethod
    def forward(ctx, X, A, B, gamma, delta):
        C = A.T @ A
        N = torch.linalg.matrix_norm(C)
        eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
        try:
            L = torch.linalg.cholesky(eye - (gamma / (N + delta)) * C)
        except torch.linalg.LinAlgError as err:
            # I − S is positive definite for every finite A: this means A is not finite.
            raise FloatingPointError(
                "DeepEquilibriumLinear: I − γσ(A) could not be factorised, so A holds NaN or Inf "
                "(training diverged: lower the learning rate)") from err
        V = torch.cholesky_solve(B.T.contiguous(), L)            # (m, m_y) = U Bᵀ
        ctx.save_for_backward(X, A, C, N, L, V)
        ctx.gamma, ctx.delta = gamma, delta
        return X @ V

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        X, A, C, N, L, V = ctx.saved_tensors
        gamma, delta = ctx.gamma, ctx.delta
        gX = grad_out @ V.T if ctx.needs_input_grad[0] else None
        G = grad_out.T @ X                                        # (m_y, m) = ∇ℒ(W)
        P = torch.cholesky_solve(G.T.contiguous(), L)             # (m, m_y) = U Gᵀ
        gB = P.T if ctx.needs_input_grad[2] else None
        gA = None
        if ctx.needs_input_grad[1]:
            inner = gamma * ((C @ V) * P).sum()                  # ⟨M, C⟩ = γ⟨V Pᵀ, C⟩
            coef = inner / (N.clamp_min(torch.finfo(N.dtype).tiny) * (N + delta) ** 2)
            gA = (gamma / (N + delta)) * ((A @ V) @ P.T + (A @ P) @ V.T) - (2 * coef) * (A @ C)
        return gX, gA, gB, None, None


class DeepEquilibriumLinear(nn.Module):
    r"""The deep equilibrium linear model (Kawaguchi, 2021): an infinitely deep,
    weight-tied linear network whose nonlinearity sits on the weight.

    .. math::

        z^{(l)} = \gamma\,\sigma(A)\, z^{(l-1)} + \phi(x), \qquad
        \sigma(A) = \frac{A^\top A}{\lVert A^\top A\rVert_F + \delta}, \qquad
        f(x) = B z^*,

    with z* = U φ(x), U = (I − γσ(A))⁻¹, so f(x) = W φ(x) with W = B U. S = γσ(A) is
    symmetric PSD with ‖S‖₂ < γ < 1: the equilibrium exists, is unique, and Picard
    iteration converges from any start. φ is the identity.

    The default forward (``solver="cholesky"``) never iterates: one Cholesky
    factorisation of I − S and m_y right-hand sides give every prediction in the batch,
    and its backward is written from the closed-form gradients. ``solver="picard"``,
    ``"anderson"`` or ``"broyden"`` instead solve z = Sz + x iteratively with
    :class:`~deqlib.implicit.DEQ` and its implicit backward; both paths agree.

    Args:
        in_features: m, the width (= input dimension, since φ is the identity).
        out_features: m_y.
        gamma: γ in (0, 1).
        delta: δ > 0.
        solver: ``"cholesky"`` (closed form) or a fixed-point solver's name.
        solver_options: options for :class:`~deqlib.implicit.DEQ` when iterating.
        init: ``"gaussian"`` or ``"low_rank"`` (see :meth:`reset_parameters`).
        generator: optional ``torch.Generator`` for the initialisation.

    Shape:
        input ``(batch, in_features)``, output ``(batch, out_features)``.
    """

    def __init__(self, in_features: int, out_features: int, *, gamma: float = 0.8, delta: float = 1e-6,
                 solver: str = "cholesky", solver_options: dict | None = None, init: str = "gaussian",
                 generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                 device=None):
        super().__init__()
        _check_features("in_features", in_features)
        _check_features("out_features", out_features)
        if not (isinstance(gamma, (int, float)) and 0 < gamma < 1):
            raise ValueError(f"gamma must lie in (0, 1) so that the equilibrium exists; got gamma={gamma!r}")
        if not (isinstance(delta, (int, float)) and delta > 0 and math.isfinite(delta)):
            raise ValueError(f"delta must be a positive number (it keeps σ(A) finite at A = 0); got delta={delta!r}")
        if solver != "cholesky" and solver not in SOLVERS:
            raise ValueError(f"solver must be 'cholesky' or one of {sorted(SOLVERS)}; got solver={solver!r}")
        self.in_features, self.out_features = in_features, out_features
        self.gamma, self.delta, self.solver = float(gamma), float(delta), solver
        factory = {"dtype": dtype, "device": device}
        self.A = nn.Parameter(torch.empty(in_features, in_features, **factory))
        self.B = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.reset_parameters(generator=generator, init=init)
        self.deq = None
        if solver != "cholesky":
            opts = dict(solver_options or {})
            self.deq = DEQ(self._equilibrium_map, solver=solver, **opts)

    def reset_parameters(self, *, generator: torch.Generator | None = None, init: str = "gaussian") -> None:
        """Draw A and B ~ N(0, 1/m) entrywise; never A = 0, which is a stationary point.

        ``init="gaussian"`` keeps that A: ‖S‖₂ is then small at large m (about 0.08 at
        m = 784 with γ = 0.8, since σ is scale-invariant and a Gaussian AᵀA spreads its
        spectrum), so U ≈ I and the model starts as almost the linear model.
        ``init="low_rank"`` replaces A by a rank-one matrix plus 1% of that Gaussian noise:
        AᵀA then has one dominant eigenvalue and ‖S‖₂ is close to γ, so the equilibrium
        matters from the first step.
        """
        if init not in ("gaussian", "low_rank"):
            raise ValueError(f"init must be 'gaussian' or 'low_rank'; got init={init!r}")
        std = 1 / math.sqrt(self.in_features)
        with torch.no_grad():
            A = _gaussian(self.A.shape, std, generator, self.A)
            if init == "low_rank":
                u = _gaussian((self.in_features, 1), std, generator, self.A)
                v = _gaussian((1, self.in_features), 1.0, generator, self.A)
                A = u @ v + 0.01 * A
            self.A.copy_(A)
            self.B.copy_(_gaussian(self.B.shape, std, generator, self.B))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"gamma={self.gamma}, delta={self.delta:g}, solver={self.solver!r}")

    # the quantities of the theory, each differentiable
    def sigma(self) -> Tensor:
        """σ(A) = AᵀA / (‖AᵀA‖_F + δ), shape (m, m)."""
        C = self.A.T @ self.A
        return C / (torch.linalg.matrix_norm(C) + self.delta)

    def S(self) -> Tensor:
        """S = γσ(A): symmetric PSD, ‖S‖₂ < γ."""
        return self.gamma * self.sigma()

    def U(self) -> Tensor:
        """U = (I − S)⁻¹: symmetric, eigenvalues in [1, 1/(1 − γ)). Forms an m×m inverse."""
        eye = torch.eye(self.in_features, dtype=self.A.dtype, device=self.A.device)
        return torch.linalg.inv(eye - self.S())

    def end_to_end(self) -> Tensor:
        """W = B U, shape (m_y, m): the model is the linear map x ↦ W x."""
        eye = torch.eye(self.in_features, dtype=self.A.dtype, device=self.A.device)
        return torch.linalg.solve(eye - self.S(), self.B.T).T   # U symmetric: (U Bᵀ)ᵀ

    @staticmethod
    def _equilibrium_map(z: Tensor, context: tuple[Tensor, Tensor]) -> Tensor:
        S, x = context
        return z @ S + x                 # rows: z ↦ S z + φ(x), S symmetric

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.in_features, "DeepEquilibriumLinear")
        if self.deq is None:
            return _DELMClosedForm.apply(x, self.A, self.B, self.gamma, self.delta)
        # S is formed once per forward, not at every iteration of the solver
        z = self.deq((self.S(), x), torch.zeros_like(x))
        return z @ self.B.T


class LinearModel(nn.Module):
    """The shallow linear model x ↦ W x (no bias), the DELM's explicit peer.

    Shape: input ``(batch, in_features)``, output ``(batch, out_features)``.
    """

    def __init__(self, in_features: int, out_features: int, *, generator: torch.Generator | None = None,
                 dtype: torch.dtype | None = None, device=None):
        super().__init__()
        _check_features("in_features", in_features)
        _check_features("out_features", out_features)
        self.in_features, self.out_features = in_features, out_features
        self.W = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype, device=device))
        with torch.no_grad():
            self.W.copy_(_gaussian(self.W.shape, 1 / math.sqrt(in_features), generator, self.W))

    @classmethod
    def from_matrix(cls, W: Tensor) -> "LinearModel":
        """A linear model computing x ↦ W x: start it from another model's function."""
        if W.dim() != 2:
            raise ValueError(f"W must be a matrix (out_features, in_features); got shape {tuple(W.shape)}")
        model = cls(W.shape[1], W.shape[0], dtype=W.dtype, device=W.device)
        with torch.no_grad():
            model.W.copy_(W)
        return model

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"

    def end_to_end(self) -> Tensor:
        return self.W

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.in_features, "LinearModel")
        return x @ self.W.T


class DeepLinearNetwork(nn.Module):
    """x ↦ W_H ⋯ W_1 x, a product of ``depth`` matrices with hidden ``width`` (no biases).

    Its hypothesis class is the linear maps of rank ≤ width: a width below
    min(in_features, out_features) is a rank bottleneck the DELM does not have.
    Initialisation: W_l ~ N(0, 1/fan_in) entrywise.
    """

    def __init__(self, in_features: int, out_features: int, *, depth: int = 2, width: int | None = None,
                 generator: torch.Generator | None = None, dtype: torch.dtype | None = None, device=None):
        super().__init__()
        _check_features("in_features", in_features)
        _check_features("out_features", out_features)
        _check_features("depth", depth)
        width = in_features if width is None else width
        _check_features("width", width)
        self.in_features, self.out_features, self.depth, self.width = in_features, out_features, depth, width
        dims = [in_features] + [width] * (depth - 1) + [out_features]
        self.weights = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            w = nn.Parameter(torch.empty(fan_out, fan_in, dtype=dtype, device=device))
            with torch.no_grad():
                w.copy_(_gaussian(w.shape, 1 / math.sqrt(fan_in), generator, w))
            self.weights.append(w)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"depth={self.depth}, width={self.width}")

    def end_to_end(self) -> Tensor:
        W = self.weights[0]
        for w in self.weights[1:]:
            W = w @ W
        return W

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.in_features, "DeepLinearNetwork")
        for w in self.weights:
            x = x @ w.T
        return x


# ----------------------------------------------------------------------------- a nonlinear DEQ


class TanhDEQ(nn.Module):
    r"""A small nonlinear DEQ: z* = tanh(W_z z* + W_x x + b), optionally read out by a linear layer.

    tanh is 1-Lipschitz, so ‖W_z‖₂ < 1 makes the map a contraction and the
    equilibrium unique (Banach). With ``max_norm=c`` (default 0.9) the weight used is
    W_z · min(1, c/‖W_z‖₂), computed once per forward (one spectral norm), which keeps
    the layer well-posed during training; ``max_norm=None`` leaves W_z free.

    Args:
        in_features, width: sizes of x and z.
        out_features: size of an optional linear readout of z*; None returns z*.
        max_norm: bound on ‖W_z‖₂, in (0, 1), or None.
        solver, backward, tol, max_iter, solver_options: as in :class:`~deqlib.implicit.DEQ`.

    Shape:
        input ``(batch, in_features)``, output ``(batch, out_features or width)``.
    """

    def __init__(self, in_features: int, width: int, out_features: int | None = None, *,
                 max_norm: float | None = 0.9, solver: str = "anderson", backward: str = "implicit",
                 tol: float = 1e-6, max_iter: int = 100, solver_options: dict | None = None,
                 generator: torch.Generator | None = None, dtype: torch.dtype | None = None, device=None):
        super().__init__()
        _check_features("in_features", in_features)
        _check_features("width", width)
        if out_features is not None:
            _check_features("out_features", out_features)
        if max_norm is not None and not (0 < max_norm < 1):
            raise ValueError(f"max_norm must lie in (0, 1) (a contraction) or be None; got max_norm={max_norm!r}")
        self.in_features, self.width, self.max_norm = in_features, width, max_norm
        factory = {"dtype": dtype, "device": device}
        self.W_z = nn.Parameter(torch.empty(width, width, **factory))
        self.W_x = nn.Parameter(torch.empty(width, in_features, **factory))
        self.b = nn.Parameter(torch.zeros(width, **factory))
        with torch.no_grad():
            self.W_z.copy_(_gaussian(self.W_z.shape, 0.5 / math.sqrt(width), generator, self.W_z))
            self.W_x.copy_(_gaussian(self.W_x.shape, 1 / math.sqrt(in_features), generator, self.W_x))
        self.readout = nn.Linear(width, out_features, **factory) if out_features is not None else None
        self.deq = DEQ(self._map, solver=solver, backward=backward, tol=tol, max_iter=max_iter,
                       solver_options=solver_options)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, width={self.width}, max_norm={self.max_norm}"

    def effective_W_z(self) -> Tensor:
        """The W_z the layer uses: rescaled so that ‖W_z‖₂ ≤ max_norm."""
        if self.max_norm is None:
            return self.W_z
        norm = torch.linalg.matrix_norm(self.W_z, ord=2)
        return self.W_z * torch.clamp(self.max_norm / norm, max=1.0)

    def map(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        """The map z ↦ tanh(W_z z + W_x x + b) for this x (detached: for solvers and plots)."""
        _check_input(x, self.in_features, "TanhDEQ")
        with torch.no_grad():
            context = (self.effective_W_z(), x @ self.W_x.T + self.b)
        return lambda z: self._map(z, context)

    @staticmethod
    def _map(z: Tensor, context: tuple[Tensor, Tensor]) -> Tensor:
        W_z, injection = context
        return torch.tanh(z @ W_z.T + injection)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.in_features, "TanhDEQ")
        # W_z's rescaling and the injection W_x x + b do not change during the solve:
        # compute them once, not at every iteration.
        context = (self.effective_W_z(), x @ self.W_x.T + self.b)
        z = self.deq(context, x.new_zeros(x.shape[0], self.width))
        return z if self.readout is None else self.readout(z)


# ----------------------------------------------------------------------------- the pinned reference problem


@dataclass
class ReferenceProblem:
    """The pinned tanh DEQ f(z) = tanh(W_z z + W_x x) of DESIGN.md (batch 64, width 256)."""

    W_z: Tensor
    W_x: Tensor
    x: Tensor
    rho: float

    def f(self, z: Tensor) -> Tensor:
        return torch.tanh(z @ self.W_z.T + self.x @ self.W_x.T)

    def z0(self) -> Tensor:
        return torch.zeros_like(self.x)

    def to(self, *args, **kwargs) -> "ReferenceProblem":
        return ReferenceProblem(self.W_z.to(*args, **kwargs), self.W_x.to(*args, **kwargs),
                                self.x.to(*args, **kwargs), self.rho)


def reference_tanh_problem(rho: float = 0.99, *, batch: int = 64, width: int = 256,
                           dtype: torch.dtype = torch.float64, device=None) -> ReferenceProblem:
    """Draw the pinned reference problem: W_z has spectral radius ``rho`` (not a 2-norm contraction).

    With ``torch.Generator().manual_seed(0)``, in float64 and in this order:
    G = randn(width, width); W_x = randn(width, width)/16; x = 0.1·randn(batch, width);
    W_z = G / max|eig(G)| · rho. Then cast to ``dtype``.
    """
    if not (0 < rho < 1):
        raise ValueError(f"rho (the spectral radius of W_z) must lie in (0, 1); got rho={rho!r}")
    g = torch.Generator().manual_seed(0)
    G = torch.randn(width, width, generator=g, dtype=torch.float64)
    W_x = torch.randn(width, width, generator=g, dtype=torch.float64) / 16
    x = 0.1 * torch.randn(batch, width, generator=g, dtype=torch.float64)
    W_z = G / torch.linalg.eigvals(G).abs().max() * rho
    return ReferenceProblem(W_z, W_x, x, rho).to(dtype=dtype, device=device)

