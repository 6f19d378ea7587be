"""Counterfactual evidence: how much an answer rests on each memory prompt, and on a stretch of time.

Attention maps show where the model looked; these numbers show what its answer depends on. For a
prediction we answer again

- **without memory prompt k**, for every k (leave-one-out): the focus stage is run on the other
  Q - 1 prompts. All Q answers come from one batched focus pass that reuses the glance output
  (:func:`answer_without_each_prompt`);
- **without a time range**: the frames sampled inside ``[start_s, end_s]`` are left out of both
  stages (:func:`hidden_frame_mask`, then the model's ``hidden_frames`` argument), so the memory
  prompts themselves change too.

Each counterfactual is summarised for the chosen answer: its probability without the prompt (or
the range), the change ``delta = probability_without - probability``, and the answer it flips to.

What "removed" means exactly:

- *Corrected models.* Prompt k is not in the focus stage's input ``[frames; prompts; text]`` at
  all: no token attends to it and the event memory of multi-level attention step (1) holds the
  other Q - 1 prompts. The remaining prompts keep their slot's position embedding (their temporal
  rank among all Q), so nothing about them changes but the company they keep.
- *Reference-compatible models* (``compat_event_memory_slice``). The reference's "event memory" is
  the last Q positions of the encoded sequence, which are text tokens, and step (2) attends over
  everything before them, prompts included. Removing prompt k deletes its token from the encoder's
  sequence, so the encoder and step (2) no longer see it; step (1) still reads the last Q encoded
  positions of the now shorter sequence (text tokens; only where the text has fewer than Q tokens
  does that window reach back into the prompts). A compat prompt's evidence therefore measures
  what it contributes through the encoder and step (2), which is the only way the reference's
  prompts reach the answer.
- *Hidden frames*, in both kinds of model, are removed from every attention (the reference's
  float masks, which ignore padding, do not bring them back) while the other frames keep their
  time positions.

Notation: B videos, T frames, Q memory prompts, O options, A answers scored (O for
multiple-choice, the vocabulary size for open-ended models).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from glance_focus.model import GlanceFocus, GlanceOutput

EVIDENCE_CHUNK_VIDEOS = 8
"""Videos per focus call when a whole batch is explained (each is Q x O sequences), bounding memory."""
NO_EFFECT_POINTS = 1.0
"""Below this many percentage points no single prompt is named as the evidence."""


class HiddenRangeError(ValueError):
    """A time range to hide cannot be used as given; the message says why, for a person."""


# ============================================================================ tensors


@torch.inference_mode()
def answer_without_each_prompt(
    model: GlanceFocus,
    frames: Tensor,
    frame_padding: Tensor | None,
    sorted_prompts: Tensor,
    text_hidden: Tensor,
    text_padding: Tensor,
    *,
    hidden_frames: Tensor | None = None,
    chunk_videos: int | None = None,
) -> Tensor:
    """Answer distributions with each memory prompt removed in turn, in one batched focus pass.

    The pass forms no attention maps and does only the work the answers depend on
    (``need_attention=False`` in :meth:`GlanceFocus.focus`); the answers are those of the full model.

    Args:
        frames, frame_padding, text_hidden, text_padding, hidden_frames: as for :meth:`GlanceFocus.focus`.
        sorted_prompts: the glance stage's prompts in temporal order ``[B, Q, D]``
            (:meth:`GlanceFocus.sort_memory_prompts`).
        chunk_videos: at most this many videos per focus call (each becomes Q rows of O sequences);
            None runs all B at once.

    Returns:
        ``[B, Q, A]``: row ``[b, k]`` is video b's answer distribution without the prompt in slot k.
    """
    if model.training:
        raise ValueError("evidence needs the model in eval mode (dropout would make the answers random)")
    batch, num_prompts, _ = sorted_prompts.shape
    if num_prompts < 2:
        raise ValueError("leaving a memory prompt out needs a model with at least two")
    slots = torch.arange(num_prompts, device=sorted_prompts.device)
    keep = slots[None, :].expand(num_prompts, -1)[~torch.eye(num_prompts, dtype=torch.bool)]
    keep = keep.view(num_prompts, num_prompts - 1)  # (Q, Q-1): row k lists every slot but k
    step = chunk_videos or batch
    results = []
    for start in range(0, batch, step):
        part = slice(start, start + step)
        count = sorted_prompts[part].shape[0]
        prompts = sorted_prompts[part][:, keep].flatten(0, 1)  # (b*Q, Q-1, D)
        out = model.focus(  # Q prompt sets per video: its frames and text are embedded once
            frames[part],
            None if frame_padding is None else frame_padding[part],
            prompts,
            text_hidden[part],
            text_padding[part],
            prompt_slots=keep.repeat(count, 1),
            hidden_frames=None if hidden_frames is None else hidden_frames[part],
            need_attention=False,
        )
        results.append(out.answer_logits.float().softmax(-1).view(count, num_prompts, -1))
    return torch.cat(results)


@dataclass(frozen=True)
class LeaveOneOut:
    """A batch's answers with all memory prompts and with each one removed."""

    probabilities: Tensor
    """``[B, A]``: the model's answer distribution."""
    without: Tensor
    """``[B, Q, A]``: the distribution with the prompt in slot k (temporal order) removed."""
    glance: GlanceOutput
    sort_order: Tensor
    """``[B, Q]``: glance query index of each slot."""


