"""Chapter 9, implicit bias: the book's solutions."""

from __future__ import annotations

import torch

from deqlib import data


def linear_gd_limit(W0, Phi, Y):
    """W₀ plus the least correction that fits: the rows move only within span(Φ)."""
    return W0 + (Y - W0 @ Phi) @ torch.linalg.pinv(Phi)    # W₀ plus the least correction


def exercise_2(Phi, Y, gradient_descent):
    """From W₀ = 0: ``gradient_descent(W₀, Φ, Y)`` (the chapter's ``linear_gd``), the closed-form
    limit :func:`linear_gd_limit` and the minimum-norm interpolant YΦ⁺."""
    W0 = torch.zeros(Y.shape[0], Phi.shape[0], dtype=Phi.dtype)
    return gradient_descent(W0, Phi, Y), linear_gd_limit(W0, Phi, Y), Y @ torch.linalg.pinv(Phi)


def exercise_4(name="digits", **load_options):
    """The pixels that are zero in every training image, and among them those with ink in some
    test image: ``(m, how many zero, how many of those inked in a test image, how many test
    images have such ink, the rank of Φ's rows on the other pixels)``. ``name="mnist10k"``
    needs the dataset fetched once (npm)."""
    d = data.load(name, **load_options)
    zero = d.X_train.abs().sum(0) == 0                      # a zero row of Φ
    inked = d.X_test[:, zero] != 0                          # test images × those pixels
    rank = torch.linalg.matrix_rank(d.X_train[:, ~zero].double()).item()   # unique minimiser
    return (d.X_train.shape[1], int(zero.sum()), int(inked.any(0).sum()),  # there iff full
            int(inked.any(1).sum()), rank)
