"""STAR (Wu et al., NeurIPS 2021) in the layout the reference code reads; also our synthetic world.

Questions are multiple-choice (four options) of four types, named by the question id's prefix:
``Interaction_T1_13`` is an Interaction question. The official test split hides its answers
(its lines have no ``answer``, or the placeholder ``-1`` that ``train/prepare_data.py`` writes);
predictions for it go to the leaderboard as the JSON :func:`write_star_submission` writes.

**Clips.** Each STAR question is about a window ``[start, end]`` of a Charades video. The
reference code keys the features file and ``events.json`` by **question id** (one clip per
question, event times in seconds from the clip's start, ``duration`` the clip's length). Our
synthetic world keys both by **video id** (every question is about the whole video). A split is
read as question-keyed (:attr:`QAExample.clip_id` = question id) when ``events.json`` has
entries under its question ids, or, without such entries, when its lines give the question's
window (``start``, ``end``: what ``prepare_data.py`` writes); otherwise as video-keyed. An
``events.json`` keyed both ways is refused.

``events.json`` and ``action_mapping.txt`` use STAR's form, which the reference's AGQA
preprocessing (Charades events) shares, so :mod:`glance_focus.data.agqa` reads them with
:func:`read_event_labels`.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .features import find_features_file
from .types import (
    DataLayoutError,
    DatasetSplit,
    Event,
    QAExample,
    VideoEvents,
    atomic_path,
    check_split_name,
    ordered_splits,
    read_json,
    read_lines,
    require_file,
)

LAYOUT = """STAR layout (the synthetic world writes it too):
  ROOT/txt_db/{train,val,test}.jsonl  one question per line: {"question_id": "Interaction_T1_13",
                                      "video_id": ..., "question": ..., "options": [4 strings],
                                      "answer": option index (absent or -1 in test), "question_type": optional,
                                      "start": s, "end": s (the question's window in the video; optional)}
  ROOT/txt_db/events.json             {question_id (STAR) or video_id (synthetic):
                                         {"duration": s, "actions": [[class, ..., start_s, end_s]]}}
  ROOT/txt_db/action_mapping.txt      one class per line: "a000 hold some clothes"
  ROOT/features/SPLIT.safetensors, ROOT/features.safetensors or ROOT/vis_db/s3d.pth   (optional;
                                      keyed like events.json)
  ROOT/videos/VIDEO_ID.mp4                                                            (optional)"""

QUESTION_TYPES = ("Interaction", "Sequence", "Prediction", "Feasibility")
"""STAR's question types, in the order of its leaderboard submission file."""

REFERENCE_FEATURES = ("vis_db/s3d.pth",)

HIDDEN_ANSWER = -1
"""The ``answer`` of a question whose answer is hidden (STAR test): not an option index, but an
integer, so the reference loader's ``int(label)`` still reads the line."""


def load_star(root: str | Path, split: str, *, name: str = "star") -> DatasetSplit:
    """Read one split of a STAR-layout folder.

    Args:
        root: the dataset folder (holding ``txt_db/``).
        split: ``"train"``, ``"val"``, ``"test"`` or any other ``txt_db/SPLIT.jsonl``.
        name: the dataset name recorded in the result (``"synthetic"`` for our world).

    A split whose lines have no ``answer`` (the official test split) loads with
    ``has_answers=False`` and every answer None. ``events.json`` is optional; when present,
    ``action_mapping.txt`` must be too. Whether features and events are keyed by question or by
    video is decided as the module docstring says.
    """
    root = Path(root)
    check_split_name(split, name)
    txt_db = root / "txt_db"
    questions_path = require_file(txt_db / f"{split}.jsonl", LAYOUT)
    examples = _read_questions(questions_path)
    has_answers = any(ex.answer is not None for ex in examples)
    candidates = {ex.video_id for ex in examples} | {ex.question_id for ex in examples}
    events_path = txt_db / "events.json"
    event_classes, events = read_event_labels(events_path, txt_db / "action_mapping.txt", candidates, LAYOUT)
    examples = _key_clips(examples, set(events), events_path)
    events = {ex.clip_id: events[ex.clip_id] for ex in examples if ex.clip_id in events}
    videos = root / "videos"
    return DatasetSplit(
        name=name,
        split=split,
        root=root,
        task="multiple_choice",
        examples=examples,
        events=events,
        event_classes=event_classes,
        answer_vocab=None,
        has_answers=has_answers,
        features_path=find_features_file(root, split, REFERENCE_FEATURES),
        videos_dir=videos if videos.is_dir() else None,
    )


def available_splits(root: str | Path) -> list[str]:
    """The splits present in a STAR-layout folder (``txt_db/*.jsonl``)."""
    return ordered_splits(p.stem for p in (Path(root) / "txt_db").glob("*.jsonl"))


def _key_clips(examples: list[QAExample], event_keys: set[str], events_path: Path) -> list[QAExample]:
    """The examples with :attr:`QAExample.clip_id` set to the question id where the split is
    question-keyed (see the module docstring), else unchanged (clip = video)."""
    by_question = event_keys & {ex.question_id for ex in examples}
    by_video = event_keys & {ex.video_id for ex in examples}
    if by_question and by_video:
        raise DataLayoutError(
            f"{events_path}: keyed both by question id (e.g. {min(by_question)!r}) and by video id "
            f"(e.g. {min(by_video)!r}); use one key for every entry"
        )
    if by_question or (not by_video and any(ex.interval is not None for ex in examples)):
        return [dataclasses.replace(ex, clip_id=ex.question_id) for ex in examples]
    return examples


def _read_questions(path: Path) -> list[QAExample]:
    examples: list[QAExample] = []
    seen: set[str] = set()
    with_answer: bool | None = None
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataLayoutError(f"{where}: not valid JSON ({e.msg})") from e
            if not isinstance(raw, dict):
                raise DataLayoutError(f"{where}: expected a JSON object, got {type(raw).__name__}")
            example = _parse_question(raw, where)
            if example.question_id in seen:
                raise DataLayoutError(f"{where}: duplicate question_id {example.question_id!r}")
            seen.add(example.question_id)
            if with_answer is None:
                with_answer = example.answer is not None
            elif with_answer != (example.answer is not None):
                raise DataLayoutError(f"{where}: some questions of this split have an answer and some do not")
            examples.append(example)
    if not examples:
        raise DataLayoutError(f"{path}: no questions\nexpected layout:\n{LAYOUT}")
    return examples


def _parse_question(raw: dict[str, Any], where: str) -> QAExample:
    for key in ("question_id", "question", "options"):
        if key not in raw:
            raise DataLayoutError(f"{where}: missing key {key!r}")
    if "video_id" not in raw and "gif_name" not in raw:
        raise DataLayoutError(f"{where}: missing key 'video_id'")
    options = raw["options"]
    if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) for o in options):
        raise DataLayoutError(f"{where}: 'options' must be a list of at least two strings")
    question_id = str(raw["question_id"])
    return QAExample(
        question_id=question_id,
        video_id=str(raw.get("video_id", raw.get("gif_name"))),
        question=str(raw["question"]),
        options=tuple(options),
        answer=_answer_index(raw.get("answer"), options, where),
        question_type=str(raw.get("question_type") or question_id.split("_")[0]),
        interval=_window(raw, where),
    )


