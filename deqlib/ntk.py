r"""Gram matrices and neural tangent kernels (NTKs) of deep equilibrium models.

The model of this module (the book's formulation, in the NTK parameterisation): for an input
x ∈ ℝᵈ and a width m,

.. math::

    z^*(x) = \tanh\Bigl(\tfrac{\sigma_w}{\sqrt m}\,\hat W z^*(x)
             + \tfrac{\sigma_u}{\sqrt d}\,\hat U x\Bigr), \qquad
    f(x) = \tfrac{1}{\sqrt m}\, a^\top z^*(x),

with trained parameters Ŵ (m, m), Û (m, d), a (m,), all N(0, 1) entrywise at initialisation
(:class:`WideTanhDEQ`). tanh is 1-Lipschitz, so the map is a contraction when
σ_w‖Ŵ‖₂/√m < 1; for large m, ‖Ŵ‖₂/√m ≈ 2, hence the default σ_w = 0.4.

Three kernels on n inputs X (n, d), each an (n, n) matrix:

* :func:`equilibrium_gram`: H = Z Zᵀ / m with Z the equilibria (n, m), the Gram matrix of the
  equilibrium features whose smallest eigenvalue the over-parameterisation papers bound;
* :func:`empirical_ntk`: Θ = J Jᵀ, J = ∂f(X)/∂θ by autograd, for any model with one output
  per sample; :func:`implicit_ntk` computes the same Θ for :class:`WideTanhDEQ` in closed form
  by implicit differentiation;
* :func:`infinite_width_ntk`: the limit m → ∞ by fixed-point solves on (n, n) kernels (the
  book's formulation; see its docstring).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from . import validate
from .backward import refuse_moved
from .functional import _gaussian
from .implicit import DEQ
from .solvers import ConvergenceError, Picard, Solver, picard

__all__ = [
    "WideTanhDEQ",
    "equilibrium_gram",
    "empirical_ntk",
    "implicit_ntk",
    "infinite_width_ntk",
    "InfiniteWidthKernels",
]


def _check_X(X, *, d: int | None = None) -> Tensor:
    if not isinstance(X, Tensor):
        raise TypeError(f"X must be a torch.Tensor of shape (n, d); got {type(X).__name__}")
    if X.dim() != 2 or X.shape[0] == 0:
        raise ValueError(
            f"X must have shape (n, d) with n ≥ 1 inputs as rows; got shape {tuple(X.shape)}"
        )
    if d is not None and X.shape[1] != d:
        raise ValueError(f"X must have {d} columns (the input dimension); got {X.shape[1]}")
    if not X.is_floating_point():
        raise TypeError(f"X must be floating point; got {X.dtype}: convert it with X.double()")
    return X


# ----------------------------------------------------------------------------- the model


class WideTanhDEQ(nn.Module):
    r"""f(x) = aᵀz*/√m with z* = tanh(σ_w Ŵ z*/√m + σ_u Û x/√d), NTK parameterisation.

    Ŵ (m, m), Û (m, d) and a (m,) are the parameters, N(0, 1) at initialisation; σ_w and σ_u
    are fixed scales. The forward solves the equilibrium with ``solver`` (by default Picard
    iteration to 1e-12) and differentiates it implicitly (:class:`~deqlib.implicit.DEQ`), so
    gradients, and the NTK built from them, are those of the exact equilibrium up to its tol.

    Args:
        in_features: d, the size of x.
        width: m, the size of z (the width).
        sigma_w: the scale σ_w of W (> 0, small enough for a contraction, e.g. 0.4).
        sigma_u: the scale σ_u of the input weights.
        solver: the forward and adjoint solves' solver object (default
            ``Picard(tol=1e-12, max_iter=500, strict=True)``: a solve that does not converge
            raises, so no kernel is computed from a wrong equilibrium), or a solver's name.
            The ``tol=`` and ``max_iter=`` keywords moved into it.
        generator: a ``torch.Generator`` for the initialisation; ``None``: torch's global
            generator.
        dtype: float32 or float64; ``None``: torch's default dtype.
        **removed: no other keyword is accepted; ``tol=`` or ``max_iter=`` raises a TypeError
            that shows the solver object to write instead.

    Shape:
        input ``(n, d)``, output ``(n,)``; :meth:`features` returns z*, ``(n, m)``.
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        *,
        sigma_w: float = 0.4,
        sigma_u: float = 1.0,
        solver: Solver | str = Picard(tol=1e-12, max_iter=500, strict=True),
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        **removed,
    ):
        refuse_moved("WideTanhDEQ", removed, solver)
        super().__init__()
        self.in_features = validate.positive_integer("in_features", in_features)
        self.width = validate.positive_integer("width", width)
        self.sigma_w = validate.positive_real("sigma_w", sigma_w)
        self.sigma_u = validate.positive_real("sigma_u", sigma_u)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        validate.floating_dtype("dtype", dtype)     # WideTanhDEQ computes in float32 or float64
        like = torch.empty(0, dtype=dtype)
        self.W_hat = nn.Parameter(_gaussian((width, width), 1.0, generator, like))
        self.U_hat = nn.Parameter(_gaussian((width, in_features), 1.0, generator, like))
        self.a = nn.Parameter(_gaussian((width,), 1.0, generator, like))
        self.deq = DEQ(self._map, solver=solver)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, width={self.width}, "
                f"sigma_w={self.sigma_w}, sigma_u={self.sigma_u}")

    def weights(self) -> tuple[Tensor, Tensor]:
        """(W, U) = (σ_w Ŵ/√m, σ_u Û/√d), the matrices the equilibrium uses.

        Returns:
            ``(W, U)``, shapes ``(m, m)`` and ``(m, d)``, differentiable in Ŵ and Û.
        """
        return (self.sigma_w / math.sqrt(self.width) * self.W_hat,
                self.sigma_u / math.sqrt(self.in_features) * self.U_hat)

    @staticmethod
    def _map(z: Tensor, context: tuple[Tensor, Tensor]) -> Tensor:
        W, injection = context
        return torch.tanh(z @ W.T + injection)

    def features(self, x: Tensor) -> Tensor:
        """z*(x) for each row of x: shape (n, m), differentiable implicitly.

        Args:
            x: the inputs, ``(n, d)``.

        Returns:
            Z, ``(n, m)``: row i is the equilibrium z*(x_i).
        """
        _check_X(x, d=self.in_features)
        W, U = self.weights()
        return self.deq((W, x @ U.T), x.new_zeros(x.shape[0], self.width))

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x) @ self.a / math.sqrt(self.width)


