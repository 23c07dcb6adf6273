r"""Making equilibria easy to find: a Jacobian penalty and a monotone parameterisation.

* :func:`jacobian_penalty`  a Hutchinson estimate of ‖∂f/∂z‖_F² at z (per sample, averaged
  over the batch), differentiable in f's parameters, to add to a training loss. Penalising the
  Jacobian of the fixed-point map at the equilibrium is the idea of Bai, Koltun & Kolter (2021),
  "Stabilizing Equilibrium Models by Jacobian Regularization".
* :class:`MonotoneLinear`  a weight W = (1 − m) I − AᵀA + B − Bᵀ, for which the symmetric part
  of I − W is mI + AᵀA ⪰ mI: the operator z ↦ (I − W)z is strongly monotone, so the equilibrium
  z = ReLU(Wz + Ux + b) exists and is unique (monotone operator equilibrium networks, Winston &
  Kolter, 2020). Its :meth:`~MonotoneLinear.splitting_map` is the forward-backward splitting
  step, a contraction for a small enough step, so that any start reaches the equilibrium.

Why the penalty estimates what it says. For one sample let J = ∂f/∂z (d_out × d_in) and ε a
standard normal vector of length d_out. Then E‖Jᵀε‖² = E εᵀJJᵀε = tr(JJᵀ) = ‖J‖_F², so the mean
of ‖Jᵀε_s‖² over ``samples`` probes is an unbiased estimate; each Jᵀε is one vector-Jacobian
product, never the Jacobian itself. With ``exact=True`` the probes are the d_out unit vectors,
and the sum is ‖J‖_F² exactly (d_out products: for small problems and tests).

Why the monotone weight gives a unique equilibrium (the book's formulation of the argument).
ReLU is the projection onto the non-negative orthant, so z = ReLU(Wz + v) (with v = Ux + b)
says: z ≥ 0, and for every coordinate either z_i > 0 and ((I − W)z − v)_i = 0, or z_i = 0 and
((I − W)z − v)_i ≥ 0. For two solutions z, z' the difference satisfies
(z − z')ᵀ(I − W)(z − z') ≤ 0 coordinate by coordinate, while strong monotonicity gives
(z − z')ᵀ(I − W)(z − z') ≥ m‖z − z'‖²; so z = z'. The forward-backward step
z ↦ ReLU(z − α((I − W)z − v)) has the same fixed points for every α > 0, and for
0 < α < 2m/L², L = ‖I − W‖₂, it is a contraction with factor √(1 − 2αm + α²L²) (ReLU is
1-Lipschitz), smallest at α = m/L²: there Banach's theorem gives existence too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from . import validate

__all__ = ["jacobian_penalty", "MonotoneLinear", "REDUCTIONS"]

#: How :func:`jacobian_penalty` combines the per-sample estimates.
REDUCTIONS = ("mean", "sum", "none")


def jacobian_penalty(
    f: Callable[[Tensor], Tensor],
    z: Tensor,
    *,
    samples: int = 1,
    generator: torch.Generator | None = None,
    exact: bool = False,
    reduction: str = "mean",
) -> Tensor:
    r"""Estimate ‖∂f/∂z‖_F² at ``z`` for each sample, by Hutchinson's trick; differentiable.

    For each sample i of the batch, with J_i = ∂f(z)_i/∂z_i,

    .. math::

        \lVert J_i\rVert_F^2 = \mathbb{E}_{\varepsilon \sim N(0, I)} \lVert J_i^\top
        \varepsilon\rVert^2 \approx \frac1S \sum_{s=1}^{S} \lVert J_i^\top \varepsilon_s\rVert^2,

    each Jᵀε one vector-Jacobian product of f (S = ``samples``). The result keeps its graph
    (``create_graph=True``, even when called under ``torch.no_grad()``), so
    ``loss + γ · jacobian_penalty(f, z_star)`` (γ: chapter 11's penalty weight τ) trains f's
    parameters to shrink the Jacobian at the equilibrium. The gradient flows into whatever f
    closes over with its graph (its weights, the input's injection), not into ``z``: the point
    is detached, as the equilibrium returned by a solver is. A layer's ``layer.map(x)`` is
    detached from the parameters (it is for solvers): a penalty on it trains nothing. Build f
    from the layer's weights instead, as in the example.

    The batch's samples must be independent (f(z)_i depends on z_i only), as in every DEQ
    layer: the probes of all samples are then drawn at once, and ‖(Jᵀε)_i‖² is sample i's
    estimate.

    Args:
        f: the fixed-point map, from a ``(batch, ...)`` tensor to one of the same shape.
        z: where to take the Jacobian, typically the equilibrium z*, shape ``(batch, ...)``,
            float32 or float64.
        samples: the number S of probes per sample (>= 1). The estimate's variance falls
            like 1/S.
        generator: a ``torch.Generator`` for the probes (reproducible penalties).
        exact: use the unit vectors as probes instead: ‖J_i‖_F² exactly, at the price of one
            product per entry of f(z)_i (for small problems and tests); ``samples`` and
            ``generator`` are then unused.
        reduction: ``"mean"`` (default) or ``"sum"`` over the batch, or ``"none"``: one value
            per sample, shape ``(batch,)``.

    Returns:
        The penalty, a scalar tensor (or one of shape ``(batch,)`` with ``reduction="none"``).

    Example (a :class:`~deqlib.layers.TanhDEQ`; the penalty's gradient reaches ``W_z``,
    ``W_x``, ``b``)::

        from deqlib.functional import tanh_map

        layer = deqlib.TanhDEQ(64, 32, out_features=10)
        x, y = torch.randn(8, 64), torch.randint(0, 10, (8,))
        logits, info = layer(x, return_info=True)
        injection = x @ layer.W_x.T + layer.b           # with its graph, unlike layer.map(x)
        f = lambda z: tanh_map(z, layer.effective_W_z(), injection)
        loss = torch.nn.functional.cross_entropy(logits, y)
        (loss + 0.1 * jacobian_penalty(f, info.forward.z)).backward()
    """
    if not callable(f):
        raise TypeError(f"f must be callable as f(z); got {type(f).__name__}")
    if not isinstance(z, Tensor):
        raise TypeError(f"z must be a torch.Tensor of shape (batch, ...); got {type(z).__name__}")
    if z.dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"z must be float32 or float64 (a Jacobian needs real floating point); got {z.dtype}"
        )
    if z.dim() < 2 or len(z) == 0:
        raise ValueError(
            f"z must have a batch dimension and at least one entry per sample, shape "
            f"(batch, ...); got shape {tuple(z.shape)}: add a batch dimension with z[None]"
        )
    samples = validate.positive_integer("samples", samples, "random probes per sample")
    exact = validate.boolean("exact", exact)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None; got {generator!r}")
    reduction = validate.choice("reduction", reduction, REDUCTIONS)
    with torch.enable_grad():
        z = z.detach().requires_grad_()
        fz = f(z)
        if not isinstance(fz, Tensor) or fz.shape != z.shape:
            got = tuple(fz.shape) if isinstance(fz, Tensor) else type(fz).__name__
            raise ValueError(
                f"f must map z of shape {tuple(z.shape)} to a tensor of the same shape (a "
                f"fixed-point map); it returned {got}"
            )
        flat = fz.reshape(len(fz), -1)
        if exact:
            probes = [
                torch.zeros_like(flat).index_fill_(1, torch.tensor([j], device=flat.device), 1.0)
                for j in range(flat.shape[1])
            ]
        else:
            where = flat.device if generator is None else generator.device  # draw where g lives
            probes = [
                torch.randn(flat.shape, generator=generator, dtype=flat.dtype, device=where)
                .to(flat.device)
                for _ in range(samples)
            ]
        total = flat.new_zeros(len(flat))
        for probe in probes:
            (vjp,) = torch.autograd.grad(
                fz, z, probe.reshape(fz.shape), create_graph=True, retain_graph=True,
                allow_unused=True, materialize_grads=True,
            )
            total = total + vjp.reshape(len(vjp), -1).pow(2).sum(dim=1)
        per_sample = total if exact else total / samples
        if reduction == "none":
            return per_sample
        return per_sample.mean() if reduction == "mean" else per_sample.sum()


class MonotoneLinear(nn.Module):
    r"""A linear map z ↦ Wz whose W makes z = ReLU(Wz + v) have exactly one solution.

    .. math::

        W = (1 - m) I - A^\top A + B - B^\top, \qquad
        \tfrac12\big((I - W) + (I - W)^\top\big) = m I + A^\top A \succeq m I .

    A and B are free parameters (any values): the bound holds by construction, so training
    cannot leave the monotone set. See the module docstring for why it makes the equilibrium
    unique, and :meth:`splitting_map` for an iteration that reaches it from any start; plain
    iteration z ← ReLU(Wz + v) need not converge, since ‖W‖₂ may exceed 1.

    Args:
        width: the size of z.
        m: the monotonicity margin, a positive number (default 0.1): I − W ⪰ mI.
        init_scale: A and B start with entries N(0, init_scale²/width) (default 0.5), so
            ‖AᵀA‖₂ starts near (2·init_scale)² and the plain iteration may or may not converge.
        generator: an optional ``torch.Generator`` for the initialisation.
        dtype: the parameters' dtype.
        device: the parameters' device.

    Shape:
        input ``(batch, width)``, output ``(batch, width)``: the rows of z times Wᵀ.
    """

    def __init__(
        self,
        width: int,
        *,
        m: float = 0.1,
        init_scale: float = 0.5,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device=None,
    ):
        super().__init__()
        self.width = validate.positive_integer("width", width)
        self.m = validate.positive_real("m", m, "the monotonicity margin, I − W ⪰ mI")
        init_scale = validate.nonnegative_real("init_scale", init_scale)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        validate.floating_dtype("dtype", dtype)     # MonotoneLinear computes in float32/float64
        std = init_scale / math.sqrt(self.width)
        shape = (self.width, self.width)
        draw = lambda: std * torch.randn(shape, generator=generator, dtype=dtype)  # noqa: E731
        self.A = nn.Parameter(draw().to(device))
        self.B = nn.Parameter(draw().to(device))

    def extra_repr(self) -> str:
        return f"width={self.width}, m={self.m:g}"

    def weight(self) -> Tensor:
        """W = (1 − m) I − AᵀA + B − Bᵀ (differentiable in A and B)."""
        eye = torch.eye(self.width, dtype=self.A.dtype, device=self.A.device)
        return (1 - self.m) * eye - self.A.T @ self.A + self.B - self.B.T

    def forward(self, z: Tensor) -> Tensor:
        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != self.width:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"MonotoneLinear expects z of shape (batch, {self.width}); got {got}")
        return z @ self.weight().T

    def monotonicity(self) -> float:
        """The smallest eigenvalue of the symmetric part of I − W (≥ m, up to rounding)."""
        with torch.no_grad():
            M = torch.eye(self.width, dtype=self.A.dtype, device=self.A.device) - self.weight()
            return torch.linalg.eigvalsh((M + M.T) / 2).min().item()

    def step_size(self) -> float:
        """α = m / ‖I − W‖₂², the step at which :meth:`splitting_map` contracts fastest."""
        with torch.no_grad():
            M = torch.eye(self.width, dtype=self.A.dtype, device=self.A.device) - self.weight()
            return self.m / torch.linalg.matrix_norm(M, ord=2).item() ** 2

    def splitting_map(self, v: Tensor, alpha: float | None = None) -> Callable[[Tensor], Tensor]:
        r"""The forward-backward step z ↦ ReLU(z − α((I − W)z − v)) for the injection v.

        Its fixed points are those of z = ReLU(Wz + v), for every α > 0; for
        0 < α < 2m/‖I − W‖₂² it is a contraction (see the module docstring), so Picard
        iteration of it (or Anderson on it) converges from any start. ``alpha`` defaults to
        :meth:`step_size`. W is computed once, here, and not differentiated (a map for solvers).

        Args:
            v: the injection Ux + b, shape ``(batch, width)``.
            alpha: the step α > 0; ``None``: :meth:`step_size`.

        Returns:
            The step, a function from z ``(batch, width)`` to a tensor of z's shape.
        """
        if not isinstance(v, Tensor) or v.dim() != 2 or v.shape[1] != self.width:
            got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(
                f"the injection v must have shape (batch, {self.width}); got {got}"
            )
        alpha = self.step_size() if alpha is None else validate.positive_real(
            "alpha", alpha, "the splitting step")
        with torch.no_grad():
            W = self.weight().detach()
        v = v.detach()
        return lambda z: torch.relu((1 - alpha) * z + alpha * (z @ W.T + v))
