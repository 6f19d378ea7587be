"""How a model's frame features are taken from a video; recorded in every checkpoint.

Two kinds, one per frame-encoder family:

- ``uniform`` (CLIP image encoders): ``num_frames`` single frames at the centres of equal
  segments of the video (:func:`~glance_focus.video.uniform_indices`), one feature each.
- ``s3d_clips`` (S3D): the VideoQA S3D recipe the released STAR checkpoint was trained on —
  decode at ``fps`` (16), short side ``short_side`` (224) then a centred ``crop`` (224), cut into
  non-overlapping clips of ``clip_frames`` (16) frames = one feature per second, the incomplete
  last second dropped, RGB in [0, 1] with no mean/std, float32. A model reads ``num_frames``
  rows (80 for STAR) by the STAR loader's rule: a video with more clips keeps clips
  ``floor(j * n / num_frames)``; one with fewer keeps all and gets zero rows appended (masked as
  padding, except by reference-compat models, which see them unmasked as the reference did).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from glance_focus.encoders import S3D_ARCH
from glance_focus.video import ClipSampling

SamplingKind = Literal["uniform", "s3d_clips"]


@dataclass(frozen=True)
class FrameSampling:
    """A checkpoint's frame sampling (see the module docstring). Clip fields are None for ``uniform``."""

    kind: SamplingKind = "uniform"
    fps: float | None = None
    clip_frames: int | None = None
    short_side: int | None = None
    crop: int | None = None

    def __post_init__(self) -> None:
        clip_fields = (self.fps, self.clip_frames, self.short_side, self.crop)
        if self.kind == "uniform":
            if any(value is not None for value in clip_fields):
                raise ValueError("uniform frame sampling takes no fps, clip_frames, short_side or crop")
        elif self.kind == "s3d_clips":
            if any(value is None for value in clip_fields):
                raise ValueError("s3d_clips frame sampling needs fps, clip_frames, short_side and crop")
            self.clips()  # validates the numbers
        else:
            raise ValueError(f"unknown frame sampling kind {self.kind!r} (uniform or s3d_clips)")

    @classmethod
    def uniform(cls) -> FrameSampling:
        return cls()

    @classmethod
    def s3d_clips(cls) -> FrameSampling:
        """The recipe of the S3D features the released STAR checkpoint was trained on."""
        default = ClipSampling()
        return cls("s3d_clips", default.fps, default.clip_frames, default.short_side, default.crop)

    @classmethod
    def for_encoder(cls, frame_encoder: str) -> FrameSampling:
        """The sampling a frame encoder spec implies: ``s3d_clips`` for ``S3D:…``, else ``uniform``."""
        return cls.s3d_clips() if is_clip_encoder(frame_encoder) else cls.uniform()

    @property
    def is_clips(self) -> bool:
        return self.kind == "s3d_clips"

    def clips(self, max_clips: int | None = None) -> ClipSampling:
        """The decoding recipe of ``s3d_clips``, keeping at most ``max_clips`` clips by the row rule."""
        if not self.is_clips:
            raise ValueError("uniform frame sampling has no clips")
        return ClipSampling(
            fps=float(self.fps),  # type: ignore[arg-type]
            clip_frames=int(self.clip_frames),  # type: ignore[arg-type]
            short_side=int(self.short_side),  # type: ignore[arg-type]
            crop=int(self.crop),  # type: ignore[arg-type]
            max_clips=max_clips,
        )

    def describe(self, num_frames: int) -> str:
        """One line for people: what a model reading ``num_frames`` rows sees of a video."""
        if not self.is_clips:
            return f"{num_frames} frames sampled uniformly over the whole video"
        seconds = self.clips().clip_seconds
        per = "one clip per second of video" if seconds == 1 else f"one {seconds:g}-s clip per {seconds:g} s of video"
        return (
            f"{per} ({self.clip_frames} frames at {self.fps:g} fps, "
            f"{self.crop}×{self.crop} centre crop), up to {num_frames} clips spread over longer videos; "
            f"shorter videos are padded to {num_frames} rows"
        )

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FrameSampling:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown frame_sampling fields: {unknown}")
        return cls(**data)


def is_clip_encoder(frame_encoder: str) -> bool:
    """Whether a frame encoder spec names a clip encoder (S3D) rather than an image encoder."""
    return frame_encoder.strip().partition(":")[0] == S3D_ARCH