def _window(raw: dict[str, Any], where: str) -> tuple[float, float] | None:
    """The question's ``(start, end)`` in the video, from optional ``start`` and ``end`` keys."""
    if "start" not in raw and "end" not in raw:
        return None
    start = _number(raw.get("start"), f"{where}: start")
    end = _number(raw.get("end"), f"{where}: end")
    if not 0 <= start < end:
        raise DataLayoutError(f"{where}: window start {start} / end {end} is not 0 <= start < end")
    return start, end


def _answer_index(answer: Any, options: list[str], where: str) -> int | None:
    """An option index from an int, a digit string or the text of one option; None where hidden
    (absent, null, or :data:`HIDDEN_ANSWER`)."""
    if answer is None or (answer == HIDDEN_ANSWER and not isinstance(answer, bool)):
        return None
    if isinstance(answer, str) and answer in options:
        return options.index(answer)
    if isinstance(answer, str) and answer.isdigit():
        answer = int(answer)
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(options):
        raise DataLayoutError(f"{where}: answer {answer!r} is not an index into the {len(options)} options")
    return answer


def read_event_labels(
    events_path: Path, mapping_path: Path, video_ids: set[str], layout: str
) -> tuple[list[str], dict[str, VideoEvents]]:
    """Event class names and the events of ``video_ids`` (clip ids), from STAR-form label files.

    Without an events file there are no events (the class names are still read if the
    mapping exists); an events file without its action mapping raises :class:`MissingFileError`.

    Args:
        events_path: ``events.json`` (see :func:`_read_events_json`).
        mapping_path: ``action_mapping.txt`` (see :func:`_read_action_mapping`).
        video_ids: the videos to keep.
        layout: the expected layout, shown in error messages.
    """
    if not events_path.is_file() and not mapping_path.is_file():
        return [], {}
    class_names, codes = _read_action_mapping(mapping_path, layout)
    if not events_path.is_file():
        return class_names, {}
    return class_names, _read_events_json(events_path, codes, len(class_names), layout, video_ids)


