"""EgoTaskQA (Jia et al., NeurIPS 2022 Datasets) in the layout the reference code reads.

Each question is about a clip of a LEMMA video, named by its ``interval``
``"<video>|<person>|<start frame>|<end frame>"``; the question's ``video_id`` names that clip
(one id per interval), and the clip's features are stored under it. Questions are open-ended
over ``answer_set.txt`` (line index = answer index, the ``answer_encode`` of each question).
A question's type is its ``category`` (world / intent / multi-agent; several joined by ``$``).

Event labels come from ``events.json``, keyed by interval: ``{"span": [[start, end], ...],
"hoi": [class, ...]}`` with class names from ``hois_full_trans.json``. Interval and span
values are LEMMA frame numbers; they are converted to seconds at :data:`LEMMA_FPS`. As in
the reference loader, a clip's event spans are normalised by the interval's end frame (the
clip's ``duration_s`` is that end frame in seconds) — the reference's own preprocessing made
``events.json`` to match it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .features import find_features_file
from .types import (
    DataLayoutError,
    DatasetSplit,
    Event,
    QAExample,
    VideoEvents,
    check_split_name,
    ordered_splits,
    read_json,
    read_lines,
    require_file,
)

LAYOUT = """EgoTaskQA layout (as the reference code reads it):
  ROOT/txt_db/formatted_{train,val,test}_qas_encode.json
                                  a JSON list of questions: {"question", "answer_encode", "video_id",
                                  "interval": "video|P1|start|end", "category", ...}
  ROOT/txt_db/answer_set.txt      one answer per line (line index = answer_encode)
  ROOT/txt_db/events.json         {interval: {"span": [[start, end], ...], "hoi": [class, ...]}}  (optional)
  ROOT/txt_db/hois_full_trans.json  event class names: a list, {name: index} or {index: name}
  ROOT/features/SPLIT.safetensors or ROOT/features.safetensors (one tensor per video_id)  (optional)
  ROOT/videos/VIDEO_ID.mp4                                                                      (optional)"""

LEMMA_FPS = 24.0
"""Frame rate of LEMMA's frame numbering (EgoTaskQA's generation code assumes 24 fps)."""

_PREFIX, _SUFFIX = "formatted_", "_qas_encode.json"


def load_egotaskqa(root: str | Path, split: str, *, txt_db: str | Path | None = None) -> DatasetSplit:
    """Read one split of an EgoTaskQA folder.

    ``events.json`` is optional; when present, ``hois_full_trans.json`` must be too. ``txt_db``
    is the folder holding the question and label files (default ``ROOT/txt_db``; the official
    release folder holds them directly).
    """
    root = Path(root)
    check_split_name(split, "egotaskqa")
    txt_db = Path(txt_db) if txt_db is not None else root / "txt_db"
    vocab = read_lines(txt_db / "answer_set.txt", LAYOUT)
    if not vocab:
        raise DataLayoutError(f"{txt_db / 'answer_set.txt'}: no answers")
    qas_path = require_file(txt_db / f"{_PREFIX}{split}{_SUFFIX}", LAYOUT)
    examples, intervals = _read_questions(qas_path, vocab)
    event_classes: list[str] = []
    events: dict[str, VideoEvents] = {}
    if (txt_db / "events.json").is_file():
        event_classes = _read_class_names(require_file(txt_db / "hois_full_trans.json", LAYOUT))
        events = _read_events(txt_db / "events.json", intervals, len(event_classes))
    videos = root / "videos"
    return DatasetSplit(
        name="egotaskqa",
        split=split,
        root=root,
        task="open_ended",
        examples=examples,
        events=events,
        event_classes=event_classes,
        answer_vocab=vocab,
        has_answers=True,
        features_path=find_features_file(root, split),
        videos_dir=videos if videos.is_dir() else None,
    )


def available_splits(root: str | Path) -> list[str]:
    """The splits present in an EgoTaskQA folder (``txt_db/formatted_*_qas_encode.json``)."""
    files = (Path(root) / "txt_db").glob(f"{_PREFIX}*{_SUFFIX}")
    return ordered_splits(p.name[len(_PREFIX) : -len(_SUFFIX)] for p in files)


def parse_interval(interval: str) -> tuple[int, int]:
    """The (start, end) frame numbers of ``"<video>|<person>|<start>|<end>"``.

    >>> parse_interval("1-1-2|P1|240|1010")
    (240, 1010)
    """
    parts = interval.split("|")
    if len(parts) < 3 or not parts[-2].isdigit() or not parts[-1].isdigit():
        raise ValueError(f"interval {interval!r} is not '<video>|<person>|<start frame>|<end frame>'")
    return int(parts[-2]), int(parts[-1])


def _read_questions(path: Path, vocab: list[str]) -> tuple[list[QAExample], dict[str, str]]:
    """The questions, and each clip's interval by video id."""
    data = read_json(path, LAYOUT)
    if not isinstance(data, list) or not data:
        raise DataLayoutError(f"{path}: expected a list of questions\nexpected layout:\n{LAYOUT}")
    answer_index = {answer: i for i, answer in enumerate(vocab)}
    examples: list[QAExample] = []
    intervals: dict[str, str] = {}
    seen: set[str] = set()
    for i, item in enumerate(data):
        where = f"{path}: question {i}"
        if not isinstance(item, dict):
            raise DataLayoutError(f"{where}: expected a JSON object")
        for key in ("question", "interval"):
            if key not in item:
                raise DataLayoutError(f"{where}: missing key {key!r}")
        interval = str(item["interval"])
        try:
            start, end = parse_interval(interval)
        except ValueError as e:
            raise DataLayoutError(f"{where}: {e}") from e
        video_id = str(item.get("video_id", interval))
        if intervals.setdefault(video_id, interval) != interval:
            raise DataLayoutError(f"{where}: video_id {video_id!r} names two intervals")
        question_id = str(item.get("question_id", i))
        if question_id in seen:
            raise DataLayoutError(f"{where}: duplicate question_id {question_id!r}")
        seen.add(question_id)
        examples.append(
            QAExample(
                question_id=question_id,
                video_id=video_id,
                question=str(item["question"]),
                options=(),
                answer=_answer(item, answer_index, len(vocab), where),
                question_type=_question_type(item, where),
                interval=(start / LEMMA_FPS, end / LEMMA_FPS),
            )
        )
    return examples, intervals


