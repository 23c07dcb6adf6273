r"""The deep equilibrium (DEQ) layer and its backward passes.

The implicit function theorem, once. Let f(z, θ) be continuously differentiable, z* = f(z*, θ)
a fixed point, and J = ∂f/∂z at (z*, θ). If I − J is invertible, then near θ the fixed point
is a differentiable function z*(θ), and

    ∂z*/∂θ = (I − J)⁻¹ ∂f/∂θ.

For a loss ℓ(z*) with g = ∂ℓ/∂z*, the vector-Jacobian product that backprop needs is therefore

    (∂z*/∂θ)ᵀ g = (∂f/∂θ)ᵀ u,   where u solves the adjoint fixed point   u = Jᵀu + g.

θ stands for everything f depends on besides z: its parameters and the input x. Jᵀu is one
vector-Jacobian product of f at z*, so u is found by the same fixed-point solvers as z*
(u ← Jᵀu + g converges when the spectral radius of J is below 1, the condition under which
the forward iteration converges near z*). No iterate of the forward solve is stored: the memory
kept for the backward pass is that of ONE application of f, whatever the number of iterations.
:func:`fixed_point_vjp` is this theorem as a function; :class:`DEQ`'s backward calls it.

Backward modes of :class:`DEQ` (objects of :mod:`deqlib.backward`, or their names):

* :class:`~deqlib.backward.Implicit` (``"implicit"``) the adjoint fixed point above (exact up
  to the solver's tolerance), solved by its own solver object or the forward's;
* :class:`~deqlib.backward.Unrolled` (``"unrolled"``) backprop through the forward solver's
  iterations, run with the graph kept (memory grows linearly with the number of iterations;
  exact derivatives of every order of the computation that was run);
* :class:`~deqlib.backward.OneStep` (``"one_step"``) Jacobian-free backprop (Fung et al.,
  2022): replace (I − J)⁻¹ by I, i.e. differentiate one application of f at the detached
  equilibrium.
"""

from __future__ import annotations

import functools
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import validate
from .backward import Implicit, OneStep, Unrolled, as_backward, refuse_moved
from .solvers import Anderson, Solver, SolverResult, as_solver
from .solvers.rule import torch_func_error

__all__ = ["DEQ", "DEQInfo", "SolverStats", "fixed_point_vjp", "PHASES"]

#: The phases a solve belongs to, as passed to a DEQ's ``callback(result, phase)``.
PHASES = ("forward", "backward")
#: The dtypes the layer solves in: half precision cannot resolve a residual of 1e-6.
DTYPES = (torch.float32, torch.float64)


# ----------------------------------------------------------------------------- the theorem


def fixed_point_vjp(
    f_z: Tensor,
    z: Tensor,
    g: Tensor,
    inputs: Sequence[Tensor] = (),
    *,
    solver: Solver | str = Anderson(),
) -> tuple[tuple[Tensor | None, ...], SolverResult]:
    r"""(∂z*/∂θ)ᵀ g by the implicit function theorem: solve u = Jᵀu + g, return (∂f/∂θ)ᵀ u.

    ``f_z = f(z, θ)`` must be ONE application of f, computed with autograd at the fixed point
    from ``z`` (a tensor that requires grad, typically ``z_star.detach().requires_grad_()``).
    Its graph is kept through the solve: each step of the adjoint solve is one
    vector-Jacobian product Jᵀu of that graph, never a new application of f.

    Args:
        f_z: f(z, θ) at the fixed point, shape ``(batch, ...)`` (equal to z up to the forward
            solve's tolerance).
        z: the fixed point ``f_z`` was computed from.
        g: ∂ℓ/∂z*, the gradient arriving at the equilibrium, z's shape.
        inputs: the tensors θ whose gradient (∂f/∂θ)ᵀu is returned (None for one that f does
            not depend on). Empty: only u is computed, and the caller lets autograd apply
            (∂f/∂θ)ᵀ, as :class:`DEQ` does.
        solver: the adjoint solve's solver object (or its name, for its defaults).

    Returns:
        ``(grads, result)``: one gradient per input, and the adjoint solve's
        :class:`~deqlib.solvers.SolverResult`, whose ``z`` is u.

    Example::

        z = z_star.detach().requires_grad_()
        (grad_W,), result = fixed_point_vjp(f(z, W), z, g, (W,))
    """

    vjp = _vjp(f_z, z, g)

    def adjoint_map(u: Tensor) -> Tensor:
        return vjp(u) + g

    solver = as_solver(solver)
    with torch.autocast(g.device.type, enabled=False):  # the solver's arithmetic in g's dtype
        result = solver(adjoint_map, g)
    grads: tuple[Tensor | None, ...] = ()
    if inputs:
        grads = torch.autograd.grad(
            f_z, tuple(inputs), result.z, retain_graph=True, allow_unused=True
        )
    return grads, result


