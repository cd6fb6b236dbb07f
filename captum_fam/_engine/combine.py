"""The last step of FAM: channel weights times activation maps, summed over channels."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["combine_activation_maps"]


def combine_activation_maps(
    activations: Tensor,
    weights: Tensor,
    relu_attributions: bool = True,
    normalize_weights: bool = True,
) -> Tensor:
    r"""Combine activations ``(N, C, *S)`` with channel weights ``(N, C)``.

    Args:
        activations (Tensor): ``(N, C, *S)``: ``S = (T,)`` for sequences, ``(H, W)`` for
                    images, ``(D, H, W)`` for volumes and video.
        weights (Tensor): ``(N, C)`` channel weights.
        relu_attributions (bool, optional): Keep the positive part. Default: True
        normalize_weights (bool, optional): Divide each example's weights by their absolute
                    sum (all-zero weights stay zero). Default: True

    Returns:
        *Tensor* ``(N, 1, *S)``: ``sum_k w'_k A[k]``, with ``w' = w / sum_k |w_k|`` when
        ``normalize_weights``, and its ReLU when ``relu_attributions``.

    Examples::

        >>> maps = combine_activation_maps(torch.rand(2, 8, 7, 7), torch.randn(2, 8))
        >>> maps.shape
        torch.Size([2, 1, 7, 7])
    """
    if normalize_weights:
        total = weights.abs().sum(dim=1, keepdim=True)
        weights = weights / total.clamp_min(torch.finfo(weights.dtype).tiny)
    maps = torch.einsum("nc,nc...->n...", weights, activations).unsqueeze(1)
    return torch.relu(maps) if relu_attributions else maps
