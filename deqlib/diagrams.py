r"""Conceptual diagrams of the book, drawn by code (matplotlib patches and arrows).

Each function returns a :class:`deqlib.plot.BookFigure`: a chapter's cell ends with the call and
the page shows a numbered, captioned PNG (see :mod:`deqlib.plot`). Nothing here touches pyplot
or the global rcParams.

* :func:`weight_tied_stack` (Part I): a weight-tied stack z⁰ → f → z¹ → f → … collapsing, as
  the depth grows, to the fixed point z* = f(z*, x).
* :func:`forward_and_adjoint` (Part I): the forward solve and the adjoint solve as data flow,
  with nothing but z* kept between them.
* :func:`training_step` (Part I): one training step of a DEQ, a loop over mini-batches:
  forward solve, loss, adjoint solve, optimizer step, next batch.
* :func:`delm_channels` (Part II): the deep equilibrium linear model, W = BU, with its
  A-channel (through σ(A), S and U) and its B-channel.
* :func:`proof_at_a_glance` (Part II): the eight steps of the global convergence proof and
  which step uses which.
* :func:`trust_region` (Part II): level sets of a quadratic model, the trust region
  ‖v‖_Q ≤ Δ, the gradient step and the trust-region step, computed by
  :func:`deqlib.theory.solve_trust_region` on a 2-D problem.
"""

from __future__ import annotations

import math

import torch
from matplotlib.patches import Ellipse, FancyArrowPatch, FancyBboxPatch

from . import plot

__all__ = [
    "weight_tied_stack", "forward_and_adjoint", "training_step", "delm_channels",
    "proof_at_a_glance", "trust_region",
]

FORWARD = plot.PALETTE["picard"]  # blue: the forward pass
BACKWARD = plot.PALETTE["anderson"]  # vermillion: the backward pass
A_CHANNEL = plot.PALETTE["anderson"]
B_CHANNEL = plot.PALETTE["broyden"]  # green
INK = "#222222"


def _canvas(width: float, height: float, *, inches: tuple[float, float]):
    """A figure with one axes in data units (0..width × 0..height), equal aspect, no frame."""
    fig = plot.figure(figsize=inches)
    with plot.style():
        ax = fig.add_subplot()
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return fig, ax


def _box(ax, xy, text, *, width, height=5.0, color=INK, fill=None, size=11, weight="normal"):
    """A rounded box centred at ``xy`` with ``text`` inside; returns its edges for arrows."""
    x, y = xy
    ax.add_patch(
        FancyBboxPatch(
            (x - width / 2, y - height / 2),
            width,
            height,
            boxstyle="round,pad=0.3,rounding_size=0.8",
            linewidth=1.6,
            edgecolor=color,
            facecolor=fill or "white",
            zorder=2,
        )
    )
    ax.text(
        x, y, text, ha="center", va="center", fontsize=size, color=INK, zorder=3, fontweight=weight
    )
    return {
        "left": (x - width / 2 - 0.4, y),
        "right": (x + width / 2 + 0.4, y),
        "top": (x, y + height / 2 + 0.4),
        "bottom": (x, y - height / 2 - 0.4),
    }


def _node(ax, xy, text, *, color=INK, size=12):
    """A variable (no box): its text centred at ``xy``."""
    ax.text(*xy, text, ha="center", va="center", fontsize=size, color=color, zorder=3)


def _arrow(ax, start, end, *, color=INK, style="-|>", linestyle="-", rad=0.0, width=1.6):
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle=style,
            mutation_scale=14,
            color=color,
            linewidth=width,
            linestyle=linestyle,
            connectionstyle=f"arc3,rad={rad}",
            zorder=1,
            shrinkA=0,
            shrinkB=0,
        )
    )


