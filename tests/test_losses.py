"""Matcher and criteria: batched equals per-sample, empty targets, the two class-loss variants."""

from __future__ import annotations

import torch

from glance_focus.config import LossConfig
from glance_focus.losses import GlanceFocusCriterion, temporal_diversity_loss
from glance_focus.matcher import EventTargets, hungarian_match


def random_targets(counts: list[int], classes: int, seed: int = 0) -> EventTargets:
    g = torch.Generator().manual_seed(seed)
    labels = [torch.randint(0, classes, (n,), generator=g) for n in counts]
    spans = []
    for n in counts:
        start = torch.rand(n, 1, generator=g) * 0.7
        spans.append(torch.cat([start, start + 0.05 + torch.rand(n, 1, generator=g) * 0.25], -1))
    return EventTargets.from_lists(labels, spans)


def test_batched_matching_equals_per_sample_matching() -> None:
    g = torch.Generator().manual_seed(3)
    logits, spans = torch.randn(4, 8, 6, generator=g), torch.rand(4, 8, 2, generator=g)
    counts = [3, 0, 8, 5]
    targets = random_targets(counts, classes=5)
    batched = hungarian_match(logits, spans, targets)
    for b, n in enumerate(counts):
        single = EventTargets(targets.labels[b : b + 1, :n], targets.spans[b : b + 1, :n], targets.valid[b : b + 1, :n])
        ((rows, cols),) = hungarian_match(logits[b : b + 1], spans[b : b + 1], single).pairs
        assert torch.equal(batched.pairs[b][0], rows) and torch.equal(batched.pairs[b][1], cols)
        assert len(rows) == n


def test_matching_recovers_a_permutation() -> None:
    targets = random_targets([4], classes=5, seed=1)
    perm = torch.tensor([2, 0, 3, 1])
    spans = targets.spans[:, perm]
    logits = torch.full((1, 4, 6), -10.0)
    logits[0, torch.arange(4), targets.labels[0, perm]] = 10.0
    rows, cols = hungarian_match(logits, spans, targets).pairs[0]
    assert torch.equal(cols, perm[rows])


def test_empty_targets_give_finite_losses_and_gradients() -> None:
    logits = torch.randn(2, 5, 4, requires_grad=True)
    spans = torch.rand(2, 5, 2, requires_grad=True)
    answers_logits = torch.randn(2, 3, requires_grad=True)
    targets = EventTargets.from_lists([torch.zeros(0, dtype=torch.long)] * 2, [torch.zeros(0, 2)] * 2)
    for unmatched in (True, False):
        out = GlanceFocusCriterion(LossConfig(unmatched_as_background=unmatched), "se")(
            logits, spans, answers_logits, torch.tensor([0, 2]), targets
        )
        assert torch.isfinite(out.total)
        out.total.backward()
        assert out.terms["l1"].item() == 0.0


def test_unmatched_prompts_learn_background_only_when_asked() -> None:
    targets = random_targets([2, 1], classes=3)
    spans = torch.rand(2, 4, 2)
    background = torch.zeros(2, 4, 4)
    background[..., -1] = 8.0  # every prompt says "background"
    answers = torch.zeros(2, dtype=torch.long)
    detr = GlanceFocusCriterion(LossConfig(), "se")(background, spans, torch.zeros(2, 2), answers, targets)
    ref = GlanceFocusCriterion(LossConfig.reference(), "se")(background, spans, torch.zeros(2, 2), answers, targets)
    # Only the matched prompts are wrong; the DETR variant also rewards the correct background ones.
    assert detr.terms["cls"] < ref.terms["cls"]


def test_temporal_diversity_prefers_disjoint_spans() -> None:
    same = torch.tensor([[[0.5, 0.2], [0.5, 0.2], [0.5, 0.2]]])
    spread = torch.tensor([[[0.1, 0.2], [0.5, 0.2], [0.9, 0.2]]])
    assert temporal_diversity_loss(spread, "cw") < temporal_diversity_loss(same, "cw")


def test_loss_config_refuses_unknown_terms() -> None:
    import pytest

    with pytest.raises(ValueError, match="giou"):
        LossConfig(losses=("qa", "giou"))
