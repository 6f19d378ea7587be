"""Hungarian matching between predicted events (memory prompts) and ground-truth events."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


@dataclass(frozen=True)
class EventTargets:
    """Ground-truth events of B videos, padded to M events.

    labels ``[B, M]`` long (event class), spans ``[B, M, 2]`` in the model's span format,
    valid ``[B, M]`` bool (False at padding). Videos may have no event at all.
    """

    labels: Tensor
    spans: Tensor
    valid: Tensor

    @classmethod
    def from_lists(
        cls, labels: list[Tensor], spans: list[Tensor], device: torch.device | str | None = None
    ) -> EventTargets:
        """Pad per-video ``labels[b]`` ``[n_b]`` and ``spans[b]`` ``[n_b, 2]``."""
        batch = len(labels)
        width = max((len(x) for x in labels), default=0)
        out_labels = torch.zeros(batch, width, dtype=torch.long, device=device)
        out_spans = torch.zeros(batch, width, 2, dtype=torch.float32, device=device)
        valid = torch.zeros(batch, width, dtype=torch.bool, device=device)
        for b, (lab, span) in enumerate(zip(labels, spans, strict=True)):
            n = len(lab)
            out_labels[b, :n] = lab
            out_spans[b, :n] = span
            valid[b, :n] = True
        return cls(out_labels, out_spans, valid)

    def to(self, device: torch.device | str) -> EventTargets:
        return EventTargets(self.labels.to(device), self.spans.to(device), self.valid.to(device))


@dataclass(frozen=True)
class Matching:
    """Matched pairs of B videos: ``pairs[b] = (prediction indices, target indices)``, each ``[k_b]``."""

    pairs: list[tuple[Tensor, Tensor]]

    def flat(self, device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(batch index, prediction index, target index), each ``[sum k_b]``, for advanced indexing."""
        batch = [torch.full((len(p),), b, dtype=torch.long) for b, (p, _) in enumerate(self.pairs)]
        pred = [p for p, _ in self.pairs]
        tgt = [t for _, t in self.pairs]
        cat = lambda xs: torch.cat(xs).to(device) if xs else torch.zeros(0, dtype=torch.long, device=device)  # noqa: E731
        return cat(batch), cat(pred), cat(tgt)


@torch.no_grad()
def match_cost(event_logits: Tensor, spans: Tensor, targets: EventTargets, cost_class: float, cost_l1: float) -> Tensor:
    """Matching cost ``[B, Q, M]`` = cost_l1 * L1(span, target span) - cost_class * p(target class).

    The "1 -" of the class cost is a constant and does not change the assignment.
    """
    prob = event_logits.float().softmax(-1)  # (B, Q, C+1)
    class_prob = torch.gather(prob, 2, targets.labels[:, None, :].expand(-1, prob.shape[1], -1))  # (B, Q, M)
    l1 = torch.cdist(spans.float(), targets.spans.float(), p=1)  # (B, Q, M)
    return cost_l1 * l1 - cost_class * class_prob


@torch.no_grad()
def hungarian_match(
    event_logits: Tensor, spans: Tensor, targets: EventTargets, cost_class: float = 1.0, cost_l1: float = 1.0
) -> Matching:
    """One-to-one assignment of the Q predictions of each video to its ground-truth events.

    Args:
        event_logits: ``[B, Q, C+1]``; spans: ``[B, Q, 2]`` in the targets' span format.
    Returns: a :class:`Matching` with ``min(Q, n_b)`` pairs for video b, ordered by prediction index.
    """
    cost = match_cost(event_logits, spans, targets, cost_class, cost_l1).cpu().numpy()
    counts = targets.valid.sum(1).tolist()
    pairs = []
    for b, n in enumerate(counts):
        rows, cols = linear_sum_assignment(cost[b, :, :n]) if n else (np.zeros(0, int), np.zeros(0, int))
        pairs.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
    return Matching(pairs)
