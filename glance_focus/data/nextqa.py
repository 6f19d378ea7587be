"""NExT-QA (Xiao et al., CVPR 2021) multiple-choice questions, from its CSV files.

Five options per question, question types from the ``type`` column (CW, CH, TN, TC, TP, DL,
DC, DO, ...). NExT-QA has no event labels, so Glance-Focus trains on it unsupervised and
``events`` stays empty. Question ids are ``f"{video}_{qid}"`` (``qid`` alone repeats across
videos).

Both CSV headers in circulation are accepted: the official one
(``video,frame_count,width,height,question,answer,qid,type,a0,...,a4``) and the reference
code's, which names the first column ``video_id``. Videos are found through the official
``map_vid_vidorID.json`` (video id -> ``"0000/2440175990"``; also found in lower case) when it
is present.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .features import find_features_file
from .types import (
    VIDEO_EXTENSIONS,
    DataLayoutError,
    DatasetSplit,
    QAExample,
    check_split_name,
    first_file,
    ordered_splits,
    read_json,
)

LAYOUT = """NExT-QA layout:
  ROOT/txt_db/SPLIT_mc.csv (reference code) or ROOT/SPLIT.csv (official), SPLIT in train, val, test
      columns: video (or video_id), question, answer (option index), qid, type, a0..a4
      (frame_count, width, height optional)
  ROOT/map_vid_vidorID.json or ROOT/txt_db/map_vid_vidorID.json   {video: "0000/2440175990"}  (optional)
  ROOT/features/SPLIT.safetensors or ROOT/features.safetensors                                (optional)
  ROOT/videos/  (files at the mapped path, or VIDEO.mp4)                                     (optional)"""

NUM_OPTIONS = 5
MAP_FILES = ("map_vid_vidorID.json", "map_vid_vidorid.json")
"""The video map's official name (NExT-QA's repository), and the lower-case one."""
_OPTION_COLUMNS = tuple(f"a{i}" for i in range(NUM_OPTIONS))


def load_nextqa(root: str | Path, split: str) -> DatasetSplit:
    """Read one split of a NExT-QA folder.

    A split whose ``answer`` column is absent or empty loads with ``has_answers=False``.
    """
    root = Path(root)
    check_split_name(split, "nextqa")
    csv_path = first_file([root / "txt_db" / f"{split}_mc.csv", root / f"{split}.csv"], LAYOUT)
    examples = _read_csv(csv_path)
    map_path = next((p for d in (root, root / "txt_db") for name in MAP_FILES if (p := d / name).is_file()), None)
    video_files = _read_video_map(map_path) if map_path is not None else {}
    videos = root / "videos"
    return DatasetSplit(
        name="nextqa",
        split=split,
        root=root,
        task="multiple_choice",
        examples=examples,
        events={},
        event_classes=[],
        answer_vocab=None,
        has_answers=any(ex.answer is not None for ex in examples),
        features_path=find_features_file(root, split),
        videos_dir=videos if videos.is_dir() else None,
        video_files=video_files,
    )


def available_splits(root: str | Path) -> list[str]:
    """The splits present in a NExT-QA folder."""
    root = Path(root)
    reference = (p.name[: -len("_mc.csv")] for p in (root / "txt_db").glob("*_mc.csv"))
    official = (p.stem for p in root.glob("*.csv"))
    return ordered_splits([*reference, *official])


def _read_csv(path: Path) -> list[QAExample]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or ())
        video_column = "video" if "video" in columns else "video_id"
        missing = {video_column, "question", "qid", "type", *_OPTION_COLUMNS} - columns
        if missing:
            raise DataLayoutError(f"{path}:1: missing columns {sorted(missing)}\nexpected layout:\n{LAYOUT}")
        examples: list[QAExample] = []
        seen: set[str] = set()
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row:
                raise DataLayoutError(f"{where}: more fields than the header has columns")
            video = (row[video_column] or "").strip()
            qid = (row["qid"] or "").strip()
            if not video or not qid:
                raise DataLayoutError(f"{where}: empty {video_column} or qid")
            question_id = f"{video}_{qid}"
            if question_id in seen:
                raise DataLayoutError(f"{where}: duplicate question {question_id!r}")
            seen.add(question_id)
            examples.append(
                QAExample(
                    question_id=question_id,
                    video_id=video,
                    question=row["question"] or "",
                    options=tuple(row[c] or "" for c in _OPTION_COLUMNS),
                    answer=_answer(row.get("answer"), where),
                    question_type=(row["type"] or "").strip(),
                )
            )
    if not examples:
        raise DataLayoutError(f"{path}: no questions")
    if len({ex.answer is None for ex in examples}) > 1:
        raise DataLayoutError(f"{path}: some questions have an answer and some do not")
    return examples


def _answer(value: str | None, where: str) -> int | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not text.isdigit() or not 0 <= int(text) < NUM_OPTIONS:
        raise DataLayoutError(f"{where}: answer {value!r} is not an option index 0..{NUM_OPTIONS - 1}")
    return int(text)


def _read_video_map(path: Path) -> dict[str, str]:
    data = read_json(path, LAYOUT)
    if not isinstance(data, dict):
        raise DataLayoutError(f"{path}: expected a JSON object video id -> relative video path")
    mapping = {}
    for video, rel in data.items():
        rel = str(rel)
        ext = next((e for e in VIDEO_EXTENSIONS if rel.lower().endswith(e)), "")
        mapping[str(video)] = rel[: len(rel) - len(ext)]  # video_path adds the extension
    return mapping
