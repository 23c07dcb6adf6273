"""Chapter 11, where implicit layers pay off: the book's solutions."""

from __future__ import annotations

import torch


def kib_per_layer(batch, width, bytes_per_number):
    """KiB that one more layer of the weight-tied network keeps for the backward pass."""
    return batch * width * bytes_per_number / 1024  # one (batch, width) tensor per layer


def forward_backward_step(z, W, v, alpha):
    """ReLU(z − α((I − W)z − v)) for a batch z of shape (batch, width)."""
    return torch.relu(z - alpha * (z - z @ W.T - v))  # (I − W)z, row by row


def exercise_3(taus=(0.0, 0.1), max_norm=0.9, epochs=6):
    """The chapter's penalised training with the bound ‖W_z‖₂ ≤ ``max_norm`` back on.

    The loop is the chapter's ``train_penalised`` with two changes: the layer takes
    ``max_norm``, and the penalty's map uses ``model.effective_W_z()`` (the rescaled weight the
    layer applies), so that the penalty's gradient reaches ``W_z`` through the bound. Returns
    ``{tau: rows}``, one row per epoch with the solver statistics of the epoch's training steps
    and ``test_acc``; the last row also holds ``jacobian``, ‖J‖²_F at the test images'
    equilibria (exact, averaged over the images).
    """
    import torch.nn.functional as F

    import deqlib
    from deqlib.functional import tanh_map
    from deqlib.stability import jacobian_penalty

    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # as the chapter
    try:
        data = deqlib.data.load("digits").to(dtype=torch.float64)
        runs = {}
        for tau in taus:
            stats = deqlib.SolverStats(training_only=True)
            model = deqlib.TanhDEQ(data.in_features, 32, data.num_classes,
                                   generator=torch.Generator().manual_seed(0),
                                   solver=deqlib.Picard(tol=1e-4, max_iter=500),
                                   max_norm=max_norm, callback=stats)
            opt = torch.optim.Adam(model.parameters(), lr=1e-2)
            order, probes = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
            rows = []
            for _ in range(epochs):
                for idx in torch.randperm(len(data.X_train), generator=order).split(64):
                    x, y = data.X_train[idx], data.y_train[idx]
                    logits, info = model(x, return_info=True)
                    loss = F.cross_entropy(logits, y)
                    if tau:
                        injection = x @ model.W_x.T + model.b
                        W = model.effective_W_z()  # the bound, inside the penalty's graph

                        def f(z, W=W, injection=injection):
                            return tanh_map(z, W, injection)

                        loss = loss + tau * jacobian_penalty(f, info.forward.z, generator=probes)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                with torch.no_grad():
                    logits, info = model(data.X_test, return_info=True)
                    accuracy = (logits.argmax(dim=1) == data.y_test).float().mean().item()
                rows.append({**stats.pop(), "test_acc": accuracy})
            z = info.forward.z
            rows[-1]["jacobian"] = jacobian_penalty(model.map(data.X_test), z, exact=True).item()
            runs[tau] = rows
        return runs
    finally:
        torch.set_default_dtype(dtype)


def exercise_4(tol=1e-10):
    """Anderson on the plain ReLU equation from the chapter's five starts.

    Rebuilds the chapter's monotone layer, injection and starts, solves z = ReLU(Wz + v) with
    deqlib.anderson from each start (default settings, then to ``tol``), and measures how far
    each solution lies from the forward-backward solution. Returns a dict of lists, one entry
    per start: ``converged``, ``steps``, ``gap`` (largest entry of |z − z_split|) at the
    defaults, and ``converged_tight``, ``gap_tight`` at ``tol``.
    """
    import warnings

    import deqlib
    from deqlib.stability import MonotoneLinear

    data = deqlib.data.load("digits").to(dtype=torch.float64)
    layer = MonotoneLinear(32, m=0.1, init_scale=0.5, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(0))
    W = layer.weight().detach()
    g = torch.Generator().manual_seed(1)
    U = torch.randn(32, 64, generator=g, dtype=torch.float64) / 8
    v = data.X_test[:8] @ U.T
    starts = [10 * torch.randn(v.shape, generator=g, dtype=torch.float64) for _ in range(5)]
    z_split = deqlib.anderson(layer.splitting_map(v), starts[0], tol=1e-13, max_iter=10_000).z

    def plain(z):
        return torch.relu(z @ W.T + v)

    out = {key: [] for key in ("converged", "steps", "gap", "converged_tight", "gap_tight")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", deqlib.ConvergenceWarning)  # counted, not hidden
        for z0 in starts:
            default, tight = deqlib.anderson(plain, z0), deqlib.anderson(plain, z0, tol=tol,
                                                                         max_iter=1000)
            out["converged"].append(bool(default.converged))
            out["steps"].append(default.steps)
            out["gap"].append((default.z - z_split).abs().max().item())
            out["converged_tight"].append(bool(tight.converged))
            out["gap_tight"].append((tight.z - z_split).abs().max().item())
    return out
