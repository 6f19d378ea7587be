"""Glance-Focus demo: upload a video, ask a question, see the answer, the events the memory
prompts found and the attention that led to the answer.

Gradio UI only (layout, wiring, launch): the work is done by :class:`glance_focus.pipeline.Predictor`
and the figures by :mod:`glance_focus.plots`. ``python app.py --help`` lists the options.

Importing this module is cheap: it reads the checkpoints' ``config.json`` files and lays out the
page; models and encoders are built on first use (or by the start-up warm-up of :func:`main`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import FileData
from gradio.exceptions import Error as GradioError
from gradio.utils import NamedString
from gradio_client.utils import is_valid_file
from matplotlib.figure import Figure

try:  # Hugging Face ZeroGPU: `spaces` must be imported before torch touches CUDA
    import spaces
except ImportError:
    spaces = None

from glance_focus.checkpoint import CONFIG_NAME, CheckpointError, CheckpointInfo, read_checkpoint_info
from glance_focus.encoders import EncoderUnavailableError, resolve_device
from glance_focus.inspection import (
    TABLE_COLUMNS,
    DataSource,
    InspectionRow,
    InspectionRun,
    data_sources,
    example_detail,
    export_rows,
    filter_rows,
    find_source,
    load_cached_run,
    overview,
    parse_data_args,
    run_inspection,
    table,
)
from glance_focus.inspection_plots import accuracy_by_type_figure, errors_figure, example_timeline_figure
from glance_focus.pipeline import MAX_OPTIONS, MAX_QUESTION_CHARS, InputError, Prediction, Predictor
from glance_focus.plots import attention_figure, timeline_figure
from glance_focus.video import VideoError, VideoLimits, default_pool

log = logging.getLogger("glance_focus.app")

ROOT = Path(__file__).parent
DEFAULT_MODELS = ROOT / "assets" / "models"
EXAMPLES_FILE = ROOT / "assets" / "examples" / "examples.json"
MODEL_CARD_NAME = "MODEL_CARD.md"
VIDEO_EXTENSIONS = [".mp4", ".webm", ".mov", ".avi", ".mkv"]

MAX_UPLOAD_BYTES = 200 * 10**6
VIDEO_LIMITS = VideoLimits(max_file_bytes=MAX_UPLOAD_BYTES)
FRAMES_RANGE = (4, 128)
"""Frames-to-sample slider bounds (the model's own ``num_frames`` is the default)."""
QUEUE_SIZE = 32
CONCURRENCY = 2
"""Requests that run at once; more wait in the queue (at most ``QUEUE_SIZE``)."""
GPU_DURATION_S = 60
"""ZeroGPU: the most GPU time one request may hold."""
FEATURE_CACHE_BYTES = 512 * 1024**2
EXAMPLES_PER_PAGE = 4
UNEXPECTED_ERROR = "Something went wrong while answering; the error was logged. Please try again or another video."

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
    "Its frame encoder has seeded random weights (no pretrained CLIP is available offline), so it cannot "
    "recognise real scenes."
)
MEANINGLESS = (
    "On real footage its answers and events are meaningless: use the examples, or start the app with "
    "`--checkpoint` and a model trained on STAR, AGQA, NExT-QA or EgoTaskQA."
)
CSS = """
#answer .output-class { font-size: 1.6rem; }
.figure-help { color: var(--body-text-color-subdued); font-size: 0.9rem; }
"""
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="amber")


# ----------------------------------------------------------------------------------------------
# Models and examples


@dataclass(frozen=True)
class ModelChoice:
    """A checkpoint offered in the model selector (its ``config.json`` only; weights load on use)."""

    name: str
    path: Path
    info: CheckpointInfo

    @property
    def synthetic(self) -> bool:
        """Whether the model was trained on the bundled synthetic world."""
        return str(self.info.metadata.get("dataset", "")).startswith("synthetic")

    @property
    def card(self) -> str | None:
        path = self.path / MODEL_CARD_NAME
        return path.read_text(encoding="utf-8") if path.is_file() else None


def find_checkpoints(paths: Iterable[str | Path]) -> list[Path]:
    """Checkpoint directories: each path is one (it holds ``config.json``) or a folder of them."""
    found: dict[Path, None] = {}  # ordered, without repeats
    for path in map(Path, paths):
        if (path / CONFIG_NAME).is_file():
            found[path.resolve()] = None
        elif path.is_dir():
            found.update((child.resolve(), None) for child in sorted(path.iterdir()) if (child / CONFIG_NAME).is_file())
    return list(found)