def weight_tied_stack() -> plot.BookFigure:
    """The weight-tied stack z⁽⁰⁾ → f → z⁽¹⁾ → f → … and its limit, the fixed point z* = f(z*, x).

    Left: an explicit network whose layers all apply the same map f(·, x) with the same
    weights θ, the input x injected into every layer. Right: as the depth L → ∞ the iterates
    settle at the equilibrium, which a DEQ computes directly by root-finding.

    Returns:
        The diagram, a :class:`~deqlib.plot.BookFigure`.
    """
    fig, ax = _canvas(100, 34, inches=(9.0, 3.2))
    ax.text(35.5, 32.5, "a weight-tied network of depth L", ha="center", fontsize=11, color=INK)
    ax.text(
        35.5,
        28.6,
        "the same map f and the same weights θ in every layer",
        ha="center",
        fontsize=9.5,
        color=FORWARD,
        style="italic",
    )
    xs = [4, 13, 22, 31, 40, 49, 58, 67]
    labels = ["$z^{(0)}$", "f", "$z^{(1)}$", "f", "$z^{(2)}$", "$\\cdots$", "f", "$z^{(L)}$"]
    y = 22
    for i, (x, label) in enumerate(zip(xs, labels)):
        if label == "f":
            edges = _box(ax, (x, y), "$f(\\,\\cdot\\,, x)$", width=7.0, color=FORWARD, size=10)
            _arrow(ax, (x, 8.6), edges["bottom"], color=INK, width=1.1)
        else:
            _node(ax, (x, y), label)
        if i + 1 < len(xs):
            _arrow(
                ax,
                (x + (4.6 if label == "f" else 2.2), y),
                (xs[i + 1] - (4.6 if labels[i + 1] == "f" else 2.4), y),
                color=FORWARD,
            )
    _node(ax, (35.5, 6.5), "input $x$, the same in every layer", size=10)
    ax.plot([13, 58], [8.6, 8.6], color=INK, linewidth=1.1)
    _arrow(ax, (71.5, 22), (79.5, 22), color=INK, width=2.4)
    ax.text(75.5, 24.5, "$L \\to \\infty$", ha="center", fontsize=11)
    # the equilibrium: one application of f that returns its own input
    edges = _box(ax, (90, 26), "$f(\\,\\cdot\\,, x)$", width=7.0, color=BACKWARD, size=10)
    _node(ax, (90, 15), "$z^\\star$", size=14, color=BACKWARD)
    _arrow(ax, (88, 16.8), edges["bottom"][:1] + (edges["bottom"][1],), color=BACKWARD, rad=-0.5)
    _arrow(ax, (edges["right"][0] - 1.0, 23.5), (92, 16.8), color=BACKWARD, rad=-0.6)
    ax.text(90, 7.5, "$z^\\star = f(z^\\star, x)$", ha="center", fontsize=12, color=INK)
    ax.text(90, 3.5, "found by root-finding", ha="center", fontsize=9.5, color=INK, style="italic")
    return fig


def forward_and_adjoint() -> plot.BookFigure:
    """The forward solve and the adjoint solve as data flow.

    Forward: θ → solver for z = f(z, θ) → z* → loss ℓ. Backward: g = ∂ℓ/∂z* → solver for
    u = Jᵀu + g (J = ∂f/∂z at z*) → u → (∂f/∂θ)ᵀu = ∂ℓ/∂θ. Only z* crosses from the forward to
    the backward pass: no iteration of either solver is stored.

    Returns:
        The diagram, a :class:`~deqlib.plot.BookFigure`.
    """
    fig, ax = _canvas(100, 40, inches=(9.0, 3.6))
    yf, yb = 30, 9
    ax.text(0, yf + 6.5, "forward", fontsize=11, color=FORWARD, fontweight="bold")
    ax.text(0, yb + 8.0, "backward", fontsize=11, color=BACKWARD, fontweight="bold")
    _node(ax, (3, yf), "$\\theta$")
    solve = _box(ax, (25, yf), "solver: find $z = f(z, \\theta)$", width=25, color=FORWARD,
                 size=10)
    _node(ax, (50, yf), "$z^\\star$", color=FORWARD, size=13)
    loss = _box(ax, (81, yf), "loss $\\ell(z^\\star)$", width=14, color=FORWARD, size=10)
    _arrow(ax, (5, yf), solve["left"], color=FORWARD)
    _arrow(ax, solve["right"], (47.8, yf), color=FORWARD)
    _arrow(ax, (52.3, yf), loss["left"], color=FORWARD)
    ax.text(
        25,
        yf - 5.6,
        "no iteration stored",
        ha="center",
        fontsize=9.5,
        color=FORWARD,
        style="italic",
    )
    # the backward pass runs right to left, as reverse mode does
    _node(
        ax, (88, yb), "$g = \\dfrac{\\partial\\ell}{\\partial z^\\star}$", color=BACKWARD, size=12
    )
    adjoint = _box(
        ax,
        (60, yb),
        "solver: find $u = J^\\top u + g$\n$J = \\partial f / \\partial z$ at $z^\\star$",
        width=26,
        height=7.5,
        color=BACKWARD,
        size=10,
    )
    _node(ax, (38, yb), "$u$", color=BACKWARD, size=13)
    vjp = _box(
        ax,
        (23, yb),
        "$(\\partial f / \\partial \\theta)^\\top u$",
        width=15,
        color=BACKWARD,
        size=10,
    )
    _node(ax, (5, yb), "$\\dfrac{\\partial \\ell}{\\partial \\theta}$", size=13)
    _arrow(ax, loss["bottom"], (loss["bottom"][0], yb + 5.0), color=BACKWARD)
    _arrow(ax, (82.2, yb), adjoint["right"], color=BACKWARD)
    _arrow(ax, adjoint["left"], (39.7, yb), color=BACKWARD)
    _arrow(ax, (36.3, yb), vjp["right"], color=BACKWARD)
    _arrow(ax, vjp["left"], (8.5, yb), color=BACKWARD)
    ax.text(
        60,
        yb - 7.2,
        "no iteration stored",
        ha="center",
        fontsize=9.5,
        color=BACKWARD,
        style="italic",
    )
    # z* is the only thing the backward pass needs from the forward pass
    _arrow(
        ax,
        (51, yf - 2.4),
        (adjoint["top"][0], adjoint["top"][1] + 1.0),
        color=INK,
        linestyle="--",
        width=1.2,
    )
    _arrow(ax, (49, yf - 2.4), vjp["top"], color=INK, linestyle="--", width=1.2)
    ax.text(56.5, 21.5, "only $z^\\star$ (and $\\theta$) is kept", fontsize=9.5, color=INK)
    return fig


