"""One dataset builder for training and evaluation: a :class:`DatasetSplit` plus its frame
features -> model-ready batches.

Each item is one question about one video: the video's features resampled to the model's frame
count (uniform subsample or zero padding, DESIGN.md §3), its question sequences, the answer and
its ground-truth events as targets in the model's span format.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from glance_focus.data.features import FeatureStore, sample_features
from glance_focus.data.types import DatasetSplit, QAExample
from glance_focus.matcher import EventTargets
from glance_focus.spans import span_se_to_cw
from glance_focus.text_features import question_sequences


@dataclass(frozen=True)
class QAItem:
    index: int
    """Position of the example in ``split.examples``."""
    features: Tensor
    """``[T, F]``"""
    padding: Tensor
    """``[T]`` bool"""
    sequences: list[str]
    answer: int
    """-1 where the split hides answers."""
    event_labels: Tensor
    """``[n]`` long"""
    event_spans: Tensor
    """``[n, 2]`` in the model's span format."""


@dataclass(frozen=True)
class QABatch:
    indices: Tensor
    """``[B]`` positions in ``split.examples``."""
    frames: Tensor
    """``[B, T, F]``"""
    frame_padding: Tensor
    """``[B, T]``"""
    sequences: list[list[str]]
    """B lists of O strings."""
    answers: Tensor
    """``[B]`` (-1 where hidden)."""
    targets: EventTargets

    def to(self, device: torch.device | str) -> QABatch:
        return QABatch(
            self.indices,
            self.frames.to(device, non_blocking=True),
            self.frame_padding.to(device, non_blocking=True),
            self.sequences,
            self.answers.to(device),
            self.targets.to(device),
        )


def event_targets_for(split: DatasetSplit, clip_id: str, max_events: int, span_format: str) -> tuple[Tensor, Tensor]:
    """Ground-truth (labels ``[n]``, spans ``[n, 2]``) of a clip, at most ``max_events`` (earliest first)."""
    video = split.events.get(clip_id)
    if video is None or not video.events:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, 2)
    labels = torch.tensor([e.label for e in video.events[:max_events]], dtype=torch.long)
    spans = torch.tensor(video.spans_normalized()[:max_events], dtype=torch.float32)
    return labels, (span_se_to_cw(spans) if span_format == "cw" else spans)


class VideoQADataset(Dataset[QAItem]):
    """Questions of a split with their clip's features and events (by :attr:`QAExample.clip_id`)."""

    def __init__(
        self, split: DatasetSplit, features: FeatureStore, num_frames: int, max_events: int, span_format: str
    ) -> None:
        missing = sorted({ex.clip_id for ex in split.examples} - set(features.keys()))
        if missing:
            raise ValueError(
                f"{len(missing)} clips of {split.name}/{split.split} have no features in {features.path} "
                f"(first: {missing[:3]}); run train/extract_features.py"
            )
        self.split = split
        self.features = features
        self.num_frames = num_frames
        self.max_events = max_events
        self.span_format = span_format

    def __len__(self) -> int:
        return len(self.split.examples)

    def __getitem__(self, index: int) -> QAItem:
        example: QAExample = self.split.examples[index]
        sampled = sample_features(self.features[example.clip_id], self.num_frames)
        labels, spans = event_targets_for(self.split, example.clip_id, self.max_events, self.span_format)
        return QAItem(
            index=index,
            features=sampled.features,
            padding=sampled.padding,
            sequences=question_sequences(example.question, example.options),
            answer=-1 if example.answer is None else example.answer,
            event_labels=labels,
            event_spans=spans,
        )


def collate_qa(items: list[QAItem]) -> QABatch:
    return QABatch(
        indices=torch.tensor([item.index for item in items]),
        frames=torch.stack([item.features for item in items]),
        frame_padding=torch.stack([item.padding for item in items]),
        sequences=[item.sequences for item in items],
        answers=torch.tensor([item.answer for item in items]),
        targets=EventTargets.from_lists([i.event_labels for i in items], [i.event_spans for i in items]),
    )
