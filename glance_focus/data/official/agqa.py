"""AGQA 2.0's official release -> the AGQA layout the reference code reads (:mod:`glance_focus.data.agqa`).

Official files, all in one release folder:

- ``train_balanced.txt``, ``test_balanced.txt`` — AGQA 2.0 balanced questions (Grunde-McLaughlin
  et al.; ``AGQA_balanced.zip`` from https://agqa-decomp.cs.washington.edu/data/agqa2/, linked
  from the AGQA project page https://cs.stanford.edu/people/ranjaykrishna/agqa/). One JSON object
  keyed by question id: ``{"question", "answer", "video_id", "global", "local", "ans_type",
  "steps", "semantic", "structural", "program", ...}``. Our reader takes them as they are.
- ``Charades_v1_train.csv``, ``Charades_v1_test.csv``, ``Charades_v1_classes.txt`` — see
  :mod:`.charades` (AGQA's videos are Charades videos).

Written under the output folder (``txt_db/``):

- ``train_balanced.txt``, ``test_balanced.txt`` — copied unchanged.
- ``agqa_balanced_txt_vocab.json`` — ``{"answer_token_to_idx": {answer: index}}``: every answer of
  the training questions, most frequent first (ties by text), then the answers that occur only in
  the test questions (sorted), so that every test question is scored: a model never trained on a
  test-only answer gets those questions wrong rather than skipped.
- ``charades.json`` — every Charades video: ``{"subset", "duration": the CSV's length, "actions":
  [[class index, start, end], ...]}`` (seconds, whole video; actions whose end is not after their
  start dropped).
- ``action_mapping.txt`` — Charades' 157 classes as ``"c000 Holding some clothes"`` lines.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .charades import read_charades_classes, read_charades_videos
from .common import OfficialFileError, copy_file, official_file, read_official_json, write_json, write_text

AGQA_SOURCE = "AGQA 2.0 balanced questions, AGQA_balanced.zip from https://agqa-decomp.cs.washington.edu/data/agqa2/"
SPLITS = ("train", "test")


@dataclass
class AgqaReport:
    questions: dict[str, int] = field(default_factory=dict)
    answers: int = 0
    """Size of the answer vocabulary."""
    test_only_answers: int = 0
    videos_with_events: int = 0
    dropped_empty: int = 0
    """Charades actions whose end is not after their start."""


def prepare_agqa(raw: Path, out: Path) -> AgqaReport:
    """Convert the AGQA 2.0 balanced release in ``raw`` to the AGQA layout under ``out`` (module docstring)."""
    raw, out = Path(raw), Path(out)
    classes = read_charades_classes(raw)
    videos = read_charades_videos(raw, classes)
    report = AgqaReport()
    answers: dict[str, Counter[str]] = {}
    paths: dict[str, Path] = {}
    for split in SPLITS:
        path = official_file(raw, f"{split}_balanced.txt", AGQA_SOURCE)
        answers[split] = _answer_counts(path)
        report.questions[split] = sum(answers[split].values())
        paths[split] = path
    train_answers = sorted(answers["train"], key=lambda a: (-answers["train"][a], a))
    test_only = sorted(set(answers["test"]) - set(answers["train"]))
    vocab = train_answers + test_only
    report.answers, report.test_only_answers = len(vocab), len(test_only)
    class_index = {code: i for i, code in enumerate(classes)}
    charades: dict[str, dict[str, Any]] = {}
    for video in videos.values():
        actions = []
        for a in video.actions:
            if a.end_s <= a.start_s:
                report.dropped_empty += 1
                continue
            actions.append([class_index[a.code], a.start_s, a.end_s])
        actions.sort(key=lambda a: (a[1], a[2], a[0]))
        report.videos_with_events += bool(actions)
        charades[video.video_id] = {"subset": video.subset, "duration": video.length_s, "actions": actions}
    txt_db = out / "txt_db"
    for path in paths.values():
        copy_file(path, txt_db / path.name)
    write_json(txt_db / "agqa_balanced_txt_vocab.json", {"answer_token_to_idx": {a: i for i, a in enumerate(vocab)}})
    write_json(txt_db / "charades.json", charades)
    write_text(txt_db / "action_mapping.txt", "".join(f"{code} {label}\n" for code, label in classes.items()))
    return report


def _answer_counts(path: Path) -> Counter[str]:
    """How often each answer occurs in one balanced file (checking the keys our reader needs)."""
    data = read_official_json(path)
    if not isinstance(data, dict) or not data:
        raise OfficialFileError(f"{path}: expected a non-empty JSON object keyed by question id")
    counts: Counter[str] = Counter()
    for qid, entry in data.items():
        where = f"{path}: question {qid!r}"
        if not isinstance(entry, dict):
            raise OfficialFileError(f"{where}: expected a JSON object")
        for key in ("question", "answer", "video_id"):
            if key not in entry:
                raise OfficialFileError(f"{where}: missing key {key!r}")
        if "type" not in entry and "semantic" not in entry:
            raise OfficialFileError(f"{where}: missing key 'semantic'")
        counts[str(entry["answer"])] += 1
    return counts
