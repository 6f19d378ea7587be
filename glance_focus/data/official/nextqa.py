"""NExT-QA's official release, which our reader (:mod:`glance_focus.data.nextqa`) takes as it is.

Official files (Xiao et al., CVPR 2021; ``dataset/nextqa/`` of https://github.com/doc-doc/NExT-QA,
the test answers from the test-data release linked in its README):

- ``train.csv``, ``val.csv``, ``test.csv`` — multiple-choice questions, columns ``video``,
  ``frame_count``, ``width``, ``height``, ``question``, ``answer`` (option index), ``qid``, ``type``,
  ``a0`` .. ``a4``.
- ``map_vid_vidorID.json`` — video id -> its path in the released videos (``"0000/2440175990"``).

The files are checked with our reader and copied to the output folder unchanged (``test.csv``
and the map are optional). NExT-QA has no event labels: train it unsupervised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..nextqa import MAP_FILES, load_nextqa
from .common import copy_file, official_file

NEXTQA_SOURCE = "NExT-QA annotations, dataset/nextqa/ of https://github.com/doc-doc/NExT-QA"
SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "val")


@dataclass
class NextqaReport:
    questions: dict[str, int] = field(default_factory=dict)
    video_map: bool = False


def prepare_nextqa(raw: Path, out: Path) -> NextqaReport:
    """Check the NExT-QA release in ``raw`` with our reader and copy it to ``out``."""
    raw, out = Path(raw), Path(out)
    report = NextqaReport()
    splits = [s for s in SPLITS if s in REQUIRED_SPLITS or (raw / f"{s}.csv").is_file()]
    for split in splits:
        official_file(raw, f"{split}.csv", NEXTQA_SOURCE)
        report.questions[split] = len(load_nextqa(raw, split).examples)  # raises on a malformed file
    map_file = next((raw / name for name in MAP_FILES if (raw / name).is_file()), None)
    for split in splits:
        copy_file(raw / f"{split}.csv", out / f"{split}.csv")
    if map_file is not None:
        copy_file(map_file, out / map_file.name)
        report.video_map = True
    return report