try:  # what torch.autograd.grad calls once its arguments are checked
    from torch.autograd.graph import _engine_run_backward
except ImportError:  # a torch without it: the public call, a little slower
    _engine_run_backward = None


def _vjp(f_z: Tensor, z: Tensor, g: Tensor) -> Callable[[Tensor], Tensor]:
    """u ↦ Jᵀu = (∂f_z/∂z)ᵀ u through the retained graph of ``f_z``, for u like ``g``.

    The same computation as ``torch.autograd.grad(f_z, z, u, retain_graph=True,
    materialize_grads=True)``, bit for bit. That call first checks and normalises its
    arguments (about 10 µs on a CPU, as much as an elementwise operation of the map) at every
    step of the adjoint solve; here they are checked once, as every u the solver passes has
    g's shape, dtype and device, and the engine is called directly.
    """
    like = (f_z.shape == g.shape and f_z.dtype == g.dtype and f_z.device == g.device
            and type(f_z) is Tensor and type(z) is Tensor and type(g) is Tensor)

    def checked(u: Tensor) -> Tensor:
        (Jt_u,) = torch.autograd.grad(f_z, z, u, retain_graph=True, materialize_grads=True)
        return Jt_u

    if _engine_run_backward is None or not like:
        return checked

    def direct(u: Tensor) -> Tensor:
        try:
            (Jt_u,) = _engine_run_backward(
                (f_z,), (u,), True, False, (z,), True, accumulate_grad=False
            )  # outputs, grad_outputs, retain_graph, create_graph, inputs, allow_unused
        except TypeError:  # a private function: if a torch changes its signature, the public call
            return checked(u)
        return torch.zeros_like(z) if Jt_u is None else Jt_u

    return direct


# ----------------------------------------------------------------------------- statistics


@dataclass
class DEQInfo:
    """What one call of a :class:`DEQ` did: returned by ``deq(x, return_info=True)``.

    Attributes:
        forward: the forward solve's :class:`~deqlib.solvers.SolverResult`.
        backward: the adjoint solve's result, filled when the implicit backward runs
            (None before that, and always None for the unrolled and one-step backward).
    """

    forward: SolverResult
    backward: SolverResult | None = None


