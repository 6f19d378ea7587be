"""Temporal span utilities. The span format is in every function name.

- ``se``: (start, end)
- ``cw``: (center, width)

All functions take spans in the last dimension and broadcast over leading (batch) dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor


def span_se_to_cw(spans: Tensor) -> Tensor:
    """(start, end) -> (center, width).

    >>> span_se_to_cw(torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    tensor([[0.5000, 1.0000],
            [0.3000, 0.2000]])
    """
    start, end = spans.unbind(-1)
    return torch.stack([(start + end) * 0.5, end - start], dim=-1)


def span_cw_to_se(spans: Tensor) -> Tensor:
    """(center, width) -> (start, end).

    >>> span_cw_to_se(torch.tensor([[0.5, 1.0], [0.3, 0.2]]))
    tensor([[0.0000, 1.0000],
            [0.2000, 0.4000]])
    """
    center, width = spans.unbind(-1)
    return torch.stack([center - 0.5 * width, center + 0.5 * width], dim=-1)


def spans_to_se(spans: Tensor, span_format: str) -> Tensor:
    """Read ``spans`` in ``span_format`` ("se" or "cw") and return them as (start, end)."""
    if span_format == "se":
        return spans
    if span_format == "cw":
        return span_cw_to_se(spans)
    raise ValueError(f"unknown span format {span_format!r}")


def _pairwise_inter_union(spans1: Tensor, spans2: Tensor) -> tuple[Tensor, Tensor]:
    """Intersections and unions of (start, end) spans ``[..., N, 2]`` x ``[..., M, 2]`` -> ``[..., N, M]``."""
    length1 = spans1[..., 1] - spans1[..., 0]  # [..., N]
    length2 = spans2[..., 1] - spans2[..., 0]  # [..., M]
    left = torch.maximum(spans1[..., :, None, 0], spans2[..., None, :, 0])  # [..., N, M]
    right = torch.minimum(spans1[..., :, None, 1], spans2[..., None, :, 1])
    inter = (right - left).clamp(min=0)
    union = length1[..., :, None] + length2[..., None, :] - inter
    return inter, union


def temporal_iou_se(spans1: Tensor, spans2: Tensor) -> Tensor:
    """Pairwise IoU of (start, end) spans ``[..., N, 2]`` x ``[..., M, 2]`` -> ``[..., N, M]``.

    Two zero-width spans have union 0; their IoU is defined as 1 when they coincide, else 0.

    >>> temporal_iou_se(torch.tensor([[0.0, 0.2], [0.5, 1.0]]), torch.tensor([[0.0, 0.3], [0.0, 1.0]]))
    tensor([[0.6667, 0.2000],
            [0.0000, 0.5000]])
    """
    inter, union = _pairwise_inter_union(spans1, spans2)
    same = (spans1[..., :, None, :] == spans2[..., None, :, :]).all(-1)
    return torch.where(union > 0, inter / union.clamp(min=1e-12), same.to(inter.dtype))


def generalized_temporal_iou_se(spans1: Tensor, spans2: Tensor) -> Tensor:
    """Pairwise generalized IoU of (start, end) spans ``[..., N, 2]`` x ``[..., M, 2]`` -> ``[..., N, M]``.

    GIoU = IoU - (enclosing - union) / enclosing, in [-1, 1]. Degenerate cases (zero-length
    enclosing span) fall back to the IoU.

    >>> generalized_temporal_iou_se(torch.tensor([[0.0, 0.2], [0.5, 1.0]]), torch.tensor([[0.0, 0.3], [0.0, 1.0]]))
    tensor([[ 0.6667,  0.2000],
            [-0.2000,  0.5000]])
    """
    spans1 = spans1.float()
    spans2 = spans2.float()
    if (spans1[..., 1] < spans1[..., 0]).any() or (spans2[..., 1] < spans2[..., 0]).any():
        raise ValueError("spans must satisfy end >= start")
    inter, union = _pairwise_inter_union(spans1, spans2)
    iou = torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))
    left = torch.minimum(spans1[..., :, None, 0], spans2[..., None, :, 0])
    right = torch.maximum(spans1[..., :, None, 1], spans2[..., None, :, 1])
    enclosing = (right - left).clamp(min=0)
    penalty = torch.where(enclosing > 0, (enclosing - union) / enclosing.clamp(min=1e-12), torch.zeros_like(inter))
    return iou - penalty
