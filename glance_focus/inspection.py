"""Inspecting a trained model over a whole dataset split: where, and why, does it answer wrongly?

The library behind the app's Inspect tab (DESIGN.md §7); no UI code here.

- :func:`run_inspection` runs a checkpoint over one split once — through
  :func:`~glance_focus.evaluation.evaluate_split`, the function behind ``train/evaluate.py``, so
  the numbers are the same — and stores one :class:`InspectionRow` per question with the metrics
  in a cache folder, keyed by the checkpoint's content, the split's content and the feature file;
  reopening the same run is a JSON read (:func:`load_cached_run`).
- Every row also holds the counterfactual evidence of its answer (:mod:`glance_focus.evidence`):
  the answer's probability with each memory prompt left out, computed in the evaluation's own
  batches; :attr:`InspectionRow.strongest_evidence` names the prompt the answer rests on most and
  :attr:`InspectionRow.strongest_evidence_in_gt_event` whether its span meets a ground-truth event.
- :func:`filter_rows` and :func:`overview` browse a run (one filter: wrong answers whose strongest
  evidence lies outside every ground-truth event); :func:`example_detail` gathers one question's
  answer, spans (seconds), evidence, video file and, on demand, its attention maps;
  :func:`export_rows` writes a (filtered) list as CSV or JSON, evidence columns included.
- Dataset roots come from the operator's command line only (:func:`parse_data_args`,
  :func:`data_sources`); the page picks a :class:`DataSource` by name, never by path.
- :func:`convert_reference_to_checkpoint` turns a reference-code checkpoint into a checkpoint
  directory, so a model trained with the published code can be inspected.

Spans are stored as fractions of the video (what the model predicts and what the metrics compare);
:attr:`InspectionRow.duration_s` (from the ground-truth annotations) turns them into seconds.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import torch

from glance_focus.checkpoint import (
    CONFIG_NAME,
    TEXT_ENCODER_WEIGHTS_NAME,
    WEIGHTS_NAME,
    CheckpointInfo,
    load_checkpoint,
    read_checkpoint_info,
)
from glance_focus.data.features import FeatureStore, sample_features
from glance_focus.data.registry import DATASETS, available_splits, load_split
from glance_focus.data.types import DataLayoutError, DatasetSplit, atomic_path
from glance_focus.encoders import (
    resolve_device,
)
from glance_focus.evaluation import ExamplePrediction, evaluate_checkpoint
from glance_focus.evidence import Evidence, PromptEvidence, strongest_slot
from glance_focus.extraction import features_for_checkpoint, resolve_features
from glance_focus.pipeline import AttentionMaps, InputError, Prediction, Predictor

BUNDLED_SYNTHETIC_ROOT = Path(__file__).resolve().parents[1] / "assets" / "data" / "synthetic"
"""The bundled synthetic world (DESIGN.md §6); its validation split is always offered."""
BUNDLED_SPLIT = "val"
BUNDLED_NAME = "synthetic (bundled)"
EVAL_BATCH_SIZE = 64
"""``train/evaluate.py``'s default. Reference-compatible models add +1 to padded text logits, so
their answers depend on how questions are batched: keep this equal to get equal numbers."""
OPEN_ENDED_TOP_K = 5
"""Open-ended rows keep the probabilities of this many top answers (not the whole vocabulary)."""
RUN_FORMAT = 3
"""Version of the stored run's JSON; a change makes older cached runs recompute (3: evidence columns)."""