# ----------------------------------------------------------------------------- the kernels


def equilibrium_gram(features: Callable[[Tensor], Tensor], X: Tensor) -> Tensor:
    """The Gram matrix of the equilibrium features, H = Z Zᵀ / m with Z = features(X).

    H_ij = ⟨z*(x_i), z*(x_j)⟩ / m: for :class:`WideTanhDEQ` it is the part of the NTK that
    comes from the output weights a (see :func:`implicit_ntk`), so λ_min(Θ) ≥ λ_min(H).

    Args:
        features: a callable (e.g. ``model.features``) mapping X (n, d) to Z (n, m).
        X: the inputs, (n, d).
    Returns:
        H, (n, n), symmetric positive semi-definite, without gradient.
    """
    X = _check_X(X)
    if not callable(features):
        raise TypeError(f"features must be callable as features(X); got {type(features)}")
    with torch.no_grad():
        Z = features(X)
    if not isinstance(Z, Tensor) or Z.dim() != 2 or Z.shape[0] != X.shape[0]:
        shape = tuple(Z.shape) if isinstance(Z, Tensor) else type(Z).__name__
        raise ValueError(
            f"features(X) must return the equilibria as a tensor (n, m) with n = "
            f"{X.shape[0]} rows; got {shape}"
        )
    return Z @ Z.T / Z.shape[1]