class Models:
    """The checkpoints the operator offered; one :class:`Predictor` per checkpoint, built on first use."""

    def __init__(
        self,
        paths: Iterable[str | Path],
        device: str = "auto",
        cache_dir: str | Path | None = None,
    ) -> None:
        self.device = str(resolve_device(device))
        self.cache_dir = cache_dir
        self.choices: dict[str, ModelChoice] = {}
        for path in find_checkpoints(paths):
            info = read_checkpoint_info(path)
            name = path.name if path.name not in self.choices else f"{path.parent.name}/{path.name}"
            self.choices[name] = ModelChoice(name, path, info)
        self._predictors: dict[str, Predictor] = {}
        self._lock = threading.Lock()

    @property
    def default(self) -> str | None:
        return next(iter(self.choices), None)

    def loaded(self, name: str) -> bool:
        return name in self._predictors

    def predictor(self, name: str) -> Predictor:
        """The model ``name``, loading it (weights only; encoders on first use) if needed."""
        with self._lock:
            if name not in self._predictors:
                choice = self.choices[name]
                log.info("loading %s from %s on %s", name, choice.path, self.device)
                self._predictors[name] = Predictor(
                    choice.path,
                    device=self.device,
                    cache_dir=self.cache_dir,
                    cache_bytes=FEATURE_CACHE_BYTES,
                    video_limits=VIDEO_LIMITS,
                )
            return self._predictors[name]

    def predict(
        self, name: str, video: str, question: str, options: list[str] | None, num_frames: int | None
    ) -> Prediction:
        """Answer with model ``name`` (the one function that uses the GPU)."""
        return self.predictor(name).predict(video, question, options, num_frames=num_frames)


@dataclass(frozen=True)
class Example:
    video: Path
    question: str
    options: list[str]


def load_examples(path: Path = EXAMPLES_FILE) -> list[Example]:
    """``examples.json``: a list of ``{"video": file name beside it, "question", "options"}``.

    Entries whose video is missing are skipped with a warning; no file means no examples.
    """
    if not path.is_file():
        return []
    examples = []
    for entry in json.loads(path.read_text(encoding="utf-8")):
        video = path.parent / entry["video"]
        if video.is_file():
            examples.append(Example(video, entry["question"], list(entry.get("options") or [])))
        else:
            log.warning("example video %s is missing; skipped", video)
    return examples


def _examples_cache_key(files: Iterable[Path], examples: Sequence[Example]) -> str:
    """Changes whenever the model, an example or the code drawing the outputs changes (files are
    compared by size and modification time, which costs no reading)."""
    digest = hashlib.sha256(repr([(str(e.video), e.question, e.options) for e in examples]).encode())
    for path in sorted(files):
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def examples_cache_root() -> Path:
    """Where cached example outputs go: ``$GRADIO_EXAMPLES_CACHE`` if set, else ``.gradio/cached_examples``
    beside this file (not in the working directory, so it does not depend on where the app starts)."""
    return Path(os.environ.get("GRADIO_EXAMPLES_CACHE") or ROOT / ".gradio" / "cached_examples")


@contextmanager
def _examples_cache_folder(folder: Path) -> Iterator[None]:
    """Where the ``gr.Examples`` built inside this block cache their outputs (gradio reads the
    folder from ``GRADIO_EXAMPLES_CACHE`` when an ``Examples`` is created)."""
    previous = os.environ.get("GRADIO_EXAMPLES_CACHE")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["GRADIO_EXAMPLES_CACHE"]
        else:
            os.environ["GRADIO_EXAMPLES_CACHE"] = previous


# ----------------------------------------------------------------------------------------------
# Text shown in the page


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
        f"{info.num_frames} frames per video.",
        f"- Frame encoder: `{info.frame_encoder}` · text encoder: `{info.text_encoder}`",
        f"- Trained on: {trained}",
        f"- Event vocabulary ({len(info.event_classes)} classes + background): {classes}",
    ]
    limits = [SYNTHETIC_WORLD] if choice.synthetic else []
    limits += [RANDOM_ENCODER] if "random-seed" in info.frame_encoder else []
    if limits:
        lines += ["", "> ⚠️ " + " ".join([*limits, MEANINGLESS])]
    else:
        lines += ["", "It can only name the event classes above; anything else shows as its closest class."]
    return "\n".join(lines)


def timings_markdown(prediction: Prediction, device: str) -> str:
    """The timing breakdown and what was decoded (Markdown table)."""
    t = prediction.timings
    n = len(prediction.attention.frame_times_s)
    skipped = "skipped (feature cache hit)" if t.feature_cache_hit else None
    steps = [
        ("video hash (feature cache key)", f"{t.hash:.3f}"),
        ("probe + decode", skipped or f"{t.probe_decode:.3f}"),
        (f"image encoder ({n} frames)", skipped or f"{t.image_encoder:.3f}"),
        ("text encoder", f"{t.text_encoder:.3f}"),
        ("Glance-Focus model", f"{t.model:.3f}"),
        ("**total**", f"**{t.total:.3f}**"),
    ]
    lines = ["| step | seconds |", "|---|---:|", *(f"| {step} | {value} |" for step, value in steps), ""]
    if prediction.video is not None:
        v = prediction.video
        lines.append(
            f"Video: {v.duration_s:.1f} s, {v.width}×{v.height}, {v.fps:.1f} fps, {v.num_frames} frames; "
            f"{n} sampled · device `{device}`"
        )
    return "\n".join(lines)


