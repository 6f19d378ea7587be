"""Frame-feature files: a ``video_id -> [T, F]`` mapping on disk, and sampling to a fixed length.

Two formats are read:

- **safetensors** (what this project writes): one tensor per video, keyed by the video id;
  string metadata (encoder name, frame rate, ...) rides along. Opened lazily and memory-mapped,
  so a large file costs nothing until a video is read.
- the reference code's **``.pth`` dictionary** (e.g. STAR's ``vis_db/s3d.pth``), loaded only
  with ``torch.load(..., weights_only=True)``: a file holding anything but tensors and plain
  containers is refused and no code inside it runs.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .types import DataLayoutError, atomic_path, require_file

FEATURES_LAYOUT = """a features file: ROOT/features/SPLIT.safetensors or ROOT/features.safetensors
  (one [T, F] tensor per video id), or the reference code's .pth dictionary {video_id: tensor}"""


class FeatureStore:
    """Read-only access to a features file, by video id.

    Args:
        path: a ``.safetensors`` file, or a ``.pth`` / ``.pt`` dictionary.

    Nothing is read until the first access. A store can be pickled (e.g. into DataLoader
    workers); each copy reopens the file itself.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = require_file(Path(path), FEATURES_LAYOUT)
        self._is_safetensors = self.path.suffix == ".safetensors"
        self._handle: Any = None  # safe_open handle, opened on first use
        self._tensors: dict[str, torch.Tensor] | None = None  # .pth contents, loaded on first use
        self._keys: list[str] = []
        self._key_set: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        # open handles do not cross processes; the copy reopens the file on first use
        return {**self.__dict__, "_handle": None, "_tensors": None}

    def _open(self) -> None:
        if self._handle is not None or self._tensors is not None:
            return
        if self._is_safetensors:
            try:
                self._handle = safe_open(str(self.path), framework="pt", device="cpu")
            except Exception as e:  # safetensors raises its own error types
                raise DataLayoutError(
                    f"{self.path} cannot be read as a features file: it is damaged or incomplete. "
                    "Extract the features again."
                ) from e
            self._keys = sorted(self._handle.keys())
        else:
            self._tensors = _load_pth_dict(self.path)
            self._keys = sorted(self._tensors)
        self._key_set = set(self._keys)

    def keys(self) -> list[str]:
        """The video ids in the file, sorted."""
        self._open()
        return list(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        self._open()
        return len(self._keys)

    def __contains__(self, video_id: object) -> bool:
        self._open()
        return video_id in self._key_set

    def __getitem__(self, video_id: str) -> torch.Tensor:
        """The features of one video, ``[T, F]`` float32 on the CPU.

        Tensors with more than two dimensions (e.g. ``[clips, frames, F]``) are flattened to
        ``[-1, F]`` as the reference NExT-QA loader does.
        """
        if video_id not in self:
            raise KeyError(f"video {video_id!r} has no features in {self.path}")
        tensor = self._tensors[video_id] if self._tensors is not None else self._handle.get_tensor(video_id)
        return _as_frames(tensor, video_id, self.path)

    @property
    def feature_dim(self) -> int:
        """F, the size of one frame's feature vector (read from the first video id)."""
        keys = self.keys()
        if not keys:
            raise DataLayoutError(f"{self.path}: the features file holds no videos")
        if self._tensors is not None:
            return int(self._tensors[keys[0]].shape[-1])
        return int(self._handle.get_slice(keys[0]).get_shape()[-1])

    @property
    def metadata(self) -> dict[str, str]:
        """The safetensors header metadata (empty for ``.pth`` files)."""
        self._open()
        if self._handle is None:
            return {}
        return dict(self._handle.metadata() or {})

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r})"


