"""STAR's official release -> the STAR layout the reference code reads (:mod:`glance_focus.data.star`).

Official files, all in one release folder:

- ``STAR_train.json``, ``STAR_val.json``, ``STAR_test.json`` — STAR v1 questions (NeurIPS 2021;
  https://star-benchmark.s3.us-east.cloud-object-storage.appdomain.cloud/Question_Answer_SituationGraph/,
  linked from https://bobbywu.com/STAR and github.com/csbobby/STAR_Benchmark). A JSON list; each
  question has ``question_id`` (``"Interaction_T1_13"``), ``question``, ``video_id`` (a Charades
  video), ``start`` and ``end`` (its window in that video, seconds), ``choices``
  (``[{"choice_id": 0, "choice": "The clothes.", ...}, ...]``) and ``answer`` (the text of the right
  choice; absent from the test file). Other keys (``situations``, programs) are not used.
- ``action_classes.txt`` — STAR's 111 action classes ``"a000 hold some clothes"`` .. ``a110``, from
  STAR's ``classes.zip`` (``Annotations/classes.zip`` beside the questions; the same file is
  ``annotations/STAR_classes/action_classes.txt`` in github.com/csbobby/STAR_Benchmark, whose last
  line has no final newline).
- ``Charades_v1_train.csv``, ``Charades_v1_test.csv``, ``Charades_v1_classes.txt`` — see
  :mod:`.charades`.

Written under the output folder:

- ``txt_db/{train,val,test}.jsonl`` — one question per line: ``question_id``, ``video_id``,
  ``question``, the options in choice order (by ``choice_id``), ``answer`` = the index of the option
  equal to STAR's answer text (test: :data:`~glance_focus.data.star.HIDDEN_ANSWER`, not an option
  index), and the window ``start`` / ``end`` (seconds in the video).
- ``txt_db/events.json`` — every split's questions by question id: ``{"duration": window length,
  "actions": [[class index, start, end], ...]}``, times in seconds from the window's start.
- ``txt_db/action_mapping.txt`` — STAR's classes, one per line, every line newline-terminated.
- ``txt_db/charades_to_star.txt`` — the class correspondence used, ``"c000 a000"`` per line.

Choices where the source leaves room:

- **Event source.** Events are the Charades action annotations of the question's video (what
  STAR's own generator reads), not STAR's per-keyframe ``situations`` actions: those only say
  which actions are under way at sampled keyframes, not when an action starts or ends.
- **Class correspondence.** STAR's classes are a subset of Charades' renamed to the verb's base
  form (``"Holding some clothes"`` -> ``"hold some clothes"``, ``"Lying on a bed"`` -> ``"lie on a
  bed"``). :func:`charades_to_star` derives it from the two class files: the labels match word for
  word, a Charades ``-ing`` form matching its STAR base form; a STAR class with no such match is
  then matched on its content words (ignoring ``a``, ``some``, ``the``, ...). Every STAR class
  must match exactly one Charades class; Charades classes without a STAR class are dropped.
- **Overlap rule.** An action is kept for a question when it overlaps the window by more than
  zero seconds (``min(end, w_end) > max(start, w_start)``); it is clipped to the window and
  shifted to the window's start. Actions touching the window only at one instant, and Charades
  actions whose end is not after their start, are dropped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..star import HIDDEN_ANSWER
from .charades import CharadesVideo, read_charades_classes, read_charades_videos
from .common import (
    OfficialFileError,
    official_file,
    read_official_json,
    read_official_lines,
    write_json,
    write_jsonl,
    write_text,
)

STAR_SOURCE = (
    "STAR v1 questions, https://star-benchmark.s3.us-east.cloud-object-storage.appdomain.cloud/"
    "Question_Answer_SituationGraph/ (see https://bobbywu.com/STAR)"
)
STAR_CLASSES_SOURCE = "STAR action classes, action_classes.txt in STAR's Annotations/classes.zip"
SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "val")
TIME_DECIMALS = 3
"""Event and window times are written rounded to milliseconds."""

_FILLER_WORDS = frozenset({"a", "an", "the", "some", "their", "up", "something", "someone", "is"})


@dataclass
class StarReport:
    """What a conversion wrote and dropped (printed by ``prepare_data.py``)."""

    questions: dict[str, int] = field(default_factory=dict)
    """split -> questions written."""
    events_kept: int = 0
    """Actions written to events.json (over all questions)."""
    dropped_no_star_class: int = 0
    """Actions overlapping a window whose Charades class has no STAR class."""
    dropped_outside_window: int = 0
    """Actions of a question's video that do not overlap its window (by more than zero seconds)."""
    dropped_empty: int = 0
    """Charades actions whose end is not after their start."""
    classes_matched: int = 0