Progress = Callable[[float, str], None]
"""``progress(fraction in [0, 1], message)``; ``gradio.Progress`` instances fit."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_T = TypeVar("_T")


class InspectionError(ValueError):
    """The inspection cannot be run or shown as asked; the message says why, for the user."""


# ============================================================================ data sources


@dataclass(frozen=True)
class DataSource:
    """A dataset folder the operator made available to the page."""

    name: str
    """What the page shows and sends back (never a path)."""
    dataset: str
    """Reader name (:data:`glance_focus.data.registry.DATASETS`)."""
    root: Path
    splits: tuple[str, ...]
    bundled: bool = False


def reader_for(name: str) -> str:
    """The reader of an operator-named dataset: the known dataset its name starts with, else STAR.

    >>> reader_for("agqa-small"), reader_for("nextqa"), reader_for("my_star_copy")
    ('agqa', 'nextqa', 'star')
    """
    head = re.split(r"[-_.]", name.lower(), maxsplit=1)[0]
    return head if head in DATASETS else "star"


def parse_data_args(values: Iterable[str]) -> dict[str, Path]:
    """Parse the operator's ``--data NAME=DIR`` values into ``{name: resolved directory}``.

    Names are 1-64 characters of letters, digits, ``_``, ``.``, ``-`` (starting with a letter or
    digit) and unique; each directory must exist. :class:`InspectionError` says what is wrong.
    """
    roots: dict[str, Path] = {}
    for value in values:
        name, sep, directory = value.partition("=")
        name = name.strip()
        if not sep or not directory.strip():
            raise InspectionError(f"--data expects NAME=DIR, got {value!r}")
        if not _NAME.fullmatch(name):
            raise InspectionError(f"--data name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
        if name in roots:
            raise InspectionError(f"--data name {name!r} is given twice")
        path = Path(directory.strip()).expanduser().resolve()
        if not path.is_dir():
            raise InspectionError(f"--data {name}: {path} is not a directory")
        roots[name] = path
    return roots


def data_sources(roots: Mapping[str, Path], bundled_root: Path = BUNDLED_SYNTHETIC_ROOT) -> list[DataSource]:
    """The bundled synthetic validation split (when it is installed), then the operator's folders.

    A folder whose splits cannot be listed is offered with no splits rather than hidden.
    """
    sources: list[DataSource] = []
    if (bundled_root / "txt_db" / f"{BUNDLED_SPLIT}.jsonl").is_file():
        sources.append(DataSource(BUNDLED_NAME, "synthetic", bundled_root, (BUNDLED_SPLIT,), bundled=True))
    for name, root in roots.items():
        dataset = reader_for(name)
        try:
            splits = tuple(available_splits(dataset, root))
        except (OSError, DataLayoutError):
            splits = ()
        sources.append(DataSource(name, dataset, Path(root), splits))
    return sources


def find_source(sources: Sequence[DataSource], name: str, split: str) -> DataSource:
    """The source called ``name`` offering ``split`` (what the page sends); InspectionError otherwise."""
    for source in sources:
        if source.name == name:
            if split not in source.splits:
                raise InspectionError(f"dataset {name!r} has no split {split!r} (it has: {', '.join(source.splits)})")
            return source
    raise InspectionError(f"unknown dataset {name!r}")


# ============================================================================ rows and runs


@dataclass(frozen=True)
class EventSpan:
    """One event on a video's timeline: a memory prompt's prediction or a ground-truth event."""

    label: str
    """Event class name; ``"background"`` for a prompt predicting no event."""
    label_index: int
    start: float
    """Start as a fraction of the video, in [0, 1]."""
    end: float
    score: float | None = None
    """Predicted: the probability of ``label``; ground truth: None."""
    background: bool = False

    def seconds(self, duration_s: float) -> tuple[float, float]:
        """(start, end) in seconds of a video lasting ``duration_s``."""
        return self.start * duration_s, self.end * duration_s

    def overlaps(self, other: EventSpan) -> bool:
        """Whether the two spans share at least one instant (either may be given end first).

        >>> EventSpan("a", 0, 0.2, 0.4).overlaps(EventSpan("b", 1, 0.4, 0.9))
        True
        >>> EventSpan("a", 0, 0.2, 0.4).overlaps(EventSpan("b", 1, 0.5, 0.9))
        False
        """
        return max(min(self.start, self.end), min(other.start, other.end)) <= min(
            max(self.start, self.end), max(other.start, other.end)
        )


@dataclass(frozen=True)
class InspectionRow:
    """One question of the split with the model's answer and the events on both sides."""

    question_id: str
    video_id: str
    clip_id: str
    """Key of the question's features and events: the video id, or the question id where each
    question is about its own clip (STAR)."""
    clip_window_s: tuple[float, float] | None
    """Where the clip lies in the video file, (start, end) seconds; None for the whole video. Event
    times and ``duration_s`` are relative to the clip."""
    question_type: str
    question: str
    options: tuple[str, ...]
    """The question's answer options (empty for open-ended questions)."""
    choices: tuple[str, ...]
    """What ``probabilities`` refer to: the options, or the top answers of an open-ended model."""
    probabilities: tuple[float, ...]
    prediction: int
    """Index into the options (multiple-choice) or the answer vocabulary (open-ended)."""
    predicted: str
    answer: int | None
    """None where the split hides its answers."""
    correct_answer: str | None
    correct: bool | None
    confidence: float
    """Probability of the predicted answer."""
    predicted_events: tuple[EventSpan, ...]
    """One per memory prompt, in temporal order (the order the focus stage reads them)."""
    gt_events: tuple[EventSpan, ...]
    """Ground-truth events, earliest first (empty where the dataset has none)."""
    duration_s: float | None
    """The video's length from the annotations; None where unknown (spans stay fractions)."""
    evidence_without: tuple[float, ...] = ()
    """The predicted answer's probability with each memory prompt left out, in temporal order
    (:mod:`glance_focus.evidence`)."""
    evidence_flips_to: tuple[str | None, ...] = ()
    """Per prompt left out, the answer given instead, or None where the answer stays."""

    @property
    def num_gt_events(self) -> int:
        return len(self.gt_events)

    @property
    def evidence_deltas(self) -> tuple[float, ...]:
        """Per memory prompt, how much leaving it out changes the predicted answer's probability."""
        return tuple(p - self.confidence for p in self.evidence_without)

    @property
    def strongest_evidence(self) -> int | None:
        """Slot of the prompt whose removal lowers the answer's probability most (None without evidence)."""
        return strongest_slot(self.evidence_deltas) if self.evidence_without else None

    @property
    def strongest_evidence_in_gt_event(self) -> bool | None:
        """Whether the strongest evidence prompt's span overlaps a ground-truth event; None where the
        video has no ground-truth events or the row has no evidence."""
        slot = self.strongest_evidence
        if slot is None or not self.gt_events:
            return None
        return any(self.predicted_events[slot].overlaps(event) for event in self.gt_events)

    @property
    def gt_classes(self) -> tuple[str, ...]:
        """The distinct ground-truth event classes of the video, sorted."""
        return tuple(sorted({e.label for e in self.gt_events}))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InspectionRow:
        values = dict(data)
        for key in ("options", "choices", "probabilities", "evidence_without", "evidence_flips_to"):
            values[key] = tuple(values[key])
        if values["clip_window_s"] is not None:
            values["clip_window_s"] = tuple(values["clip_window_s"])
        for key in ("predicted_events", "gt_events"):
            values[key] = tuple(EventSpan(**e) for e in values[key])
        return cls(**values)