def training_step() -> plot.BookFigure:
    """One training step of a DEQ, as a loop over mini-batches.

    (1) the forward solve finds z* = f(z*, x) for the batch; (2) the loss compares the readout
    of z* with the labels and gives g = ∂ℓ/∂z*; (3) the adjoint solve finds u = Jᵀu + g;
    (4) the gradient (∂f/∂θ)ᵀu (and the readout's own) goes to the optimizer, which updates θ;
    (5) the next batch starts with the new θ. Steps (1) and (3) are the two solves; the rest is
    an ordinary training loop.

    Returns:
        The diagram, a :class:`~deqlib.plot.BookFigure`.
    """
    fig, ax = _canvas(100, 44, inches=(9.0, 4.0))
    yf, yb = 33, 11
    batch = _box(ax, (9, yf), "mini-batch\n$(x, y)$", width=13, height=7.5, size=10)
    solve = _box(ax, (37, yf), "① forward solve\nfind $z^\\star = f(z^\\star, x)$",
                 width=24, height=7.5, color=FORWARD, size=10)
    loss = _box(ax, (78, yf), "② loss $\\ell(W_{\\mathrm{out}} z^\\star + b_{\\mathrm{out}}, y)$",
                width=29, height=7.5, color=INK, size=10)
    adjoint = _box(ax, (78, yb), "③ adjoint solve\nfind $u = J^\\top u + g$",
                   width=24, height=7.5, color=BACKWARD, size=10)
    grad = _box(ax, (46, yb), "gradient\n$(\\partial f/\\partial\\theta)^\\top u$",
                width=17, height=7.5, color=BACKWARD, size=10)
    updates = "updates $\\theta$, $W_{\\mathrm{out}}$, $b_{\\mathrm{out}}$"
    step = _box(ax, (15, yb), "④ optimizer step\n" + updates, width=24, height=7.5, size=10)
    _arrow(ax, batch["right"], solve["left"], color=FORWARD)
    _arrow(ax, solve["right"], loss["left"], color=FORWARD)
    ax.text(56.5, yf + 1.2, "$z^\\star$", ha="center", fontsize=11, color=FORWARD)
    _arrow(ax, loss["bottom"], adjoint["top"], color=BACKWARD)
    ax.text(79.5, (yf + yb) / 2, "$g = \\partial\\ell/\\partial z^\\star$", fontsize=10,
            color=BACKWARD, va="center")
    _arrow(ax, adjoint["left"], grad["right"], color=BACKWARD)
    ax.text(60.5, yb + 1.2, "$u$", ha="center", fontsize=11, color=BACKWARD)
    _arrow(ax, grad["left"], step["right"], color=BACKWARD)
    _arrow(ax, (batch["bottom"][0], step["top"][1]), batch["bottom"], color=INK)
    ax.text(batch["bottom"][0] + 1.5, (yf + yb) / 2, "⑤ next batch,\nnew weights", fontsize=10,
            color=INK, va="center")
    _arrow(ax, (37, yf - 4.6), (adjoint["top"][0] - 6, adjoint["top"][1] + 0.6), color=INK,
           linestyle="--", width=1.1)
    ax.text(55, 24.5, "$J = \\partial f/\\partial z$ at $z^\\star$: only $z^\\star$ is kept",
            fontsize=9.5, color=INK, style="italic")
    ax.text(50, 1.5, "① and ③ are the two solves; everything else is an ordinary training loop",
            ha="center", fontsize=9.5, color=INK, style="italic")
    return fig


