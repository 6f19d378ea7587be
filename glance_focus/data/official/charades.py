"""Charades (Sigurdsson et al., ECCV 2016) annotations, which STAR and AGQA take their events from.

Official files (Charades v1, ``Charades.zip`` from https://prior.allenai.org/projects/charades):

- ``Charades_v1_train.csv`` and ``Charades_v1_test.csv``: one video per row, columns ``id``,
  ``subject``, ``scene``, ``quality``, ``relevance``, ``verified``, ``script``, ``objects``,
  ``descriptions``, ``actions``, ``length``. ``actions`` is ``"c092 11.90 21.20;c147 0.00 12.60"``
  (class, start s, end s; empty for a video without actions) and ``length`` the video's length in
  seconds. ``script`` and ``descriptions`` are free text in quotes (commas, quotes, newlines).
- ``Charades_v1_classes.txt``: the 157 action classes, ``"c000 Holding some clothes"`` per line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .common import OfficialFileError, official_file, read_official_csv, read_official_lines

CHARADES_SOURCE = "Charades v1 annotations, Charades.zip from https://prior.allenai.org/projects/charades"
CSV_FILES = {"training": "Charades_v1_train.csv", "testing": "Charades_v1_test.csv"}
"""Charades' subset name -> its official CSV file."""
CLASSES_FILE = "Charades_v1_classes.txt"


@dataclass(frozen=True)
class CharadesAction:
    code: str
    """Charades class code, ``"c000"`` .. ``"c156"``."""
    start_s: float
    end_s: float


@dataclass(frozen=True)
class CharadesVideo:
    video_id: str
    subset: str
    """``"training"`` or ``"testing"`` (the CSV it came from)."""
    length_s: float
    actions: tuple[CharadesAction, ...]


def read_charades_classes(raw: Path) -> dict[str, str]:
    """``Charades_v1_classes.txt`` as code -> label, in file order."""
    path = official_file(raw, CLASSES_FILE, CHARADES_SOURCE)
    classes: dict[str, str] = {}
    for lineno, line in read_official_lines(path):
        code, _, label = line.partition(" ")
        if not (len(code) == 4 and code[0] == "c" and code[1:].isdigit()) or not label.strip():
            raise OfficialFileError(f"{path}:{lineno}: expected 'cNNN <class label>', got {line!r}")
        if code in classes:
            raise OfficialFileError(f"{path}:{lineno}: duplicate class {code}")
        classes[code] = label.strip()
    if not classes:
        raise OfficialFileError(f"{path}: no classes")
    return classes


def read_charades_videos(raw: Path, classes: dict[str, str]) -> dict[str, CharadesVideo]:
    """Every video of both official CSVs, by video id.

    Actions of a class not in ``classes`` are refused; actions whose end is not after their start
    (a few exist in the release) are kept as they are: callers clip and drop them.
    """
    videos: dict[str, CharadesVideo] = {}
    for subset, name in CSV_FILES.items():
        path = official_file(raw, name, CHARADES_SOURCE)
        for lineno, row in read_official_csv(path, ("id", "actions", "length")):
            where = f"{path}:{lineno}"
            video_id = row["id"].strip()
            if not video_id:
                raise OfficialFileError(f"{where}: empty id")
            if video_id in videos:
                raise OfficialFileError(f"{where}: video {video_id} appears twice in the Charades CSVs")
            length = _seconds(row["length"], f"{where}: length")
            actions = tuple(_parse_action(a, classes, where) for a in row["actions"].split(";") if a.strip())
            videos[video_id] = CharadesVideo(video_id, subset, length, actions)
    return videos


def _parse_action(text: str, classes: dict[str, str], where: str) -> CharadesAction:
    parts = text.split()
    if len(parts) != 3:
        raise OfficialFileError(f"{where}: action {text.strip()!r} is not 'cNNN start end'")
    code, start, end = parts
    if code not in classes:
        raise OfficialFileError(f"{where}: action class {code} is not in {CLASSES_FILE}")
    return CharadesAction(
        code, _seconds(start, f"{where}: action {code} start"), _seconds(end, f"{where}: action {code} end")
    )


def _seconds(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise OfficialFileError(f"{where}: {text.strip()!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise OfficialFileError(f"{where}: {text.strip()!r} is not a number of seconds")
    return value