def empirical_ntk(model: Callable[[Tensor], Tensor], X: Tensor,
                  params: Iterable[Tensor] | None = None) -> Tensor:
    """The empirical NTK Θ = J Jᵀ with J = ∂f(X)/∂θ, by autograd, one backward per input.

    Θ_ij = Σ_p ⟨∂f(x_i)/∂θ_p, ∂f(x_j)/∂θ_p⟩ over the parameter tensors θ_p.

    Args:
        model: a callable from X (n, d) to one output per input, shape (n,) or (n, 1).
        X: the inputs, (n, d).
        params: the tensors θ to differentiate (default: ``model.parameters()``).
    Returns:
        Θ, (n, n), without gradient.
    """
    X = _check_X(X)
    if params is None:
        if not isinstance(model, nn.Module):
            raise TypeError("model is not an nn.Module: pass params=[the tensors to vary]")
        params = model.parameters()
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no parameter requires grad: the NTK would be zero; pass params")
    out = model(X)
    if out.shape not in {(X.shape[0],), (X.shape[0], 1)}:
        raise ValueError(
            f"the NTK needs one output per input: model(X) must have shape ({X.shape[0]},) "
            f"or ({X.shape[0]}, 1); got {tuple(out.shape)}"
        )
    out = out.reshape(-1)
    rows = []
    for i in range(len(out)):
        grads = torch.autograd.grad(out[i], params, retain_graph=i + 1 < len(out),
                                    allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                               for g, p in zip(grads, params)]))
    J = torch.stack(rows)
    return (J @ J.T).detach()


def implicit_ntk(model: WideTanhDEQ, X: Tensor, *, tol: float = 1e-12,
                 max_iter: int = 500) -> Tensor:
    r"""The NTK of :class:`WideTanhDEQ` in closed form, by implicit differentiation.

    With D_i = diag(1 − z_i²) (tanh' at x_i's equilibrium z_i) and W = σ_w Ŵ/√m, a change dW
    of the matrix moves z_i by (I − D_iW)⁻¹D_i dW z_i. Let s_i solve the adjoint fixed point
    s_i = WᵀD_i s_i + a/√m and r_i = D_i s_i; then ∂f(x_i)/∂Ŵ = (σ_w/√m) r_i z_iᵀ,
    ∂f(x_i)/∂Û = (σ_u/√d) r_i x_iᵀ, ∂f(x_i)/∂a = z_i/√m, and, with R the n × m matrix whose
    row i is r_iᵀ and Z, X those whose rows are z_iᵀ and x_iᵀ,

    .. math::

        \Theta = (R R^\top)\odot\Bigl(\tfrac{\sigma_w^2}{m} Z Z^\top
                 + \tfrac{\sigma_u^2}{d} X X^\top\Bigr) + \tfrac1m Z Z^\top .

    Args:
        model: a :class:`WideTanhDEQ`.
        X: the inputs, (n, d).
        tol: the adjoint solve's tolerance.
        max_iter: the adjoint solve's most steps.
    Returns:
        Θ, (n, n).
    """
    if not isinstance(model, WideTanhDEQ):
        raise TypeError(f"implicit_ntk needs a WideTanhDEQ; got {type(model).__name__}: "
                        "use empirical_ntk for other models")
    X = _check_X(X, d=model.in_features)
    m, d = model.width, model.in_features
    with torch.no_grad():
        W, _ = model.weights()
        Z = model.features(X)
        D = 1 - Z**2
        adjoint = picard(lambda s: (D * s) @ W + model.a / math.sqrt(m), torch.zeros_like(Z),
                         tol=tol, max_iter=max_iter, strict=True)
        R = D * adjoint.z
        return (R @ R.T) * (model.sigma_w**2 / m * Z @ Z.T + model.sigma_u**2 / d * X @ X.T) + (
            Z @ Z.T / m)


# ----------------------------------------------------------------------------- infinite width


@dataclass
class InfiniteWidthKernels:
    """The m → ∞ kernels of :class:`WideTanhDEQ` on n inputs, each (n, n).

    Attributes:
        nngp: Σ*, the covariance of the pre-activations at equilibrium.
        gram: Ĉ = E[tanh(u) tanh(v)], the limit of the equilibrium Gram matrix H = Z Zᵀ/m.
        ntk: Θ* = Ĉ + Σ* ⊙ Σ̇ / (1 − σ_w² Σ̇), with Σ̇ = E[tanh'(u) tanh'(v)].
        steps: the iterations the fixed-point solve for Σ* took.
    """

    nngp: Tensor
    gram: Tensor
    ntk: Tensor
    steps: int