def delm_channels() -> plot.BookFigure:
    """The deep equilibrium linear model: φ(x) → equilibrium z = Sz + φ(x) → z* = Uφ(x) → B.

    The A-channel: A → σ(A) → S = γσ(A) → U = (I − S)⁻¹ shapes the equilibrium; the B-channel
    reads it out. Together the model computes Wφ(x) with W = BU.

    Returns:
        The diagram, a :class:`~deqlib.plot.BookFigure`.
    """
    fig, ax = _canvas(100, 40, inches=(9.0, 3.6))
    y = 14
    _node(ax, (5, y), "$\\varphi(x)$", size=12)
    eq = _box(
        ax,
        (26, y),
        "equilibrium\n$z = S z + \\varphi(x)$",
        width=20,
        height=7.5,
        color=INK,
        size=10,
    )
    _node(ax, (52, y), "$z^\\star = U \\varphi(x)$", size=12)
    b = _box(ax, (70, y), "$B$", width=6, color=B_CHANNEL, size=12, weight="bold")
    _node(ax, (89, y), "$\\hat y = W \\varphi(x)$", size=12)
    _arrow(ax, (8.5, y), eq["left"])
    _arrow(ax, eq["right"], (44.5, y))
    _arrow(ax, (59.5, y), b["left"])
    _arrow(ax, b["right"], (81.5, y))
    # the A-channel, above
    ya = 31
    a = _box(ax, (8, ya), "$A$", width=6, color=A_CHANNEL, size=12, weight="bold")
    formula = "$\\sigma(A) = \\dfrac{A^\\top A}{\\Vert A^\\top A\\Vert_F + \\delta}$"
    sig = _box(ax, (30, ya), formula, width=22, height=7, color=A_CHANNEL, size=10)
    s = _box(ax, (55, ya), "$S = \\gamma\\,\\sigma(A)$", width=13, color=A_CHANNEL, size=10)
    _arrow(ax, a["right"], sig["left"], color=A_CHANNEL)
    _arrow(ax, sig["right"], s["left"], color=A_CHANNEL)
    _arrow(ax, (s["left"][0] + 1, ya - 2.9), eq["top"], color=A_CHANNEL, rad=0.2)
    ax.text(38, 23.5, "A-channel", fontsize=9.5, color=A_CHANNEL, ha="left", va="center")
    ax.text(
        70,
        ya + 0.8,
        "A-channel: A changes $W = BU$\nthrough $U = (I - S)^{-1}$",
        fontsize=9.5,
        color=A_CHANNEL,
        va="center",
    )
    ax.text(
        70,
        y - 7.5,
        "B-channel: B reads $z^\\star$ out",
        ha="center",
        fontsize=9.5,
        color=B_CHANNEL,
    )
    ax.text(
        50,
        1.5,
        "the whole model is linear in $\\varphi(x)$:  $W = B U$",
        ha="center",
        fontsize=11,
        color=INK,
    )
    return fig