def read_action_mapping(path: Path) -> list[str]:
    """The event class names of an ``action_mapping.txt`` (index = line)."""
    return _read_action_mapping(path, LAYOUT)[0]


def _read_action_mapping(path: Path, layout: str) -> tuple[list[str], dict[str, int]]:
    """Read ``action_mapping.txt``: one ``"<code> <class name>"`` per line.

    The last line counts whether or not it ends with a newline (the reference reads the file
    with ``split('\\n')[:-1]``, which drops the last class of a file without a final newline).

    Returns:
        the class names (index = line) and each code's index (``{"a000": 0, ...}``).
    """
    names: list[str] = []
    codes: dict[str, int] = {}
    for lineno, line in enumerate(read_lines(path, layout), start=1):
        code, _, class_name = line.strip().partition(" ")
        if not code or not class_name.strip():
            raise DataLayoutError(f"{path}:{lineno}: expected '<code> <class name>', got {line!r}")
        if code in codes:
            raise DataLayoutError(f"{path}:{lineno}: duplicate class code {code!r}")
        codes[code] = len(names)
        names.append(class_name.strip())
    return names, codes


def _read_events_json(
    path: Path, codes: Mapping[str, int], num_classes: int, layout: str, keep: set[str]
) -> dict[str, VideoEvents]:
    """Read STAR-form events: ``{video_id: {"duration": s, "actions": [[class, ..., start, end]]}}``.

    The first element of an action is its class, an index or a code from the action mapping
    (``"a012"``); the last two are its start and end in seconds.

    Args:
        path: the events file.
        codes: class code -> index, from :func:`_read_action_mapping`.
        num_classes: the number of classes; indices must be below it.
        layout: the expected layout, shown in error messages.
        keep: the videos to return.
    """
    data = read_json(path, layout)
    if not isinstance(data, dict):
        raise DataLayoutError(f"{path}: expected a JSON object keyed by video id")
    events: dict[str, VideoEvents] = {}
    for video_id, entry in data.items():
        if video_id not in keep:
            continue
        where = f"{path}: entry {video_id!r}"
        if not isinstance(entry, dict) or "duration" not in entry or "actions" not in entry:
            raise DataLayoutError(f"{where}: expected {{'duration': s, 'actions': [...]}}")
        duration = _number(entry["duration"], f"{where}: duration")
        if duration <= 0:
            raise DataLayoutError(f"{where}: duration must be > 0, got {duration}")
        if not isinstance(entry["actions"], list):
            raise DataLayoutError(f"{where}: 'actions' must be a list")
        parsed = []
        for i, action in enumerate(entry["actions"]):
            if not isinstance(action, list) or len(action) < 3:
                raise DataLayoutError(f"{where}: action {i} is not [class, ..., start_s, end_s]")
            label = _class_index(action[0], codes, num_classes, f"{where}: action {i}")
            start = _number(action[-2], f"{where}: action {i} start")
            end = _number(action[-1], f"{where}: action {i} end")
            parsed.append(Event(label, start, end))
        events[video_id] = VideoEvents(duration, tuple(parsed))
    return events


def _class_index(value: Any, codes: Mapping[str, int], num_classes: int, where: str) -> int:
    if isinstance(value, str):
        if value in codes:
            return codes[value]
        if not value.isdigit():
            raise DataLayoutError(f"{where}: class {value!r} is not in the action mapping")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < num_classes:
        raise DataLayoutError(f"{where}: class {value!r} is not one of the {num_classes} classes")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataLayoutError(f"{where}: expected a number, got {value!r}")
    return float(value)


def write_star_submission(predictions: Mapping[str, int], path: str | Path) -> None:
    """Write STAR's leaderboard file: ``{"Interaction": [{"question_id", "answer"}], ...}``.

    Every question type is present (an empty list where there are no predictions); the
    question type is the prefix of the question id. Written atomically.

    Args:
        predictions: question id -> predicted option index.
        path: the JSON file to write.
    """
    submission: dict[str, list[dict[str, Any]]] = {qtype: [] for qtype in QUESTION_TYPES}
    for question_id, answer in predictions.items():
        qtype = question_id.split("_")[0]
        if qtype not in submission:
            raise ValueError(f"question id {question_id!r} does not start with one of {QUESTION_TYPES}")
        if isinstance(answer, bool):
            raise TypeError(f"answer for {question_id!r} must be an option index, got {answer!r}")
        try:
            index = operator.index(answer)  # accepts numpy and 0-d torch integers too
        except TypeError as e:
            raise TypeError(f"answer for {question_id!r} must be an option index, got {answer!r}") from e
        submission[qtype].append({"question_id": question_id, "answer": index})
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(submission), encoding="utf-8")
