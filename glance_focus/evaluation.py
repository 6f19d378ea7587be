"""Run a model over a dataset split: per-question predictions and the split's metrics.

The same function backs ``train/evaluate.py``, validation during training and the app's Inspect
tab, so all three report identical numbers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from glance_focus.batching import VideoQADataset, collate_qa
from glance_focus.checkpoint import LoadedCheckpoint
from glance_focus.data.features import FeatureStore
from glance_focus.data.types import DatasetSplit
from glance_focus.encoders import build_text_encoder, load_text_encoder
from glance_focus.evidence import EVIDENCE_CHUNK_VIDEOS, answer_without_each_prompt
from glance_focus.matcher import EventTargets, hungarian_match
from glance_focus.model import GlanceFocus
from glance_focus.spans import spans_to_se, temporal_iou_se
from glance_focus.text_features import TextFeatureCache, build_text_encoder_from_config


@dataclass(frozen=True)
class PredictedEvent:
    """One memory prompt's event, normalised to the video's length."""

    start: float
    end: float
    label: int
    """Arg-max class; equals the number of event classes for background."""
    score: float
    """Probability of ``label``."""
    background: bool


@dataclass(frozen=True)
class ExamplePrediction:
    question_id: str
    video_id: str
    clip_id: str
    """Key of the question's features and events (:attr:`QAExample.clip_id`)."""
    question_type: str
    prediction: int
    answer: int | None
    probabilities: list[float]
    """Softmax over the options (multiple-choice) or the answer vocabulary (open-ended)."""
    events: list[PredictedEvent]
    """One per memory prompt, in temporal order (the order the focus stage reads them)."""
    evidence_without: list[float] | None = None
    """With ``evidence=True``: the predicted answer's probability with each memory prompt removed
    (temporal order, :mod:`glance_focus.evidence`)."""
    evidence_flips_to: list[int | None] | None = None
    """With ``evidence=True``: per removed prompt, the answer given instead, or None where it stays."""

    @property
    def correct(self) -> bool | None:
        return None if self.answer is None else self.prediction == self.answer

    @property
    def confidence(self) -> float:
        return self.probabilities[self.prediction]


@dataclass(frozen=True)
class EventQuality:
    """Hungarian-matched quality of the memory prompts' events against ground truth."""

    span_miou: float
    """Mean temporal IoU between each ground-truth event and its matched prompt."""
    recall_at_05: float
    """Fraction of ground-truth events whose matched prompt has IoU >= 0.5."""
    class_accuracy: float
    """Fraction of ground-truth events whose matched prompt predicts their class."""
    span_miou_class_agnostic: float
    """Mean temporal IoU when prompts are matched to events on their spans alone (L1 of start and
    end), whatever the classes say: the measure for unsupervised models, whose classes are pseudo-classes."""
    num_events: int
    num_videos: int


@dataclass(frozen=True)
class EvaluationResult:
    predictions: list[ExamplePrediction]
    accuracy: float | None
    """None where the split hides its answers."""
    accuracy_by_type: dict[str, float]
    event_quality: EventQuality | None
    num_questions: int
    span_mean_width: float | None = None
    """Mean width of every memory prompt's span, clipped to the video, over the split's videos."""
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The metrics as one JSON-ready dict (no per-question predictions)."""
        quality = self.event_quality
        return {
            "accuracy": self.accuracy,
            "accuracy_by_type": self.accuracy_by_type,
            "span_miou": quality.span_miou if quality else None,
            "span_recall_at_0.5": quality.recall_at_05 if quality else None,
            "event_class_accuracy": quality.class_accuracy if quality else None,
            "span_miou_class_agnostic": quality.span_miou_class_agnostic if quality else None,
            "span_mean_width": self.span_mean_width,
            "num_events": quality.num_events if quality else 0,
            "num_questions": self.num_questions,
            **self.extra,
        }


def _predicted_events(logits: torch.Tensor, spans_se: torch.Tensor, order: torch.Tensor) -> list[PredictedEvent]:
    """Events of one video from its prompts' ``logits [Q, C+1]``, ``spans_se [Q, 2]``, in ``order [Q]``."""
    prob = logits.float().softmax(-1)
    score, label = prob.max(-1)
    background = logits.shape[-1] - 1
    return [
        PredictedEvent(
            start=float(spans_se[q, 0].clamp(0, 1)),
            end=float(spans_se[q, 1].clamp(0, 1)),
            label=int(label[q]),
            score=float(score[q]),
            background=int(label[q]) == background,
        )
        for q in order.tolist()
    ]