def read_star_classes(raw: Path) -> list[str]:
    """STAR's ``action_classes.txt``: the labels, index = the number in ``aNNN`` (lines in order)."""
    path = official_file(raw, "action_classes.txt", STAR_CLASSES_SOURCE)
    labels: list[str] = []
    for lineno, line in read_official_lines(path):
        code, _, label = line.partition(" ")
        if code != f"a{len(labels):03d}" or not label.strip():
            raise OfficialFileError(f"{path}:{lineno}: expected 'a{len(labels):03d} <class label>', got {line!r}")
        labels.append(label.strip())
    if not labels:
        raise OfficialFileError(f"{path}: no classes")
    return labels


def charades_to_star(charades: dict[str, str], star: list[str], where: str = "action_classes.txt") -> dict[str, int]:
    """Charades class code -> STAR class index, derived from the labels (module docstring).

    >>> charades_to_star({"c000": "Holding some clothes", "c001": "Lying on a bed"}, ["lie on a bed"])
    {'c001': 0}
    """
    mapping: dict[str, int] = {}
    for index, label in enumerate(star):
        words = _words(label)
        found = [code for code, name in charades.items() if _same_words(_words(name), words)]
        if not found:
            content = [w for w in words if w not in _FILLER_WORDS]
            found = [
                code
                for code, name in charades.items()
                if _same_words([w for w in _words(name) if w not in _FILLER_WORDS], content)
            ]
        if len(found) != 1:
            which = "no Charades class" if not found else f"several Charades classes ({', '.join(found)})"
            raise OfficialFileError(f"{where}: STAR class a{index:03d} {label!r} matches {which}")
        if found[0] in mapping:
            other = mapping[found[0]]
            raise OfficialFileError(
                f"{where}: STAR classes a{other:03d} and a{index:03d} both match Charades class {found[0]}"
            )
        mapping[found[0]] = index
    return dict(sorted(mapping.items()))


def _words(label: str) -> list[str]:
    return [w for w in re.split(r"[\s/]+", label.lower()) if w]


def _same_words(charades_words: list[str], star_words: list[str]) -> bool:
    return len(charades_words) == len(star_words) and all(map(_same_word, charades_words, star_words))


def _same_word(charades_word: str, star_word: str) -> bool:
    """Equal, or a Charades ``-ing`` form of the STAR base form (holding/hold, taking/take,
    putting/put, lying/lie)."""
    if charades_word == star_word:
        return True
    if not charades_word.endswith("ing"):
        return False
    stem = charades_word[:-3]
    doubled = len(stem) > 2 and stem[-1] == stem[-2] and star_word == stem[:-1]
    return star_word in (stem, stem + "e") or doubled or (stem.endswith("y") and star_word == stem[:-1] + "ie")


def prepare_star(raw: Path, out: Path) -> StarReport:
    """Convert the official STAR release in ``raw`` to the STAR layout under ``out`` (module docstring).

    ``STAR_test.json`` may be absent (then no test split is written); every other file is required.
    Raises :class:`~.common.MissingOfficialFileError` / :class:`~.common.OfficialFileError` naming
    the file, before anything is written.
    """
    raw, out = Path(raw), Path(out)
    charades_classes = read_charades_classes(raw)
    star_classes = read_star_classes(raw)
    class_of = charades_to_star(charades_classes, star_classes, str(raw / "action_classes.txt"))
    videos = read_charades_videos(raw, charades_classes)
    report = StarReport(classes_matched=len(class_of))
    rows_by_split: dict[str, list[dict[str, Any]]] = {}
    events: dict[str, dict[str, Any]] = {}
    windows: dict[str, tuple[str, float, float, str]] = {}
    for split in SPLITS:
        name = f"STAR_{split}.json"
        if split not in REQUIRED_SPLITS and not (raw / name).is_file():
            continue
        path = official_file(raw, name, STAR_SOURCE)
        rows = _read_star_questions(path)
        for row in rows:
            qid = row["question_id"]
            clip = (row["video_id"], row["start"], row["end"], name)
            if qid in windows and windows[qid][:3] != clip[:3]:
                raise OfficialFileError(f"{path}: question {qid} is also in {windows[qid][3]} with another clip")
            windows[qid] = clip
            video = videos.get(row["video_id"])
            if video is None:
                raise OfficialFileError(f"{path}: question {qid}: video {row['video_id']} is in neither Charades CSV")
            events[qid] = _window_events(video, row["start"], row["end"], class_of, report)
        rows_by_split[split] = rows
        report.questions[split] = len(rows)
    txt_db = out / "txt_db"
    for split, rows in rows_by_split.items():
        write_jsonl(txt_db / f"{split}.jsonl", rows)
    write_json(txt_db / "events.json", events)
    write_text(txt_db / "action_mapping.txt", "".join(f"a{i:03d} {label}\n" for i, label in enumerate(star_classes)))
    write_text(txt_db / "charades_to_star.txt", "".join(f"{c} a{i:03d}\n" for c, i in class_of.items()))
    return report


