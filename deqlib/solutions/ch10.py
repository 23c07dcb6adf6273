"""Chapter 10, width and nonlinear DEQs: the book's solutions."""

from __future__ import annotations

import torch


def my_rank_floor(Phi, Y, r):
    """ℒ* + Σ_{k>r} s_k² for ℒ(W) = ‖WΦ − Y‖_F²; the projector gives both terms."""
    fitted = Y @ torch.linalg.pinv(Phi) @ Phi                 # Ŷ = YΠ
    optimum = (Y - fitted).pow(2).sum()                      # ℒ* = ‖Y(I − Π)‖²
    return (optimum + torch.linalg.svdvals(fitted)[r:].pow(2).sum()).item()


def my_ntk(model, X):
    """Θ = J Jᵀ, (n, n), with J the Jacobian of model(X) (n,) in all parameters."""
    out, params = model(X), list(model.parameters())
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(out[i], params,
                                                                  retain_graph=True)])
            for i in range(len(out))]
    J = torch.stack(rows)
    return (J @ J.T).detach()
