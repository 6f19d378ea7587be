"""On-disk cache of a video's frame features, so a second question skips decoding and CLIP.

One safetensors file per key, named by a hash of the key: tensors ``features`` ``[N, F]``
float32, ``timestamps`` ``[N]`` float64 seconds and optionally ``thumbnails`` ``[N, h, w, 3]``
uint8 (for the timeline); the key itself and free-form JSON ``info`` (e.g. duration, fps) live in
the safetensors header. Files are written to a temporary file in the same directory and renamed
into place, so concurrent readers (threads or processes) only ever see whole files; a file that
does not parse is treated as a miss and removed. The directory is bounded by ``max_bytes``:
after each write the least recently used entries (by modification time, which every hit
refreshes) are deleted until the total fits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

logger = logging.getLogger(__name__)

FORMAT = "glance-focus-features/1"
ENTRY_SUFFIX = ".safetensors"
TEMP_SUFFIX = ".tmp"
STALE_TEMP_AGE_S = 3600.0
"""Temporary files older than this are left-overs of crashed writers and are deleted."""


@dataclass(frozen=True)
class FeatureKey:
    """What the cached features depend on."""

    video_hash: str
    """Content hash of the video file (:func:`glance_focus.video.video_content_hash`)."""
    encoder: str
    """Frame encoder spec, e.g. ``ViT-B-32:random-seed0``."""
    fingerprint: str
    """Frame encoder weights fingerprint."""
    sampling: str
    """How frames were chosen, e.g. ``uniform32``."""

    def filename(self) -> str:
        """Entry file name: a hash of the cache format and every field."""
        payload = json.dumps([FORMAT, asdict(self)], sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:40] + ENTRY_SUFFIX


@dataclass(frozen=True)
class CachedFeatures:
    """One cache entry."""

    key: FeatureKey
    features: Tensor
    """``[N, F]`` float32 frame features."""
    timestamps: Tensor
    """``[N]`` float64 time of each frame in seconds."""
    thumbnails: Tensor | None = None
    """``[N, h, w, 3]`` uint8 RGB thumbnails, if stored."""
    info: dict[str, Any] = field(default_factory=dict)
    """Free-form JSON metadata stored with the entry (e.g. video duration, fps)."""


def _as_tensor(value: Tensor | np.ndarray | Sequence[float], dtype: torch.dtype) -> Tensor:
    tensor = value.detach() if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    return tensor.to("cpu", dtype).contiguous()


class FeatureCache:
    """A directory of cached frame features, bounded to ``max_bytes`` with LRU eviction.

    Safe for concurrent use by threads and processes sharing ``root``.
    """

    def __init__(self, root: str | os.PathLike[str], max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: FeatureKey) -> Path:
        """Where ``key``'s entry lives (whether or not it exists)."""
        return self.root / key.filename()

    def get(self, key: FeatureKey) -> CachedFeatures | None:
        """The entry for ``key``, or None. A hit refreshes the entry's LRU time; a corrupt file is removed."""
        path = self.path(key)
        try:
            with open(path, "rb") as file:
                inode = os.fstat(file.fileno()).st_ino
                data = file.read()
        except FileNotFoundError:
            return None
        try:
            entry = _decode(data)
        except Exception as error:  # whatever is wrong with the bytes, the entry is unusable
            logger.warning("Removing unreadable feature cache entry %s: %s", path, error)
            self._remove_if_same(path, inode)
            return None
        if entry.key != key:  # a filename hash collision: not ours, leave it
            return None
        with contextlib.suppress(OSError):
            _stamp(path)
        return entry

    def put(
        self,
        key: FeatureKey,
        features: Tensor | np.ndarray,
        timestamps: Tensor | np.ndarray | Sequence[float],
        thumbnails: Tensor | np.ndarray | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> bool:
        """Store an entry atomically, then evict least recently used entries beyond ``max_bytes``.

        ``features`` ``[N, F]`` (stored as float32), ``timestamps`` ``[N]`` seconds (float64),
        ``thumbnails`` ``[N, h, w, 3]`` uint8 or None, ``info`` JSON-serialisable. Returns False
        (and stores nothing) when the entry alone is larger than ``max_bytes``.
        """
        tensors = {
            "features": _as_tensor(features, torch.float32),
            "timestamps": _as_tensor(timestamps, torch.float64),
        }
        num_frames = tensors["features"].shape[0]
        if tensors["features"].dim() != 2 or tensors["timestamps"].shape != (num_frames,):
            raise ValueError(
                f"Expected features [N, F] and timestamps [N], got {tuple(tensors['features'].shape)} "
                f"and {tuple(tensors['timestamps'].shape)}"
            )
        if thumbnails is not None:
            thumbs = _as_tensor(thumbnails, torch.uint8)
            if thumbs.dim() != 4 or thumbs.shape[0] != num_frames or thumbs.shape[-1] != 3:
                raise ValueError(f"Expected thumbnails [{num_frames}, h, w, 3], got {tuple(thumbs.shape)}")
            tensors["thumbnails"] = thumbs
        metadata = {"format": FORMAT, "key": json.dumps(asdict(key)), "info": json.dumps(dict(info or {}))}
        data = save_safetensors(tensors, metadata=metadata)
        if len(data) > self.max_bytes:
            logger.warning("Feature cache entry of %d bytes exceeds max_bytes=%d", len(data), self.max_bytes)
            return False
        self._write_atomically(self.path(key), data)
        self._evict()
        return True

    def _write_atomically(self, path: Path, data: bytes) -> None:
        descriptor, temp_name = tempfile.mkstemp(dir=self.root, prefix=f".{path.stem}.", suffix=TEMP_SUFFIX)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            _stamp(temp_name)
            os.replace(temp_name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise

    def _evict(self) -> None:
        """Delete oldest entries until the total fits, and left-over temporary files."""
        entries = []
        now = time.time()
        for path in self.root.iterdir():
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed by another process meanwhile
                continue
            if path.name.endswith(ENTRY_SUFFIX):
                entries.append((stat.st_mtime_ns, path.name, stat.st_size, path))
            elif path.name.endswith(TEMP_SUFFIX) and now - stat.st_mtime > STALE_TEMP_AGE_S:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        total = sum(size for _, _, size, _ in entries)
        for _, _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size

    @staticmethod
    def _remove_if_same(path: Path, inode: int) -> None:
        """Remove ``path`` unless a writer has meanwhile replaced it with a new file."""
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_ino == inode:
                path.unlink()


def _stamp(path: str | os.PathLike[str]) -> None:
    """Set a file's LRU time (its mtime) to now.

    Taken from the fine-grained clock: the file system's own timestamps tick only every few
    milliseconds, too coarse to order quick successive uses.
    """
    now = time.time_ns()
    os.utime(path, ns=(now, now))


def _decode(data: bytes) -> CachedFeatures:
    """Parse an entry file's bytes; raises on anything malformed."""
    header_len = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + header_len])["__metadata__"]
    if metadata["format"] != FORMAT:
        raise ValueError(f"unknown format {metadata['format']!r}")
    tensors = load_safetensors(data)
    features, timestamps = tensors["features"], tensors["timestamps"]
    thumbnails = tensors.get("thumbnails")
    if features.dim() != 2 or timestamps.shape != (features.shape[0],):
        raise ValueError("inconsistent tensor shapes")
    return CachedFeatures(
        key=FeatureKey(**json.loads(metadata["key"])),
        features=features,
        timestamps=timestamps,
        thumbnails=thumbnails,
        info=json.loads(metadata["info"]),
    )
