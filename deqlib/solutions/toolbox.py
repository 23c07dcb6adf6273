"""The toolbox (appendix): the book's solutions."""

from __future__ import annotations

import torch


def lambda_plus_min(M, rtol=1e-10):
    """The smallest eigenvalue of a symmetric PSD M larger than rtol times the largest."""
    eig = torch.linalg.eigvalsh(M)
    return eig[eig > rtol * eig[-1]].min()


def b_channel(U, k):
    """𝒥 with vec(dB U) = 𝒥 vec(dB): the toolbox's vec(AXB) = (A ⊗ Bᵀ) vec(X) (row-major vec)
    with A = I_k, X = dB and B = U."""
    return torch.kron(torch.eye(k), U.T.contiguous())  # I_k ⊗ Uᵀ


def kkt_multiplier(grad, H, Q, radius):
    """ν > 0 with ‖v(ν)‖_Q = radius, v(ν) = −(H + νQ)⁻¹g, by bisection.

    For H ⪰ 0, ‖v(ν)‖_Q falls as ν grows; the Newton step must lie outside the region.
    """
    def size(nu):
        v = -torch.linalg.solve(H + nu * Q, grad)
        return (v @ Q @ v).sqrt().item()

    low, high = 0.0, 1.0
    while size(high) > radius:           # double until the step fits: ν lies in [low, high]
        low, high = high, 2 * high
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if size(mid) > radius else (low, mid)
    return (low + high) / 2
