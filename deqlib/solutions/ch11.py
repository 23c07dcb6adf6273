"""Chapter 11, where implicit layers pay off: the book's solutions."""

from __future__ import annotations

import torch


def kib_per_layer(batch, width, bytes_per_number):
    """KiB that one more layer of the weight-tied network keeps for the backward pass."""
    return batch * width * bytes_per_number / 1024  # one (batch, width) tensor per layer


def forward_backward_step(z, W, v, alpha):
    """ReLU(z − α((I − W)z − v)) for a batch z of shape (batch, width)."""
    return torch.relu(z - alpha * (z - z @ W.T - v))  # (I − W)z, row by row