def parse_options(text: str | None) -> list[str] | None:
    """One option per line; None when there are none (open-ended)."""
    options = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return options or None


# ----------------------------------------------------------------------------------------------
# Handlers


def _on_gpu(fn: Callable[..., Prediction]) -> Callable[..., Prediction]:
    """``spaces.GPU`` (Hugging Face ZeroGPU; no effect elsewhere) when the ``spaces`` package is
    installed, else ``fn`` itself."""
    return fn if spaces is None else spaces.GPU(duration=GPU_DURATION_S)(fn)


def _zero_gpu() -> bool:
    return bool(os.environ.get("SPACES_ZERO_GPU"))


class Answerer:
    """Runs one request: checks what the page sent, calls the model, turns the library's errors
    into messages for the person (``gr.Error``) and hides unexpected ones behind a generic message."""

    def __init__(self, models: Models) -> None:
        self.models = models
        self._predict = _on_gpu(models.predict)

    def __call__(
        self,
        model: str | None,
        video: str | None,
        question: str,
        options: str | None,
        num_frames: float | None = None,
        progress: gr.Progress | None = None,
    ) -> Prediction:
        if model not in self.models.choices:
            raise gr.Error("Please choose one of the listed models." if self.models.choices else model_summary(None))
        if not video:
            raise gr.Error("Please upload a video.")
        frames = None
        if num_frames is not None:
            frames = int(num_frames)
            if not FRAMES_RANGE[0] <= frames <= FRAMES_RANGE[1]:
                raise gr.Error(f"Frames to sample must be between {FRAMES_RANGE[0]} and {FRAMES_RANGE[1]}.")
        try:
            if progress is not None and not self.models.loaded(model):
                progress(0.05, desc="Loading the model (first request only)…")
            if progress is not None:
                progress(0.2, desc="Decoding the video and encoding its frames…")
            return self._predict(model, video, question, parse_options(options), frames)
        except (InputError, VideoError) as exc:
            raise gr.Error(str(exc)) from None
        except (CheckpointError, EncoderUnavailableError) as exc:
            log.exception("model %s cannot be used", model)
            raise gr.Error(f"The model {model} cannot be used on this server: {exc}") from None
        except Exception:
            log.exception("prediction failed (model %s, video %s)", model, video)
            raise gr.Error(UNEXPECTED_ERROR) from None


# ----------------------------------------------------------------------------------------------
# Layout


