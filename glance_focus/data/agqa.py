"""AGQA 2.0 (Grunde-McLaughlin et al., CVPR 2021) balanced split, as the reference code reads it.

Questions are open-ended: the answer is a class of the answer vocabulary. AGQA has no
validation split (the reference trains on ``train`` and tests on ``test``; carve a validation
set out of ``train`` yourself, or add ``txt_db/val_balanced.txt``). Event labels are the
Charades action annotations of the same videos, in STAR's ``events.json`` form.

A question's type is its ``type`` field (the question template); where a file lacks it, its
``semantic`` field (object / relation / action) is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .features import find_features_file
from .star import read_event_labels
from .types import (
    DataLayoutError,
    DatasetSplit,
    QAExample,
    check_split_name,
    first_file,
    ordered_splits,
    read_json,
    require_file,
)

LAYOUT = """AGQA 2.0 layout (as the reference code reads it):
  ROOT/txt_db/{train,test}_balanced.txt     the balanced questions, one JSON object:
                                            {question_id: {"question", "answer", "video_id", "type", ...}}
  ROOT/txt_db/agqa_balanced_txt_vocab.json  {"answer_token_to_idx": {answer: index}, ...}
                                            (or ROOT/txt_db/vocab.json)
  ROOT/txt_db/charades.json                 Charades events (or txt_db/events.json):
                                            {video_id: {"duration": s, "actions": [[class, start_s, end_s]]}}
  ROOT/txt_db/action_mapping.txt            one class per line: "c000 Holding some clothes"
  ROOT/features/SPLIT.safetensors, ROOT/features.safetensors or ROOT/vis_db/frcnn.pth   (optional)
  ROOT/videos/VIDEO_ID.mp4                                                              (optional)"""

REFERENCE_FEATURES = ("vis_db/frcnn.pth",)
_SPLIT_SUFFIX = "_balanced.txt"


def load_agqa(root: str | Path, split: str) -> DatasetSplit:
    """Read one split of an AGQA 2.0 folder (``txt_db/SPLIT_balanced.txt``).

    Event labels are optional (no ``charades.json`` / ``events.json`` → no events); when
    present, ``action_mapping.txt`` must be too.
    """
    root = Path(root)
    check_split_name(split, "agqa")
    txt_db = root / "txt_db"
    questions_path = require_file(txt_db / f"{split}{_SPLIT_SUFFIX}", LAYOUT)
    vocab_path = first_file([txt_db / "agqa_balanced_txt_vocab.json", txt_db / "vocab.json"], LAYOUT)
    vocab = _read_answer_vocab(vocab_path)
    examples = _read_questions(questions_path, {answer: i for i, answer in enumerate(vocab)})
    charades = txt_db / "charades.json"
    event_classes, events = read_event_labels(
        charades if charades.is_file() else txt_db / "events.json",
        txt_db / "action_mapping.txt",
        {ex.video_id for ex in examples},
        LAYOUT,
    )
    videos = root / "videos"
    return DatasetSplit(
        name="agqa",
        split=split,
        root=root,
        task="open_ended",
        examples=examples,
        events=events,
        event_classes=event_classes,
        answer_vocab=vocab,
        has_answers=True,
        features_path=find_features_file(root, split, REFERENCE_FEATURES),
        videos_dir=videos if videos.is_dir() else None,
    )


def available_splits(root: str | Path) -> list[str]:
    """The splits present in an AGQA folder (``txt_db/*_balanced.txt``)."""
    files = (Path(root) / "txt_db").glob(f"*{_SPLIT_SUFFIX}")
    return ordered_splits(p.name[: -len(_SPLIT_SUFFIX)] for p in files)


def _read_answer_vocab(path: Path) -> list[str]:
    """The answers ordered by index, from ``{"answer_token_to_idx": {answer: index}}``."""
    data = read_json(path, LAYOUT)
    token_to_idx = data.get("answer_token_to_idx") if isinstance(data, dict) else None
    if not isinstance(token_to_idx, dict) or not token_to_idx:
        raise DataLayoutError(f"{path}: no 'answer_token_to_idx' object\nexpected layout:\n{LAYOUT}")
    vocab: list[str | None] = [None] * len(token_to_idx)
    for answer, index in token_to_idx.items():
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(vocab):
            raise DataLayoutError(f"{path}: answer {answer!r}: index {index!r} not in 0..{len(vocab) - 1}")
        if vocab[index] is not None:
            raise DataLayoutError(f"{path}: answers {vocab[index]!r} and {answer!r} share index {index}")
        vocab[index] = answer
    return [str(answer) for answer in vocab]


def _read_questions(path: Path, answer_index: dict[str, int]) -> list[QAExample]:
    data = read_json(path, LAYOUT)
    if not isinstance(data, dict) or not data:
        raise DataLayoutError(
            f"{path}: expected a non-empty JSON object keyed by question id\nexpected layout:\n{LAYOUT}"
        )
    return [_parse_question(str(qid), entry, path, answer_index) for qid, entry in data.items()]


def _parse_question(question_id: str, entry: Any, path: Path, answer_index: dict[str, int]) -> QAExample:
    where = f"{path}: question {question_id!r}"
    if not isinstance(entry, dict):
        raise DataLayoutError(f"{where}: expected a JSON object")
    for key in ("question", "answer", "video_id"):
        if key not in entry:
            raise DataLayoutError(f"{where}: missing key {key!r}")
    qtype = entry.get("type", entry.get("semantic"))
    if qtype is None:
        raise DataLayoutError(f"{where}: missing key 'type' (or 'semantic')")
    answer = str(entry["answer"])
    if answer not in answer_index:
        raise DataLayoutError(f"{where}: answer {answer!r} is not in the answer vocabulary")
    return QAExample(
        question_id=question_id,
        video_id=str(entry["video_id"]),
        question=str(entry["question"]),
        options=(),
        answer=answer_index[answer],
        question_type=str(qtype),
    )