def _gaussian_expectation(fn: Callable[[Tensor], Tensor], S: Tensor, nodes: int) -> Tensor:
    """E[fn(u) fn(v)] for (u, v) ~ N(0, [[S_ii, S_ij], [S_ij, S_jj]]), for every pair (i, j),
    by Gauss–Hermite quadrature with nodes² points."""
    xi, w = np.polynomial.hermite_e.hermegauss(nodes)
    xi = torch.as_tensor(xi, dtype=S.dtype)
    w = torch.as_tensor(w / w.sum(), dtype=S.dtype)
    a, b = S.diagonal()[:, None, None, None], S.diagonal()[None, :, None, None]
    c = S[:, :, None, None]
    u = a.sqrt() * xi[:, None]                                   # ξ₁ along axis 2
    v = c / a.sqrt() * xi[:, None] + (b - c**2 / a).clamp(min=0).sqrt() * xi[None, :]
    return (fn(u) * fn(v) * (w[:, None] * w[None, :])).sum(dim=(2, 3))


def infinite_width_ntk(X: Tensor, *, sigma_w: float = 0.4, sigma_u: float = 1.0,
                       tol: float = 1e-12, max_iter: int = 500,
                       nodes: int = 96) -> InfiniteWidthKernels:
    r"""The infinite-width kernels of :class:`WideTanhDEQ` by fixed-point solves (the book's
    formulation, derived by treating ``W`` as a fresh Gaussian in each kernel update, the
    usual gradient-independence heuristic; not a statement read in a paper).

    The pre-activation h = Wz* + Ux at equilibrium has, as m → ∞, the covariance Σ* solving

    .. math::

        \Sigma = \sigma_w^2\,\mathbb E[\tanh(u)\tanh(v)] + \tfrac{\sigma_u^2}{d} X X^\top,
        \qquad (u, v)\sim\mathcal N(0, \Sigma_{\{i,j\}}),

    solved by Picard iteration on the (n, n) matrix. The adjoint fixed point of
    :func:`implicit_ntk` becomes P = Σ̇ ⊙ (σ_w² P + 1), so P = Σ̇/(1 − σ_w²Σ̇) entrywise, and
    Θ* = Ĉ + P ⊙ Σ*. Expectations use Gauss–Hermite quadrature with nodes² points
    (tanh has poles off the real axis, so the error decays only like exp(−c√nodes), slower
    than geometrically, with c shrinking like 1/√Σ*_ii as the variances grow: with the default
    96 nodes, Θ*'s relative error is about 1e-9 when the variances Σ*_ii are about 1, but 3e-4
    when they are about 4; compare with a run at more nodes, as chapter 10 does).

    Args:
        X: the inputs, (n, d).
        sigma_w: the model's scale σ_w, in (0, 1).
        sigma_u: the model's scale σ_u, > 0.
        tol: the tolerance of the solve for Σ*.
        max_iter: the most steps of the solve for Σ*.
        nodes: quadrature points per dimension.
    Returns:
        :class:`InfiniteWidthKernels`.
    """
    X = _check_X(X)
    sigma_w = validate.interval("sigma_w", sigma_w, 0, 1,
                                "so that the infinite-width recursion contracts",
                                closed=(False, False))
    sigma_u = validate.positive_real("sigma_u", sigma_u)
    tol = validate.positive_real("tol", tol, "the recursion's stopping rule")
    max_iter = validate.positive_integer("max_iter", max_iter)
    nodes = validate.positive_integer("nodes", nodes, "quadrature points per dimension")
    injection = sigma_u**2 / X.shape[1] * X @ X.T
    if not bool(injection.diagonal().gt(0).all()):
        raise ValueError("every input needs a nonzero norm: a zero row of X has zero variance")
    S = injection
    steps = 0
    while True:
        new = sigma_w**2 * _gaussian_expectation(torch.tanh, S, nodes) + injection
        change, S, steps = (new - S).abs().max().item(), new, steps + 1
        if change <= tol * S.abs().max().item():
            break
        if steps == max_iter:
            raise ConvergenceError(
                f"the kernel recursion did not reach tol={tol:g} in {max_iter} steps (last "
                f"change {change:.2e}): raise max_iter or lower sigma_w"
            )
    gram = _gaussian_expectation(torch.tanh, S, nodes)
    dot = _gaussian_expectation(lambda t: 1 - torch.tanh(t) ** 2, S, nodes)
    return InfiniteWidthKernels(S, gram, gram + S * dot / (1 - sigma_w**2 * dot), steps)
