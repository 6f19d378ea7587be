"""Training criteria of Glance-Focus (DESIGN.md §3), vectorised over the batch.

- supervised: answer CE (``qa``), event-class CE over Hungarian-matched prompts (``cls``), span L1
  over matched prompts (``l1``);
- unsupervised: answer CE (``qa``), semantic diversity (``cls``), per-prompt certainty (``cert``)
  and temporal diversity: either the reference's pairwise GIoU (``giou``) or the corrected
  pairwise overlap of clipped spans (``overlap``) plus coverage (``coverage``), optionally with each
  span tied to its prompt's glance attention (``align``). :class:`LossConfig` says why.

The model never computes its own loss: :class:`GlanceFocusCriterion` takes the model output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glance_focus.config import LossConfig
from glance_focus.matcher import EventTargets, Matching, hungarian_match
from glance_focus.spans import (
    attention_spans_se,
    generalized_temporal_iou_se,
    spans_to_se,
    temporal_iou_se,
    union_length_se,
)

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


def pairwise_giou_loss(spans: Tensor, span_format: str) -> Tensor:
    """The reference's temporal diversity ``[]``: mean pairwise GIoU of a video's spans ``[B, Q, 2]``.

    Upper triangle, averaged over the full Q x Q. Kept exactly for reference compatibility, but it
    collapses: for disjoint spans GIoU = -(gap / enclosing), which keeps falling as the spans
    shrink, so the minimum is Q zero-width spans spread over the video.
    """
    se = spans_to_se(spans.float(), span_format)
    giou = generalized_temporal_iou_se(se, se)  # (B, Q, Q)
    return torch.triu(giou, diagonal=1).mean(dim=(1, 2)).mean()


def _clipped_se(spans: Tensor, span_format: str) -> Tensor:
    """Spans ``[B, Q, 2]`` as (start, end) inside the video [0, 1], end >= start."""
    se = spans_to_se(spans.float(), span_format).clamp(0, 1)
    return torch.stack([se[..., 0], torch.maximum(se[..., 0], se[..., 1])], dim=-1)


def pairwise_overlap_loss(spans: Tensor, span_format: str) -> Tensor:
    """Mean IoU over the Q(Q-1)/2 pairs of a video's clipped spans ``[B, Q, 2]``, averaged over videos ``[]``.

    Unlike GIoU it is exactly 0 for every disjoint arrangement, so it rewards separating spans
    but never shrinking them.
    """
    se = _clipped_se(spans, span_format)
    iou = temporal_iou_se(se, se)  # (B, Q, Q)
    num = spans.shape[1]
    if num < 2:
        return iou.sum() * 0.0
    upper = torch.triu(torch.ones(num, num, dtype=torch.bool, device=spans.device), diagonal=1)
    return iou[:, upper].mean()


def coverage_loss(spans: Tensor, span_format: str) -> Tensor:
    """Fraction of the video ``[]`` that no clipped span ``[B, Q, 2]`` covers, averaged over videos.

    Zero-width spans cover nothing, so this is what stops the collapse; with the overlap term its
    minimum is any tiling of the video.
    """
    return (1 - union_length_se(_clipped_se(spans, span_format))).mean()


def attention_alignment_loss(
    spans: Tensor, span_format: str, prompt_to_frame: Tensor, frame_padding: Tensor | None
) -> Tensor:
    """L1 ``[]`` between each span ``[B, Q, 2]`` and the span its prompt's glance attention covers.

    ``prompt_to_frame`` ``[B, Q, T]``; the target (:func:`attention_spans_se` over normalised frame
    times) is detached: the span head learns to report where its prompt looks, without moving the
    attention itself.
    """
    if frame_padding is None:
        frame_padding = torch.zeros(prompt_to_frame.shape[0], prompt_to_frame.shape[2], dtype=torch.bool)
    frame_padding = frame_padding.to(prompt_to_frame.device)
    valid = (~frame_padding).sum(1, keepdim=True).clamp(min=1)  # (B, 1)
    times = (torch.arange(frame_padding.shape[1], device=frame_padding.device)[None] + 0.5) / valid  # (B, T)
    attention = prompt_to_frame.float().masked_fill(frame_padding[:, None, :], 0.0)
    target = attention_spans_se(attention, times).detach()  # (B, Q, 2)
    return F.l1_loss(_clipped_se(spans, span_format), target)


def certainty_loss(event_logits: Tensor) -> Tensor:
    """Mean entropy of each prompt's class distribution ``[]``: minimising it makes prompts decisive."""
    prob = event_logits.float().softmax(-1)
    return -(prob * torch.log(prob + _EPS)).sum(-1).mean()


@dataclass(frozen=True)
class LossOutput:
    total: Tensor
    """Weighted sum of the terms (what to back-propagate)."""
    terms: dict[str, Tensor]
    """Unweighted value of each term, keyed by its name in ``LossConfig.losses``."""
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
        prompt_to_frame: Tensor | None = None,
        frame_padding: Tensor | None = None,
    ) -> LossOutput:
        """event_logits ``[B, Q, C+1]``, spans ``[B, Q, 2]``, answer_logits ``[B, O]``, answers ``[B]``.

        ``targets`` (spans in the model's span format) are required in the supervised setting;
        ``prompt_to_frame`` ``[B, Q, T]`` (glance attention) and ``frame_padding`` ``[B, T]`` by ``align``.
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
                terms[name] = pairwise_giou_loss(spans, self.span_format)
            elif name == "overlap":
                terms[name] = pairwise_overlap_loss(spans, self.span_format)
            elif name == "coverage":
                terms[name] = coverage_loss(spans, self.span_format)
            elif name == "align":
                if prompt_to_frame is None:
                    raise ValueError("the align term needs the glance attention (prompt_to_frame)")
                terms[name] = attention_alignment_loss(spans, self.span_format, prompt_to_frame, frame_padding)
            elif name == "cert":
                terms[name] = certainty_loss(event_logits)
        total = sum(cfg.weights[name] * value for name, value in terms.items())
        return LossOutput(total=total, terms=terms, matching=matching)  # type: ignore[arg-type]
