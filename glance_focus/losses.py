"""Training criteria of Glance-Focus (DESIGN.md §3), vectorised over the batch.

- supervised: answer CE (``qa``), event-class CE over Hungarian-matched prompts (``cls``), span L1
  over matched prompts (``l1``);
- unsupervised: answer CE (``qa``), semantic diversity (``cls``), temporal GIoU diversity
  (``giou``), per-prompt certainty (``cert``).

The model never computes its own loss: :class:`GlanceFocusCriterion` takes the model output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glance_focus.config import LossConfig
from glance_focus.matcher import EventTargets, Matching, hungarian_match
from glance_focus.spans import generalized_temporal_iou_se, spans_to_se

_EPS = 1e-6


def answer_loss(answer_logits: Tensor, answers: Tensor) -> Tensor:
    """Cross-entropy of ``[B, O]`` (or ``[B, V]``) logits against answer indices ``[B]``."""
    return F.cross_entropy(answer_logits.float(), answers)


def event_class_loss(
    event_logits: Tensor,
    targets: EventTargets,
    matching: Matching,
    background_weight: float,
    unmatched_as_background: bool,
) -> Tensor:
    """Event-class cross-entropy ``[]`` over prompts ``[B, Q, C+1]``.

    ``unmatched_as_background``: every prompt is supervised, unmatched ones as background, with a
    weighted mean (DETR). Otherwise only matched prompts count, and the weighted per-prompt losses
    are averaged plainly (the reference's ``reduction="none"`` then ``.mean()``).
    """
    num_logits = event_logits.shape[-1]
    weight = torch.ones(num_logits, device=event_logits.device)
    weight[-1] = background_weight
    batch_idx, pred_idx, tgt_idx = matching.flat(event_logits.device)
    matched_labels = targets.labels[batch_idx, tgt_idx]
    if unmatched_as_background:
        classes = torch.full(event_logits.shape[:2], num_logits - 1, dtype=torch.long, device=event_logits.device)
        classes[batch_idx, pred_idx] = matched_labels
        return F.cross_entropy(event_logits.float().transpose(1, 2), classes, weight=weight)
    if len(batch_idx) == 0:
        return event_logits.sum() * 0.0
    per_prompt = F.cross_entropy(
        event_logits[batch_idx, pred_idx].float(), matched_labels, weight=weight, reduction="none"
    )
    return per_prompt.mean()


def span_l1_loss(spans: Tensor, targets: EventTargets, matching: Matching) -> Tensor:
    """Mean absolute error ``[]`` between matched predicted spans ``[B, Q, 2]`` and their targets."""
    batch_idx, pred_idx, tgt_idx = matching.flat(spans.device)
    if len(batch_idx) == 0:
        return spans.sum() * 0.0
    return F.l1_loss(spans[batch_idx, pred_idx].float(), targets.spans[batch_idx, tgt_idx].float())


def semantic_diversity_loss(event_logits: Tensor) -> Tensor:
    """Negative entropy of each video's mean class distribution, averaged over videos ``[]``.

    Minimising it spreads a video's prompts over different event classes.
    """
    mean_prob = event_logits.float().softmax(-1).mean(dim=1)  # (B, C+1)
    return (mean_prob * torch.log(mean_prob + _EPS)).sum(-1).mean()


def temporal_diversity_loss(spans: Tensor, span_format: str) -> Tensor:
    """Mean pairwise GIoU between a video's predicted spans (upper triangle, mean over the full Q x Q)."""
    se = spans_to_se(spans.float(), span_format)
    giou = generalized_temporal_iou_se(se, se)  # (B, Q, Q)
    return torch.triu(giou, diagonal=1).mean(dim=(1, 2)).mean()


def certainty_loss(event_logits: Tensor) -> Tensor:
    """Mean entropy of each prompt's class distribution ``[]``: minimising it makes prompts decisive."""
    prob = event_logits.float().softmax(-1)
    return -(prob * torch.log(prob + _EPS)).sum(-1).mean()


@dataclass(frozen=True)
class LossOutput:
    total: Tensor
    """Weighted sum of the terms (what to back-propagate)."""
    terms: dict[str, Tensor]
    """Unweighted value of each term, keyed ``qa``/``cls``/``l1``/``giou``/``cert``."""
    matching: Matching | None
    """Hungarian assignment (supervised setting only)."""


class GlanceFocusCriterion(nn.Module):
    """The supervised or unsupervised criterion, as chosen by :class:`LossConfig`."""

    def __init__(self, config: LossConfig, span_format: str) -> None:
        super().__init__()
        self.config = config
        self.span_format = span_format

    def forward(
        self,
        event_logits: Tensor,
        spans: Tensor,
        answer_logits: Tensor,
        answers: Tensor,
        targets: EventTargets | None = None,
    ) -> LossOutput:
        """event_logits ``[B, Q, C+1]``, spans ``[B, Q, 2]``, answer_logits ``[B, O]``, answers ``[B]``.

        ``targets`` (spans in the model's span format) are required in the supervised setting.
        """
        cfg = self.config
        terms: dict[str, Tensor] = {}
        matching = None
        if cfg.setting == "sup":
            if targets is None:
                raise ValueError("the supervised criterion needs event targets")
            matching = hungarian_match(event_logits, spans, targets, cfg.match_cost_class, cfg.match_cost_l1)
        for name in cfg.losses:
            if name == "qa":
                terms[name] = answer_loss(answer_logits, answers)
            elif name == "cls" and cfg.setting == "sup":
                assert targets is not None and matching is not None
                terms[name] = event_class_loss(
                    event_logits, targets, matching, cfg.background_weight, cfg.unmatched_as_background
                )
            elif name == "cls":
                terms[name] = semantic_diversity_loss(event_logits)
            elif name == "l1":
                assert targets is not None and matching is not None
                terms[name] = span_l1_loss(spans, targets, matching)
            elif name == "giou":
                terms[name] = temporal_diversity_loss(spans, self.span_format)
            elif name == "cert":
                terms[name] = certainty_loss(event_logits)
        total = sum(cfg.weights[name] * value for name, value in terms.items())
        return LossOutput(total=total, terms=terms, matching=matching)  # type: ignore[arg-type]
