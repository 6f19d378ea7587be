"""Matcher and criteria: batched equals per-sample, empty targets, the two class-loss variants."""

from __future__ import annotations

import torch

from glance_focus.config import LossConfig
from glance_focus.losses import GlanceFocusCriterion, pairwise_giou_loss
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
    assert pairwise_giou_loss(spread, "cw") < pairwise_giou_loss(same, "cw")


def test_loss_config_refuses_unknown_terms() -> None:
    import pytest

    with pytest.raises(ValueError, match="giou"):
        LossConfig(losses=("qa", "giou"))


def _optimise_free_spans(config: LossConfig, ordered: bool, steps: int = 100) -> tuple[float, float]:
    """Optimise free span parameters of 2 videos x 10 prompts under ``config``'s span terms alone.

    Returns the final mean width and mean pairwise IoU of the spans clipped to the video.
    """
    from glance_focus.spans import ordered_spans_se, span_se_to_cw, spans_to_se, temporal_iou_se

    batch, prompts = 2, 10
    raw = torch.nn.Parameter(torch.randn(batch, prompts, 2, generator=torch.Generator().manual_seed(0)))
    optimizer = torch.optim.Adam([raw], lr=0.1)
    criterion = GlanceFocusCriterion(config, "cw")
    span_terms = set(config.losses) & {"giou", "overlap", "coverage"}
    assert span_terms
    for _ in range(steps + 1):
        spans = span_se_to_cw(ordered_spans_se(raw)) if ordered else raw.sigmoid()
        out = criterion(
            torch.zeros(batch, prompts, 3), spans, torch.zeros(batch, 2), torch.zeros(batch, dtype=torch.long)
        )
        loss = sum(config.weights[name] * out.terms[name] for name in span_terms)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    se = spans_to_se(spans.detach(), "cw").clamp(0, 1)
    rows, cols = torch.triu_indices(prompts, prompts, offset=1)
    iou = temporal_iou_se(se, se)[:, rows, cols]
    return float((se[..., 1] - se[..., 0]).mean()), float(iou.mean())


def test_default_temporal_diversity_cannot_collapse_and_the_reference_does() -> None:
    """The collapse the reference's pairwise GIoU drives the span head into, on free parameters.

    For disjoint spans GIoU = -gap / enclosing, which keeps falling as the spans shrink: the
    reference criterion (independent sigmoids read as (center, width), as in its code) ends with
    zero-width spans. The default (pairwise IoU of clipped spans + coverage, ordered spans) keeps
    them about 1/Q wide and apart.
    """
    prompts = 10
    width, iou = _optimise_free_spans(LossConfig.unsupervised(), ordered=True)
    assert width > 0.5 / prompts
    assert iou < 0.1
    ref_width, _ = _optimise_free_spans(LossConfig.reference("uns"), ordered=False)
    assert ref_width < 0.1 / prompts, "the reference term is documented to collapse spans to zero width"


def test_overlap_and_coverage_score_tilings_best() -> None:
    from glance_focus.losses import coverage_loss, pairwise_overlap_loss

    tiling = torch.tensor([[[0.0, 0.25], [0.25, 0.5], [0.5, 0.75], [0.75, 1.0]]])
    points = torch.tensor([[[0.1, 0.1], [0.4, 0.4], [0.6, 0.6], [0.9, 0.9]]])
    stacked = torch.tensor([[[0.0, 1.0]] * 4])
    assert pairwise_overlap_loss(tiling, "se") == 0 and coverage_loss(tiling, "se") == 0
    assert pairwise_overlap_loss(points, "se") == 0 and coverage_loss(points, "se") == 1
    assert pairwise_overlap_loss(stacked, "se") == 1 and coverage_loss(stacked, "se") == 0


def test_alignment_pulls_spans_towards_where_each_prompt_looks() -> None:
    from glance_focus.losses import attention_alignment_loss

    attention = torch.zeros(1, 2, 8)
    attention[0, 0, :2] = 0.5  # prompt 0 looks at the first quarter
    attention[0, 1, 6:] = 0.5  # prompt 1 at the last
    matching = torch.tensor([[[0.05, 0.25], [0.75, 0.95]]])
    swapped = matching.flip(1)
    spans = swapped.clone().requires_grad_(True)
    assert attention_alignment_loss(matching, "se", attention, None) < 0.05
    loss = attention_alignment_loss(spans, "se", attention, None)
    loss.backward()
    assert spans.grad[0, 0, 0] > 0 and spans.grad[0, 1, 0] < 0  # start of prompt 0 moves left, 1's right


def _optimise_shared_head(anchors: bool, steps: int = 60) -> tuple[float, float]:
    """Train the model's span head alone under overlap + coverage, on 10 nearly identical prompt
    states (as a freshly initialised glance stage gives them); mean width and pairwise IoU."""
    from glance_focus.model import SpanHead
    from glance_focus.spans import spans_to_se, temporal_iou_se

    torch.manual_seed(0)
    batch, prompts = 2, 10
    head = SpanHead(16, "cw", "ordered", prompts if anchors else None)
    states = torch.randn(1, 1, 16).expand(batch, prompts, 16) + 0.01 * torch.randn(batch, prompts, 16)
    optimizer = torch.optim.Adam(head.parameters(), lr=2e-2)
    criterion = GlanceFocusCriterion(LossConfig.unsupervised(), "cw")
    for _ in range(steps):
        spans = head(states)
        out = criterion(
            torch.zeros(batch, prompts, 3), spans, torch.zeros(batch, 2), torch.zeros(batch, dtype=torch.long)
        )
        loss = 0.5 * out.terms["overlap"] + 0.5 * out.terms["coverage"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    se = spans_to_se(spans.detach(), "cw")
    rows, cols = torch.triu_indices(prompts, prompts, offset=1)
    return float((se[..., 1] - se[..., 0]).mean()), float(temporal_iou_se(se, se)[:, rows, cols].mean())


def test_a_shared_span_head_needs_anchors_to_keep_prompts_apart() -> None:
    """What training showed (docs/unsupervised.md): one head over nearly identical prompts moves
    every span together, so coverage wins and all spans become the whole video; with anchors the
    prompts start in their own slots and keep them."""
    width, iou = _optimise_shared_head(anchors=True)
    assert width > 0.05 and iou < 0.1
    collapsed_width, collapsed_iou = _optimise_shared_head(anchors=False)
    assert collapsed_width > 0.9 and collapsed_iou > 0.9