class SolverStats:
    """A ready-made ``callback`` for a DEQ layer: collects every solve's steps and residual.

    Per phase (``"forward"``, ``"backward"``) it keeps, for each solve, the number of steps,
    the final residual (the largest in the batch, the number compared with ``tol``) and
    whether it converged. :meth:`pop` summarises and resets, which is what a training loop's
    per-epoch callback needs::

        stats = deqlib.SolverStats(training_only=True)
        model = deqlib.TanhDEQ(64, 32, 10, callback=stats)
        history = deqlib.train.fit(model, data, callback=lambda model: stats.pop())

    Args:
        training_only: ignore forward solves run while autograd is off (``torch.no_grad()``,
            e.g. the evaluation between epochs), so the numbers describe training steps only.

    Attributes:
        steps: a dict from phase to a list of the solves' step counts, one entry per solve.
        residuals: a dict from phase to a list of the solves' final residuals.
        converged: a dict from phase to a list of booleans, True where the solve converged.
    """

    def __init__(self, *, training_only: bool = False):
        self.training_only = bool(training_only)
        self.reset()

    def __call__(self, result: SolverResult, phase: str) -> None:
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}; got phase={phase!r}")
        if self.training_only and phase == "forward" and not torch.is_grad_enabled():
            return
        self.steps[phase].append(int(result.steps))
        self.residuals[phase].append(float(result.final_residual.max()))
        self.converged[phase].append(bool(result.converged))

    def reset(self) -> None:
        """Forget every solve recorded so far."""
        self.steps: dict[str, list[int]] = {p: [] for p in PHASES}
        self.residuals: dict[str, list[float]] = {p: [] for p in PHASES}
        self.converged: dict[str, list[bool]] = {p: [] for p in PHASES}

    def summary(self) -> dict[str, float]:
        """Per phase: ``<phase>_solves``, ``_steps`` (mean), ``_steps_max``, ``_residual``
        (mean of the final residuals), ``_residual_max`` and ``_unconverged`` (a count).
        Means of a phase without solves are NaN."""
        out: dict[str, float] = {}
        for p in PHASES:
            n, steps, res = len(self.steps[p]), self.steps[p], self.residuals[p]
            nan = float("nan")
            out[f"{p}_solves"] = n
            out[f"{p}_steps"] = sum(steps) / n if n else nan
            out[f"{p}_steps_max"] = max(steps) if n else nan
            out[f"{p}_residual"] = sum(res) / n if n else nan
            out[f"{p}_residual_max"] = max(res) if n else nan
            out[f"{p}_unconverged"] = n - sum(self.converged[p])
        return out

    def pop(self) -> dict[str, float]:
        """:meth:`summary`, then :meth:`reset`."""
        out = self.summary()
        self.reset()
        return out

    def __repr__(self) -> str:
        counts = ", ".join(f"{p}={len(self.steps[p])}" for p in PHASES)
        return f"SolverStats(solves: {counts})"


# ----------------------------------------------------------------------------- helpers


def _tensors(x) -> list[Tensor]:
    """The tensors in x: a tensor, or (nested) tuples, lists and dict values of them."""
    if isinstance(x, Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _tensors(v)]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    return []


def _functorch_active() -> bool:
    """Whether a torch.func transform is running, through torch's (private) interpreter stack.

    torch has no public way to ask. Where a torch lacks the function, the guard cannot work,
    and that is said once (:func:`_no_functorch_guard`) instead of switching it off silently:
    a DEQ inside torch.func then fails with torch's own, less clear, error.
    """
    peek = getattr(getattr(torch._C, "_functorch", None), "peek_interpreter_stack", None)
    if peek is None:
        _no_functorch_guard()
        return False
    return peek() is not None


@functools.cache
def _no_functorch_guard() -> None:
    warnings.warn(
        "deqlib cannot tell whether a torch.func transform is running on this torch "
        f"({torch.__version__}: torch._C._functorch.peek_interpreter_stack is gone), so a DEQ "
        "called inside torch.func.grad/vmap fails with torch's error instead of deqlib's. "
        "Differentiate DEQs with torch.autograd.grad or .backward().", RuntimeWarning,
        stacklevel=4)


def _depends_on_other_than(out: Tensor, leaf: Tensor) -> bool:
    """Whether autograd could carry a gradient from ``out`` to anything but ``leaf``."""
    stack, seen = [out.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):  # AccumulateGrad: a leaf requiring grad
            if node.variable is not leaf:
                return True
            continue
        stack.extend(next_node for next_node, _ in node.next_functions)
    return False