def build_demo_tab(models: Models, examples: Sequence[Example]) -> None:
    """The question-answering tab (call inside a ``gr.Tab``)."""
    answerer = Answerer(models)
    default = models.choices.get(models.default) if models.default else None
    default_frames = default.info.num_frames if default else 32

    def answer_fn(
        video_path: str | None,
        question_text: str,
        options_text: str,
        model_name: str | None,
        frames: float,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (gradio's way to ask for progress)
    ) -> tuple[dict[str, float], Figure, Figure, str, dict[str, Any]]:
        """Answer from the page: label, figures, timings and the API's JSON."""
        prediction = answerer(model_name, video_path, question_text, options_text, frames, progress)
        progress(0.9, desc="Drawing the timeline and attention…")
        probabilities = dict(zip(prediction.options, prediction.probabilities, strict=True))
        return (
            probabilities,
            timeline_figure(prediction),
            attention_figure(prediction),
            timings_markdown(prediction, models.device),
            prediction.to_json(),
        )

    # Outputs are created first (unrendered) so that the examples, which need them, can sit under the inputs.
    answer = gr.Label(
        label="Answer and option probabilities", num_top_classes=MAX_OPTIONS, elem_id="answer", render=False
    )
    timings = gr.Markdown(elem_id="timings", render=False)
    result_json = gr.JSON(show_label=False, render=False)
    timeline = gr.Plot(label="Event timeline", format="png", elem_id="timeline", render=False)
    attention = gr.Plot(label="Memory-prompt attention", format="png", elem_id="attention", render=False)
    outputs = [answer, timeline, attention, timings, result_json]

    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=360):
            video = gr.Video(
                label="Video (mp4, webm, mov, avi, mkv)",
                sources=["upload"],
                include_audio=True,
                height=300,
                elem_id="video",
            )
            question = gr.Textbox(
                label="Question",
                placeholder="e.g. What happened right after the object turned red?",
                max_length=MAX_QUESTION_CHARS,
                elem_id="question",
            )
            options = gr.Textbox(
                label="Answer options, one per line",
                placeholder="The object grew.\nThe object shrank.\nA blue object appeared.",
                info=f"Multiple-choice models pick one (2 to {MAX_OPTIONS}); leave empty for an open-ended model.",
                lines=4,
                max_lines=MAX_OPTIONS,
                interactive=not (default and default.info.model.task == "open_ended"),
                elem_id="options",
            )
            with gr.Row():
                model = gr.Dropdown(
                    choices=list(models.choices),
                    value=models.default,
                    label="Model",
                    interactive=len(models.choices) > 1,
                    scale=2,
                )
                num_frames = gr.Slider(
                    *FRAMES_RANGE,
                    value=default_frames,
                    step=1,
                    label="Frames to sample",
                    info="Default: what the model was trained with.",
                    scale=2,
                )
            submit = gr.Button("Answer", variant="primary", elem_id="submit")
            inputs = [video, question, options, model, num_frames]
            if examples and default is not None:
                files = [default.path / CONFIG_NAME, *default.path.glob("*.safetensors"), *(e.video for e in examples)]
                files += [Path(__file__), ROOT / "glance_focus" / "plots.py"]
                folder = examples_cache_root() / _examples_cache_key(files, examples)
                with _examples_cache_folder(folder):
                    gr.Examples(
                        examples=[
                            [str(e.video), e.question, "\n".join(e.options), default.name, default_frames]
                            for e in examples
                        ],
                        inputs=inputs,
                        outputs=outputs,
                        fn=answer_fn,
                        cache_examples=True,
                        cache_mode="lazy",
                        visible_columns=[0, 1],
                        label="Examples from the synthetic world (results are cached after the first click)",
                        api_visibility="private",
                        examples_per_page=EXAMPLES_PER_PAGE,
                        elem_id="examples",
                    )

        with gr.Column(scale=6, min_width=360):
            answer.render()
            timings.render()
            with gr.Accordion("Result as JSON (what the API returns)", open=False):
                result_json.render()
            about = gr.Markdown(model_summary(default), elem_id="model-summary")
            with gr.Accordion("Model card", open=False, visible=bool(default and default.card)) as card_box:
                card = gr.Markdown(default.card if default and default.card else "")

    timeline.render()
    gr.Markdown(
        "One row per memory prompt, in temporal order: the span it predicts, coloured by event class, with "
        "the class and its probability; grey dashed rows predict *background* (no event). Thumbnails show the "
        "sampled frames at their times.",
        elem_classes="figure-help",
    )
    attention.render()
    gr.Markdown(
        "Same rows and time axis as the timeline. Left: where each memory prompt looked while glancing "
        "(its predicted span underlined). Right: which memory prompts each word of the question and answer "
        "selected. Bottom: where the answer query looked.",
        elem_classes="figure-help",
    )

    gr.on(
        [submit.click, question.submit],
        answer_fn,
        inputs=inputs,
        outputs=outputs,
        api_visibility="private",
        concurrency_id="inference",
    )

    def select_model(name: str | None) -> tuple[str, dict, dict, dict, str]:
        """Describe the chosen model; set the options box and frames slider to suit it."""
        choice = models.choices.get(name) if name else None
        if choice is None:
            return model_summary(None), gr.update(), gr.update(), gr.update(visible=False), ""
        open_ended = choice.info.model.task == "open_ended"
        options_update = gr.update(value="", interactive=False) if open_ended else gr.update(interactive=True)
        return (
            model_summary(choice),
            options_update,
            gr.update(value=choice.info.num_frames),
            gr.update(visible=choice.card is not None),
            choice.card or "",
        )

    model.change(
        select_model,
        inputs=model,
        outputs=[about, options, num_frames, card_box, card],
        api_visibility="private",
        queue=False,
    )


# ----------------------------------------------------------------------------------------------
# Inspect tab: a model over a whole dataset split (library: glance_focus.inspection)

MAX_ID_CHOICES = 2000
"""Question ids offered in the Inspect tab's dropdown (more can be typed)."""
RUNS_IN_MEMORY = 4
ALL = ""
"""The filter dropdowns' "no filter" value."""
INSPECT_UNEXPECTED = "Something went wrong while inspecting; the error was logged."
EVENT_QUALITY_NAMES = {
    "span_miou": "event span mIoU",
    "span_recall_at_0.5": "event recall at IoU 0.5",
    "event_class_accuracy": "matched event class accuracy",
    "num_events": "ground-truth events",
}


@contextmanager
def _user_errors(what: str) -> Iterator[None]:
    """The library's ``ValueError`` messages go to the person; anything else is logged."""
    try:
        yield
    except gr.Error:
        raise
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
    except Exception:
        log.exception("inspection failed: %s", what)
        raise gr.Error(INSPECT_UNEXPECTED) from None


def overview_markdown(run: InspectionRun) -> str:
    """Accuracy overall and event quality, from ``run.metrics`` (Markdown)."""
    view = overview(run)
    source = "read from the cache" if run.from_cache else f"computed in {run.seconds:.1f} s"
    accuracy = "hidden by the split" if view.accuracy is None else f"**{view.accuracy:.1%}**"
    lines = [
        f"**{Path(run.checkpoint).name}** on **{run.dataset} / {run.split}** ({source}, device `{run.device}`)",
        "",
        f"- Accuracy: {accuracy} over {view.num_questions} questions ({view.num_errors} wrong)",
    ]
    if view.event_quality:
        for key, value in view.event_quality.items():
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            lines.append(f"- {EVENT_QUALITY_NAMES.get(key, key)}: {shown}")
    else:
        lines.append("- Event quality: no ground-truth events in this split")
    return "\n".join(lines)


