"""deqlib.diagrams: each diagram is a Figure with content, drawn without global matplotlib state;
the trust-region picture is drawn from a real computation."""

import matplotlib
import matplotlib.text
import pytest
import torch
from matplotlib.patches import Ellipse, FancyArrowPatch, FancyBboxPatch

from deqlib import diagrams, plot
from deqlib.theory import solve_trust_region


def rc_snapshot() -> dict:
    return {
        k: repr(dict.__getitem__(matplotlib.rcParams, k))
        for k in matplotlib.rcParams
        if k != "backend"
    }


def texts(fig) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


@pytest.mark.parametrize("name", diagrams.__all__)
def test_diagram_is_a_book_figure_with_content_and_no_global_state_change(name):
    before = rc_snapshot()
    fig = getattr(diagrams, name)()
    png = fig._repr_png_()
    assert rc_snapshot() == before, f"diagrams.{name} changed matplotlib's global rcParams"
    assert isinstance(fig, plot.BookFigure)
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    ax = fig.axes[0]
    assert len(ax.patches) + len(ax.get_lines()) >= 4 and len(ax.texts) >= 2
    # legible at the page's width: at most ~9.5 inches (950 px at 100 dpi), text ≥ 9 pt
    assert fig.get_figwidth() <= 9.5
    words = [t for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip()]
    assert min(t.get_fontsize() for t in words) >= 9, [
        (t.get_text(), t.get_fontsize()) for t in words if t.get_fontsize() < 9
    ]


def test_the_diagrams_say_what_the_chapters_need():
    stack = texts(diagrams.weight_tied_stack())
    assert "$z^{(0)}$" in stack and "$z^\\star = f(z^\\star, x)$" in stack
    flow = texts(diagrams.forward_and_adjoint())
    assert "$u = J^\\top u + g$" in flow and "no iteration stored" in flow
    delm = diagrams.delm_channels()
    assert "A-channel" in texts(delm) and "B-channel" in texts(delm) and "W = B U" in texts(delm)
    boxes = [p for p in delm.axes[0].patches if isinstance(p, FancyBboxPatch)]
    arrows = [p for p in delm.axes[0].patches if isinstance(p, FancyArrowPatch)]
    assert len(boxes) == 5 and len(arrows) >= 7


def test_proof_diagram_names_all_eight_steps_and_the_theorem():
    fig = diagrams.proof_at_a_glance()
    words = texts(fig)
    for k, name in enumerate(["well-posedness", "spectral lemma", "gradient lemma",
                              "energy identity", "transfer", "PL inequality", "Grönwall",
                              "surjectivity"], start=1):
        assert f"{k} · {name}" in words, (k, name)
    assert "theorem" in words
    boxes = [p for p in fig.axes[0].patches if isinstance(p, FancyBboxPatch)]
    arrows = [p for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch)]
    assert len(boxes) == 9 and len(arrows) == 11  # 1→2, 1→3, 1→4, 1→8 and seven more


def test_trust_region_diagram_draws_the_computed_step_on_the_ellipse():
    g, H, Q, radius, model_step = diagrams._trust_region_problem()
    step, multiplier = solve_trust_region(g, H, Q, radius)
    # the trust-region relation this picture illustrates: the minimiser is −εPg, multiplier 1
    torch.testing.assert_close(step, model_step, rtol=1e-9, atol=1e-12)
    assert abs(multiplier - 1.0) < 1e-9, multiplier
    fig = diagrams.trust_region()
    ax = fig.axes[0]
    tips = {
        a.arrowprops["color"]: torch.tensor(a.xy, dtype=torch.float64)
        for a in ax.texts
        if hasattr(a, "arrowprops")
    }
    torch.testing.assert_close(tips[diagrams.BACKWARD], step)
    for tip in tips.values():  # both steps end on the boundary ‖v‖_Q = Δ
        torch.testing.assert_close(
            torch.sqrt(tip @ Q @ tip), torch.tensor(radius, dtype=torch.float64)
        )
    ellipse = next(p for p in ax.patches if isinstance(p, Ellipse))
    semi = sorted([ellipse.width / 2, ellipse.height / 2])
    expected = sorted((radius / torch.linalg.eigvalsh(Q).sqrt()).tolist())
    torch.testing.assert_close(torch.tensor(semi), torch.tensor(expected))
