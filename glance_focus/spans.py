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


def union_length_se(spans: Tensor) -> Tensor:
    """Total length covered by the union of (start, end) spans ``[..., N, 2]`` -> ``[...]``.

    Sweep in order of start: each span adds what reaches past every earlier span's end.
    Differentiable almost everywhere (sort and running maximum select, they do not mix).

    >>> union_length_se(torch.tensor([[0.0, 0.3], [0.2, 0.5], [0.7, 0.8]]))
    tensor(0.6000)
    """
    order = spans[..., 0].argsort(dim=-1)
    ordered = torch.gather(spans, -2, order[..., None].expand_as(spans))  # [..., N, 2]
    start, end = ordered.unbind(-1)
    reach = end.cummax(dim=-1).values  # [..., N]: furthest end so far
    before = torch.cat([torch.full_like(reach[..., :1], float("-inf")), reach[..., :-1]], dim=-1)
    added = end - torch.maximum(start, before)
    # ``where`` rather than ``clamp``: a zero-width span still gets the gradient that widens it.
    return torch.where(added >= 0, added, torch.zeros_like(added)).sum(-1)


def ordered_spans_se(raw: Tensor) -> Tensor:
    """Unconstrained ``[..., 2]`` -> (start, end) with 0 <= start <= end <= 1.

    start = sigmoid(raw_0); end = start + sigmoid(raw_1) * (1 - start): the second number is the
    fraction of the remaining video the span takes, so the order can never flip.

    >>> ordered_spans_se(torch.tensor([[0.0, 0.0]]))
    tensor([[0.5000, 0.7500]])
    """
    start = raw[..., 0].sigmoid()
    end = start + raw[..., 1].sigmoid() * (1 - start)
    return torch.stack([start, end], dim=-1)


def attention_spans_se(attention: Tensor, times: Tensor) -> Tensor:
    """The span each row of an attention map covers: ``[..., Q, T]`` x frame times ``[..., T]`` -> ``[..., Q, 2]``.

    Centre = attention-weighted mean time; half-width = sqrt(3) x the weighted standard deviation
    (the half-width of a uniform distribution with that deviation); clipped to [0, 1].

    >>> attention_spans_se(torch.tensor([[0.0, 0.5, 0.5, 0.0]]), torch.tensor([0.125, 0.375, 0.625, 0.875]))
    tensor([[0.2835, 0.7165]])
    """
    weights = attention / attention.sum(-1, keepdim=True).clamp(min=1e-12)
    times = times.unsqueeze(-2)  # [..., 1, T]
    mean = (weights * times).sum(-1)  # [..., Q]
    std = (weights * (times - mean[..., None]) ** 2).sum(-1).clamp(min=0).sqrt()
    half = std * 3**0.5
    return torch.stack([mean - half, mean + half], dim=-1).clamp(0, 1)