def accuracy_by_type_table(run: InspectionRun) -> list[list[Any]]:
    """``[type, questions, wrong, accuracy]`` per question type; accuracy from ``run.metrics``."""
    view = overview(run)
    groups = {g.group: g for g in view.by_type}
    return [
        [
            name,
            groups[name].questions if name in groups else "",
            groups[name].errors if name in groups else "",
            round(accuracy, 4),
        ]
        for name, accuracy in sorted(view.accuracy_by_type.items())
    ]


def detail_markdown(row: InspectionRow, note: str | None) -> str:
    verdict = {True: "✅ correct", False: "❌ wrong", None: "answer not public"}[row.correct]
    lines = [
        f"**{row.question_id}** · {row.question_type} · video `{row.video_id}`"
        + (f" ({row.duration_s:.1f} s)" if row.duration_s else ""),
        "",
        f"**Q:** {row.question}",
        "",
        f"- Predicted: **{row.predicted}** ({row.confidence:.1%})",
        f"- Correct: **{row.correct_answer if row.correct_answer is not None else '—'}** · {verdict}",
    ]
    if note:
        lines += ["", f"> {note}"]
    return "\n".join(lines)


def options_table(row: InspectionRow) -> list[list[Any]]:
    """``[option, probability, mark]``: every answer choice, the predicted and the correct one marked."""
    out = []
    for choice, probability in zip(row.choices, row.probabilities, strict=True):
        marks = []
        if choice == row.predicted:
            marks.append("predicted")
        if row.correct_answer is not None and choice == row.correct_answer:
            marks.append("correct")
        out.append([choice, round(probability, 4), " + ".join(marks)])
    return out


