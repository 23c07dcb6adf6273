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


def _sphere_inputs(n, generator):
    """The chapter's inputs: n points on the sphere of radius √d in d = 16 dimensions."""
    X = torch.randn(n, 16, generator=generator)
    return X / X.norm(dim=1, keepdim=True) * 4.0


def _wide_deq(m, seed):
    """The chapter's DEQ of width m, its weights drawn from generator seed ``seed``."""
    from deqlib import Picard, ntk

    return ntk.WideTanhDEQ(16, m, solver=Picard(tol=1e-10, max_iter=500, strict=True),
                           generator=torch.Generator().manual_seed(seed))


def _train(model, X, y, *, eta, steps, every):
    """Full-batch gradient descent on ½‖model(X) − y‖², as the chapter's ``train_deq``: yields
    the loss at steps 0, every, 2·every, …, steps, before that step's update."""
    opt = torch.optim.SGD(model.parameters(), lr=eta)
    for k in range(steps + 1):
        loss = 0.5 * (model(X) - y).pow(2).sum()
        if k % every == 0:
            yield loss.item()
        if k < steps:
            opt.zero_grad()
            loss.backward()
            opt.step()


def exercise_3(widths=(4, 8, 16, 64), seeds=(0, 1, 2), eta=0.2, steps=60, every=10):
    """The chapter's sweep with the residual along Θ_0's slowest direction, against e^(−2λ_0 t).

    Rebuilds the chapter's inputs (n = 8 on the sphere of radius √16), and for each width and
    seed sets y = model(X) + v, v the unit eigenvector of Θ_0 for λ_0 = λ_min(Θ_0), so that the
    initial residual lies along v. Trains by full-batch gradient descent as the chapter's
    ``train_deq`` does and returns, per width, the largest ratio L_t / (e^(−2λ_0 t) L_0) over
    the records (t = η·every·i) and the seeds: at most 1 where the frozen-kernel bound held.
    """
    import math

    from deqlib import ntk

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # as the chapter; restored below
    try:
        X = _sphere_inputs(8, torch.Generator().manual_seed(0))
        worst = {}
        for m in widths:
            ratios = []
            for seed in seeds:
                model = _wide_deq(m, seed)
                lam, vec = torch.linalg.eigh(ntk.implicit_ntk(model, X))
                with torch.no_grad():
                    y = model(X) + vec[:, 0]                     # residual −v at the start
                losses = list(_train(model, X, y, eta=eta, steps=steps, every=every))
                ratios += [loss / (losses[0] * math.exp(-2 * lam[0].item() * eta * every * i))
                           for i, loss in enumerate(losses) if i > 0]
            worst[m] = max(ratios)
    finally:
        torch.set_default_dtype(previous)
    return worst


def exercise_6(n=16, widths=(4, 8, 16, 64), seeds=(0, 1, 2), eta=0.2, steps=60, every=10):
    """The chapter's width sweep on a second problem, n inputs in place of 8.

    Builds the inputs as the chapter does (n points on the sphere of radius √16 in d = 16
    dimensions, random targets, generator seed 0), trains the chapter's DEQ by full-batch
    gradient descent at each width and seed as ``train_deq`` does, and returns, per width, the
    worst ratio min_t λ_min(Θ_t)/λ_0 over the seeds (at the records every ``every`` steps; the
    hypothesis asks for at least 1/2), the largest L_60/L_0 and the largest contraction factor
    σ_w‖Ŵ‖₂/√m at a record (below 1: the map stayed a contraction there).
    """
    import math

    from deqlib import ntk

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # as the chapter; restored below
    try:
        g = torch.Generator().manual_seed(0)
        X = _sphere_inputs(n, g)
        y = torch.randn(n, generator=g)
        out = {}
        for m in widths:
            ratios, final, factor = [], [], 0.0
            for seed in seeds:
                model, lams, losses = _wide_deq(m, seed), [], []
                for loss in _train(model, X, y, eta=eta, steps=steps, every=every):
                    losses.append(loss)
                    lams.append(torch.linalg.eigvalsh(ntk.implicit_ntk(model, X))[0].item())
                    norm = torch.linalg.matrix_norm(model.W_hat.detach(), ord=2).item()
                    factor = max(factor, model.sigma_w * norm / math.sqrt(m))
                ratios.append(min(lams) / lams[0])
                final.append(losses[-1] / losses[0])
            out[m] = {"hypothesis": min(ratios), "loss_ratio": max(final), "factor": factor}
    finally:
        torch.set_default_dtype(previous)
    return out