def proof_at_a_glance() -> plot.BookFigure:
    """The eight steps of chapter 6's convergence proof and how they feed one another.

    Blue boxes are results proved in chapter 5 (well-posedness, the spectral and gradient
    lemmas, surjectivity), black ones the steps proved in chapter 6, the green one the theorem;
    arrows point from what a step uses to the step. The chapter lists, under the figure, where
    each step is proved. Step 1 feeds steps 2, 3, 4 and 8: the last three through one line that
    runs above the top row and down the right margin, with a branch into each box; the canvas
    is 103 × 65 units so that this line stays inside it.

    Returns:
        The diagram, a :class:`~deqlib.plot.BookFigure`.
    """
    fig, ax = _canvas(103, 65, inches=(9.5, 6.0))
    chapter5, chapter6 = FORWARD, INK
    steps = {
        1: ((16, 50), "1 · well-posedness\n$U = (I - S)^{-1}$ exists", chapter5),
        2: ((50, 50), "2 · spectral lemma\n$s_{\\min}(U_t) \\geq 1$", chapter5),
        3: ((84, 50), "3 · gradient lemma\n$\\partial L/\\partial B = G\\,U^\\top$", chapter5),
        6: ((16, 30), "6 · PL inequality\n"
            "$\\Vert G\\Vert^2 \\geq 2\\mu(\\mathcal{L} - \\mathcal{L}^\\star)$", chapter6),
        5: ((50, 30), "5 · transfer\n$\\dot L \\leq -\\lambda_{\\min}(P_t)\\,\\Vert G\\Vert^2$",
            chapter6),
        4: ((84, 30), "4 · energy identity\n$\\dot L = -\\Vert\\nabla_{\\!A} L\\Vert^2"
            " - \\Vert\\nabla_{\\!B} L\\Vert^2$", chapter6),
        7: ((16, 10), "7 · Grönwall\n$L_T - \\mathcal{L}^\\star \\leq (L_0 - \\mathcal{L}^\\star)"
            "\\, e^{-2\\mu\\int_0^T\\lambda_{\\min}(P_t)dt}$", chapter6),
        8: ((84, 10), "8 · surjectivity\n$\\inf_{A, B} L = \\mathcal{L}^\\star$", chapter5),
    }
    box = {k: _box(ax, xy, text, width=27, height=8.5, color=color, size=9.5)
           for k, (xy, text, color) in steps.items()}
    theorem = _box(ax, (50, 10), "theorem: global infimum,\nlinear rate, any width",
                   width=24, height=8.5, color=B_CHANNEL, size=9.5, weight="bold")
    for start, end in (("1", "2"), ("4", "5"), ("7", "T"), ("8", "T")):
        a = box[int(start)]
        b = theorem if end == "T" else box[int(end)]
        if a["right"][0] < b["left"][0]:
            _arrow(ax, a["right"], b["left"])
        else:
            _arrow(ax, a["left"], b["right"])
    for start, end in ((2, 5), (6, 7)):
        _arrow(ax, box[start]["bottom"], box[end]["top"])
    _arrow(ax, (38, 25.2), (29.5, 14.8))  # from 5 down to 7
    _arrow(ax, (72, 45.2), (63.5, 35.0))  # from 3 down to 5
    x1, top = box[1]["top"]  # step 1 feeds 3, 4 and 8: one line over the top, down the margin
    ax.plot([x1, x1, 101, 101], [top, 61, 61, box[8]["right"][1]], color=INK, linewidth=1.6,
            zorder=1, solid_joinstyle="miter")
    for k in (3, 4, 8):
        _arrow(ax, (101, box[k]["right"][1]), box[k]["right"])
    key = "blue: proved in chapter 5    black: proved in chapter 6    green: the theorem"
    ax.text(50, 0.5, key, ha="center", fontsize=9.5, color=INK)
    return fig


def _trust_region_problem():
    """A small 2-D instance of the trust-region relation, in float64.

    Model m(v) = ⟨g, v⟩ + ½vᵀHv, preconditioner P, ε = ½ / λ_max(P^{1/2} H P^{1/2}),
    Q = ε⁻¹P⁻¹ − H, radius Δ = ‖εPg‖_Q: the minimiser over ‖v‖_Q ≤ Δ is −εPg.
    """
    d = torch.float64
    g = torch.tensor([1.0, 0.35], dtype=d)
    H = torch.tensor([[2.0, 0.6], [0.6, 0.5]], dtype=d)
    P = torch.tensor([[0.3, -0.15], [-0.15, 1.2]], dtype=d)
    evals, V = torch.linalg.eigh(P)
    P_half = V @ torch.diag(evals.sqrt()) @ V.T
    eps = 0.5 / torch.linalg.eigvalsh(P_half @ H @ P_half)[-1].item()
    Q = torch.linalg.inv(P) / eps - H
    Q = (Q + Q.T) / 2
    step = -eps * (P @ g)
    radius = torch.sqrt(step @ Q @ step).item()
    return g, H, Q, radius, step


