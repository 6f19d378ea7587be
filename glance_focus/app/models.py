"""The checkpoints the operator offers: one :class:`ModelChoice` per checkpoint directory (its
``config.json`` only) and :class:`Models`, which builds one :class:`Predictor` per checkpoint on
first use."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from glance_focus.app.settings import FEATURE_CACHE_BYTES, VIDEO_LIMITS
from glance_focus.checkpoint import CONFIG_NAME, CheckpointInfo, hub_checkpoint_name, read_checkpoint_info
from glance_focus.encoders import resolve_device
from glance_focus.forksafe import ForkSafeLock
from glance_focus.pipeline import Predictor

log = logging.getLogger(__name__)

MODEL_CARD_NAME = "MODEL_CARD.md"


@dataclass(frozen=True)
class ModelChoice:
    """A checkpoint offered in the model selector (its ``config.json`` only; weights load on use)."""

    name: str
    path: Path
    info: CheckpointInfo

    @property
    def synthetic(self) -> bool:
        """Whether the model was trained on the bundled synthetic world."""
        return str(self.info.metadata.get("dataset", "")).startswith("synthetic")

    @property
    def card(self) -> str | None:
        path = self.path / MODEL_CARD_NAME
        return path.read_text(encoding="utf-8") if path.is_file() else None


def find_checkpoints(paths: Iterable[str | Path]) -> list[Path]:
    """Checkpoint directories: each path is one (it holds ``config.json``) or a folder of them."""
    found: dict[Path, None] = {}  # ordered, without repeats
    for path in map(Path, paths):
        if (path / CONFIG_NAME).is_file():
            found[path.resolve()] = None
        elif path.is_dir():
            found.update((child.resolve(), None) for child in sorted(path.iterdir()) if (child / CONFIG_NAME).is_file())
    return list(found)


class Models:
    """The checkpoints the operator offered; one :class:`Predictor` per checkpoint, built on first use."""

    def __init__(
        self,
        paths: Iterable[str | Path],
        device: str = "auto",
        cache_dir: str | Path | None = None,
    ) -> None:
        self.device = str(resolve_device(device))
        self.cache_dir = cache_dir
        self.choices: dict[str, ModelChoice] = {}
        for path in find_checkpoints(paths):
            info = read_checkpoint_info(path)
            name = hub_checkpoint_name(path) or path.name
            name = name if name not in self.choices else f"{path.parent.name}/{path.name}"
            self.choices[name] = ModelChoice(name, path, info)
        self._predictors: dict[str, Predictor] = {}
        self._lock = ForkSafeLock()

    @property
    def default(self) -> str | None:
        return next(iter(self.choices), None)

    def loaded(self, name: str) -> bool:
        return name in self._predictors

    def predictor(self, name: str) -> Predictor:
        """The model ``name``, loading it (weights only; encoders on first use) if needed."""
        predictor = self._predictors.get(name)
        if predictor is not None:  # loaded: no lock (a forked GPU worker never waits on one)
            return predictor
        with self._lock:
            if name not in self._predictors:
                choice = self.choices[name]
                log.info("loading %s from %s on %s", name, choice.path, self.device)
                self._predictors[name] = Predictor(
                    choice.path,
                    device=self.device,
                    cache_dir=self.cache_dir,
                    cache_bytes=FEATURE_CACHE_BYTES,
                    video_limits=VIDEO_LIMITS,
                )
            return self._predictors[name]
