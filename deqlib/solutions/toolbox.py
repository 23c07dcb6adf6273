"""The toolbox (appendix): the book's solutions."""

from __future__ import annotations

import torch


def lambda_plus_min(M, rtol=1e-10):
    """The smallest eigenvalue of a symmetric PSD M larger than rtol times the largest."""
    eig = torch.linalg.eigvalsh(M)
    return eig[eig > rtol * eig[-1]].min()