@torch.no_grad()
def evaluate_split(
    model: GlanceFocus,
    split: DatasetSplit,
    dataset: VideoQADataset,
    text: TextFeatureCache,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    evidence: bool = False,
) -> EvaluationResult:
    """Predict every question of ``split`` and compute accuracy and event quality.

    ``progress(done, total)`` is called after each batch. ``evidence=True`` also answers every
    question once per memory prompt left out, in the same batches (Q times the focus stage's work).
    """
    model.eval()
    config = model.config
    # A private generator: evaluating must not move the caller's global RNG (training resumes exactly).
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_qa, generator=torch.Generator()
    )
    predictions: list[ExamplePrediction | None] = [None] * len(dataset)
    event_ious: list[float] = []
    agnostic_ious: list[float] = []
    event_class_hits: list[bool] = []
    widths: list[float] = []
    seen_videos: set[str] = set()
    done = 0
    for batch in loader:
        batch = batch.to(device)
        text_hidden, text_padding = text.encode(batch.sequences)
        out = model(batch.frames, batch.frame_padding, text_hidden.to(device), text_padding.to(device))
        probabilities = out.focus.answer_logits.float().softmax(-1).cpu()
        without = None
        if evidence:
            without = answer_without_each_prompt(
                model,
                batch.frames,
                batch.frame_padding,
                out.sorted_memory_prompts,
                text_hidden.to(device),
                text_padding.to(device),
                chunk_videos=EVIDENCE_CHUNK_VIDEOS,
            ).cpu()  # (B, Q, A)
        spans_se = spans_to_se(out.glance.spans.float(), config.span_format).cpu()
        logits = out.glance.event_logits.float().cpu()
        order = out.sort_order.cpu()
        matching = hungarian_match(out.glance.event_logits, out.glance.spans, batch.targets)
        targets_se = spans_to_se(batch.targets.spans.cpu(), config.span_format)
        clipped = spans_se.clamp(0, 1)
        se_targets = EventTargets(batch.targets.labels.cpu(), targets_se, batch.targets.valid.cpu())
        agnostic = hungarian_match(logits, clipped, se_targets, cost_class=0.0, cost_l1=1.0)
        for row, index in enumerate(batch.indices.tolist()):
            example = split.examples[index]
            probs = probabilities[row]
            answer = int(probs.argmax())
            loo: dict[str, list] = {}
            if without is not None:
                new_answers = without[row].argmax(-1).tolist()
                loo["evidence_without"] = [round(float(p), 6) for p in without[row, :, answer]]
                loo["evidence_flips_to"] = [None if a == answer else a for a in new_answers]
            predictions[index] = ExamplePrediction(
                question_id=example.question_id,
                video_id=example.video_id,
                clip_id=example.clip_id,
                question_type=example.question_type,
                prediction=answer,
                answer=example.answer,
                probabilities=[round(float(p), 6) for p in probs],
                events=_predicted_events(logits[row], spans_se[row], order[row]),
                **loo,
            )
            if example.clip_id in seen_videos:  # event quality counts each clip once
                continue
            seen_videos.add(example.clip_id)
            widths += (clipped[row, :, 1] - clipped[row, :, 0]).clamp(min=0).tolist()
            pred_idx, tgt_idx = agnostic.pairs[row]
            if len(tgt_idx):
                agnostic_ious += temporal_iou_se(clipped[row, pred_idx], targets_se[row, tgt_idx]).diagonal().tolist()
            pred_idx, tgt_idx = matching.pairs[row]
            if len(tgt_idx):
                iou = temporal_iou_se(spans_se[row, pred_idx], targets_se[row, tgt_idx]).diagonal()
                event_ious += iou.tolist()
                labels = batch.targets.labels[row, tgt_idx].cpu()
                event_class_hits += (logits[row, pred_idx].argmax(-1) == labels).tolist()
        done += len(batch.indices)
        if progress is not None:
            progress(done, len(dataset))
    final = [p for p in predictions if p is not None]
    return summarize(final, split, event_ious, event_class_hits, len(seen_videos), agnostic_ious, widths)


