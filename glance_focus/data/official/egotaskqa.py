"""EgoTaskQA's official release, which our reader (:mod:`glance_focus.data.egotaskqa`) takes as it is.

Official files (Jia et al., NeurIPS 2022 Datasets and Benchmarks; the ``data/qa/direct/`` (or
``indirect/``) folder of the Google Drive linked from https://sites.google.com/view/egotaskqa and
github.com/Buzz-Beater/EgoTaskQA, made by that repository's ``baselines/preprocess.sh``):

- ``formatted_{train,val,test}_qas_encode.json`` — a JSON list of questions with ``question``,
  ``answer``, ``answer_encode``, ``interval`` (``"<video>|<person>|<start frame>|<end frame>"``),
  ``video_id`` (one per interval), ``question_id``, ``type`` / ``category`` lists, ...
- ``answer_set.txt`` — one answer per line; line index = ``answer_encode``.

They are checked with our reader and copied to ``txt_db/`` unchanged. The release has no event
file in the form Glance-Focus trains on; the reference authors' ``events.json`` (keyed by
interval) and ``hois_full_trans.json`` (from their shared EgoTaskQA folder) are copied too when
they are in the release folder; without them the split has no events (train unsupervised).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..egotaskqa import load_egotaskqa
from .common import MissingOfficialFileError, copy_file, official_file

EGOTASKQA_SOURCE = "EgoTaskQA questions, data/qa/direct/ of the release at https://sites.google.com/view/egotaskqa"
SPLITS = ("train", "val", "test")
EVENT_FILES = ("events.json", "hois_full_trans.json")


@dataclass
class EgotaskqaReport:
    questions: dict[str, int] = field(default_factory=dict)
    events: bool = False


def prepare_egotaskqa(raw: Path, out: Path) -> EgotaskqaReport:
    """Check the EgoTaskQA release in ``raw`` with our reader and copy it to ``out/txt_db``."""
    raw, out = Path(raw), Path(out)
    report = EgotaskqaReport()
    official_file(raw, "answer_set.txt", EGOTASKQA_SOURCE)
    names = [f"formatted_{split}_qas_encode.json" for split in SPLITS]
    for name in names:
        official_file(raw, name, EGOTASKQA_SOURCE)
    present = [name for name in EVENT_FILES if (raw / name).is_file()]
    if len(present) == 1:
        missing = next(n for n in EVENT_FILES if n not in present)
        raise MissingOfficialFileError(
            f"missing {raw / missing}: {present[0]} needs it (both come from the same folder)"
        )
    for split in SPLITS:  # raises on a malformed file, naming it
        report.questions[split] = len(load_egotaskqa(raw, split, txt_db=raw).examples)
    for name in ["answer_set.txt", *names, *present]:
        copy_file(raw / name, out / "txt_db" / name)
    report.events = bool(present)
    return report