class Inspector:
    """The Inspect tab's handlers: plain functions over :mod:`glance_focus.inspection`.

    A run is named by a key ``[model, dataset, split]`` (what the page keeps in its state); runs
    stay in memory (a few) and in ``cache_dir`` (all); exports and video copies go to ``work_dir``,
    a temporary folder of the app.
    """

    def __init__(
        self,
        models: Models,
        sources: Sequence[DataSource],
        cache_dir: str | Path,
        work_dir: str | Path | None = None,
    ) -> None:
        self.models = models
        self.sources = list(sources)
        self.cache_dir = Path(cache_dir)
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="glance-focus-inspect-"))
        self._runs: dict[tuple[str, str, str], InspectionRun] = {}
        self._lock = threading.Lock()

    # -- choosing what to run

    @property
    def dataset_names(self) -> list[str]:
        return [s.name for s in self.sources]

    def splits(self, dataset: str | None) -> dict[str, Any]:
        """The split dropdown for ``dataset`` (its splits, the first selected)."""
        source = next((s for s in self.sources if s.name == dataset), None)
        splits = list(source.splits) if source else []
        return gr.update(choices=splits, value=splits[0] if splits else None)

    def _resolve(self, model: str | None, dataset: str | None, split: str | None) -> tuple[ModelChoice, DataSource]:
        if model not in self.models.choices:
            raise gr.Error("Please choose one of the listed models." if self.models.choices else model_summary(None))
        if not dataset or not split:
            raise gr.Error("Please choose a dataset and a split.")
        with _user_errors("choosing a source"):
            return self.models.choices[model], find_source(self.sources, dataset, split)

    def _remember(self, key: tuple[str, str, str], run: InspectionRun) -> None:
        with self._lock:
            self._runs.pop(key, None)
            self._runs[key] = run
            while len(self._runs) > RUNS_IN_MEMORY:
                self._runs.pop(next(iter(self._runs)))

    def get_run(self, key: Sequence[str] | None) -> InspectionRun:
        """The run the page shows (``key`` from its state): in memory, else read from the cache."""
        if not key or len(key) != 3:
            raise gr.Error("Press Run first.")
        model, dataset, split = (str(k) for k in key)
        with self._lock:
            run = self._runs.get((model, dataset, split))
        if run is not None:
            return run
        choice, source = self._resolve(model, dataset, split)
        with _user_errors("reading a stored run"):
            run = load_cached_run(
                choice.path, source.dataset, source.root, split, self.cache_dir, device=self.models.device
            )
        if run is None:
            raise gr.Error("Press Run first.")
        self._remember((model, dataset, split), run)
        return run

    # -- handlers

    def run(
        self,
        model: str | None,
        dataset: str | None,
        split: str | None,
        progress: gr.Progress | None = None,
    ) -> tuple[Any, ...]:
        """Run (or reopen) the model over the split: state key, overview, its table and figures,
        the filter choices, the table and the question ids."""
        choice, source = self._resolve(model, dataset, split)
        with _user_errors("running"):
            run = run_inspection(
                choice.path, source.dataset, source.root, split, self.cache_dir, progress, device=self.models.device
            )
        key = [choice.name, source.name, str(split)]
        self._remember((key[0], key[1], key[2]), run)
        view = overview(run)
        rows = list(run.rows)
        return (
            key,
            overview_markdown(run),
            accuracy_by_type_table(run),
            accuracy_by_type_figure(view),
            errors_figure(view),
            gr.update(choices=[("all", ALL), *run.question_types], value=ALL),
            gr.update(choices=[("all", ALL), *run.gt_event_classes], value=ALL),
            *self._listing(rows, len(rows)),
        )

    def _listing(self, rows: Sequence[InspectionRow], total: int) -> tuple[Any, ...]:
        ids = [r.question_id for r in rows[:MAX_ID_CHOICES]]
        count = f"{len(rows)} of {total} questions"
        return {"data": table(rows), "headers": list(TABLE_COLUMNS)}, gr.update(choices=ids), count

    def filtered(
        self,
        key: Sequence[str] | None,
        wrong_only: bool = False,
        question_type: str | None = ALL,
        gt_event_class: str | None = ALL,
        min_confidence: float = 0.0,
        max_confidence: float = 1.0,
        text: str | None = "",
    ) -> list[InspectionRow]:
        run = self.get_run(key)
        low, high = float(min_confidence), float(max_confidence)
        if low > high:
            raise gr.Error("The lowest confidence is above the highest.")
        return filter_rows(
            run,
            wrong_only=bool(wrong_only),
            question_type=question_type or None,
            gt_event_class=gt_event_class or None,
            confidence_range=None if (low, high) == (0.0, 1.0) else (low, high),
            text_search=text or None,
        )

    def filter(self, key: Sequence[str] | None, *filters: Any) -> tuple[Any, ...]:
        """The table, question ids and count for the filters (the ``filtered`` arguments)."""
        rows = self.filtered(key, *filters)
        return self._listing(rows, len(self.get_run(key).rows))

    @staticmethod
    def selected_id(evt: gr.SelectData) -> str | dict[str, Any]:
        """The question id of the table row the person clicked."""
        row = evt.row_value or []
        return str(row[0]) if row else gr.update()

    def _video_copy(self, path: Path | None) -> str | None:
        """A copy of the dataset's video in the app's folder (the page serves nothing else)."""
        if path is None or not path.is_file():
            return None
        stat = path.stat()
        name = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        target = self.work_dir / "videos" / f"{name}{path.suffix.lower()}"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(target.suffix + ".part")
            shutil.copyfile(path, tmp)
            tmp.replace(target)
        return str(target)

    def show(self, key: Sequence[str] | None, question_id: str | None) -> tuple[Any, ...]:
        """One question: text, options with probabilities, its timeline, its attention, its video."""
        if not question_id:
            raise gr.Error("Choose a question (a row of the table or its id).")
        run = self.get_run(key)
        with _user_errors(f"showing {question_id}"):
            detail = example_detail(run, str(question_id).strip())
            timeline = example_timeline_figure(detail.row)
            attention = attention_figure(detail.prediction) if detail.prediction is not None else None
            video = self._video_copy(detail.video_path)
        return (
            detail_markdown(detail.row, detail.note),
            options_table(detail.row),
            timeline,
            attention,
            gr.update(value=video, visible=video is not None),
        )

    def export(self, key: Sequence[str] | None, suffix: str, *filters: Any) -> str:
        """The filtered rows written as ``.csv`` or ``.json`` in a fresh folder of the app."""
        if suffix not in (".csv", ".json"):
            raise gr.Error("Export as CSV or JSON.")
        rows = self.filtered(key, *filters)  # also checks the key
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(map(str, key or ())))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="export-", dir=self.work_dir))
        with _user_errors("exporting"):
            return str(export_rows(rows, folder / f"inspection-{stem}{suffix}"))