def _answer(item: dict[str, Any], answer_index: dict[str, int], vocab_size: int, where: str) -> int:
    """``answer_encode`` if the file has it, else the ``answer`` text looked up in the answer set."""
    if "answer_encode" in item:
        value = item["answer_encode"]
        index = int(value) if isinstance(value, str) and value.isdigit() else value
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < vocab_size:
            raise DataLayoutError(f"{where}: answer_encode {value!r} is not a line of answer_set.txt")
        return index
    answer = str(item.get("answer", "")).lower()
    if answer not in answer_index:
        raise DataLayoutError(f"{where}: no answer_encode, and answer {answer!r} is not in answer_set.txt")
    return answer_index[answer]


def _question_type(item: dict[str, Any], where: str) -> str:
    value = item.get("category", item.get("type"))
    if isinstance(value, list) and value:
        return "$".join(str(v) for v in value)
    if isinstance(value, str) and value:
        return value
    raise DataLayoutError(f"{where}: missing key 'category' (or 'type')")


def _read_class_names(path: Path) -> list[str]:
    """Class names from a list, a ``{name: index}`` or an ``{index: name}`` object."""
    data = read_json(path, LAYOUT)
    if isinstance(data, list) and all(isinstance(name, str) for name in data):
        return list(data)
    if isinstance(data, dict) and data:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
            by_index = {int(v): str(k) for k, v in data.items()}
        elif all(str(k).isdigit() and isinstance(v, str) for k, v in data.items()):
            by_index = {int(k): v for k, v in data.items()}
        else:
            by_index = {}
        if sorted(by_index) == list(range(len(data))):
            return [by_index[i] for i in range(len(data))]
    raise DataLayoutError(
        f"{path}: expected class names as a list, {{name: index}} or {{index: name}} (indices 0..N-1)"
    )


def _read_events(path: Path, intervals: dict[str, str], num_classes: int) -> dict[str, VideoEvents]:
    data = read_json(path, LAYOUT)
    if not isinstance(data, dict):
        raise DataLayoutError(f"{path}: expected a JSON object keyed by interval")
    events: dict[str, VideoEvents] = {}
    for video_id, interval in intervals.items():
        entry = data.get(interval)
        if entry is None:
            continue
        where = f"{path}: interval {interval!r}"
        spans, hois = (entry.get("span"), entry.get("hoi")) if isinstance(entry, dict) else (None, None)
        if not isinstance(spans, list) or not isinstance(hois, list) or len(spans) != len(hois):
            raise DataLayoutError(
                f"{where}: expected {{'span': [[start, end], ...], 'hoi': [class, ...]}} of equal length"
            )
        parsed = []
        for k, (span, hoi) in enumerate(zip(spans, hois, strict=True)):
            if not (isinstance(span, list) and len(span) == 2 and all(_is_number(x) for x in span)):
                raise DataLayoutError(f"{where}: span {k} must be [start, end], got {span!r}")
            if isinstance(hoi, bool) or not isinstance(hoi, int) or not 0 <= hoi < num_classes:
                raise DataLayoutError(f"{where}: hoi {k} ({hoi!r}) is not one of the {num_classes} classes")
            parsed.append(Event(hoi, span[0] / LEMMA_FPS, span[1] / LEMMA_FPS))
        _, end = parse_interval(interval)
        if end <= 0:
            raise DataLayoutError(f"{where}: the interval ends at frame {end}")
        events[video_id] = VideoEvents(end / LEMMA_FPS, tuple(parsed))
    return events


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
