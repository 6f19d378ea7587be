"""Converters from each benchmark's official release files to the layout our readers take.

``prepare(dataset, raw, out)`` runs one; ``train/prepare_data.py`` is its command line. Each
module's docstring names the official files it reads, where they come from, what it writes and
the choices it makes where the source leaves room.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from .agqa import prepare_agqa
from .common import MissingOfficialFileError, OfficialFileError
from .egotaskqa import prepare_egotaskqa
from .nextqa import prepare_nextqa
from .star import prepare_star

PREPARERS = {
    "star": prepare_star,
    "agqa": prepare_agqa,
    "nextqa": prepare_nextqa,
    "egotaskqa": prepare_egotaskqa,
}
"""Dataset name (as :func:`glance_focus.data.load_split` takes it) -> converter."""


def prepare(dataset: str, raw: str | Path, out: str | Path) -> dict[str, Any]:
    """Convert the official release of ``dataset`` in folder ``raw`` into our layout under ``out``.

    Returns the converter's report as a dict (counts of what was written and dropped).

    Raises:
        ValueError: unknown dataset.
        MissingOfficialFileError: an official file is missing (the message names it and its source).
        OfficialFileError: an official file is malformed (the message names it, and the line or entry).
    """
    if dataset not in PREPARERS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(PREPARERS)}")
    raw = Path(raw)
    if not raw.is_dir():
        raise MissingOfficialFileError(f"release folder {raw} does not exist")
    return asdict(PREPARERS[dataset](raw, Path(out)))


__all__ = ["PREPARERS", "MissingOfficialFileError", "OfficialFileError", "prepare"]
