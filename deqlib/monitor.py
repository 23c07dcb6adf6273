r"""What a DEQ's equilibria look like during training: one monitor, called once per epoch.

A DEQ layer solves z* = f(z*, x) in its forward pass and u = Jᵀu + g in its backward pass,
with J = ∂f/∂z at z*. Both solves converge at a speed set by J:

* near z*, a Picard step shrinks the error by at most ‖J‖₂, and asymptotically by the
  spectral radius ρ(J) ≤ ‖J‖₂ per step, so plain iteration needs about
  log(tol)/log ρ(J) steps to reach a relative tolerance ``tol``;
* the adjoint iteration u ← Jᵀu + g has the same factors, since Jᵀ has J's singular values
  and eigenvalues.

:func:`operator_norm` and :func:`spectral_radius` measure ‖J‖₂ and ρ(J) by power iteration,
with products Jv and Jᵀu only (autograd's backward passes), so J is never formed.
ρ(J) converges more slowly, so :func:`spectral_radius` takes three times the steps of
:func:`operator_norm` by default (60 against 20), and :class:`EquilibriumMonitor` keeps that
ratio. After k steps the estimate of ‖J‖₂ errs like (σ₂/σ₁)^(4k), with σ₁ ≥ σ₂ the two largest
singular values of J; that of ρ(J), a growth rate averaged over the second half of the steps,
errs like (ρ₂/ρ(J))^(k/2) or faster (like (ρ₂/ρ(J))^k for a normal J), with ρ₂ the largest
modulus among J's eigenvalues below ρ(J); but when several eigenvalues share the modulus ρ(J)
(generically a complex pair), ‖(Jᵀ)ᵏv‖/ρ(J)ᵏ can oscillate instead of settling (it does for a
generic non-normal J, such as one from a random W_z), and then the error falls only about like
1/k, as it also does when the top eigenvalue has a Jordan block.
:class:`EquilibriumMonitor` puts them to work in a training loop: it is the layer's solver
callback (it counts the steps of every forward and adjoint solve, as
:class:`~deqlib.implicit.SolverStats` does), and its :meth:`~EquilibriumMonitor.epoch` is
:func:`deqlib.train.fit`'s callback, which measures J at the equilibria of a fixed batch of
probe inputs after every epoch::

    monitor = EquilibriumMonitor(data.X_test[:64])
    model = deqlib.TanhDEQ(64, 32, 10, solver=deqlib.Anderson(tol=1e-4), callback=monitor)
    history = deqlib.train.fit(model, data, callback=monitor.epoch)
    history["J_norm"], history["forward_steps"]

For the book's tanh layers, J = diag(1 − z*²) L with L the linear part (W_z for
:class:`~deqlib.layers.TanhDEQ`, the convolution z ↦ F_z ⋆ z for
:class:`~deqlib.layers.ConvDEQ`), and the monitor records both factors too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from . import validate
from .implicit import SolverStats
from .layers import ConvDEQ, TanhDEQ
from .solvers import picard

__all__ = ["operator_norm", "spectral_radius", "linear_part", "predicted_picard_steps",
           "EquilibriumMonitor"]


def _per_sample_norm(v: Tensor) -> Tensor:
    """‖v_i‖ of each sample, shape (batch,) (a sample is everything after dimension 0)."""
    return torch.linalg.vector_norm(v.flatten(1), dim=1)


def _unit(v: Tensor) -> Tensor:
    """v with each sample scaled to norm 1."""
    return v / _per_sample_norm(v).clamp_min(torch.finfo(v.dtype).tiny).reshape(
        -1, *[1] * (v.dim() - 1))


def _start(z: Tensor, seed: int) -> Tensor:
    """A random unit vector per sample, the same for every call with the same seed."""
    g = torch.Generator().manual_seed(seed)
    return _unit(torch.randn(z.shape, generator=g, dtype=torch.float64).to(z))


def _check(f, z, iterations: int, seed: int, minimum: int) -> tuple[Tensor, int, int]:
    validate.function("f", f, "f(z)")
    z = validate.tensor("z", z)
    if z.dim() < 2 or z.shape[0] == 0:
        raise ValueError(f"z must be a batch of equilibria, shape (batch, ...) with batch ≥ 1; "
                         f"got shape {tuple(z.shape)}")
    iterations = validate.integer("iterations", iterations, "power-iteration steps",
                                  minimum=minimum)
    seed = validate.integer("seed", seed, "the start vector's seed", minimum=0)
    return z.detach(), iterations, seed


def _image(f, z: Tensor) -> Tensor:
    """f(z), checked to have z's shape (a fixed-point map's image)."""
    fz = f(z)
    if not isinstance(fz, Tensor) or fz.shape != z.shape:
        got = tuple(fz.shape) if isinstance(fz, Tensor) else type(fz).__name__
        raise ValueError(f"f must map z to a tensor of z's shape {tuple(z.shape)}; got {got}")
    return fz


def _products(f, z: Tensor) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """The maps v ↦ Jv and w ↦ Jᵀw, J = ∂f/∂z at z, from one graph of f at z.

    Jᵀw is a vector-Jacobian product (reverse mode). Jv is the derivative of the linear map
    w ↦ Jᵀw·v with respect to w (the "double-backward" trick), so that no forward-mode
    autograd is needed (its first use compiles decompositions, seconds on a CPU).
    """
    with torch.enable_grad():
        zg = z.detach().clone().requires_grad_(True)
        fz = _image(f, zg)
        w0 = torch.zeros_like(fz, requires_grad=True)
        (pulled,) = torch.autograd.grad(fz, zg, w0, create_graph=True)   # Jᵀw0, linear in w0

    def jvp(v: Tensor) -> Tensor:
        return torch.autograd.grad(pulled, w0, v, retain_graph=True)[0].detach()

    def vjp(w: Tensor) -> Tensor:
        return torch.autograd.grad(fz, zg, w, retain_graph=True)[0].detach()

    return jvp, vjp


def operator_norm(f: Callable[[Tensor], Tensor], z: Tensor, *, iterations: int = 20,
                  seed: int = 0) -> Tensor:
    r"""‖∂f/∂z‖₂ at each sample of ``z``, by power iteration on JᵀJ.

    With J = ∂f/∂z at z_i, the iteration v ← JᵀJv / ‖JᵀJv‖ turns a unit vector towards the
    top right singular vector of J, and ‖JᵀJv‖ → σ_max(J)² = ‖J‖₂². Each step is one product
    Jv and one product Jᵀw, both by ``torch.autograd.grad`` through one graph of f at z, built
    once, so J is never formed: Jᵀw is a backward pass, and Jv is a second backward pass
    through that one (Jᵀw is linear in w, and its derivative in w, applied to v, is Jv).
    The estimate approaches ‖J‖₂ from below, with a relative error that shrinks like
    (σ₂/σ₁)^(4k) after k steps: v's error shrinks like (λ₂/λ₁)^k with λ = σ² the eigenvalues
    of JᵀJ, and the norm of JᵀJv, at a maximum in v, errs by that error squared.

    ``f`` must treat each sample separately (a DEQ layer's map does: ``layer.map(x)``), so
    that J is block-diagonal and one iteration serves the whole batch.

    Args:
        f: the map, from ``(batch, ...)`` to the same shape.
        z: the points, shape ``(batch, ...)``, usually the equilibria z*.
        iterations: power-iteration steps, ≥ 1.
        seed: seeds the random start vector.

    Returns:
        ``(batch,)`` tensor of the estimates, in z's dtype, detached.
    """
    z, iterations, seed = _check(f, z, iterations, seed, minimum=1)
    jvp, vjp = _products(f, z)
    v = _start(z, seed)
    stretch = torch.zeros(len(z), dtype=z.dtype, device=z.device)
    for _ in range(iterations):
        w = vjp(jvp(v))                      # JᵀJ v
        stretch = _per_sample_norm(w)        # → ‖J‖₂² for a unit v
        v = _unit(w)
    return stretch.sqrt()


def spectral_radius(f: Callable[[Tensor], Tensor], z: Tensor, *, iterations: int = 60,
                    seed: int = 0) -> Tensor:
    r"""ρ(∂f/∂z) at each sample of ``z``, by power iteration, averaged over its second half.

    The iteration runs on Jᵀ, which has the eigenvalues of J and costs one backward pass per
    step. For a generic start v, ‖(Jᵀ)ᵏv‖ grows like ρ(J)ᵏ up to sub-exponential factors,
    ‖(Jᵀ)ᵏv‖^(1/k) → ρ(J): v has a component along the top eigenvectors (a polynomial factor
    comes with a Jordan block), and ‖(Jᵀ)ᵏv‖ ≤ ‖(Jᵀ)ᵏ‖‖v‖ with Gelfand's formula
    ‖(Jᵀ)ᵏ‖^(1/k) → ρ(J) gives the matching upper bound. This holds also when the largest
    eigenvalues are a complex pair (then ‖(Jᵀ)ᵏv‖/ρ(J)ᵏ can oscillate, which is why one ratio of
    successive norms is not enough). The
    estimate is the geometric mean of the growth over the second half of the iteration,
    (‖(Jᵀ)ᵏv‖ / ‖(Jᵀ)ᵏᐟ²v‖)^(2/k), which skips the transient of the first half. It is the
    asymptotic factor by which a Picard step near z shrinks the error. The iterate is
    renormalised after every step.

    Args:
        f: the map, as in :func:`operator_norm` (it acts on each sample separately).
        z: the ``(batch, size)`` points where J = ∂f/∂z is taken, as in :func:`operator_norm`.
        iterations: steps k, ≥ 2.
        seed: seeds the random start vector.

    Returns:
        ``(batch,)`` tensor of the estimates, in z's dtype, detached.
    """
    z, iterations, seed = _check(f, z, iterations, seed, minimum=2)
    v = _start(z, seed)
    log_growth = torch.zeros(len(z), dtype=torch.float64, device=z.device)
    _, vjp = _products(f, z)
    for k in range(iterations):
        w = vjp(v)   # Jᵀ has J's eigenvalues, so its powers grow like ρ(J)ᵏ too
        norm = _per_sample_norm(w)
        if k >= iterations - iterations // 2:
            log_growth += norm.clamp_min(torch.finfo(w.dtype).tiny).double().log()
        v = _unit(w)
    return (log_growth / (iterations // 2)).exp().to(z.dtype)


def linear_part(layer: nn.Module) -> Callable[[Tensor], Tensor]:
    """The linear map L inside a tanh layer's f(z) = tanh(Lz + injection), as the layer uses it.

    For a :class:`~deqlib.layers.TanhDEQ`, z ↦ z W_zᵀ with W_z after the rescaling to
    ``max_norm``; for a :class:`~deqlib.layers.ConvDEQ`, z ↦ F_z ⋆ z with its filter F_z (the
    parameter ``K``) rescaled likewise.
    Then J = ∂f/∂z = diag(1 − f(z)²) L, which at an equilibrium is diag(1 − z*²) L.

    Args:
        layer: a :class:`~deqlib.layers.TanhDEQ` or a :class:`~deqlib.layers.ConvDEQ`.

    Returns:
        L, a function from z (the layer's state shape, with a batch dimension) to a tensor
        of the same shape, with no graph to the layer's parameters.

    Raises:
        TypeError: any other layer (its Jacobian has no such factors).
    """
    with torch.no_grad():
        if isinstance(layer, TanhDEQ):
            W = layer.effective_W_z().detach()
            return lambda z: z @ W.T
        if isinstance(layer, ConvDEQ):
            K = layer.effective_K().detach()
            return lambda z: nn.functional.conv2d(z, K, padding=K.shape[-1] // 2)
    raise TypeError(f"linear_part knows deqlib.TanhDEQ and deqlib.ConvDEQ; got "
                    f"{type(layer).__name__}. Use operator_norm(layer.map(x), z) for ‖J‖₂ alone")


class EquilibriumMonitor(SolverStats):
    r"""Solver statistics and the Jacobian at the equilibria, once per epoch of training.

    Two roles, one object:

    * as a DEQ layer's ``callback`` (``TanhDEQ(..., callback=monitor)``) it records every
      solve's steps, final residual and convergence, per phase, as
      :class:`~deqlib.implicit.SolverStats` (ignoring the evaluation's solves when
      ``training_only``);
    * :meth:`epoch` is :func:`deqlib.train.fit`'s ``callback``: after every epoch it
      summarises the solves since the last call and measures, at the layer's equilibria
      z* for the fixed ``probe`` inputs (shape ``(n, in_features)``), the quantities that set
      the solves' speed.

    The row :meth:`epoch` returns (means over the probe's samples):

    * ``forward_steps``, ``backward_steps``, … :
      :meth:`~deqlib.implicit.SolverStats.summary` of the epoch's
      solves (NaN before the first epoch), and ``forward_per_batch``, ``backward_per_batch``:
      the steps of each solve, a list;
    * ``J_norm``: ‖J‖₂ (:func:`operator_norm`); ``J_radius``: ρ(J) (:func:`spectral_radius`),
      and ``J_radius_max``, its largest value over the probe;
    * ``probe_steps``: the steps of the layer's own forward solve on the probe batch;
    * ``picard_steps``: the steps plain Picard iteration takes from z = 0 to the relative
      tolerance ``tol`` on the whole probe batch (it stops when its slowest sample gets there,
      as the layer's solver does on a training batch), to compare with
      log(tol)/log ``J_radius_max`` (:func:`predicted_picard_steps`; chapter 4's Fig. 4.4
      plots the two over training);
    * for a tanh layer (:func:`linear_part`): ``W_norm`` and ``W_radius``, the norm and the
      spectral radius of the linear part L, and ``slope``, the mean of 1 − z*²: the two
      factors of J = diag(1 − z*²) L.

    Args:
        probe: inputs at whose equilibria J is measured, shape ``(n, in_features)``, n ≥ 1.
        tol: the relative tolerance of the Picard count (the layer's own, 1e-4 in the book).
        iterations: power-iteration steps for ‖J‖₂ (those for ρ(J) are three times as many).
        picard_max_iter: the Picard count's step limit (it reports this many if it is reached).
        training_only: ignore the forward solves run under ``torch.no_grad()``.
        seed: seeds the power iterations' start vectors.
    """

    def __init__(self, probe: Tensor, *, tol: float = 1e-4, iterations: int = 20,
                 picard_max_iter: int = 500, training_only: bool = True, seed: int = 0):
        self.probe = validate.tensor("probe", probe)
        if self.probe.dim() < 2 or len(self.probe) == 0:
            raise ValueError(f"probe must be a batch of inputs, shape (n, in_features) with "
                             f"n ≥ 1; got shape {tuple(self.probe.shape)}")
        self.tol = validate.interval("tol", tol, 0, 1, "the Picard count's relative tolerance",
                                     closed=(False, False))
        self.iterations = validate.positive_integer("iterations", iterations)
        self.picard_max_iter = validate.positive_integer("picard_max_iter", picard_max_iter)
        self.seed = validate.integer("seed", seed, minimum=0)
        super().__init__(training_only=validate.boolean("training_only", training_only))

    def measure(self, layer: nn.Module) -> dict[str, float]:
        """‖J‖₂, ρ(J), the Picard count and (for a tanh layer) the factors, at the probe.

        Args:
            layer: a DEQ layer with a ``map(x)`` method (:class:`~deqlib.layers.TanhDEQ`,
                :class:`~deqlib.layers.ConvDEQ`); the probe is moved to its parameters' device
                and dtype.

        Returns:
            ``{name: number}``: ``J_norm``, ``J_radius``, ``J_radius_max``, ``probe_steps``,
            ``picard_steps`` and, for a tanh layer, ``W_norm``, ``W_radius``, ``slope`` (see
            the class).
        """
        if not isinstance(layer, nn.Module) or not callable(getattr(layer, "map", None)):
            raise TypeError(f"layer must be a DEQ layer with a map(x) method (deqlib.TanhDEQ, "
                            f"deqlib.ConvDEQ); got {type(layer).__name__}")
        params = next(layer.parameters(), None)
        x = self.probe.to(device=params.device, dtype=params.dtype) if params is not None \
            else self.probe
        with torch.no_grad():
            solved = layer(x, return_info=True)[1].forward
        z, f = solved.z, layer.map(x)
        radius = spectral_radius(f, z, iterations=3 * self.iterations, seed=self.seed)
        count = picard(f, torch.zeros_like(z), tol=self.tol, max_iter=self.picard_max_iter,
                       stall=None)
        row = {"J_norm": operator_norm(f, z, iterations=self.iterations, seed=self.seed)
               .mean().item(),
               "J_radius": radius.mean().item(), "J_radius_max": radius.max().item(),
               "probe_steps": solved.steps, "picard_steps": count.steps}
        if isinstance(layer, (TanhDEQ, ConvDEQ)):
            L = linear_part(layer)
            row["W_norm"] = operator_norm(L, z, iterations=self.iterations,
                                          seed=self.seed).mean().item()
            row["W_radius"] = spectral_radius(L, z, iterations=3 * self.iterations,
                                              seed=self.seed).mean().item()
            row["slope"] = (1 - z**2).mean().item()
        return row

    def epoch(self, layer: nn.Module) -> dict:
        """The row for :func:`deqlib.train.fit`: the solves since the last call, then
        :meth:`measure` (see the class). Starts the next epoch's count afresh.

        Args:
            layer: the model :func:`~deqlib.train.fit` trains, a DEQ layer as in
                :meth:`measure`.

        Returns:
            The row, a dict (see the class).
        """
        per_batch = {f"{phase}_per_batch": list(steps) for phase, steps in self.steps.items()}
        return {**per_batch, **self.pop(), **self.measure(layer)}

    def __repr__(self) -> str:
        counts = ", ".join(f"{p}={len(s)}" for p, s in self.steps.items())
        return f"EquilibriumMonitor(probe={tuple(self.probe.shape)}, solves: {counts})"


def predicted_picard_steps(radius: float, tol: float) -> float:
    """log(tol)/log(radius): the steps after which radiusᵏ ≤ tol (not rounded).

    Chapter 4's Fig. 4.4 compares this prediction, with radius the largest ρ(J) over a probe
    batch, with the steps Picard iteration takes (:class:`EquilibriumMonitor`'s
    ``picard_steps``).

    Args:
        radius: the contraction factor per step, e.g. ρ(J), in (0, 1).
        tol: the tolerance to reach, in (0, 1) (a factor by which the error shrinks).

    Returns:
        The number of steps k, a float.
    """
    radius = validate.interval("radius", radius, 0, 1, "a contraction factor",
                               closed=(False, False))
    tol = validate.interval("tol", tol, 0, 1, closed=(False, False))
    return math.log(tol) / math.log(radius)