def summarize(
    predictions: list[ExamplePrediction],
    split: DatasetSplit,
    event_ious: list[float],
    event_class_hits: list[bool],
    num_videos: int,
    agnostic_ious: list[float],
    widths: list[float],
) -> EvaluationResult:
    """Metrics from per-question predictions, the per-event matches and every prompt's span width.

    ``event_ious`` come from the class + span matching, ``agnostic_ious`` from matching on spans alone.
    """
    answered = [p for p in predictions if p.answer is not None]
    by_type: dict[str, list[bool]] = defaultdict(list)
    for p in answered:
        by_type[p.question_type].append(bool(p.correct))
    accuracy = sum(bool(p.correct) for p in answered) / len(answered) if answered else None
    quality = None
    if event_ious:
        quality = EventQuality(
            span_miou=sum(event_ious) / len(event_ious),
            recall_at_05=sum(iou >= 0.5 for iou in event_ious) / len(event_ious),
            class_accuracy=sum(event_class_hits) / len(event_class_hits),
            span_miou_class_agnostic=sum(agnostic_ious) / len(agnostic_ious),
            num_events=len(event_ious),
            num_videos=num_videos,
        )
    return EvaluationResult(
        predictions=predictions,
        accuracy=accuracy,
        accuracy_by_type={t: sum(v) / len(v) for t, v in sorted(by_type.items())},
        event_quality=quality,
        num_questions=len(predictions),
        span_mean_width=sum(widths) / len(widths) if widths else None,
    )


def prediction_to_json(prediction: ExamplePrediction) -> dict[str, Any]:
    return {**asdict(prediction), "correct": prediction.correct, "confidence": prediction.confidence}


def checkpoint_text_features(loaded: LoadedCheckpoint, device: torch.device | str = "cpu") -> TextFeatureCache:
    """The text path the checkpoint was trained with.

    A fine-tuned text encoder stored beside the model is loaded into a private copy, so the
    process-wide shared encoder of the same spec stays untouched. Reference-compatible models get
    the reference's text path (padding states kept, see :mod:`glance_focus.text_features`).
    """
    info = loaded.info
    keep_padding = loaded.model.config.compat_text_padding
    if loaded.text_encoder_state is None:
        encoder = load_text_encoder(info.text_encoder, device=device, max_length=info.text_max_length)
        return TextFeatureCache(encoder, keep_padding_states=keep_padding)
    if info.text_encoder_config is None:
        encoder = build_text_encoder(info.text_encoder, device=device, max_length=info.text_max_length)
    else:  # the architecture is in config.json: only the tokenizer comes from the spec
        encoder = build_text_encoder_from_config(
            info.text_encoder, info.text_encoder_config, device=device, max_length=info.text_max_length
        )
    encoder.model.load_state_dict(loaded.text_encoder_state, strict=True)
    return TextFeatureCache(encoder, keep_padding_states=keep_padding)


def evaluate_checkpoint(
    loaded: LoadedCheckpoint,
    split: DatasetSplit,
    features_path: Path,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    evidence: bool = False,
) -> EvaluationResult:
    """:func:`evaluate_split` of a loaded checkpoint on ``split`` with the features in ``features_path``."""
    config = loaded.model.config
    data = VideoQADataset(
        split, FeatureStore(features_path), loaded.info.num_frames, config.num_memory_prompts, config.span_format
    )
    text = checkpoint_text_features(loaded)
    return evaluate_split(loaded.model, split, data, text, batch_size, device, progress, evidence)
