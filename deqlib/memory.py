"""Memory of a backward pass, measured the same way on every device.

On the CPU torch has no peak-memory counter, so we count what autograd keeps for the
backward pass: the bytes of every tensor saved for backward (each storage once),
intercepted with ``torch.autograd.graph.saved_tensors_hooks``. On CUDA,
``torch.cuda.max_memory_allocated`` measures the peak directly.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

from . import validate

__all__ = ["saved_tensor_bytes", "cuda_peak_bytes"]


def saved_tensor_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the tensors autograd keeps for backward after ``fn()`` ran (each storage once).

    For an unrolled solve this grows linearly with the number of iterations; for the
    implicit backward it is that of one application of f, whatever the iteration count.

    Only tensors still held by the graph of what ``fn()`` returned are counted (weak
    references, read while that result is alive): a tensor saved by a branch whose graph was
    freed during ``fn()`` is not kept for backward. (Counting every storage ever packed, by
    its address, would depend on where the allocator put things, and vary from run to run.)

    Args:
        fn: a function of no arguments that runs the forward pass to measure and returns its
            output, e.g. ``lambda: layer(x)``; what it returns must hold the graph.

    Returns:
        The number of bytes, an int.
    """
    validate.function("fn", fn, "fn() with no arguments")
    packed: list = []

    def pack(t: torch.Tensor):
        packed.append(weakref.ref(t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    seen: dict[tuple, int] = {}
    for ref in packed:
        t = ref()
        if t is None:   # its graph was freed: not kept for backward
            continue
        try:
            key = (t.untyped_storage().data_ptr(), t.device.type)
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. sparse)
            seen[(id(t), "other")] = t.numel() * t.element_size()
    del result
    return sum(seen.values())


def cuda_peak_bytes(fn: Callable[[], object], device=None) -> int:
    """Peak CUDA memory allocated while ``fn()`` runs, above what was allocated before.

    Resets CUDA's peak-memory statistics of ``device`` (a later ``max_memory_allocated``
    counts from this call).

    Args:
        fn: a function of no arguments, e.g. ``lambda: layer(x).sum().backward()``.
        device: the CUDA device to measure (a ``torch.device``, an index or ``"cuda:1"``);
            ``None``: the current CUDA device.

    Returns:
        The number of bytes, an int.
    """
    validate.function("fn", fn, "fn() with no arguments")
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base