class _ImplicitBackward(torch.autograd.Function):
    """The identity on f(z*, θ) in the forward pass. In the backward pass it replaces the
    gradient g arriving at the layer's output by u = (I − Jᵀ)⁻¹ g; autograd then carries u
    through the one graph of f to θ and x, which is (∂f/∂θ)ᵀ u: the theorem's product."""

    @staticmethod
    def forward(ctx, f_z: Tensor, adjoint: _Adjoint) -> Tensor:
        ctx.adjoint = adjoint
        return f_z.view_as(f_z)

    @staticmethod
    def backward(ctx, g: Tensor):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "DEQ(backward=Implicit()) does not support higher-order gradients "
                "(create_graph=True): its adjoint solve is not itself differentiated, so a "
                "second derivative would be wrong. Use backward=Unrolled() for derivatives of "
                "every order, or differentiate once with create_graph=False."
            )
        return ctx.adjoint(g), None


class _OneStepBackward(torch.autograd.Function):
    """The identity on f(z*, θ), whose backward passes the gradient through unchanged; it
    exists to refuse a second derivative of the one-step gradient, which would silently be
    the derivative of an approximation (for f = a·z + x the one-step ∂z*/∂x is I whatever a,
    so every second derivative through it is 0, or torch's 'does not require grad')."""

    @staticmethod
    def forward(ctx, f_z: Tensor) -> Tensor:
        return f_z.view_as(f_z)

    @staticmethod
    def backward(ctx, g: Tensor):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "DEQ(backward=OneStep()) ('one_step') does not support higher-order gradients "
                "(create_graph=True): the one-step gradient replaces (I − J)⁻¹ by I, an "
                "approximation of the first derivative only, and its own derivative is not "
                "that of z* (it ignores how J depends on the parameters). It supports one "
                "backward pass (create_graph=False). For derivatives of every order use "
                "backward=Unrolled(); for an exact first derivative, Implicit()."
            )
        return g


@dataclass
class _Adjoint:
    """The adjoint solve of one forward call: its graph, its solver and where results go."""

    f_z: Tensor
    z: Tensor
    solver: Solver
    info: DEQInfo
    callback: Callable[[SolverResult, str], object] | None

    def __call__(self, g: Tensor) -> Tensor:
        _, result = fixed_point_vjp(self.f_z, self.z, g, solver=self.solver)
        self.info.backward = result
        if self.callback is not None:
            self.callback(result, "backward")
        return result.z


# ----------------------------------------------------------------------------- the layer