def trust_region() -> plot.BookFigure:
    """Level sets of m(v) = ⟨g, v⟩ + ½vᵀHv, the trust region ‖v‖_Q ≤ Δ and two steps.

    The trust-region step (the minimiser of m in the ellipse, computed by
    :func:`deqlib.theory.solve_trust_region`) against the gradient step of the same
    ‖·‖_Q-length, −Δ g / ‖g‖_Q; the model's unconstrained minimiser −H⁻¹g is marked.

    Returns:
        The diagram, a :class:`~deqlib.plot.BookFigure`.
    """
    from .theory import solve_trust_region  # imported on use: drawing needs no theory

    g, H, Q, radius, _ = _trust_region_problem()
    step, _ = solve_trust_region(g, H, Q, radius)
    grad_step = -radius * g / torch.sqrt(g @ Q @ g)
    newton = -torch.linalg.solve(H, g)

    def model(v):
        return v @ g + 0.5 * torch.einsum("...i,ij,...j->...", v, H, v)

    x1 = torch.linspace(-0.62, 0.38, 201, dtype=torch.float64)
    x2 = torch.linspace(-0.5, 0.5, 201, dtype=torch.float64)
    V1, V2 = torch.meshgrid(x1, x2, indexing="xy")
    values = model(torch.stack([V1, V2], dim=-1))
    low, touch = model(newton).item(), model(step).item()
    fig, ax = plot.subplots(figsize=(6.2, 4.4))
    with plot.style():
        levels = [low + (touch - low) * k for k in (0.2, 0.5)] + [
            touch + (touch - low) * k for k in (0.6, 1.4, 2.4, 3.6)
        ]
        ax.contour(
            V1.numpy(),
            V2.numpy(),
            values.numpy(),
            levels=sorted(levels),
            colors="#a0a0a0",
            linewidths=0.9,
            negative_linestyles="solid",
        )
        ax.contour(
            V1.numpy(),
            V2.numpy(),
            values.numpy(),
            levels=[touch],
            colors=BACKWARD,
            linewidths=1.0,
            linestyles="--",
        )
        # ‖v‖_Q ≤ Δ is the ellipse with semi-axes Δ/√λ_i along Q's eigenvectors
        q_evals, q_vecs = torch.linalg.eigh(Q)
        angle = math.degrees(math.atan2(q_vecs[1, 0].item(), q_vecs[0, 0].item()))
        semi = [radius / math.sqrt(q_evals[i].item()) for i in range(2)]
        ax.add_patch(
            Ellipse(
                (0, 0),
                2 * semi[0],
                2 * semi[1],
                angle=angle,
                facecolor=FORWARD,
                alpha=0.12,
                edgecolor="none",
            )
        )
        ax.add_patch(
            Ellipse(
                (0, 0),
                2 * semi[0],
                2 * semi[1],
                angle=angle,
                facecolor="none",
                edgecolor=FORWARD,
                linewidth=1.6,
                label="trust region $\\Vert v\\Vert_Q \\leq \\Delta$",
            )
        )
        for vec, colour, label in (
            (grad_step, INK, "gradient step, same length $\\Vert v\\Vert_Q = \\Delta$"),
            (step, BACKWARD, "trust-region step"),
        ):
            ax.annotate(
                "",
                xy=tuple(vec.tolist()),
                xytext=(0, 0),
                arrowprops={
                    "arrowstyle": "-|>",
                    "color": colour,
                    "linewidth": 2.0,
                    "mutation_scale": 16,
                    "shrinkA": 0,
                    "shrinkB": 0,
                },
            )
            ax.plot([], [], color=colour, linewidth=2.0, label=label)
        ax.plot(
            [], [], color=BACKWARD, linewidth=1.0, linestyle="--", label="the level set it touches"
        )
        ax.plot(
            *newton.tolist(),
            marker="*",
            markersize=13,
            color=B_CHANNEL,
            linestyle="none",
            label="minimum of the model, $-H^{-1}g$",
        )
        ax.plot(0, 0, marker="o", color=INK, markersize=4)
        ax.set(
            xlim=(x1[0].item(), x1[-1].item()),
            ylim=(x2[0].item(), x2[-1].item()),
            aspect="equal",
            xlabel="$v_1$",
            ylabel="$v_2$",
            title="level sets of $\\langle g, v\\rangle + \\frac{1}{2}v^\\top H v$",
        )
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig
