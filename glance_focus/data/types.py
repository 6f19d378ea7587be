"""What every dataset reader returns, and how a reader reports a bad dataset folder.

Each benchmark stores its questions and event labels in its own layout; the readers in
:mod:`glance_focus.data` turn any of them into one :class:`DatasetSplit` of :class:`QAExample`
and :class:`VideoEvents`, so training, evaluation and the app's Inspect tab never see a
benchmark's file format. A missing file raises :class:`MissingFileError` and a malformed entry
:class:`DataLayoutError`; both name the file (and the line or entry where there is one) and the
layout that was expected.

Times are in seconds unless a reader's module docstring says otherwise.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".3gp", ".ogv")
"""File endings :meth:`DatasetSplit.video_path` looks for, in this order."""

_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class DataLayoutError(ValueError):
    """A dataset folder does not follow the layout its reader expects."""


class MissingFileError(DataLayoutError, FileNotFoundError):
    """A file the layout requires is not there."""


@dataclass(frozen=True)
class Event:
    """One ground-truth event: an action class over a time span.

    Attributes:
        label: index into :attr:`DatasetSplit.event_classes` (background is not a class).
        start_s: start time.
        end_s: end time.
    """

    label: int
    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if self.label < 0:
            raise ValueError(f"event label must be >= 0, got {self.label}")


@dataclass(frozen=True)
class VideoEvents:
    """The ground-truth events of one video, sorted by start time (then end time).

    Attributes:
        duration_s: the video's length; spans are normalised by it.
        events: the events, sorted on construction.
    """

    duration_s: float
    events: tuple[Event, ...]

    def __post_init__(self) -> None:
        if not self.duration_s > 0:
            raise ValueError(f"video duration must be > 0, got {self.duration_s}")
        ordered = tuple(sorted(self.events, key=lambda e: (e.start_s, e.end_s)))
        object.__setattr__(self, "events", ordered)

    def spans_normalized(self) -> list[tuple[float, float]]:
        """Each event's (start, end) divided by the duration and clipped to [0, 1].

        >>> VideoEvents(10.0, (Event(0, 2.0, 12.0),)).spans_normalized()
        [(0.2, 1.0)]
        """
        return [(_unit(e.start_s / self.duration_s), _unit(e.end_s / self.duration_s)) for e in self.events]


def _unit(x: float) -> float:
    return min(max(x, 0.0), 1.0)


@dataclass(frozen=True)
class QAExample:
    """One question about one video, or about a clip of one video.

    Attributes:
        question_id: unique within its split.
        video_id: the source video (its file in :attr:`DatasetSplit.videos_dir`).
        question: the question text.
        options: the answer options (multiple-choice); empty for open-ended questions.
        answer: index into ``options`` (multiple-choice) or into
            :attr:`DatasetSplit.answer_vocab` (open-ended); None where the split hides answers.
        question_type: the benchmark's question category (STAR: the question id's prefix such
            as ``"Interaction"``; NExT-QA: its ``type`` column; AGQA: its ``type`` field;
            EgoTaskQA: its ``category``).
        interval: the clip of the video the question is about, ``(start_s, end_s)`` in the
            video's time (STAR question windows, EgoTaskQA intervals), if known.
        clip_id: the key of what the question is about in :attr:`DatasetSplit.events` and in
            the features file. Defaults to ``video_id``: features and events per video. STAR
            in the reference layout keys both by question id: each question is about its own
            clip, and its event times are relative to the clip's start.
    """

    question_id: str
    video_id: str
    question: str
    options: tuple[str, ...]
    answer: int | None
    question_type: str
    interval: tuple[float, float] | None = None
    clip_id: str = ""

    def __post_init__(self) -> None:
        if not self.clip_id:
            object.__setattr__(self, "clip_id", self.video_id)
        if self.options and self.answer is not None and not 0 <= self.answer < len(self.options):
            raise ValueError(
                f"question {self.question_id}: answer index {self.answer} "
                f"is not one of the {len(self.options)} options (counting from 0)"
            )


@dataclass
class DatasetSplit:
    """One split of one dataset, read from its published layout.

    Attributes:
        name: the dataset (``"star"``, ``"agqa"``, ...).
        split: the split (``"train"``, ``"val"``, ``"test"``, ...).
        root: the dataset folder it was read from.
        task: ``"multiple_choice"`` (score each option) or ``"open_ended"`` (classify over
            ``answer_vocab``).
        examples: the questions, in file order.
        events: ground-truth events per clip id (:attr:`QAExample.clip_id`) of this split;
            empty when the dataset has no event labels (NExT-QA). A clip without labels has no
            entry.
        event_classes: event class names; index = :attr:`Event.label`. Background is not
            included.
        answer_vocab: the answer vocabulary (open-ended only).
        has_answers: False where the split hides its answers (STAR test).
        features_path: the file holding this split's frame features (keyed by clip id), if
            present.
        videos_dir: the folder holding the videos, if present.
        video_files: video id -> file path relative to ``videos_dir`` without extension, where
            it is not simply the video id (NExT-QA's ``map_vid_vidorid.json``).
    """

    name: str
    split: str
    root: Path
    task: Literal["multiple_choice", "open_ended"]
    examples: list[QAExample]
    events: dict[str, VideoEvents]
    event_classes: list[str]
    answer_vocab: list[str] | None
    has_answers: bool
    features_path: Path | None
    videos_dir: Path | None
    video_files: dict[str, str] = field(default_factory=dict)

    def video_path(self, video_id: str) -> Path | None:
        """The existing video file for ``video_id`` (any of :data:`VIDEO_EXTENSIONS`), or None.

        Only files inside :attr:`videos_dir` are returned, whatever the id contains.
        """
        if self.videos_dir is None:
            return None
        base = self.videos_dir.resolve()
        stem = self.video_files.get(video_id, video_id)
        for ext in VIDEO_EXTENSIONS:
            candidate = (base / f"{stem}{ext}").resolve()
            if candidate.is_relative_to(base) and candidate.is_file():
                return candidate
        return None

    def clips(self) -> dict[str, tuple[str, tuple[float, float] | None]]:
        """Each clip id of the split's questions -> (its video id, its window in the video or None
        for the whole video), sorted by clip id: what feature extraction has to encode."""
        found: dict[str, tuple[str, tuple[float, float] | None]] = {}
        for ex in self.examples:
            window = ex.interval if ex.clip_id != ex.video_id else None
            found.setdefault(ex.clip_id, (ex.video_id, window))
        return dict(sorted(found.items()))

    def question_types(self) -> list[str]:
        """The distinct question types of this split, sorted."""
        return sorted({ex.question_type for ex in self.examples})


# ----- file helpers shared by the readers ---------------------------------------------------


def check_split_name(split: str, dataset: str) -> None:
    """Refuse split names that are not plain file-name parts (they become part of file paths)."""
    if not _SPLIT_NAME.fullmatch(split):
        raise ValueError(f"{dataset}: invalid split name {split!r}")


def ordered_splits(names: Iterable[str]) -> list[str]:
    """Split names with train, val and test first, then the others sorted."""
    known = ("train", "val", "test")
    found = set(names)
    return [s for s in known if s in found] + sorted(found - set(known))


def require_file(path: Path, layout: str) -> Path:
    """Return ``path`` if it is a file, else raise :class:`MissingFileError` showing ``layout``."""
    if not path.is_file():
        raise MissingFileError(f"missing file {path}\nexpected layout:\n{layout}")
    return path


def first_file(paths: list[Path], layout: str) -> Path:
    """The first existing file among ``paths``; :class:`MissingFileError` listing all otherwise."""
    for path in paths:
        if path.is_file():
            return path
    tried = "\n".join(f"  {p}" for p in paths)
    raise MissingFileError(f"none of these files exists:\n{tried}\nexpected layout:\n{layout}")


def read_json(path: Path, layout: str) -> Any:
    """Parse a JSON file, naming the file (and line) when it is missing or malformed."""
    require_file(path, layout)
    with path.open("rb") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise DataLayoutError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e
        except UnicodeDecodeError as e:
            raise DataLayoutError(f"{path}: not UTF-8 text ({e.reason})") from e


def read_lines(path: Path, layout: str) -> list[str]:
    """The lines of a text file without line endings; trailing empty lines are dropped."""
    require_file(path, layout)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataLayoutError(f"{path}: not UTF-8 text ({e.reason})") from e
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    Readers of ``path`` see either the old file or the complete new one, never a partial
    write; if the block raises, ``path`` is untouched and the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    mode = tmp.stat().st_mode  # a new file's usual mode (0o666 less the umask)
    try:
        yield tmp
        tmp.chmod(mode)  # some writers (safetensors) recreate the file private (0o600)
        with tmp.open("rb+") as f:  # on disk before the rename, so a crash leaves old or new
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