class DEQ(nn.Module):
    r"""An implicit layer: its output is the equilibrium z* = f(z*, x).

    Forward: solve z = f(z, x) with the forward solver and no graph; then apply f ONCE with
    the graph on, at the detached equilibrium, and return that application (equal to z* up to
    the tolerance). The memory kept for backward is that one application's.
    Backward (``backward=``): :class:`~deqlib.backward.Implicit` solves u = Jᵀu + g with its
    solver (the forward's by default), using the graph of that one application for every Jᵀu
    (see the module docstring); :class:`~deqlib.backward.Unrolled` runs the forward solver
    with the graph on instead and backpropagates through its iterations;
    :class:`~deqlib.backward.OneStep` backpropagates through the one application only.

    Example::

        DEQ(f, solver=Anderson(tol=1e-4, max_iter=50),
            backward=Implicit(solver=Picard(tol=1e-6)))

    Statistics are not stored on the module. ``deq(x, return_info=True)`` returns ``(z, info)``
    with ``info.forward`` the forward :class:`~deqlib.solvers.SolverResult`; ``info.backward``
    is filled when the implicit backward runs. And ``callback(result, phase)``, if given, is
    called after every solve with phase ``"forward"`` or ``"backward"`` (see
    :class:`SolverStats`). This choice keeps the layer a plain, stateless ``nn.Module``:
    nothing is written to it from inside autograd's backward, so it can be copied, compiled,
    wrapped in DistributedDataParallel or called several times before one backward.

    Higher-order gradients (``create_graph=True``) through the implicit backward raise an
    error (the adjoint solve is not differentiated); the unrolled backward supports them.
    ``torch.func`` transforms (grad, vjp, jacrev, vmap, ...) raise an error in every mode: the
    solvers stop on a residual's value, which those transforms cannot trace.

    Args:
        f: an ``nn.Module`` (or callable) mapping ``(z, x)`` to a tensor of z's shape.
        solver: the forward solver, an object of :mod:`deqlib.solvers` (``Anderson()`` by
            default; ``Picard(tol=1e-8)``, ``Broyden(memory=5)``, ...) or a name for its
            defaults (``"picard"`` is ``Picard()``). It is also the one unrolled by
            ``backward=Unrolled()``, whose ``max_iter`` bounds the iterations kept in the graph.
        backward: ``Implicit()`` (default), ``Implicit(solver=...)``, ``Unrolled()`` or
            ``OneStep()`` (:mod:`deqlib.backward`), or a name (``"unrolled"``).
        callback: ``callback(result, phase)`` after every solve (default None).
        z_shape: the shape of z without the batch dimension, for when it cannot be inferred
            as the shape of ``f(0, x)``.
        **removed: no other keyword is accepted. One that moved into the solver or backward
            object (``tol``, ``max_iter``, ``backward_tol``, …) raises a TypeError that shows
            the object to write instead.

    Shape:
        x: anything f accepts (a tensor, or a tuple of tensors computed once per call, such as
        a weight and an injection). ``z0`` (optional start) and the output:
        ``(batch, *z_shape)``. The start defaults to zeros.
        z is float32 or float64 (a half-precision or integer z0 raises an error); f may
        compute in half precision inside (e.g. under ``torch.autocast``): its output is cast
        to z's dtype, as the solvers do.
    """

    def __init__(
        self,
        f: Callable[[Tensor, object], Tensor],
        *,
        solver: Solver | str = Anderson(),
        backward: Implicit | Unrolled | OneStep | str = Implicit(),
        callback: Callable[[SolverResult, str], object] | None = None,
        z_shape: Sequence[int] | None = None,
        **removed,
    ):
        refuse_moved("DEQ", removed, solver)
        super().__init__()
        validate.function("f", f, "f(z, x)")
        if callback is not None:
            validate.function("callback", callback, "callback(result, phase)")
        self.f = f
        self.solver = as_solver(solver)
        self.backward = as_backward(backward)
        self.callback = callback
        if z_shape is not None:
            if isinstance(z_shape, numbers.Integral) and not isinstance(z_shape, bool):
                z_shape = (z_shape,)            # DEQ(z_shape=4): one dimension
            if isinstance(z_shape, (str, bytes)) or not hasattr(z_shape, "__iter__"):
                raise TypeError(f"z_shape must be a sequence of positive integers (the shape "
                                f"without the batch dimension); got z_shape={z_shape!r}")
            z_shape = tuple(z_shape)
            if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1
                       for n in z_shape):
                raise ValueError(
                    f"z_shape must be positive integers (without the batch "
                    f"dimension); got z_shape={z_shape!r}"
                )
            z_shape = tuple(int(n) for n in z_shape)   # numpy integers as ints
        self.z_shape = z_shape

    def extra_repr(self) -> str:
        return f"solver={self.solver!r}, backward={self.backward!r}"

    # -- the start and the checks

    def _start(self, x) -> Tensor:
        tensors = _tensors(x)
        if self.z_shape is not None and tensors:
            like = next((t for t in tensors if t.is_floating_point()), tensors[0])
            dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
            return torch.zeros(
                (tensors[0].shape[0], *self.z_shape), dtype=dtype, device=like.device
            )
        if isinstance(x, Tensor) and x.is_floating_point():
            with torch.no_grad():  # infer z's shape from one application at z = 0
                try:
                    return torch.zeros_like(self.f(torch.zeros_like(x), x))
                except Exception as err:  # noqa: BLE001 - re-raised with advice
                    raise ValueError(
                        "DEQ could not infer the shape of z from x (f(0, x) with 0 of x's shape "
                        "failed); pass z_shape=... to DEQ or z0=... to forward"
                    ) from err
        raise ValueError(
            "DEQ cannot infer the shape of z from an x that is not one "
            "floating-point tensor; pass z_shape=... to DEQ or z0=... to forward"
        )

    @staticmethod
    def _check_start(z0: Tensor) -> None:
        if not isinstance(z0, Tensor):
            raise TypeError(f"z0 must be a torch.Tensor; got {type(z0).__name__}")
        if z0.dtype not in DTYPES:
            raise TypeError(
                f"DEQ solves in float32 or float64; got z of dtype {z0.dtype}. Convert the "
                "layer and its input with .float() or .double() (half precision cannot resolve "
                "the residuals a solve needs; integers have no gradient); f itself may compute "
                "in half precision, e.g. under torch.autocast"
            )

    def _apply_f(self, z: Tensor, x) -> Tensor:
        """One application of f, returned in z's dtype (as the solvers cast it): f may compute
        in half precision, e.g. under torch.autocast, while z and the solves stay in float32."""
        out = self.f(z, x)
        return out if out.dtype == z.dtype else out.to(z.dtype)

    # -- the forward pass

    def forward(self, x, z0: Tensor | None = None, *, return_info: bool = False):
        """Return z* (and a :class:`DEQInfo` when ``return_info=True``).

        Args:
            x: the context, passed to f as its second argument: a tensor ``(batch, ...)``, or
                anything f accepts (a tuple of tensors computed once per call).
            z0: the forward solve's start, ``(batch, *z_shape)``, float32 or float64;
                ``None``: zeros, of shape ``(batch, *z_shape)`` when the layer was given
                ``z_shape``, else of the shape of f(0, x) (x must then be one floating-point
                tensor).
            return_info: also return the solves' results.

        Returns:
            z*, ``(batch, *z_shape)``; or ``(z*, info)`` with ``return_info=True``.
        """
        if _functorch_active():
            raise torch_func_error("DEQ", "a torch.func transform (grad, vjp, jacrev, vmap, ...)")
        z0 = self._start(x) if z0 is None else z0
        self._check_start(z0)

        # Under torch.autocast only f computes in half precision; the solver's own arithmetic
        # (Anderson's Gram matrix and its Cholesky factor) stays in z's dtype.
        device = z0.device.type
        autocast = torch.is_autocast_enabled(device)
        dtype = torch.get_autocast_dtype(device) if autocast else None

        def f(z: Tensor) -> Tensor:
            if not autocast:
                return self.f(z, x)
            with torch.autocast(device, dtype=dtype):
                return self.f(z, x)

        unrolled = isinstance(self.backward, Unrolled) and torch.is_grad_enabled()
        with torch.set_grad_enabled(unrolled), torch.autocast(device, enabled=False):
            result = self.solver(f, z0)  # unrolled: every step kept
        info = DEQInfo(forward=result)
        if self.callback is not None:
            self.callback(result, "forward")
        z = self._output(x, result, info)
        return (z, info) if return_info else z

    def _output(self, x, result: SolverResult, info: DEQInfo) -> Tensor:
        if isinstance(self.backward, Unrolled):  # the solver's graph, or none under no_grad
            return result.z
        z_star = result.z.detach()
        if not torch.is_grad_enabled():
            return self._apply_f(z_star, x)
        if isinstance(self.backward, OneStep):
            f_z = self._apply_f(z_star, x)
            return _OneStepBackward.apply(f_z) if f_z.requires_grad else f_z
        z_in = z_star.requires_grad_()
        f_z = self._apply_f(z_in, x)  # the one application of f whose graph is kept
        if not _depends_on_other_than(f_z, z_in):  # nothing upstream needs a gradient
            return f_z.detach()
        solver = self.backward.solver or self.solver   # Implicit(solver=None): the forward's
        adjoint = _Adjoint(f_z, z_in, solver, info, self.callback)
        return _ImplicitBackward.apply(f_z, adjoint)