def build_inspect_tab(models: Models, inspector: Inspector) -> None:
    """The Inspect tab (call inside a ``gr.Tab``): a model over a dataset split, its errors, one question."""
    datasets = inspector.dataset_names
    first_splits = list(inspector.sources[0].splits) if inspector.sources else []
    gr.Markdown(
        "Run a model over a whole dataset split, see where it answers wrongly, and open any question. "
        "Datasets are those the server was started with (`--data NAME=DIR`); a run is stored, so running "
        "it again is instant."
        if datasets
        else "**No dataset available.** Start the app with `--data NAME=DIR` (a STAR, AGQA, NExT-QA, "
        "EgoTaskQA or synthetic dataset folder)."
    )
    key = gr.State(None)
    with gr.Row():
        model = gr.Dropdown(list(models.choices), value=models.default, label="Model", elem_id="inspect-model")
        dataset = gr.Dropdown(
            datasets, value=datasets[0] if datasets else None, label="Dataset", elem_id="inspect-dataset"
        )
        split = gr.Dropdown(
            first_splits, value=first_splits[0] if first_splits else None, label="Split", elem_id="inspect-split"
        )
        run_button = gr.Button("Run", variant="primary", elem_id="inspect-run", scale=0, min_width=120)
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            summary = gr.Markdown(elem_id="inspect-overview")
            by_type = gr.Dataframe(
                headers=["question type", "questions", "wrong", "accuracy"],
                label="Accuracy per question type",
                interactive=False,
                elem_id="inspect-by-type",
            )
        with gr.Column(scale=5):
            accuracy_plot = gr.Plot(label="Accuracy per question type", format="png", elem_id="inspect-accuracy")
    errors_plot = gr.Plot(label="Where the errors are", format="png", elem_id="inspect-errors")

    gr.Markdown("### Questions")
    with gr.Row():
        wrong_only = gr.Checkbox(label="Wrong answers only", elem_id="inspect-wrong")
        question_type = gr.Dropdown([("all", ALL)], value=ALL, label="Question type", elem_id="inspect-type")
        gt_class = gr.Dropdown([("all", ALL)], value=ALL, label="Ground-truth event class", elem_id="inspect-class")
        low = gr.Slider(0, 1, value=0, step=0.01, label="Confidence from", elem_id="inspect-low")
        high = gr.Slider(0, 1, value=1, step=0.01, label="Confidence to", elem_id="inspect-high")
        search = gr.Textbox(label="Search (question or id; Enter)", elem_id="inspect-search")
    count = gr.Markdown(elem_id="inspect-count")
    rows = gr.Dataframe(
        headers=list(TABLE_COLUMNS), interactive=False, max_height=420, wrap=True, elem_id="inspect-table"
    )
    with gr.Row():
        question_id = gr.Dropdown(
            [], label="Question id (click a row, choose or type)", allow_custom_value=True, elem_id="inspect-qid"
        )
        csv_button = gr.Button("Export CSV", elem_id="inspect-csv")
        json_button = gr.Button("Export JSON", elem_id="inspect-json")
        export_file = gr.File(label="Export", interactive=False, elem_id="inspect-export")

    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            detail = gr.Markdown(elem_id="inspect-detail")
            options = gr.Dataframe(
                headers=["option", "probability", ""], interactive=False, label="Options", elem_id="inspect-options"
            )
        with gr.Column(scale=4):
            video = gr.Video(label="Video", interactive=False, visible=False, height=260, elem_id="inspect-video")
    timeline = gr.Plot(label="Ground truth vs memory prompts", format="png", elem_id="inspect-timeline")
    attention = gr.Plot(label="Memory-prompt attention", format="png", elem_id="inspect-attention")

    filters = [wrong_only, question_type, gt_class, low, high, search]
    listing = [rows, question_id, count]

    def run_fn(model_name, dataset_name, split_name, progress: gr.Progress = gr.Progress()):  # noqa: B008
        """Run, then clear the filters (the table lists every question of the new run)."""
        return (*inspector.run(model_name, dataset_name, split_name, progress), False, 0.0, 1.0, "")

    dataset.change(inspector.splits, dataset, split, api_visibility="private", queue=False)
    run_button.click(
        run_fn,
        [model, dataset, split],
        [
            key,
            summary,
            by_type,
            accuracy_plot,
            errors_plot,
            question_type,
            gt_class,
            *listing,
            wrong_only,
            low,
            high,
            search,
        ],
        api_visibility="private",
        concurrency_id="inspection",
        concurrency_limit=1,
    )
    gr.on(
        [wrong_only.change, question_type.change, gt_class.change, low.release, high.release, search.submit],
        inspector.filter,
        [key, *filters],
        listing,
        api_visibility="private",
        trigger_mode="always_last",
    )
    rows.select(inspector.selected_id, None, question_id, api_visibility="private", queue=False)
    question_id.change(
        inspector.show,
        [key, question_id],
        [detail, options, timeline, attention, video],
        api_visibility="private",
        trigger_mode="always_last",
    )

    def export_csv(state, *values):
        return inspector.export(state, ".csv", *values)

    def export_json(state, *values):
        return inspector.export(state, ".json", *values)

    csv_button.click(export_csv, [key, *filters], export_file, api_visibility="private")
    json_button.click(export_json, [key, *filters], export_file, api_visibility="private")


def uploaded_file_input(label: str, file_types: list[str]) -> gr.File:
    """A ``gr.File`` input that passes the uploaded file's path on, and nothing else.

    ``gr.File(type="filepath")`` in gradio 6 also creates an empty, never-used temporary file in
    the upload cache on every request; under load that is one stray file per API call. This
    input checks the file type the same way and returns the upload's own path (which gradio's
    cache sweep owns). The method is replaced on the instance: a ``gr.File`` subclass would make
    gradio write an ``app.pyi`` stub beside this file at import time.
    """
    component = gr.File(label=label, file_types=file_types, type="filepath")

    def process_single_file(f: FileData) -> NamedString:
        if not is_valid_file(f.path, file_types):
            raise GradioError(f"Invalid file type. Upload one of these formats: {', '.join(file_types)}")
        return NamedString(f.path)

    component._process_single_file = process_single_file
    return component


