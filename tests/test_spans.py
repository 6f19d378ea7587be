from __future__ import annotations

import doctest

import torch

import glance_focus.spans as spans_module
from glance_focus.spans import (
    generalized_temporal_iou_se,
    span_cw_to_se,
    span_se_to_cw,
    spans_to_se,
    temporal_iou_se,
)


def test_doctests() -> None:
    assert doctest.testmod(spans_module).failed == 0


def test_round_trip_any_shape() -> None:
    start = torch.rand(3, 5, 1)
    se = torch.cat([start, start + torch.rand(3, 5, 1)], -1)
    assert torch.allclose(span_cw_to_se(span_se_to_cw(se)), se, atol=1e-6)
    assert torch.equal(spans_to_se(se, "se"), se)
    assert torch.allclose(spans_to_se(span_se_to_cw(se), "cw"), se, atol=1e-6)


def test_iou_symmetric_bounded_and_self_one() -> None:
    a = torch.tensor([[0.0, 0.5], [0.2, 0.9], [0.6, 0.7]])
    iou = temporal_iou_se(a, a)
    assert torch.allclose(iou, iou.T)
    assert torch.allclose(iou.diagonal(), torch.ones(3))
    assert (iou >= 0).all() and (iou <= 1).all()


def test_zero_width_spans() -> None:
    point = torch.tensor([[0.3, 0.3]])
    assert temporal_iou_se(point, point).item() == 1.0
    assert temporal_iou_se(point, torch.tensor([[0.4, 0.4]])).item() == 0.0
    assert temporal_iou_se(point, torch.tensor([[0.0, 1.0]])).item() == 0.0
    giou = generalized_temporal_iou_se(point, point)
    assert torch.isfinite(giou).all()


def test_giou_disjoint_is_negative_and_batched() -> None:
    a = torch.tensor([[[0.0, 0.1]], [[0.0, 0.5]]])
    b = torch.tensor([[[0.9, 1.0]], [[0.0, 0.5]]])
    giou = generalized_temporal_iou_se(a, b)
    assert giou.shape == (2, 1, 1)
    assert giou[0, 0, 0].item() < -0.7 and abs(giou[1, 0, 0].item() - 1.0) < 1e-6


def test_empty_inputs() -> None:
    empty = torch.zeros(0, 2)
    a = torch.tensor([[0.0, 1.0]])
    assert temporal_iou_se(empty, a).shape == (0, 1)
    assert generalized_temporal_iou_se(a, empty).shape == (1, 0)