def _read_star_questions(path: Path) -> list[dict[str, Any]]:
    """The questions of one official STAR file as our jsonl rows."""
    data = read_official_json(path)
    if not isinstance(data, list) or not data:
        raise OfficialFileError(f"{path}: expected a non-empty JSON list of questions")
    with_answer = {isinstance(q, dict) and "answer" in q for q in data}
    if len(with_answer) > 1:
        raise OfficialFileError(f"{path}: some questions have an 'answer' and some do not")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, q in enumerate(data):
        where = f"{path}: question {i}"
        if not isinstance(q, dict):
            raise OfficialFileError(f"{where}: expected a JSON object")
        for key in ("question_id", "question", "video_id", "start", "end", "choices"):
            if key not in q:
                raise OfficialFileError(f"{where}: missing key {key!r}")
        qid = str(q["question_id"])
        where = f"{path}: question {qid}"
        if qid in seen:
            raise OfficialFileError(f"{where}: duplicate question_id")
        seen.add(qid)
        start, end = _number(q["start"], f"{where}: start"), _number(q["end"], f"{where}: end")
        if not 0 <= start < end:
            raise OfficialFileError(f"{where}: window start {start} / end {end} is not 0 <= start < end")
        options = _options(q["choices"], where)
        answer = HIDDEN_ANSWER
        if "answer" in q:
            text = str(q["answer"]).strip()
            matches = [k for k, option in enumerate(options) if option.strip() == text]
            if len(matches) != 1:
                raise OfficialFileError(f"{where}: answer {q['answer']!r} is not exactly one of its choices")
            answer = matches[0]
        rows.append(
            {
                "question_id": qid,
                "video_id": str(q["video_id"]),
                "question": str(q["question"]),
                "options": options,
                "answer": answer,
                "start": round(start, TIME_DECIMALS),
                "end": round(end, TIME_DECIMALS),
            }
        )
    return rows


def _options(choices: Any, where: str) -> list[str]:
    """The choice texts ordered by ``choice_id`` (list order where there is none)."""
    if not isinstance(choices, list) or len(choices) < 2:
        raise OfficialFileError(f"{where}: 'choices' must be a list of at least two choices")
    if not all(isinstance(c, dict) and isinstance(c.get("choice"), str) for c in choices):
        raise OfficialFileError(f"{where}: every choice needs a 'choice' text")
    if all("choice_id" in c for c in choices):
        ids = [c["choice_id"] for c in choices]
        if len(set(map(str, ids))) != len(ids):
            raise OfficialFileError(f"{where}: repeated choice_id")
        try:
            choices = sorted(choices, key=lambda c: int(c["choice_id"]))
        except (TypeError, ValueError):
            raise OfficialFileError(f"{where}: choice_id must be integers, got {ids!r}") from None
    return [c["choice"] for c in choices]


def _window_events(
    video: CharadesVideo, start: float, end: float, class_of: dict[str, int], report: StarReport
) -> dict[str, Any]:
    """The clip's events: the video's actions overlapping ``[start, end]``, clipped and shifted."""
    actions = []
    for action in video.actions:
        if action.end_s <= action.start_s:
            report.dropped_empty += 1
            continue
        lo, hi = max(action.start_s, start), min(action.end_s, end)
        if hi <= lo:
            report.dropped_outside_window += 1
            continue
        if action.code not in class_of:
            report.dropped_no_star_class += 1
            continue
        actions.append([class_of[action.code], round(lo - start, TIME_DECIMALS), round(hi - start, TIME_DECIMALS)])
    actions.sort(key=lambda a: (a[1], a[2], a[0]))
    report.events_kept += len(actions)
    return {"duration": round(end - start, TIME_DECIMALS), "actions": actions}


def _number(value: Any, where: str) -> float:
    """A finite number of seconds (numbers, or numeric text)."""
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number):
        raise OfficialFileError(f"{where}: expected a number of seconds, got {value!r}")
    return number