def build_api(models: Models) -> None:
    """The ``/predict`` endpoint for ``gradio_client`` (hidden components; no place in the page)."""
    answerer = Answerer(models)

    def predict(video: str | None, question: str, options: str) -> dict[str, Any]:
        """Answer a question about a video with the default model.

        Args:
            video: the video file (mp4, webm, mov, avi or mkv).
            question: the question.
            options: the answer options, one per line; empty for an open-ended model.

        Returns:
            ``{answer, answer_index, options, probabilities, events: [{start_s, end_s, label,
            score, background}], timings_s}``.
        """
        return answerer(models.default, video, question, options).to_json()

    with gr.Column(visible=False):
        api_video = uploaded_file_input("video", VIDEO_EXTENSIONS)
        api_question = gr.Textbox(label="question")
        api_options = gr.Textbox(label="options", lines=4)
        api_result = gr.JSON(label="result")
    gr.on(
        [],
        predict,
        inputs=[api_video, api_question, api_options],
        outputs=api_result,
        api_name="predict",
        concurrency_id="inference",
    )


def build_app(
    models: Models,
    examples: Sequence[Example] = (),
    sources: Sequence[DataSource] | None = None,
    inspection_dir: str | Path | None = None,
) -> gr.Blocks:
    """The whole page: the introduction, then one tab per tool, and the API.

    ``sources``: the datasets of the Inspect tab (default: the bundled synthetic split when present);
    ``inspection_dir``: where its runs are stored (default: ``inspection`` in :func:`default_cache_root`).
    """
    inspector = Inspector(
        models,
        data_sources({}) if sources is None else sources,
        inspection_dir or default_cache_root() / "inspection",
    )
    # delete_cache: uploads older than an hour are removed every 30 minutes (else they stay until restart).
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(1800, 3600)) as app:
        gr.Markdown(INTRO)
        with gr.Tab("Ask a question"):  # tabs side by side; another tool is one more `with gr.Tab(...)`
            build_demo_tab(models, examples)
        with gr.Tab("Inspect"):
            build_inspect_tab(models, inspector)
        build_api(models)
    app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    return app


# ----------------------------------------------------------------------------------------------
# Start-up


def warm_up(models: Models, examples: Sequence[Example]) -> None:
    """Take the start-up costs off the first requests: start the video workers, load the default
    model and its encoders, and put the example videos' features in the feature cache (not on
    ZeroGPU, where the GPU exists only inside a request)."""
    try:
        default_pool()
        if models.default is None:
            return
        predictor = models.predictor(models.default)
        predictor.warm_up()
        if _zero_gpu():
            return
        for video in dict.fromkeys(example.video for example in examples):
            predictor.video_features(video)
        log.info("warm-up done: %s ready, %d example videos encoded", models.default, len(examples))
    except Exception:
        log.exception("warm-up failed; requests will load what they need")


def launch(app: gr.Blocks, host: str | None, port: int | None, share: bool = False, **kwargs: Any) -> Any:
    """Serve ``app`` with this project's serving settings (see README, "The demo")."""
    return app.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=MAX_UPLOAD_BYTES,
        show_error=False,
        allowed_paths=[],
        theme=THEME,
        css=CSS,
        **kwargs,
    )


def default_cache_root() -> Path:
    """The app's cache: ``$XDG_CACHE_HOME/glance-focus`` (``~/.cache`` by default), holding the frame
    features per video in ``features/`` and the Inspect tab's runs in ``inspection/``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glance-focus"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=TITLE)
    parser.add_argument(
        "--host", default=None, help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1; 0.0.0.0: all)"
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument(
        "--checkpoint",
        action="append",
        type=Path,
        help="a checkpoint directory or a folder of them; repeatable (default: assets/models beside app.py)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache folder: frame features in DIR/features, Inspect runs in DIR/inspection "
        "(default: ~/.cache/glance-focus)",
    )
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a dataset folder for the Inspect tab, shown as NAME; repeatable (the bundled synthetic "
        "validation split is always offered when present)",
    )
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up requests
    cache_root = args.cache_dir or default_cache_root()
    try:
        models = Models(args.checkpoint or [DEFAULT_MODELS], device=args.device, cache_dir=cache_root / "features")
    except CheckpointError as exc:
        sys.exit(f"error: {exc}")
    if not models.choices:
        sys.exit(f"error: no checkpoint in {', '.join(map(str, args.checkpoint or [DEFAULT_MODELS]))}")
    try:
        sources = data_sources(parse_data_args(args.data))
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    examples = load_examples()
    app = build_app(models, examples, sources, inspection_dir=cache_root / "inspection")
    if _zero_gpu():
        warm_up(models, examples)
    else:
        threading.Thread(target=warm_up, args=(models, examples), name="warm-up", daemon=True).start()
    launch(app, args.host, args.port, args.share)


def _module_demo() -> gr.Blocks:
    """The page with the bundled model and examples (for ``gradio app.py`` and imports)."""
    try:
        models = Models([DEFAULT_MODELS], cache_dir=default_cache_root() / "features")
    except CheckpointError:
        log.exception("bundled model unreadable")
        models = Models([])
    return build_app(models, load_examples())


demo = _module_demo()

if __name__ == "__main__":
    main()
