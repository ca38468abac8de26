"""Pieces the networks share."""
from __future__ import annotations

import torch


def l2norm(x: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """``x / (||x|| + eps)`` along ``dim``: the original's l2norm (eps added to the norm, not a clamp)."""
    return x / (x.pow(2).sum(dim=dim, keepdim=True).sqrt() + eps)
