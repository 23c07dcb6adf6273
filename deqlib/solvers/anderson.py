r"""Anderson acceleration as a solver object: its options and its in-place iteration."""

from __future__ import annotations

import dataclasses
import math

import torch

from .. import validate
from .base import Solver, _checked_options

__all__ = ["Anderson"]


@_checked_options
@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class Anderson(Solver):
    r"""Find z = f(z) by Anderson acceleration (Anderson, 1965; Walker & Ni, 2011), mixing
    every ``mix_every`` steps (periodic Pulay mixing: Banerjee, Suryanarayana & Pask, 2016).

    Keep the last p = ``memory`` images f(z_i) and residuals g_i = f(z_i) − z_i, from every
    step. On a mixing step choose, per sample, weights α with Σα_i = 1 that minimise
    ‖Σ α_i g_i‖², and mix

    .. math::

        z_{k+1} = \beta \sum_i \alpha_i f(z_i) + (1 - \beta) \sum_i \alpha_i z_i;

    the steps between are fixed-point steps z_{k+1} = f(z_k). ``mix_every=1`` is classical
    Anderson acceleration.

    The weights solve, for the whole batch at once (one LU solve of small systems),

    .. math::

        \begin{pmatrix} \Gamma + \lambda\,\mathrm{diag}(\Gamma) & 1 \\ 1^\top & 0 \end{pmatrix}
        \begin{pmatrix} \alpha \\ -\omega \end{pmatrix} =
        \begin{pmatrix} 0 \\ 1 \end{pmatrix},

    with Γ the Gram matrix ⟨g_i, g_j⟩ / r₀², per sample (r₀ that sample's first residual norm,
    so that its entries are O(1)) and ω the multiplier of Σα = 1, so that Γα = ω1 without
    the ridge (chapter 2's letters and sign). The
    regularisation λ diag(Γ) is relative to each residual's own size (a tiny absolute floor
    keeps the system regular when a residual is exactly 0). A mixing step adds to Γ the rows of
    the residuals stored since the last mixing step (one batched product) and mixes (one more);
    the steps between only store f(z) and g. The histories hold 2 × p × batch × size numbers.

    Defaults: p = 12, mixing every ⌈p/2⌉ = 6 steps, λ = 1e-4, among the fastest settings on
    the pinned reference problems (sixth of the 18 settings swept, 7 % slower than the best,
    p = 20 mixing every 20 steps); mixing every step costs a small solve per step and saved
    no steps there. How they were measured: the performance page and ``benchmarks/README.md``.

    The options every solver shares (``tol``, ``max_iter``, ``stop``, ``strict``,
    ``check_every``, ``stall``) are those of :class:`~deqlib.solvers.base.Solver`; its own:

    Args:
        memory: p, how many past steps to mix (≥ 1; 1 is Picard with damping β).
        mix_every: mix every this many steps, 1 ≤ mix_every ≤ memory (default ⌈p/2⌉).
        beta: mixing (damping) parameter in (0, 1], applied on mixing steps.
        lam: λ ≥ 0, the Tikhonov regularisation relative to each diagonal entry of Γ.

    Example::

        result = Anderson(tol=1e-8, memory=5)(f, z0)   # or deqlib.anderson(f, z0, ...)
    """

    memory: int = 12
    mix_every: int | None = None
    beta: float = 1.0
    lam: float = 1e-4

    method = "anderson"

    def __post_init__(self):
        super().__post_init__()
        p = validate.positive_integer("memory", self.memory)
        self._set("memory", p)
        if self.mix_every is not None:
            every = validate.positive_integer("mix_every", self.mix_every)
            if every > p:
                raise ValueError(f"mix_every must be at most memory={p} (a mixing step uses "
                                 f"the residuals stored since the last one); got "
                                 f"mix_every={every}")
            self._set("mix_every", every)
        self._set("beta", validate.interval("beta", self.beta, 0.0, 1.0,
                                            closed=(False, True)))
        self._set("lam", validate.nonnegative_real("lam", self.lam))

    @property
    def every(self) -> int:
        """How many steps apart the mixing steps are (``mix_every``, or ⌈memory/2⌉ by default)."""
        return (self.memory + 1) // 2 if self.mix_every is None else self.mix_every

    def _reference(self, f, rule, z, fz, rho):
        from .reference import anderson
        return anderson(self, f, rule, z, fz, rho)

    def _fast(self, f, rule, z, fz, rho):
        """:func:`deqlib.solvers.reference.anderson`, in place: histories and the bordered
        matrix allocated once, views into them made once, the Gram rows of a block of
        consecutive slots written through views."""
        p, every, beta, lam, tol = self.memory, self.every, self.beta, self.lam, self.tol
        norm, rel = torch.linalg.vector_norm, self.stop == "rel"
        b, d = z.shape
        dtype, device = z.dtype, z.device

        # FG[0, :, i] = f(z_i) and FG[1, :, i] = g_i: one norm call gives ‖f(z)‖ and ‖g‖ of
        # a slot, and F = FG[0], G = FG[1] are each contiguous, (batch, p, size).
        FG = z.new_zeros(2, b, p, d)
        # The bordered system [[H, 1], [1ᵀ, 0]] [α; μ] = [0; 1] gives α with Σα = 1
        # directly. Slots not yet used have H = I and border 0, so that their α is 0.
        K = z.new_zeros(b, p + 1, p + 1)
        K.diagonal(dim1=1, dim2=2)[:, :p] = 1   # (Tensor.repeat of an eye costs ~0.5 ms)
        rhs = z.new_zeros(p + 1, 1)
        rhs[p] = 1
        rhs_b, solution = rhs.expand(b, p + 1, 1), z.new_empty(b, p + 1, 1)
        eye = torch.eye(p, dtype=dtype, device=device)
        inv_r0 = (1 / rule.r0 ** 2).view(b, 1, 1)
        # A tiny absolute floor on the diagonal keeps the system regular when a residual is 0.
        floor = math.sqrt(torch.finfo(dtype).tiny)
        blocks = {}   # first slot of a mixing step's new residuals → what its update needs
        F, G = FG
        KH = K[:, :p, :p]
        Kn = torch.empty_like(K)     # K with H normalised, the matrix that is factored
        KnH = Kn[:, :p, :p]

        def block(first: int):
            if first not in blocks:
                if first + every <= p:   # consecutive slots: views, written in place
                    sl = slice(first, first + every)
                    index, rows, views = sl, eye[sl], (G[:, sl], KH[:, sl], KH[:, :, sl])
                else:
                    slots = [(first + t) % p for t in range(every)]
                    index, rows = torch.tensor(slots, device=device), eye[slots]
                    views = (None,) * 3
                # each new row is scaled by 1/r₀², and its diagonal entry by (1 + λ)
                blocks[first] = (index, inv_r0 * (1 + lam * rows), floor * rows, *views)
            return blocks[first]

        Fs, Gs, pairs = F.unbind(1), G.unbind(1), FG.unbind(2)   # views per slot
        norms = z.new_empty(2, b)   # ‖f(z)‖ and ‖g‖ of the last step, written in place
        a, r = norms.unbind()
        bordered = 0   # slots that have entered the constraint Σα = 1 (the border of K)
        k = 1
        while True:
            slot = (k - 1) % p
            Fs[slot].copy_(fz)
            torch.sub(fz, z, out=Gs[slot])
            if k > 1:
                norm(pairs[slot], dim=2, out=norms)
                rho = rule.value(r, a if rel else None)
            status = rule.check(rho, k)
            if status or k == self.max_iter:
                return z, fz, rho, k, status
            if k % every:
                z = fz                                   # a fixed-point step
            else:                                        # a mixing step
                index, scale, diag, new, K_rows, K_cols = block((k - every) % p)
                if bordered < min(k, p):   # the slots used so far enter the constraint
                    bordered = min(k, p)
                    K[:, p, :bordered] = K[:, :bordered, p] = 1
                if isinstance(index, slice):
                    rows = torch.addcmul(diag, torch.bmm(new, G.mT), scale)   # (b, every, p)
                    K_rows.copy_(rows)
                    K_cols.copy_(rows.mT)
                else:
                    rows = torch.addcmul(diag, torch.bmm(G.index_select(1, index), G.mT), scale)
                    KH.index_copy_(1, index, rows).index_copy_(2, index, rows.mT)
                # H divided by its largest diagonal entry, per sample (see the reference)
                Kn.copy_(K)
                KnH.div_(KH.diagonal(dim1=1, dim2=2).amax(1).view(b, 1, 1))
                LU, pivots, _ = torch.linalg.lu_factor_ex(Kn)   # solve_ex's two steps
                alpha = torch.linalg.lu_solve(LU, pivots, rhs_b, out=solution)[:, :p].mT
                mixed = torch.bmm(alpha, F).view(b, d)
                if beta < 1:   # β Σα f_i + (1 − β) Σα z_i, with z_i = f_i − g_i
                    mixed = torch.baddbmm(mixed.unsqueeze(1), alpha, G,
                                          alpha=beta - 1).view(b, d)
                # the safeguard (see the reference): converged or non-finite → f(z)
                keep = torch.isfinite(mixed).all(1, keepdim=True) & (rho > tol).unsqueeze(1)
                z = torch.where(keep, mixed, fz)
            k += 1
            fz = f(z, k)