def _load_pth_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a reference ``{video_id: tensor}`` file with the weights-only unpickler."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's own message suggests weights_only=False; keep only its diagnosis
        reason = next((line for line in str(e).splitlines() if "WeightsUnpickler error" in line), "")
        raise DataLayoutError(
            f"{path}: refused: not loadable with the weights-only unpickler (a features file may hold only "
            f"tensors in plain containers; files are never unpickled in full). {reason}".rstrip()
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise DataLayoutError(
            f"{path} cannot be read as a features file: it is damaged or incomplete. Extract the features again."
        ) from e
    if not isinstance(obj, Mapping):
        raise DataLayoutError(
            f"{path} holds no table of video ids and their frame features; it is not a features file."
        )
    tensors: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise DataLayoutError(
                f"{path}: the entry {key!r} is not an array of frame features; it is not a features file."
            )
        tensors[str(key)] = value  # ids may be stored as ints (e.g. EgoTaskQA, NExT-QA)
    return tensors


def _as_frames(tensor: torch.Tensor, video_id: str, path: Path) -> torch.Tensor:
    if tensor.ndim < 2:
        raise DataLayoutError(
            f"{path}: the features of {video_id!r} are not one vector per frame (shape {tuple(tensor.shape)})."
        )
    return tensor.reshape(-1, tensor.shape[-1]).to(torch.float32)


def write_features(
    path: str | Path, mapping: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``video_id -> [T, F]`` features to a safetensors file, atomically.

    The file is written beside ``path`` and renamed over it, so an interrupted write never
    leaves a truncated file. Floating-point dtypes are kept (float16 halves the size);
    :class:`FeatureStore` returns float32 either way.

    Args:
        path: the ``.safetensors`` file to (re)write.
        mapping: video id -> ``[T, F]`` floating-point tensor; every F must be equal.
        metadata: string key/values stored in the header (e.g. the encoder's name).
    """
    if not mapping:
        raise ValueError("no features to write")
    tensors: dict[str, torch.Tensor] = {}
    dims: set[int] = set()
    for video_id, tensor in mapping.items():
        if not isinstance(video_id, str):
            raise TypeError(f"video ids must be strings, got {video_id!r}")
        if tensor.ndim != 2 or not tensor.is_floating_point():
            raise ValueError(
                f"features of {video_id!r}: need a [T, F] float tensor, "
                f"got shape {tuple(tensor.shape)}, dtype {tensor.dtype}"
            )
        dims.add(int(tensor.shape[1]))
        tensors[video_id] = tensor.detach().to("cpu").contiguous()
    if len(dims) != 1:
        raise ValueError(f"all videos must have the same feature size, got {sorted(dims)}")
    meta = dict(metadata or {})
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata must map strings to strings, got {key!r}: {value!r}")
    with atomic_path(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def find_features_file(root: Path, split: str, reference_names: Sequence[str] = ()) -> Path | None:
    """The features file of a split: the first existing of ``ROOT/features/SPLIT.safetensors``,
    ``ROOT/features.safetensors`` and the reference code's files ``ROOT/<name>`` for each of
    ``reference_names`` (e.g. ``"vis_db/s3d.pth"``); None if there is none."""
    candidates = [root / "features" / f"{split}.safetensors", root / "features.safetensors"]
    candidates += [root / name for name in reference_names]
    return next((p for p in candidates if p.is_file()), None)


class SampledFeatures(NamedTuple):
    """Features resampled to a fixed number of frames N.

    Attributes:
        features: ``[N, F]`` float; zero rows at padded positions.
        padding: ``[N]`` bool, True where the row is padding.
        positions: ``[N]``: the source frame index of each row (int64, -1 at padding), or with
            ``normalized=True`` its normalised time ``(index + 0.5) / T_in`` in [0, 1]
            (float32, 0 at padding).
    """

    features: torch.Tensor
    padding: torch.Tensor
    positions: torch.Tensor


def sample_features(feats: torch.Tensor, num_frames: int, *, normalized: bool = False) -> SampledFeatures:
    """Resample ``[T_in, F]`` frame features to exactly ``num_frames`` rows, as the reference does.

    Longer inputs are subsampled uniformly, row ``j`` taking source frame
    ``(j * T_in) // num_frames``; shorter inputs keep every frame and are zero-padded at the
    end. With ``normalized=True`` the positions are each row's time as a fraction of the
    video (the centre of its source frame), which a temporal position encoding can use.

    >>> out = sample_features(torch.ones(3, 2), 4)
    >>> out.padding.tolist(), out.positions.tolist()
    ([False, False, False, True], [0, 1, 2, -1])
    >>> sample_features(torch.ones(8, 2), 4, normalized=True).positions.tolist()
    [0.0625, 0.3125, 0.5625, 0.8125]
    """
    if feats.ndim != 2:
        raise ValueError(f"expected [T, F] features, got shape {tuple(feats.shape)}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    num_in = feats.shape[0]
    if num_in == 0:
        raise ValueError("cannot sample from zero frames")
    if num_in >= num_frames:
        index = torch.div(torch.arange(num_frames) * num_in, num_frames, rounding_mode="floor")
        kept = feats[index]
        padding = torch.zeros(num_frames, dtype=torch.bool)
    else:
        index = torch.arange(num_in)
        kept = torch.cat([feats, feats.new_zeros(num_frames - num_in, feats.shape[1])])
        padding = torch.arange(num_frames) >= num_in
    positions = torch.full((num_frames,), -1, dtype=torch.int64)
    positions[: index.numel()] = index
    if normalized:
        times = (positions.to(torch.float32) + 0.5) / num_in
        positions = times.masked_fill(padding, 0.0)
    return SampledFeatures(kept, padding, positions)
