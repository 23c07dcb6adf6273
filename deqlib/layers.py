r"""Nonlinear DEQ layers built on :class:`~deqlib.implicit.DEQ`, and the pinned reference problem.

* :class:`TanhDEQ`   z* = tanh(W_z z* + W_x x + b), a dense layer, with an optional readout;
* :class:`ConvDEQ`   z* = tanh(F_z ⋆ z* + F_x ⋆ x + b), a small convolutional block for images,
  read out by average pooling and a linear layer;
* :func:`reference_tanh_problem`  the pinned tanh map every test and benchmark shares.

Both layers keep their map a contraction during training by bounding the weight that
multiplies z: tanh is 1-Lipschitz, so a weight of operator norm at most ``max_norm`` < 1 makes
z ↦ f(z) a contraction, whose equilibrium exists, is unique and is reached from any start
(Banach). The bound costs one spectral norm per forward, not one per solver step.
(W_z, W_x and the filters F_z, F_x, chapter 4's letters, are these layers' weights; ConvDEQ
stores F_z and F_x as its parameters ``K`` and ``V``. W and U belong to the deep equilibrium
linear model.)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from .backward import Implicit, OneStep, Unrolled, refuse_moved
from .functional import _gaussian, check_finite_features, tanh_map
from .implicit import DEQ, DTYPES
from .solvers import Anderson, Solver
from .solvers.rule import running_transforms, torch_func_error

__all__ = ["TanhDEQ", "ConvDEQ", "ReferenceProblem", "reference_tanh_problem"]


# ----------------------------------------------------------------------------- checks


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {name}={value!r}")
    return int(value)


def _check_max_norm(max_norm) -> float | None:
    if max_norm is None:
        return None
    if (
        isinstance(max_norm, bool)
        or not isinstance(max_norm, numbers.Real)
        or not 0 < max_norm < 1
    ):
        raise ValueError(
            f"max_norm must lie in (0, 1) (a contraction) or be None; got max_norm={max_norm!r}"
        )
    return float(max_norm)


def _check_dtype(layer: str, dtype: torch.dtype | None) -> torch.dtype:
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if dtype not in DTYPES:
        raise TypeError(
            f"{layer} computes in float32 or float64 (a solve cannot resolve its "
            f"residual in half precision); got dtype={dtype}"
        )
    return dtype


def _check_input(layer: str, x, features: int, dtype: torch.dtype) -> None:
    if running_transforms():   # the DEQ's refusal, before the input check would fail in torch
        raise torch_func_error(layer, "a torch.func transform (grad, vjp, jacrev, vmap, ...)")
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{layer} expects a torch.Tensor of shape (batch, {features}); got {type(x).__name__}"
        )
    if x.dim() != 2 or x.shape[1] != features:
        raise ValueError(
            f"{layer} expects input of shape (batch, {features}); got {tuple(x.shape)}"
        )
    if x.dtype != dtype:
        raise TypeError(
            f"{layer} has {dtype} parameters but the input is {x.dtype}: convert the "
            f"input with x.to({dtype})"
        )
    # before the solver, which would only report f's NaN (or, for Inf, saturate tanh in silence)
    check_finite_features(x, layer)


def _linear(fan_in: int, fan_out: int, generator: torch.Generator | None, factory: dict):
    """nn.Linear with its default initialisation, U(±1/√fan_in), drawn from ``generator``
    (skip_init: building it draws nothing from torch's global generator)."""
    device = torch.get_default_device() if factory["device"] is None else factory["device"]
    layer = nn.utils.skip_init(nn.Linear, fan_in, fan_out, dtype=factory["dtype"], device=device)
    bound = 1 / math.sqrt(fan_in)
    with torch.no_grad():
        for p in (layer.weight, layer.bias):
            p.copy_((2 * torch.rand(p.shape, generator=generator, dtype=p.dtype) - 1) * bound)
    return layer


def _bounded(weight: Tensor, norm: Tensor, max_norm: float | None) -> Tensor:
    """weight · min(1, max_norm / norm): the weight scaled into the contraction bound."""
    if max_norm is None:
        return weight
    return weight * torch.clamp(max_norm / norm, max=1.0)


# ----------------------------------------------------------------------------- a dense tanh DEQ


class TanhDEQ(nn.Module):
    r"""A small nonlinear DEQ: z* = tanh(W_z z* + W_x x + b), optionally read out linearly.

    .. math::

        z^* = \tanh(W_z z^* + W_x x + b), \qquad \text{output} = \text{readout}(z^*)

    With ``max_norm=c`` (default 0.9) the weight used is W_z · min(1, c/‖W_z‖₂), so the map is
    a contraction (see the module docstring); ``max_norm=None`` leaves W_z free. W_z's
    rescaling and the injection W_x x + b are computed once per forward, not once per step.

    Args:
        in_features: the size of the input x.
        width: the size of the state z.
        out_features: size of an optional linear readout of z*; None returns z*.
        max_norm: the bound on ‖W_z‖₂, in (0, 1), or None.
        solver: the forward solver object, as in :class:`~deqlib.implicit.DEQ` (default
            ``Anderson()``).
        backward: the backward object, as in :class:`~deqlib.implicit.DEQ` (default
            ``Implicit()``).
        callback: called after each solve, as in :class:`~deqlib.implicit.DEQ`.
        generator: a ``torch.Generator`` for the initialisation (W_z with entries
            N(0, 0.25/width), W_x N(0, 1/in_features), b = 0, the readout as ``nn.Linear``'s);
            ``None``: torch's global generator.
        dtype: the parameters' dtype (default: torch's default dtype).
        device: the parameters' device (default: torch's default device).
        **removed: no other keyword is accepted. One that moved into the solver or backward
            object (``tol``, ``max_iter``, ``backward_tol``, …) raises a TypeError that shows
            the object to write instead.

    Shape:
        input ``(batch, in_features)``, output ``(batch, out_features or width)``.
        ``forward(x, return_info=True)`` returns ``(output, info)`` as the DEQ does.
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        out_features: int | None = None,
        *,
        max_norm: float | None = 0.9,
        solver: Solver | str = Anderson(),
        backward: Implicit | Unrolled | OneStep | str = Implicit(),
        callback: Callable | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device=None,
        **removed,
    ):
        refuse_moved("TanhDEQ", removed, solver)
        super().__init__()
        self.in_features = _positive_int("in_features", in_features)
        self.width = _positive_int("width", width)
        if out_features is not None:
            out_features = _positive_int("out_features", out_features)
        self.max_norm = _check_max_norm(max_norm)
        factory = {"dtype": _check_dtype("TanhDEQ", dtype), "device": device}
        self.W_z = nn.Parameter(torch.empty(width, width, **factory))
        self.W_x = nn.Parameter(torch.empty(width, in_features, **factory))
        self.b = nn.Parameter(torch.zeros(width, **factory))
        with torch.no_grad():
            self.W_z.copy_(_gaussian(self.W_z.shape, 0.5 / math.sqrt(width), generator, self.W_z))
            self.W_x.copy_(
                _gaussian(self.W_x.shape, 1 / math.sqrt(in_features), generator, self.W_x)
            )
        self.readout = None
        if out_features is not None:
            self.readout = _linear(width, out_features, generator, factory)
        self.deq = DEQ(self._map, solver=solver, backward=backward, callback=callback)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, width={self.width}, max_norm={self.max_norm}"

    def effective_W_z(self) -> Tensor:
        """The W_z the layer uses: rescaled so that ‖W_z‖₂ ≤ max_norm.

        Returns:
            W_z · min(1, max_norm/‖W_z‖₂), ``(width, width)`` (W_z itself without a bound).
        """
        if self.max_norm is None:
            return self.W_z
        return _bounded(self.W_z, torch.linalg.matrix_norm(self.W_z, ord=2), self.max_norm)

    def _context(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _check_input("TanhDEQ", x, self.in_features, self.W_z.dtype)
        return self.effective_W_z(), x @ self.W_x.T + self.b

    def map(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        """The map z ↦ tanh(W_z z + W_x x + b) for this x (detached: for solvers and plots).

        Args:
            x: the input, ``(batch, in_features)``.

        Returns:
            f, a function from z ``(batch, width)`` to a tensor of z's shape, with no graph to
            the parameters.
        """
        with torch.no_grad():
            context = self._context(x)
        return lambda z: self._map(z, context)

    @staticmethod
    def _map(z: Tensor, context: tuple[Tensor, Tensor]) -> Tensor:
        return tanh_map(z, *context)

    def forward(self, x: Tensor, *, return_info: bool = False):
        context = self._context(x)
        z, info = self.deq(context, x.new_zeros(x.shape[0], self.width), return_info=True)
        out = z if self.readout is None else self.readout(z)
        return (out, info) if return_info else out


# ----------------------------------------------------------------------------- a convolutional DEQ


class ConvDEQ(nn.Module):
    r"""A small convolutional DEQ block for images, in the spirit of Bai et al.'s (M)DEQ blocks.

    .. math::

        z^* = \tanh(F_z \star z^* + F_x \star x + b), \qquad
        \text{output} = \text{Linear}(\text{AvgPool}(z^*))

    x is an image with C_in channels, given flattened; z* has ``channels`` channels at the
    image's resolution; ⋆ is a k × k convolution padded to keep the size ("same"). The
    filters F_z and F_x (chapter 4's letters) are the parameters ``K`` and ``V``. The
    injection F_x ⋆ x + b is computed once per forward. The readout averages z* over a
    ``pool`` × ``pool`` grid of regions and maps the channels · pool² averages to the classes.

    Why the solve converges during training: every output pixel of F_z ⋆ z is F_z,mat times
    the k × k patch of z around it (F_z,mat is F_z reshaped to ``(channels, channels·k²)``), and
    each pixel of z lies in at most k² patches, so ‖F_z ⋆ z‖ ≤ k‖F_z,mat‖₂‖z‖. The layer uses
    F_z · min(1, max_norm / (k‖F_z,mat‖₂)): then z ↦ tanh(F_z ⋆ z + F_x ⋆ x + b) is a
    contraction with factor at most ``max_norm`` (tanh is 1-Lipschitz), whatever the training
    does to F_z.

    Args:
        image_shape: ``(H, W)`` (one channel) or ``(C_in, H, W)``; ``in_features`` is their
            product (the flattened input, as :class:`~deqlib.data.Dataset` stores images).
        num_classes: the number of outputs.
        channels: the channels of z (default 8).
        kernel_size: k, odd (default 3).
        pool: the readout's grid of averaged regions per side (default 4; at most H and W).
        max_norm: the contraction bound in (0, 1) (default 0.9), or None for no bound.
        solver: the forward solver object, as in :class:`~deqlib.implicit.DEQ` (default
            ``Anderson(tol=1e-4, max_iter=50)``: float32 training needs no more); a name
            such as ``"picard"`` means that solver's own defaults (``Picard()``).
        backward: the backward object, as in :class:`~deqlib.implicit.DEQ`.
        callback: called after each solve, as in :class:`~deqlib.implicit.DEQ`.
        generator: a ``torch.Generator`` for the initialisation (F_z with entries
            N(0, 1/(k²·channels)), F_x N(0, 1/(k²·C_in)), b = 0, the readout as
            ``nn.Linear``'s); ``None``: torch's global generator.
        dtype: the parameters' dtype (default: torch's default dtype).
        device: the parameters' device (default: torch's default device).
        **removed: no other keyword is accepted. One that moved into the solver or backward
            object (``tol``, ``max_iter``, ``backward_tol``, …) raises a TypeError that shows
            the object to write instead.

    Shape:
        input ``(batch, C_in·H·W)``, output ``(batch, num_classes)``.
        ``forward(x, return_info=True)`` returns ``(output, info)`` as the DEQ does.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        num_classes: int,
        *,
        channels: int = 8,
        kernel_size: int = 3,
        pool: int = 4,
        max_norm: float | None = 0.9,
        solver: Solver | str = Anderson(tol=1e-4, max_iter=50),
        backward: Implicit | Unrolled | OneStep | str = Implicit(),
        callback: Callable | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device=None,
        **removed,
    ):
        refuse_moved("ConvDEQ", removed, solver)
        super().__init__()
        shape = tuple(image_shape) if isinstance(image_shape, (tuple, list, torch.Size)) else ()
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or not all(isinstance(n, numbers.Integral) and n >= 1 for n in shape):
            raise ValueError(
                f"image_shape must be (H, W) or (C_in, H, W) of positive integers; "
                f"got image_shape={image_shape!r}"
            )
        self.image_shape = tuple(int(n) for n in shape)
        c_in, height, width = self.image_shape
        self.in_features = c_in * height * width
        self.num_classes = _positive_int("num_classes", num_classes)
        self.channels = _positive_int("channels", channels)
        self.kernel_size = _positive_int("kernel_size", kernel_size)
        if self.kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be odd (the convolution keeps the image size); "
                f"got kernel_size={kernel_size!r}"
            )
        self.pool = _positive_int("pool", pool)
        if self.pool > min(height, width):
            raise ValueError(
                f"pool must be at most the image's height and width "
                f"{(height, width)}; got pool={pool!r}"
            )
        self.max_norm = _check_max_norm(max_norm)
        factory = {"dtype": _check_dtype("ConvDEQ", dtype), "device": device}
        k = self.kernel_size
        self.K = nn.Parameter(torch.empty(channels, channels, k, k, **factory))
        self.V = nn.Parameter(torch.empty(channels, c_in, k, k, **factory))
        self.b = nn.Parameter(torch.zeros(channels, **factory))
        with torch.no_grad():
            self.K.copy_(_gaussian(self.K.shape, 1 / (k * math.sqrt(channels)), generator, self.K))
            self.V.copy_(_gaussian(self.V.shape, 1 / (k * math.sqrt(c_in)), generator, self.V))
        self.readout = _linear(channels * self.pool**2, num_classes, generator, factory)
        self.deq = DEQ(self._map, solver=solver, backward=backward, callback=callback)

    def extra_repr(self) -> str:
        return (
            f"image_shape={self.image_shape}, num_classes={self.num_classes}, "
            f"channels={self.channels}, kernel_size={self.kernel_size}, pool={self.pool}, "
            f"max_norm={self.max_norm}"
        )

    def lipschitz_bound(self, K: Tensor | None = None) -> Tensor:
        """k‖F_z,mat‖₂, an upper bound on the operator 2-norm of z ↦ F_z ⋆ z (see the class).

        Args:
            K: a filter F_z ``(channels, channels, k, k)``; ``None``: the layer's own parameter
                ``K`` (not the rescaled one).

        Returns:
            The bound, a 0-dimensional tensor (differentiable in the filter).
        """
        K = self.K if K is None else K
        return self.kernel_size * torch.linalg.matrix_norm(K.reshape(len(K), -1), ord=2)

    def effective_K(self) -> Tensor:
        """The filter F_z the layer uses: ``K`` rescaled so that its convolution's norm is
        ≤ max_norm.

        Returns:
            F_z · min(1, max_norm/(k‖F_z,mat‖₂)), of F_z's shape (F_z itself without a bound).
        """
        if self.max_norm is None:
            return self.K
        return _bounded(self.K, self.lipschitz_bound(), self.max_norm)

    def _context(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _check_input("ConvDEQ", x, self.in_features, self.K.dtype)
        image = x.reshape(len(x), *self.image_shape)
        injection = nnf.conv2d(image, self.V, self.b, padding=self.kernel_size // 2)
        return self.effective_K(), injection

    def map(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        """The map z ↦ tanh(F_z ⋆ z + F_x ⋆ x + b) for this x, on z of shape
        ``(batch, channels, H, W)`` (detached: for solvers and plots).

        Args:
            x: the images, flattened, ``(batch, C_in·H·W)``.

        Returns:
            f, a function from z ``(batch, channels, H, W)`` to a tensor of z's shape, with no
            graph to the parameters.
        """
        with torch.no_grad():
            context = self._context(x)
        return lambda z: self._map(z, context)

    @staticmethod
    def _map(z: Tensor, context: tuple[Tensor, Tensor]) -> Tensor:
        K, injection = context
        return torch.tanh(nnf.conv2d(z, K, padding=K.shape[-1] // 2) + injection)

    def forward(self, x: Tensor, *, return_info: bool = False):
        context = self._context(x)
        z0 = x.new_zeros(len(x), self.channels, *self.image_shape[1:])
        z, info = self.deq(context, z0, return_info=True)
        out = self.readout(nnf.adaptive_avg_pool2d(z, self.pool).flatten(1))
        return (out, info) if return_info else out


# ------------------------------------------------------------------------- the reference problem


@dataclass
class ReferenceProblem:
    """The pinned tanh DEQ f(z) = tanh(W_z z + W_x x), batch 64 and width 256 by default.

    Made by :func:`reference_tanh_problem`.

    Attributes:
        W_z: ``(width, width)``, with spectral radius ``rho``.
        W_x: ``(width, width)``.
        x: the inputs, ``(batch, width)``.
        rho: the spectral radius ρ(W_z), a float in (0, 1).
    """

    W_z: Tensor
    W_x: Tensor
    x: Tensor
    rho: float

    def f(self, z: Tensor) -> Tensor:
        """The map f(z) = tanh(W_z z + W_x x).

        Args:
            z: the state, ``(batch, width)``.

        Returns:
            f(z), of z's shape.
        """
        return tanh_map(z, self.W_z, self.x @ self.W_x.T)

    def z0(self) -> Tensor:
        """The start of the solves: zeros of x's shape ``(batch, width)``, dtype and device."""
        return torch.zeros_like(self.x)

    def to(self, *args, **kwargs) -> ReferenceProblem:
        return ReferenceProblem(
            self.W_z.to(*args, **kwargs),
            self.W_x.to(*args, **kwargs),
            self.x.to(*args, **kwargs),
            self.rho,
        )


def reference_tanh_problem(
    rho: float = 0.99,
    *,
    batch: int = 64,
    width: int = 256,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> ReferenceProblem:
    """Draw the pinned reference problem: W_z has spectral radius ``rho``.

    With ``torch.Generator().manual_seed(0)``, in float64 and in this order:
    G = randn(width, width); W_x = randn(width, width)/16; x = 0.1·randn(batch, width);
    W_z = G / max|eig(G)| · rho. Then cast to ``dtype``. ‖W_z‖₂ ≈ 1.9ρ at width 256, so the
    map is not a contraction in the 2-norm; yet the iteration converges: its local rate is the
    spectral radius of J = diag(1 − z*²) W_z at the fixed point, not ‖W_z‖₂.

    Args:
        rho: ρ(W_z), the spectral radius of W_z, in (0, 1); near 1 the solves are slow
            (Picard needs many steps), which is what the book's solver comparisons want.
        batch: the number of inputs (rows of x).
        width: the size of z and x.
        dtype: the tensors' dtype (drawn in float64, then cast).
        device: the tensors' device; ``None``: the CPU.

    Returns:
        The :class:`ReferenceProblem`: the same tensors for the same arguments, on every
        machine.
    """
    if isinstance(rho, bool) or not isinstance(rho, numbers.Real) or not 0 < rho < 1:
        raise ValueError(f"rho (the spectral radius of W_z) must lie in (0, 1); got rho={rho!r}")
    batch, width = _positive_int("batch", batch), _positive_int("width", width)
    g = torch.Generator().manual_seed(0)
    G = torch.randn(width, width, generator=g, dtype=torch.float64)
    W_x = torch.randn(width, width, generator=g, dtype=torch.float64) / 16
    x = 0.1 * torch.randn(batch, width, generator=g, dtype=torch.float64)
    W_z = G / torch.linalg.eigvals(G).abs().max() * float(rho)
    return ReferenceProblem(W_z, W_x, x, float(rho)).to(dtype=dtype, device=device)
