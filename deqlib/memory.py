"""Memory of a backward pass, measured the same way on every device.

On the CPU torch has no peak-memory counter, so we count what autograd keeps for the
backward pass: the bytes of every tensor saved for backward (each storage once),
intercepted with ``torch.autograd.graph.saved_tensors_hooks``. On CUDA,
``torch.cuda.max_memory_allocated`` measures the peak directly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["saved_tensor_bytes", "cuda_peak_bytes"]


def saved_tensor_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn()`` runs (each storage once).

    For an unrolled solve this grows linearly with the number of iterations; for the
    implicit backward it is that of one application of f, whatever the iteration count.
    """
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor):
        try:
            key = (t.untyped_storage().data_ptr(), t.device.type)
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. sparse)
            seen[(id(t), "other")] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def cuda_peak_bytes(fn: Callable[[], object], device=None) -> int:
    """Peak CUDA memory allocated while ``fn()`` runs, above what was allocated before."""
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base