@dataclass(frozen=True)
class InspectionRun:
    """A checkpoint run over one split once: the metrics of ``evaluate_split`` and one row per question."""

    key: str
    """Cache key: checkpoint content, dataset, root, split content, feature file, device."""
    checkpoint: str
    checkpoint_fingerprint: str
    dataset: str
    data_root: str
    split: str
    features_path: str
    device: str
    event_classes: tuple[str, ...]
    """The split's ground-truth event class names."""
    metrics: dict[str, Any]
    """:meth:`EvaluationResult.summary`, unchanged: equals ``train/evaluate.py --json`` less its
    ``checkpoint``, ``dataset`` and ``split`` entries."""
    rows: tuple[InspectionRow, ...]
    seconds: float
    """Time the evaluation took when it ran."""
    from_cache: bool = field(default=False, compare=False)
    """True when this object was read from the cache rather than computed now."""

    @property
    def accuracy(self) -> float | None:
        return self.metrics["accuracy"]

    @property
    def question_types(self) -> list[str]:
        return sorted({r.question_type for r in self.rows})

    @property
    def gt_event_classes(self) -> list[str]:
        """The ground-truth classes that occur in this split's videos, sorted."""
        return sorted({label for r in self.rows for label in r.gt_classes})

    @cached_property
    def _by_id(self) -> dict[str, InspectionRow]:
        return {r.question_id: r for r in self.rows}

    def row(self, question_id: str) -> InspectionRow:
        try:
            return self._by_id[question_id]
        except KeyError:
            raise InspectionError(f"question {question_id!r} is not in this run") from None

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("rows", "from_cache")}
        return {"format": RUN_FORMAT, **data, "rows": [r.to_json() for r in self.rows]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], from_cache: bool = False) -> InspectionRun:
        if data.get("format") != RUN_FORMAT:
            raise ValueError(f"stored run format {data.get('format')!r}, expected {RUN_FORMAT}")
        values = {f.name: data[f.name] for f in fields(cls) if f.name not in ("rows", "from_cache")}
        values["event_classes"] = tuple(values["event_classes"])
        rows = tuple(InspectionRow.from_json(r) for r in data["rows"])
        return cls(**values, rows=rows, from_cache=from_cache)


# ========================================================== evaluation (shared with train/evaluate.py)


# ============================================================================ running and caching


_FILE_HASHES: dict[tuple[str, int, int], str] = {}
_FILE_HASHES_LOCK = threading.Lock()


