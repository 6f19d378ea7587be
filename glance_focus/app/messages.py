"""Text the page shows a person: the introduction, what the selected model is, the timing table,
and the message for an unexpected failure."""

from __future__ import annotations

from typing import Any

from glance_focus.app.models import ModelChoice
from glance_focus.checkpoint import CheckpointInfo
from glance_focus.pipeline import Prediction

UNEXPECTED_ERROR = "Something went wrong while answering; the error was logged. Please try again or another video."


def model_unavailable(model: str) -> str:
    """The message for a model the server cannot load (its weights or encoders are missing or wrong)."""
    return (
        f"The model {model} cannot be used on this server right now (its weights could not be loaded; "
        "the server's log says why). Please choose another model, or tell the site's owner."
    )


TITLE = "Glance-Focus: multi-event video question answering"
INTRO = """\
# Glance and Focus: memory prompting for multi-event video QA

**Glance-Focus** (Bai, Wang & Chen, NeurIPS 2023) answers questions about videos in which several
things happen. It first *glances* over the whole video: a set of learned queries turn the frames into
**memory prompts**, one per event, each predicting an event class and a time span. It then
*focuses*: the words of the question pick the relevant memory prompts, those prompts point at the
moments in the video, and an answer query reads them to choose among the answer options.
Upload a video (or pick an example), ask a question, and see the answer, the events the memory
prompts found on the video's timeline, and the attention that led to the answer.
"""
SYNTHETIC_WORLD = (
    "**This model only knows a synthetic world**: one coloured disc on a plain background that appears, "
    "disappears, changes colour, grows or shrinks, and background colour changes."
)
RANDOM_ENCODER = (
    "Its frame encoder has seeded random weights (no pretrained weights are available offline), so it cannot "
    "recognise real scenes."
)
MEANINGLESS = (
    "On real footage its answers and events are meaningless: use the examples, or start the app with "
    "`--checkpoint` and a model trained on STAR, AGQA, NExT-QA or EgoTaskQA."
)


def model_summary(choice: ModelChoice | None) -> str:
    """What the selected model is, what it was trained on and what it knows (Markdown)."""
    if choice is None:
        return "**No model found.** Start the app with `--checkpoint DIR` (a checkpoint directory or a folder of them)."
    info, config = choice.info, choice.info.model
    meta = info.metadata
    task = "open-ended (leave the options empty)" if config.task == "open_ended" else "multiple-choice"
    trained = str(meta.get("dataset", "unknown data"))
    if meta.get("setting"):
        trained += f", {meta['setting']}"
    for split, split_name in (("test", "held-out test"), ("val", "validation")):
        metrics = meta.get(split)
        if isinstance(metrics, dict) and isinstance(metrics.get("accuracy"), (int, float)):
            trained += f"; {split_name} accuracy {metrics['accuracy']:.1%}"
            if isinstance(metrics.get("span_miou"), (int, float)):
                trained += f", event span mIoU {metrics['span_miou']:.2f}"
            break
    classes = ", ".join(info.event_classes) if info.event_classes else "not recorded"
    lines = [
        f"**{choice.name}**: {task}, {config.num_memory_prompts} memory prompts, trained with "
        f"{info.num_frames} {'one-second clips' if info.sampling.is_clips else 'frames'} per video.",
        f"- Frame encoder: `{info.frame_encoder}` · text encoder: `{info.text_encoder}`",
        *([f"- Sampling: {info.sampling.describe(info.num_frames)}"] if info.sampling.is_clips else []),
        f"- Trained on: {trained}",
        f"- Event vocabulary ({len(info.event_classes)} classes + background): {classes}",
    ]
    if config.compat_event_memory_slice:
        lines.append(
            f'- Reference-code layout: its "event memory" is the last {config.compat_event_memory_size} text positions '
            "(often padding), so the attention figure's right panel shows those positions, not the memory prompts"
            + (
                "; the answer and its maps come from the first decoder layer"
                if config.compat_answer_from_first_layer
                else ""
            )
            + (
                ". Its answers depend on padding: each question is padded on its own."
                if config.compat_text_padding
                else "."
            )
        )
    limits = [SYNTHETIC_WORLD] if choice.synthetic else []
    limits += [RANDOM_ENCODER] if "random-seed" in info.frame_encoder else []
    if limits:
        lines += ["", "> ⚠️ " + " ".join([*limits, MEANINGLESS])]
    else:
        lines += ["", "It can only name the event classes above; anything else shows as its closest class."]
    return "\n".join(lines)


def frame_control(info: CheckpointInfo | None, default_frames: int = 32) -> dict[str, Any]:
    """Label, help, value and interactivity of the frames control for a model: a frame count for
    uniformly sampled models; for clip models (S3D) the seconds of video it reads, fixed."""
    if info is not None and info.sampling.is_clips:
        seconds = info.sampling.clips().clip_seconds * info.num_frames
        return {
            "label": "Seconds of video read, at most (one clip per second)",
            "info": f"Fixed by the model: {info.sampling.describe(info.num_frames)}.",
            "value": seconds,
            "interactive": False,
        }
    return {
        "label": "Frames to sample",
        "info": "Default: what the model was trained with.",
        "value": info.num_frames if info is not None else default_frames,
        "interactive": True,
    }


def timings_markdown(prediction: Prediction, device: str, clips: bool = False) -> str:
    """The timing breakdown and what was decoded (Markdown table); ``clips``: rows are video clips (S3D)."""
    t = prediction.timings
    n = len(prediction.attention.frame_times_s)
    skipped = "skipped (feature cache hit)" if t.feature_cache_hit else None
    steps = [("start-up (one-time: loading encoders)", f"{t.start_up:.3f}")] if t.start_up else []
    steps += [
        ("video hash (feature cache key)", f"{t.hash:.3f}"),
        ("probe + decode", skipped or f"{t.probe_decode:.3f}"),
        (
            f"video encoder ({n} one-second clips)" if clips else f"image encoder ({n} frames)",
            skipped or f"{t.image_encoder:.3f}",
        ),
        ("text encoder", f"{t.text_encoder:.3f}"),
        ("Glance-Focus model", f"{t.model:.3f}"),
        ("**total**", f"**{t.total:.3f}**"),
    ]
    lines = ["| step | seconds |", "|---|---:|", *(f"| {step} | {value} |" for step, value in steps), ""]
    if prediction.video is not None:
        v = prediction.video
        sampled = f"{n} one-second clips read" if clips else f"{n} sampled"
        lines.append(
            f"Video: {v.duration_s:.1f} s, {v.width}×{v.height}, {v.fps:.1f} fps, {v.num_frames} frames; "
            f"{sampled} · device `{device}`"
        )
    return "\n".join(lines)
