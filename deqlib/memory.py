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

__all__ = ["saved_tensor_bytes", "saved_tensors", "cuda_peak_bytes"]


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
    return sum(nbytes for _, nbytes in saved_tensors(fn))


def saved_tensors(fn: Callable[[], object]) -> list[tuple[tuple[int, ...], int]]:
    """What :func:`saved_tensor_bytes` counts, one entry per storage, largest first.

    Args:
        fn: as for :func:`saved_tensor_bytes`.

    Returns:
        A list of ``(shape, nbytes)``: the shape of a saved tensor on that storage (as it was
        saved, so a transposed weight appears transposed) and the storage's bytes. Their sum
        is ``saved_tensor_bytes(fn)``.
    """
    validate.function("fn", fn, "fn() with no arguments")
    packed: list = []

    def pack(t: torch.Tensor):
        packed.append(weakref.ref(t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    seen: dict[tuple, tuple[tuple[int, ...], int]] = {}
    for ref in packed:
        t = ref()
        if t is None:   # its graph was freed: not kept for backward
            continue
        try:
            key = (t.untyped_storage().data_ptr(), t.device.type)
            nbytes = t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. sparse)
            key, nbytes = (id(t), "other"), t.numel() * t.element_size()
        if key not in seen or nbytes > seen[key][1]:
            seen[key] = (tuple(t.shape), nbytes)
    del result
    return sorted(seen.values(), key=lambda entry: -entry[1])


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