def _file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so a reopened run does not rehash."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _FILE_HASHES_LOCK:
        if key in _FILE_HASHES:
            return _FILE_HASHES[key]
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    with _FILE_HASHES_LOCK:
        _FILE_HASHES[key] = digest.hexdigest()
    return digest.hexdigest()


def checkpoint_fingerprint(checkpoint_dir: str | Path) -> str:
    """sha256 over the checkpoint's config, weights and fine-tuned text encoder (if any)."""
    directory = Path(checkpoint_dir)
    digest = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME, TEXT_ENCODER_WEIGHTS_NAME):
        path = directory / name
        if path.is_file():
            digest.update(f"{name}:{_file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _split_digest(split: DatasetSplit) -> str:
    """sha256 of a split's questions, answers and events (a relabelled split is another run)."""
    content = {
        "examples": [asdict(ex) for ex in split.examples],
        "events": {v: asdict(e) for v, e in sorted(split.events.items())},
        "event_classes": split.event_classes,
        "answer_vocab": split.answer_vocab,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _run_key(fingerprint: str, split: DatasetSplit, features_path: Path, device: torch.device) -> str:
    stat = features_path.stat()
    identity = {
        "format": RUN_FORMAT,
        "checkpoint": fingerprint,
        "dataset": split.name,
        "root": str(Path(split.root).resolve()),
        "split": split.split,
        "split_content": _split_digest(split),
        "features": [str(features_path.resolve()), stat.st_size, stat.st_mtime_ns],
        "device": device.type,
        "batch_size": EVAL_BATCH_SIZE,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _run_file(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"inspection-{key[:32]}.json"


def _read_run(path: Path, key: str) -> InspectionRun | None:
    """The stored run at ``path`` if it is whole and has ``key``; None otherwise (it will be recomputed)."""
    if not path.is_file():
        return None
    try:
        run = InspectionRun.from_json(json.loads(path.read_text(encoding="utf-8")), from_cache=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return run if run.key == key else None


def _load_split(dataset: str, data_root: str | Path, split: str) -> DatasetSplit:
    try:
        return load_split(dataset, data_root, split)
    except (DataLayoutError, ValueError) as exc:
        raise InspectionError(str(exc)) from exc


def load_cached_run(
    checkpoint_dir: str | Path,
    dataset: str,
    data_root: str | Path,
    split: str,
    cache_dir: str | Path,
    device: str = "auto",
) -> InspectionRun | None:
    """The stored run of this checkpoint on this split, or None if it has not run yet (nothing is computed)."""
    info = read_checkpoint_info(checkpoint_dir)
    data = _load_split(dataset, data_root, split)
    features_path = resolve_features(data, info.frame_encoder)
    if features_path is None:
        return None
    key = _run_key(checkpoint_fingerprint(checkpoint_dir), data, features_path, resolve_device(device))
    return _read_run(_run_file(Path(cache_dir), key), key)


_RUN_LOCKS: dict[str, threading.Lock] = {}
_RUN_LOCKS_GUARD = threading.Lock()


def _lock_for(key: str) -> threading.Lock:
    with _RUN_LOCKS_GUARD:
        return _RUN_LOCKS.setdefault(key, threading.Lock())


def run_inspection(
    checkpoint_dir: str | Path,
    dataset: str,
    data_root: str | Path,
    split: str,
    cache_dir: str | Path,
    progress: Progress | None = None,
    device: str = "auto",
) -> InspectionRun:
    """Run the checkpoint over ``split`` of ``dataset`` at ``data_root`` once, and keep the result.

    A run stored earlier in ``cache_dir`` under the same key is returned without computing
    (``from_cache=True``); concurrent calls for the same key in this process compute it once.
    Otherwise: features are resolved or extracted
    (:func:`~glance_focus.extraction.features_for_checkpoint`), the model is evaluated with
    :func:`~glance_focus.evaluation.evaluate_checkpoint` and the run is written atomically to ``cache_dir``.
    """
    report = progress or (lambda fraction, message: None)
    report(0.0, "reading the checkpoint and the dataset")
    info = read_checkpoint_info(checkpoint_dir)
    data = _load_split(dataset, data_root, split)
    resolved_device = resolve_device(device)
    fingerprint = checkpoint_fingerprint(checkpoint_dir)
    extracting = resolve_features(data, info.frame_encoder) is None
    share = 0.5 if extracting else 0.0  # of the progress bar, for feature extraction
    features_path = features_for_checkpoint(
        data,
        info,
        resolved_device,
        on_video=lambda done, total: report(share * done / total, f"extracting features {done}/{total} videos"),
    )
    key = _run_key(fingerprint, data, features_path, resolved_device)
    path = _run_file(Path(cache_dir), key)
    with _lock_for(key):
        cached = _read_run(path, key)
        if cached is not None:
            report(1.0, "loaded the stored run")
            return cached
        report(share, "loading the model")
        loaded = load_checkpoint(checkpoint_dir, device=resolved_device)
        started = time.perf_counter()
        result = evaluate_checkpoint(
            loaded,
            data,
            features_path,
            resolved_device,
            progress=lambda done, total: report(
                share + (1 - share) * done / total, f"answering {done}/{total} questions (and without each prompt)"
            ),
            evidence=True,
        )
        run = InspectionRun(
            key=key,
            checkpoint=str(Path(checkpoint_dir).resolve()),
            checkpoint_fingerprint=fingerprint,
            dataset=data.name,
            data_root=str(Path(data.root).resolve()),
            split=data.split,
            features_path=str(features_path.resolve()),
            device=resolved_device.type,
            event_classes=tuple(data.event_classes),
            metrics=result.summary(),
            rows=tuple(_rows(result.predictions, data, loaded.info)),
            seconds=time.perf_counter() - started,
        )
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(run.to_json(), separators=(",", ":")), encoding="utf-8")
        report(1.0, "done")
        return run


def _class_name(names: Sequence[str], index: int, num_classes: int) -> str:
    return "background" if index == num_classes else _name_at(names, index)


def _rows(predictions: Sequence[ExamplePrediction], split: DatasetSplit, info: CheckpointInfo) -> list[InspectionRow]:
    """Rows from ``evaluate_split``'s predictions plus the split's text and ground truth."""
    examples = {ex.question_id: ex for ex in split.examples}
    num_classes = info.model.num_event_classes
    model_names = info.event_classes or tuple(split.event_classes)
    vocab = info.answer_vocab or tuple(split.answer_vocab or ())
    rows: list[InspectionRow] = []
    for p in predictions:
        example = examples[p.question_id]
        if example.options:
            choices, probabilities = example.options, tuple(p.probabilities)
            texts: Sequence[str] = example.options
        else:
            top = sorted(range(len(p.probabilities)), key=lambda i: -p.probabilities[i])[:OPEN_ENDED_TOP_K]
            texts = vocab
            choices = tuple(_name_at(vocab, i) for i in top)
            probabilities = tuple(p.probabilities[i] for i in top)
        video = split.events.get(p.clip_id)
        gt: tuple[EventSpan, ...] = ()
        if video is not None:
            spans = video.spans_normalized()
            gt = tuple(
                EventSpan(_name_at(split.event_classes, e.label), e.label, s, t)
                for e, (s, t) in zip(video.events, spans, strict=True)
            )
        rows.append(
            InspectionRow(
                question_id=p.question_id,
                video_id=p.video_id,
                clip_id=p.clip_id,
                clip_window_s=example.interval if example.clip_id != example.video_id else None,
                question_type=p.question_type,
                question=example.question,
                options=example.options,
                choices=choices,
                probabilities=probabilities,
                prediction=p.prediction,
                predicted=_name_at(texts, p.prediction),
                answer=p.answer,
                correct_answer=None if p.answer is None else _name_at(texts, p.answer),
                correct=p.correct,
                confidence=p.confidence,
                predicted_events=tuple(
                    EventSpan(
                        _class_name(model_names, e.label, num_classes), e.label, e.start, e.end, e.score, e.background
                    )
                    for e in p.events
                ),
                gt_events=gt,
                duration_s=video.duration_s if video is not None else None,
                evidence_without=tuple(p.evidence_without or ()),
                evidence_flips_to=tuple(None if a is None else _name_at(texts, a) for a in p.evidence_flips_to or ()),
            )
        )
    return rows


def _name_at(texts: Sequence[str], index: int) -> str:
    """``texts[index]``, or the index as text where there is no such entry."""
    return texts[index] if 0 <= index < len(texts) else str(index)


# ============================================================================ browsing


def filter_rows(
    rows: InspectionRun | Iterable[InspectionRow],
    *,
    wrong_only: bool = False,
    question_type: str | None = None,
    gt_event_class: str | None = None,
    confidence_range: tuple[float, float] | None = None,
    text_search: str | None = None,
    evidence_outside_gt: bool = False,
) -> list[InspectionRow]:
    """The rows passing every given filter (None or "" means no filter), in their original order.

    Args:
        wrong_only: only answered-wrongly questions (none where the split hides its answers).
        question_type: exact question type.
        gt_event_class: the video's ground truth contains an event of this class.
        confidence_range: (low, high), inclusive, on the predicted answer's probability.
        text_search: case-insensitive words that must all occur in the question or its id.
        evidence_outside_gt: only wrong answers whose strongest evidence (the memory prompt whose
            removal lowers the answer most) lies outside every ground-truth event of the video.
    """
    items = rows.rows if isinstance(rows, InspectionRun) else rows
    words = (text_search or "").casefold().split()
    kept = []
    for row in items:
        if wrong_only and row.correct is not False:
            continue
        if evidence_outside_gt and (row.correct is not False or row.strongest_evidence_in_gt_event is not False):
            continue
        if question_type and row.question_type != question_type:
            continue
        if gt_event_class and gt_event_class not in row.gt_classes:
            continue
        if confidence_range is not None and not confidence_range[0] <= row.confidence <= confidence_range[1]:
            continue
        if words:
            haystack = f"{row.question_id} {row.question}".casefold()
            if not all(w in haystack for w in words):
                continue
        kept.append(row)
    return kept


TABLE_COLUMNS = (
    "question_id",
    "type",
    "question",
    "predicted",
    "correct answer",
    "correct",
    "confidence",
    "GT events",
    "strongest evidence",
    "in a GT event",
)


def strongest_evidence_text(row: InspectionRow) -> str:
    """``"P4 The object grows (-65 pp)"``: the strongest evidence prompt, its event and its effect."""
    slot = row.strongest_evidence
    if slot is None:
        return ""
    delta = round(100 * row.evidence_deltas[slot])
    return f"P{slot + 1} {row.predicted_events[slot].label} ({delta:+d} pp)"


def table(rows: Iterable[InspectionRow]) -> list[list[Any]]:
    """One list per row in the order of :data:`TABLE_COLUMNS` (for a data-frame widget)."""
    return [
        [
            r.question_id,
            r.question_type,
            r.question,
            r.predicted,
            r.correct_answer,
            r.correct,
            round(r.confidence, 3),
            r.num_gt_events,
            strongest_evidence_text(r),
            {True: "yes", False: "no", None: ""}[r.strongest_evidence_in_gt_event],
        ]
        for r in rows
    ]


@dataclass(frozen=True)
class GroupErrors:
    """Answered questions of one group and how many of them the model got wrong."""

    group: str
    questions: int
    errors: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.questions if self.questions else 0.0

    @property
    def accuracy(self) -> float:
        return 1.0 - self.error_rate if self.questions else 0.0


def _group(rows: Iterable[InspectionRow], keys: Callable[[InspectionRow], Iterable[str]]) -> dict[str, list[int]]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        if row.correct is None:
            continue
        for key in keys(row):
            counts[key][0] += 1
            counts[key][1] += not row.correct
    return counts


def errors_by_question_type(rows: Iterable[InspectionRow]) -> list[GroupErrors]:
    """Per question type, sorted by type."""
    counts = _group(rows, lambda r: [r.question_type])
    return [GroupErrors(k, n, e) for k, (n, e) in sorted(counts.items())]


def errors_by_event_class(rows: Iterable[InspectionRow]) -> list[GroupErrors]:
    """Per ground-truth event class of the question's video (a question counts once for each
    distinct class its video contains), most errors first."""
    counts = _group(rows, lambda r: r.gt_classes)
    return sorted((GroupErrors(k, n, e) for k, (n, e) in counts.items()), key=lambda g: (-g.errors, g.group))


def errors_by_num_events(rows: Iterable[InspectionRow]) -> list[GroupErrors]:
    """Per number of ground-truth events in the question's video, fewest events first."""
    counts = _group(rows, lambda r: [str(r.num_gt_events)])
    return [GroupErrors(k, n, e) for k, (n, e) in sorted(counts.items(), key=lambda item: int(item[0]))]


@dataclass(frozen=True)
class Overview:
    """What the Inspect tab's overview shows for a run."""

    accuracy: float | None
    """From the run's metrics (None where the split hides its answers)."""
    accuracy_by_type: dict[str, float]
    """From the run's metrics."""
    num_questions: int
    num_errors: int
    event_quality: dict[str, float] | None
    """span mIoU, recall at IoU 0.5, matched class accuracy, class-agnostic span mIoU (runs stored
    before it existed lack it), number of events; None without ground truth."""
    by_type: list[GroupErrors]
    by_event_class: list[GroupErrors]
    by_num_events: list[GroupErrors]


def overview(run: InspectionRun) -> Overview:
    """Accuracy (overall, per type) from the metrics, event quality, and the error breakdowns."""
    m = run.metrics
    quality = None
    if m.get("span_miou") is not None:
        names = ("span_miou", "span_recall_at_0.5", "event_class_accuracy", "span_miou_class_agnostic", "num_events")
        quality = {k: m[k] for k in names if m.get(k) is not None}
    return Overview(
        accuracy=m["accuracy"],
        accuracy_by_type=dict(m["accuracy_by_type"]),
        num_questions=m["num_questions"],
        num_errors=sum(r.correct is False for r in run.rows),
        event_quality=quality,
        by_type=errors_by_question_type(run.rows),
        by_event_class=errors_by_event_class(run.rows),
        by_num_events=errors_by_num_events(run.rows),
    )


# ============================================================================ one example


class _LRU:
    """A small thread-safe least-recently-used cache that builds missing entries once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], _T]) -> _T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            item = build()  # under the lock: a second caller waits rather than building it again
            self._items[key] = item
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return item


_PREDICTORS = _LRU(2)
_FEATURE_STORES = _LRU(2)
_SPLITS = _LRU(4)


def predictor_for(run: InspectionRun) -> Predictor:
    """The (cached) :class:`Predictor` of the run's checkpoint on the run's device."""
    key = (run.checkpoint, run.checkpoint_fingerprint, run.device)
    return _PREDICTORS.get(key, lambda: Predictor(run.checkpoint, device=run.device))


@dataclass(frozen=True)
class ExampleDetail:
    """Everything the Inspect tab shows for one question. Times in seconds where ``duration_s`` is known,
    else fractions of the video."""

    row: InspectionRow
    duration_s: float | None
    video_path: Path | None
    """The video file when it is present in the dataset folder."""
    prediction: Prediction | None
    """The Predictor's answer recomputed now from the stored features, with its attention maps
    (what the app's attention figure draws); None where the question cannot be fed to it."""
    note: str | None = None
    """Why the attention maps are missing, or where the recomputed answer differs from the stored one."""

    @property
    def attention(self) -> AttentionMaps | None:
        """``prompt_to_frame [Q, T]``, ``question_to_memory [L, Q]``, ``events_to_frames [L, T]``,
        ``answer_to_frames [T]``; prompts in temporal order; ``frame_times_s [T]`` in seconds
        (fractions of the video without a duration)."""
        return self.prediction.attention if self.prediction is not None else None

    @property
    def options_with_probabilities(self) -> list[tuple[str, float]]:
        return list(zip(self.row.choices, self.row.probabilities, strict=True))

    def _spans(self, events: Iterable[EventSpan]) -> list[dict[str, Any]]:
        scale = self.duration_s or 1.0
        return [
            {
                "label": e.label,
                "start": e.start * scale,
                "end": e.end * scale,
                "score": e.score,
                "background": e.background,
            }
            for e in events
        ]

    @property
    def predicted_spans(self) -> list[dict[str, Any]]:
        """One per memory prompt (temporal order): label, start, end (s), score, background."""
        return self._spans(self.row.predicted_events)

    @property
    def gt_spans(self) -> list[dict[str, Any]]:
        """Ground-truth events: label, start, end (s)."""
        return self._spans(self.row.gt_events)

    @property
    def evidence(self) -> Evidence | None:
        """The stored leave-one-out evidence of the run's answer (spans in seconds where the
        duration is known); None where the run has none."""
        return row_evidence(self.row)


def row_evidence(row: InspectionRow) -> Evidence | None:
    """A row's stored leave-one-out evidence as an :class:`Evidence` (None where it has none)."""
    if not row.evidence_without:
        return None
    scale = row.duration_s or 1.0
    prompts = [
        PromptEvidence(
            slot=slot,
            start_s=event.start * scale,
            end_s=event.end * scale,
            label=event.label,
            probability_without=without,
            delta=without - row.confidence,
            flips_to=flips_to,
        )
        for slot, (event, without, flips_to) in enumerate(
            zip(row.predicted_events, row.evidence_without, row.evidence_flips_to, strict=True)
        )
    ]
    return Evidence(
        answer=row.predicted,
        answer_index=row.prediction,
        choices=list(row.choices),
        probabilities=list(row.probabilities),
        answer_probability=row.confidence,
        prompts=prompts,
    )


def example_detail(run: InspectionRun, question_id: str, attention: bool = True) -> ExampleDetail:
    """One question of ``run`` with its video file and (``attention=True``) its attention maps.

    The maps come from a :class:`Predictor` of the run's checkpoint fed the question's stored
    features, sampled to the checkpoint's frame count as in evaluation (padding frames left out).
    """
    row = run.row(question_id)
    split = _SPLITS.get(
        (run.dataset, run.data_root, run.split), lambda: _load_split(run.dataset, run.data_root, run.split)
    )
    video_path = split.video_path(row.video_id)
    if not attention:
        return ExampleDetail(row, row.duration_s, video_path, None)
    predictor = predictor_for(run)
    store = _FEATURE_STORES.get(run.features_path, lambda: FeatureStore(run.features_path))
    sampled = sample_features(store[row.clip_id], predictor.info.num_frames, normalized=True)
    valid = ~sampled.padding
    duration = row.duration_s or 1.0
    try:
        prediction = predictor.predict_features(
            sampled.features[valid],
            row.question,
            list(row.options) or None,
            duration_s=duration,
            frame_times_s=(sampled.positions[valid] * duration).double().numpy(),
        )
    except InputError as exc:
        return ExampleDetail(row, row.duration_s, video_path, None, f"no attention maps: {exc}")
    note = None
    if prediction.answer_index != row.prediction:
        note = (
            f"recomputed on this example alone the model answers {prediction.answer!r}; the stored run "
            "(batched as in evaluation) answered differently"
        )
    return ExampleDetail(row, row.duration_s, video_path, prediction, note)


# ============================================================================ export


EXPORT_COLUMNS = (
    "question_id",
    "question_type",
    "video_id",
    "clip_id",
    "clip_window_s",
    "question",
    "options",
    "predicted",
    "correct_answer",
    "correct",
    "confidence",
    "duration_s",
    "predicted_events",
    "gt_events",
    "strongest_evidence_slot",
    "strongest_evidence_delta",
    "strongest_evidence_in_gt_event",
    "evidence",
)


def _export_record(row: InspectionRow) -> dict[str, Any]:
    def spans(events: Iterable[EventSpan], predicted: bool) -> list[dict[str, Any]]:
        out = []
        for e in events:
            start, end = e.seconds(row.duration_s) if row.duration_s else (e.start, e.end)
            item: dict[str, Any] = {"label": e.label, "start_s": round(start, 3), "end_s": round(end, 3)}
            if predicted:
                item["score"] = round(e.score or 0.0, 4)
                item["background"] = e.background
            out.append(item)
        return out

    strongest = row.strongest_evidence
    return {
        "question_id": row.question_id,
        "question_type": row.question_type,
        "video_id": row.video_id,
        "clip_id": row.clip_id,
        "clip_window_s": list(row.clip_window_s) if row.clip_window_s is not None else None,
        "question": row.question,
        "options": list(row.options),
        "predicted": row.predicted,
        "correct_answer": row.correct_answer,
        "correct": row.correct,
        "confidence": round(row.confidence, 6),
        "duration_s": row.duration_s,
        "predicted_events": spans(row.predicted_events, True),
        "gt_events": spans(row.gt_events, False),
        "strongest_evidence_slot": strongest,
        "strongest_evidence_delta": None if strongest is None else round(row.evidence_deltas[strongest], 6),
        "strongest_evidence_in_gt_event": row.strongest_evidence_in_gt_event,
        "evidence": [
            {
                "slot": slot,
                "label": event.label,
                "probability_without": round(without, 6),
                "delta": round(delta, 6),
                "flips_to": flips_to,
            }
            for slot, (event, without, delta, flips_to) in enumerate(
                zip(row.predicted_events, row.evidence_without, row.evidence_deltas, row.evidence_flips_to, strict=True)
            )
        ],
    }


def export_rows(rows: Iterable[InspectionRow], path: str | Path) -> Path:
    """Write ``rows`` to ``path`` (``.csv`` or ``.json``, by its suffix) atomically; return ``path``.

    Columns: :data:`EXPORT_COLUMNS`. Event times are seconds (fractions where the duration is unknown).
    In the CSV, ``options`` and the event lists are JSON strings.
    """
    path = Path(path)
    records = [_export_record(r) for r in rows]
    if path.suffix == ".json":
        text = json.dumps(records, indent=1, ensure_ascii=False)
    elif path.suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        for record in records:
            writer.writerow(
                {k: json.dumps(v, ensure_ascii=False) if isinstance(v, list) else v for k, v in record.items()}
            )
        text = buffer.getvalue()
    else:
        raise InspectionError(f"export to .csv or .json, not {path.suffix or 'a file without suffix'}")
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
