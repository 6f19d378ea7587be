"""Dataset names -> readers: ``load_split("star", root, "val")``.

``synthetic`` is our procedural world (:mod:`glance_focus.synthetic`); it is written in the
STAR layout and read by the STAR reader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from . import agqa, egotaskqa, nextqa, star
from .types import DatasetSplit


@dataclass(frozen=True)
class Reader:
    """How to read one dataset: its loader, how to list its splits and its expected layout."""

    load: Callable[[Path, str], DatasetSplit]
    splits: Callable[[Path], list[str]]
    layout: str


READERS: dict[str, Reader] = {
    "star": Reader(star.load_star, star.available_splits, star.LAYOUT),
    "synthetic": Reader(partial(star.load_star, name="synthetic"), star.available_splits, star.LAYOUT),
    "agqa": Reader(agqa.load_agqa, agqa.available_splits, agqa.LAYOUT),
    "nextqa": Reader(nextqa.load_nextqa, nextqa.available_splits, nextqa.LAYOUT),
    "egotaskqa": Reader(egotaskqa.load_egotaskqa, egotaskqa.available_splits, egotaskqa.LAYOUT),
}
DATASETS = tuple(READERS)
"""The dataset names :func:`load_split` accepts."""


def get_reader(dataset: str) -> Reader:
    """The reader of ``dataset``; ValueError naming the known datasets otherwise."""
    try:
        return READERS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}") from None


def load_split(dataset: str, root: str | Path, split: str) -> DatasetSplit:
    """Read ``split`` of ``dataset`` from its published layout under ``root``.

    Raises:
        ValueError: unknown dataset.
        MissingFileError: a required file is missing (the message shows the expected layout).
        DataLayoutError: a file is malformed (the message names the file and line or entry).
    """
    return get_reader(dataset).load(Path(root), split)


def available_splits(dataset: str, root: str | Path) -> list[str]:
    """The splits of ``dataset`` present under ``root`` (train, val, test first)."""
    return get_reader(dataset).splits(Path(root))