@torch.no_grad()
def leave_one_out(
    model: GlanceFocus,
    frames: Tensor,
    frame_padding: Tensor | None,
    text_hidden: Tensor,
    text_padding: Tensor,
    *,
    hidden_frames: Tensor | None = None,
    chunk_videos: int | None = None,
) -> LeaveOneOut:
    """One model forward plus :func:`answer_without_each_prompt` on its glance output.

    Shapes as in :meth:`GlanceFocus.forward`.
    """
    out = model(frames, frame_padding, text_hidden, text_padding, hidden_frames=hidden_frames)
    without = answer_without_each_prompt(
        model,
        frames,
        frame_padding,
        out.sorted_memory_prompts,
        text_hidden,
        text_padding,
        hidden_frames=hidden_frames,
        chunk_videos=chunk_videos,
    )
    probabilities = out.focus.answer_logits.float().softmax(-1)
    return LeaveOneOut(probabilities, without, out.glance, out.sort_order)


def hidden_frame_mask(
    frame_times_s: Sequence[float] | np.ndarray, start_s: Any, end_s: Any, duration_s: float
) -> Tensor:
    """``[T]`` bool, True at the sampled frames whose time lies in ``[start_s, end_s]`` (inclusive).

    :class:`HiddenRangeError` says what is wrong with a range that is not numbers, runs backwards,
    leaves the video, covers no sampled frame or covers all of them.
    """
    try:
        start, end = float(start_s), float(end_s)
    except (TypeError, ValueError):
        raise HiddenRangeError("The time range to hide needs a start and an end in seconds.") from None
    if not (math.isfinite(start) and math.isfinite(end)):
        raise HiddenRangeError("The time range to hide needs a start and an end in seconds.")
    if start >= end:
        raise HiddenRangeError(f"The time range to hide must end after it starts (got {start:g}–{end:g} s).")
    tolerance = 1e-3
    if start < -tolerance or end > duration_s + tolerance:
        raise HiddenRangeError(
            f"The time range to hide ({start:g}–{end:g} s) must lie within the video (0–{duration_s:.2f} s)."
        )
    times = np.asarray(frame_times_s, dtype=np.float64)
    mask = (times >= start) & (times <= end)
    if not mask.any():
        spacing = f" (frames are {np.median(np.diff(times)):.2f} s apart)" if len(times) > 1 else ""
        raise HiddenRangeError(
            f"No sampled frame lies between {start:.2f} and {end:.2f} s{spacing}: widen the range to hide."
        )
    if mask.all():
        raise HiddenRangeError("The time range to hide covers every sampled frame: leave some of the video visible.")
    return torch.from_numpy(mask)


# ============================================================================ per-example summaries


@dataclass(frozen=True)
class Effect:
    """What removing something does to the chosen answer."""

    probability_without: float
    """Probability of the chosen answer without it."""
    delta: float
    """``probability_without`` minus the answer's probability: negative where the answer rests on it."""
    flips_to: int | None
    """Index of the answer the model gives without it, or None where the answer stays."""


def effect(probabilities: Tensor, without: Tensor, answer: int) -> Effect:
    """The :class:`Effect` on ``answer`` of going from ``probabilities [A]`` to ``without [A]``."""
    new_answer = int(without.argmax())
    probability_without = float(without[answer])
    return Effect(
        probability_without=probability_without,
        delta=probability_without - float(probabilities[answer]),
        flips_to=None if new_answer == answer else new_answer,
    )


def strongest_slot(deltas: Sequence[float]) -> int:
    """The slot whose removal lowers the answer's probability most (the earliest one on a tie)."""
    return min(range(len(deltas)), key=lambda k: (deltas[k], k))


class SpanLike(Protocol):
    """A memory prompt's event in seconds (:class:`glance_focus.pipeline.PredictedSpan` fits)."""

    slot: int
    start_s: float
    end_s: float
    label: str


@dataclass(frozen=True)
class PromptEvidence:
    """The effect of removing one memory prompt, with the event it found."""

    slot: int
    """Temporal slot: row ``P{slot+1}`` of the timeline."""
    start_s: float
    end_s: float
    label: str
    probability_without: float
    delta: float
    flips_to: str | None
    """The answer without this prompt, or None where it stays."""

    def to_json(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "label": self.label,
            "probability_without": round(self.probability_without, 6),
            "delta": round(self.delta, 6),
            "flips_to": self.flips_to,
        }


@dataclass(frozen=True)
class HiddenRangeEvidence:
    """The answer with the frames of ``[start_s, end_s]`` left out of both stages."""

    start_s: float
    end_s: float
    frames_hidden: int
    answer: str
    """The answer given without those frames."""
    probabilities: list[float]
    """Over the same choices as :attr:`Evidence.probabilities`."""
    probability_without: float
    delta: float
    flips_to: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "frames_hidden": self.frames_hidden,
            "answer": self.answer,
            "probabilities": [round(p, 6) for p in self.probabilities],
            "probability_without": round(self.probability_without, 6),
            "delta": round(self.delta, 6),
            "flips_to": self.flips_to,
        }


def _percent(p: float) -> str:
    return f"{100 * p:.0f} %"


def _span_text(start_s: float, end_s: float) -> str:
    return f"{start_s:.1f}–{end_s:.1f} s"


@dataclass(frozen=True)
class Evidence:
    """How much one answer rests on each memory prompt (and, if asked, on a time range)."""

    answer: str
    answer_index: int
    choices: list[str]
    """The options (multiple-choice) or the top answers (open-ended) that ``probabilities`` refer to."""
    probabilities: list[float]
    answer_probability: float
    prompts: list[PromptEvidence]
    """One per memory prompt, in temporal order."""
    hidden: HiddenRangeEvidence | None = None

    @property
    def strongest(self) -> PromptEvidence:
        """The prompt whose removal lowers the answer's probability most."""
        return self.prompts[strongest_slot([p.delta for p in self.prompts])]

    def sentence(self) -> str:
        """One sentence naming the strongest evidence, for people."""
        top = self.strongest
        before = self.answer_probability
        if -top.delta * 100 < NO_EFFECT_POINTS:
            return (
                f"The answer does not rest on any single memory prompt: removing any one of them changes "
                f"'{self.answer}' ({_percent(before)}) by less than {NO_EFFECT_POINTS:g} percentage point."
            )
        change = f"'{self.answer}' falls from {_percent(before)} to {_percent(top.probability_without)}"
        outcome = f"'{top.flips_to}' becomes the answer" if top.flips_to is not None else "it stays the answer"
        return (
            f"The answer rests most on P{top.slot + 1} — {top.label}, {_span_text(top.start_s, top.end_s)}: "
            f"without it, {change} and {outcome}."
        )

    def hidden_sentence(self) -> str | None:
        """One sentence on the hidden time range, or None where none was hidden."""
        h = self.hidden
        if h is None:
            return None
        where = f"Hiding {_span_text(h.start_s, h.end_s)} ({h.frames_hidden} frames)"
        change = f"'{self.answer}' goes from {_percent(self.answer_probability)} to {_percent(h.probability_without)}"
        outcome = f"'{h.flips_to}' becomes the answer" if h.flips_to is not None else "it stays the answer"
        return f"{where}: {change} and {outcome}."

    def to_json(self) -> dict[str, Any]:
        """The API's plain JSON view."""
        data: dict[str, Any] = {
            "answer": self.answer,
            "options": self.choices,
            "probabilities": [round(p, 6) for p in self.probabilities],
            "evidence": [p.to_json() for p in self.prompts],
        }
        if self.hidden is not None:
            data["hidden"] = self.hidden.to_json()
        return data


def build_evidence(
    probabilities: Tensor,
    without: Tensor,
    answer_index: int,
    answer_names: Sequence[str],
    shown: Sequence[int],
    events: Sequence[SpanLike],
) -> Evidence:
    """One example's :class:`Evidence` from its leave-one-out distributions.

    Args:
        probabilities: ``[A]`` the answer distribution; without: ``[Q, A]`` per removed slot.
        answer_index: the chosen answer; answer_names: a name for every index of ``A``.
        shown: indices of the choices to report (all options, or an open-ended model's top answers).
        events: the memory prompts' events in slot order.
    """
    prompts = []
    for slot, event in enumerate(events):
        e = effect(probabilities, without[slot], answer_index)
        prompts.append(
            PromptEvidence(
                slot=slot,
                start_s=float(event.start_s),
                end_s=float(event.end_s),
                label=event.label,
                probability_without=e.probability_without,
                delta=e.delta,
                flips_to=None if e.flips_to is None else answer_names[e.flips_to],
            )
        )
    return Evidence(
        answer=answer_names[answer_index],
        answer_index=answer_index,
        choices=[answer_names[i] for i in shown],
        probabilities=[float(probabilities[i]) for i in shown],
        answer_probability=float(probabilities[answer_index]),
        prompts=prompts,
    )


def hidden_range_evidence(
    probabilities: Tensor,
    hidden_probabilities: Tensor,
    answer_index: int,
    answer_names: Sequence[str],
    shown: Sequence[int],
    start_s: float,
    end_s: float,
    frames_hidden: int,
) -> HiddenRangeEvidence:
    """The effect of hiding ``[start_s, end_s]``: distributions ``[A]`` with and without those frames."""
    e = effect(probabilities, hidden_probabilities, answer_index)
    return HiddenRangeEvidence(
        start_s=float(start_s),
        end_s=float(end_s),
        frames_hidden=frames_hidden,
        answer=answer_names[int(hidden_probabilities.argmax())],
        probabilities=[float(hidden_probabilities[i]) for i in shown],
        probability_without=e.probability_without,
        delta=e.delta,
        flips_to=None if e.flips_to is None else answer_names[e.flips_to],
    )
