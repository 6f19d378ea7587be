"""Video probing and frame sampling for the live pipeline and for batch feature extraction.

A user's upload may be anything: renamed text, a truncated MP4, an audio file, a 4K hour-long
film, or bytes that crash or hang the decoder. So by default every probe and decode runs in a
worker subprocess (:class:`VideoWorkerPool`, kept alive between calls) under a hard time limit
and an address-space bound; a hang, a crash or a memory blow-up there surfaces here as a
:class:`VideoError` whose message is a sentence fit for the web UI. Trusted batch jobs pass
``in_process=True`` and decode in the calling process (same checks, no time or memory bound).

Every request is checked in this order, cheapest first, before any frames are sampled: the
file (exists, is a regular file, not empty, not too large, and for MP4/MOV no top-level box
cut off by the end of the file), the container (readable by decord, has a video stream with
frames), the duration, then the resolution (decord exposes no stream header, so the probe
decodes the first frame), then the memory the sampled frames will need. In a worker, FFmpeg's
log also names the reason a container could not be opened.

Uniform sampling takes ``N`` frames at the centres of ``N`` equal segments of the frame
range, frame ``floor((j + 0.5) * T / N)`` for ``j = 0 .. N-1`` (see :func:`uniform_indices`);
sampling at a rate is the same with ``N = round(duration_s * fps)``. With a time window the
frame range is the frames that start inside the window, chosen by their timestamps and decoded
by index, so a window's first frame is exact (not the keyframe before it, as with a stream copy).

Clip sampling (:func:`sample_clips`, for clip encoders such as S3D) instead resamples the video
(or a window of it) to a fixed rate the way FFmpeg's ``fps`` filter does, and cuts it into
non-overlapping clips.

Frames can also be consumed while they are decoded (:func:`stream_frames`, a
:class:`FrameStream`): the worker writes each frame into a shared file and reports it, so a caller
encodes the first frames while the later ones are still being decoded. :func:`sample_frames` is the
same decoding, returned whole. Two decoding orders give identical frames; the cheaper one for a
video is chosen from its keyframe positions (:func:`choose_decode_strategy`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import resource
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

_MB = 10**6
_DECODE_CHUNK_BYTES = 64 * 1024**2  # clip frames are decoded in batches of about this size
_DECODER_HEADROOM_BYTES = 1024**3  # address space for codec threads and buffers, beyond the frames
_WORKER_START_TIMEOUT_S = 60.0
_WORKER_BOOT = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('glance_focus_video_worker', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "sys.modules[spec.name] = module\n"
    "spec.loader.exec_module(module)\n"
    "module._worker_main()\n"
)
"""Worker entry point. The module is loaded from its file, not as ``glance_focus.video``, so
that a worker never pays for whatever the package ``__init__`` may import."""


# ----------------------------------------------------------------------------------------------
# Errors: one hierarchy; ``str(error)`` is a complete sentence for the user.


class VideoError(ValueError):
    """A file that cannot be used as a video; the message says why, in plain words."""


class VideoNotFoundError(VideoError):
    """The path does not exist."""


class EmptyVideoFileError(VideoError):
    """The file has 0 bytes (typically a failed upload)."""


class VideoFileTooLargeError(VideoError):
    """The file is larger than ``VideoLimits.max_file_bytes``."""


class NotAVideoError(VideoError):
    """No container the decoder can read: not a regular file, renamed non-video bytes, …"""


class NoVideoStreamError(VideoError):
    """A readable container without a video stream (audio-only)."""


class NoFramesError(VideoError):
    """A video stream without any decodable frame."""


class VideoTooLongError(VideoError):
    """Duration above ``VideoLimits.max_duration_s``."""


class VideoTooShortError(VideoError):
    """Shorter than one clip of a clip-based encoder (:func:`sample_clips`)."""


class VideoResolutionTooLargeError(VideoError):
    """Width × height above ``VideoLimits.max_pixels``."""


class CorruptVideoError(VideoError):
    """Truncated or damaged: the container opened but decoding failed part way."""


class DecodeMemoryError(VideoError):
    """The sampled frames (or the decoder) would exceed ``VideoLimits.max_decode_memory_bytes``."""


class DecodeTimeoutError(VideoError):
    """Probing and decoding took longer than ``VideoLimits.decode_timeout_s``; the worker was killed."""


class DecoderCrashError(VideoError):
    """The decoder process died (e.g. a segfault in FFmpeg) or could not start."""


_ERRORS_BY_NAME: dict[str, type[VideoError]] = {
    cls.__name__: cls
    for cls in (
        VideoError,
        VideoNotFoundError,
        EmptyVideoFileError,
        VideoFileTooLargeError,
        NotAVideoError,
        NoVideoStreamError,
        NoFramesError,
        VideoTooLongError,
        VideoTooShortError,
        VideoResolutionTooLargeError,
        CorruptVideoError,
        DecodeMemoryError,
        DecodeTimeoutError,
        DecoderCrashError,
    )
}


# ----------------------------------------------------------------------------------------------
# Public data types.


@dataclass(frozen=True)
class VideoLimits:
    """Bounds on what a request may cost; every field must be positive.

    Attributes:
        max_duration_s: longest accepted video, seconds.
        max_pixels: largest accepted frame, width × height (default 4K UHD).
        max_frames_to_sample: most frames one request may return.
        max_file_bytes: largest accepted file, bytes (default 500 MB).
        decode_timeout_s: wall-clock bound on one probe or probe + decode in a worker, seconds.
        max_decode_memory_bytes: bound on the sampled frames ``N × H × W × 3`` bytes; a worker
            also gets this much address space (plus a fixed allowance for the codec).
    """

    max_duration_s: float = 600.0
    max_pixels: int = 3840 * 2160
    max_frames_to_sample: int = 256
    max_file_bytes: int = 500 * _MB
    decode_timeout_s: float = 60.0
    max_decode_memory_bytes: int = 2 * 1024**3

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not value > 0:
                raise ValueError(f"VideoLimits.{field.name} must be positive, got {value!r}")


DEFAULT_LIMITS = VideoLimits()


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learns without decoding more than the first frame.

    Attributes:
        path: the file probed.
        file_bytes: file size, bytes.
        num_frames: frames in the video stream, as indexed by the demuxer.
        fps: the stream's average frame rate, frames per second.
        duration_s: from the first frame's start to the last frame's end, seconds.
        width, height: decoded frame size in pixels (display orientation as decord returns it).
    """

    path: str
    file_bytes: int
    num_frames: int
    fps: float
    duration_s: float
    width: int
    height: int


@dataclass(frozen=True, eq=False)
class SampledFrames:
    """Frames sampled from one video.

    Attributes:
        frames: ``[N, H, W, 3]`` uint8 RGB.
        timestamps_s: ``[N]`` float64, each frame's presentation time in seconds from the
            first frame, increasing, within ``[0, info.duration_s)``.
        indices: ``[N]`` int64 frame indices into the video, increasing.
        info: the probe of the video.
    """

    frames: np.ndarray
    timestamps_s: np.ndarray
    indices: np.ndarray
    info: VideoInfo


DecodeStrategy = Literal["auto", "seek", "sequential"]

SEEK_COST_FRAMES = 6
"""What one seek costs, in frames decoded: decord's accurate seek rewinds, seeks to the keyframe,
restarts its decoder thread and checks where it landed. Measured on 640x360 H.264 (2-core x86,
one decoder thread): ~6 frames' decoding time; it decides :func:`choose_decode_strategy`."""


@dataclass(frozen=True)
class ClipSampling:
    """How a clip encoder's input is cut from a video (the S3D VideoQA recipe by default).

    The video is resampled to ``fps`` (each output frame ``k`` at ``k / fps`` s shows the last
    video frame starting before ``(k + 0.5) / fps``, as FFmpeg's ``fps`` filter with rounding to
    the nearest does), resized so its short side is ``short_side`` (long side
    ``int(long * short_side / short)``, truncated) and centre-cropped to ``crop × crop``; then cut
    into non-overlapping clips of ``clip_frames`` frames, an incomplete last clip dropped. Clip
    ``i`` covers ``[i, i + 1) × clip_frames / fps`` seconds.

    Attributes:
        fps: output frame rate, frames per second.
        clip_frames: frames per clip.
        short_side: short side after resizing, pixels.
        crop: side of the centred square crop, pixels (at most ``short_side``).
        max_clips: when the video has more clips, keep clips ``floor(j * n / max_clips)`` for
            ``j = 0 .. max_clips - 1`` (the STAR loader's row rule); None keeps all.
    """

    fps: float = 16.0
    clip_frames: int = 16
    short_side: int = 224
    crop: int = 224
    max_clips: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive number, got {self.fps!r}")
        if self.clip_frames < 1 or self.short_side < 1 or not 1 <= self.crop <= self.short_side:
            raise ValueError(f"invalid clip geometry: {self}")
        if self.max_clips is not None and self.max_clips < 1:
            raise ValueError(f"max_clips must be positive or None, got {self.max_clips}")

    @property
    def clip_seconds(self) -> float:
        """Length of one clip, seconds."""
        return self.clip_frames / self.fps


# ----------------------------------------------------------------------------------------------
# Public functions.


def uniform_indices(num_video_frames: int, num_samples: int) -> np.ndarray:
    """Indices of the centre frames of ``num_samples`` equal segments of ``num_video_frames``.

    Returns ``[num_samples]`` int64, ``floor((j + 0.5) * T / N)``; strictly increasing when
    ``N <= T`` (repeats frames when ``N > T``).

    >>> uniform_indices(10, 4).tolist()
    [1, 3, 6, 8]
    >>> uniform_indices(5, 5).tolist()
    [0, 1, 2, 3, 4]
    """
    if num_video_frames < 1 or num_samples < 1:
        raise ValueError(f"need at least one frame and one sample, got {num_video_frames}, {num_samples}")
    j = np.arange(num_samples, dtype=np.int64)
    return ((2 * j + 1) * num_video_frames) // (2 * num_samples)


def decode_costs(key_indices: np.ndarray, indices: np.ndarray) -> dict[str, float]:
    """Estimated cost, in frames decoded, of reading the frames ``indices`` (increasing) of a video
    whose keyframes are ``key_indices`` (increasing, from the container index) in each order:

    - ``seek``: per sample, jump to its keyframe when it lies in a later group of pictures
      (GOP) than the previous sample (``SEEK_COST_FRAMES`` plus the frames from that keyframe),
      else decode on from the previous sample;
    - ``sequential``: one forward pass that never seeks, decoding every frame up to the last sample.

    Seeking wins when samples lie several GOPs apart; a sequential pass wins when they are dense
    relative to the GOP (each jump would skip only a few frames).

    >>> decode_costs(np.array([0, 100, 200]), np.array([50, 150, 250]))
    {'seek': 165.0, 'sequential': 251.0}
    """
    keys = np.asarray(key_indices, dtype=np.int64)
    targets = np.asarray(indices, dtype=np.int64)
    if len(keys) == 0 or keys[0] != 0:
        keys = np.concatenate([[0], keys])
    gop = np.searchsorted(keys, targets, side="right") - 1  # GOP of each sample
    seek, position, position_gop = 0.0, 0, 0  # position: the next frame the reader returns
    for target, target_gop in zip(targets.tolist(), gop.tolist(), strict=True):
        if target_gop > position_gop or target < position:
            seek += SEEK_COST_FRAMES + target - keys[target_gop] + 1
        else:
            seek += target - position + 1
        position, position_gop = target + 1, target_gop
    return {"seek": float(seek), "sequential": float(targets[-1] + 1 if len(targets) else 0)}


def choose_decode_strategy(key_indices: np.ndarray, indices: np.ndarray) -> Literal["seek", "sequential"]:
    """The cheaper decoding order for ``indices`` by :func:`decode_costs` (ties: ``seek``)."""
    costs = decode_costs(key_indices, indices)
    return "sequential" if costs["sequential"] < costs["seek"] else "seek"


def decoder_threads_beside_encoder(decode_frames: float, megapixels: float, samples: int, encode_cost: float) -> int:
    """Decoder threads for a decode that runs beside a CPU encoder: 1 while decoding is the smaller
    job (the encoder keeps the other cores), 0 (every core) when decoding ``decode_frames`` frames of
    ``megapixels`` costs more than encoding the ``samples`` frames, each ``encode_cost`` frames of
    one megapixel decoded on one thread (a high-resolution video, a light encoder).

    >>> decoder_threads_beside_encoder(1800, 0.23, 32, 35.0), decoder_threads_beside_encoder(1800, 0.92, 32, 35.0)
    (1, 0)
    """
    return 1 if decode_frames * megapixels <= samples * encode_cost else 0


def probe_video(
    path: str | os.PathLike[str],
    limits: VideoLimits = DEFAULT_LIMITS,
    *,
    in_process: bool = False,
    pool: VideoWorkerPool | None = None,
) -> VideoInfo:
    """Check a video against ``limits`` and describe it, decoding only its first frame.

    Runs in ``pool`` (default: :func:`default_pool`) unless ``in_process``. Raises a
    :class:`VideoError` subclass for any file that fails a check.
    """
    if in_process:
        return _probe_local(os.fspath(path), limits, _no_log)
    return (pool or default_pool()).probe(path, limits)


def sample_frames(
    path: str | os.PathLike[str],
    num_frames: int | None = None,
    fps: float | None = None,
    limits: VideoLimits = DEFAULT_LIMITS,
    size: int | None = None,
    *,
    window_s: tuple[float, float] | None = None,
    strategy: DecodeStrategy = "auto",
    decoder_threads: int = 0,
    in_process: bool = False,
    pool: VideoWorkerPool | None = None,
) -> SampledFrames:
    """Probe a video, then decode frames sampled uniformly over its whole length or a window.

    Args:
        path: the video file; its extension is ignored (the container is recognised by content).
        num_frames: sample this many frames (at most ``limits.max_frames_to_sample``); a video
            with fewer frames returns all of them.
        fps: instead, sample at this rate: ``round(duration_s * fps)`` frames, at least 1 and
            at most ``limits.max_frames_to_sample`` (then spread over the whole video).
        limits: bounds checked before decoding; see :class:`VideoLimits`.
        size: resize so the short side is ``size`` pixels (aspect kept) during decoding, which
            bounds memory; None keeps the original size.
        window_s: sample only the frames starting in ``[start, end)`` seconds from the first
            frame (a clip of the video; ``fps`` then counts the window's length); None: all.
        strategy: decoding order, ``"seek"``, ``"sequential"`` or ``"auto"`` (the cheaper for
            this video by :func:`choose_decode_strategy`); the frames are the same.
        decoder_threads: FFmpeg decoder threads; 0 lets FFmpeg use every core.
        in_process: decode in this process (trusted batch jobs) instead of a worker.
        pool: the workers to use; default :func:`default_pool`.

    Exactly one of ``num_frames`` and ``fps`` must be given (ValueError otherwise).
    Raises a :class:`VideoError` subclass for a video that fails a check or does not decode,
    or whose window holds no frame.
    """
    _check_arguments(num_frames, fps, size, limits, strategy, decoder_threads, window_s)
    if in_process:
        return _sample_local(
            os.fspath(path),
            num_frames,
            fps,
            limits,
            size,
            _allocate_in_memory,
            _no_log,
            strategy,
            decoder_threads,
            window_s,
        )
    return (pool or default_pool()).sample(
        path, num_frames, fps, limits, size, strategy, decoder_threads, window_s=window_s
    )


def sample_clips(
    path: str | os.PathLike[str],
    clips: ClipSampling,
    limits: VideoLimits = DEFAULT_LIMITS,
    *,
    window_s: tuple[float, float] | None = None,
    in_process: bool = False,
    pool: VideoWorkerPool | None = None,
) -> SampledFrames:
    """Probe a video, then decode it (or the window of frames starting in ``window_s = (start, end)``
    seconds, as if cut out first) as clips (see :class:`ClipSampling`).

    Returns ``frames [n * clip_frames, crop, crop, 3]`` uint8, clip after clip;
    ``timestamps_s`` is each output frame's time in the video (``k / fps`` after the first frame
    of the window, or of the video) and ``indices`` the video frame it
    shows (non-decreasing; repeated when the video's rate is below ``fps``). ``limits`` bounds
    the file, duration, resolution and the memory of the returned frames
    (``max_frames_to_sample`` does not apply: ``max_clips`` bounds the count). Raises
    :class:`VideoTooShortError` for a video shorter than one clip, and the other
    :class:`VideoError` subclasses as :func:`sample_frames` does.
    """
    _check_window(window_s)
    if in_process:
        return _sample_clips_local(os.fspath(path), clips, limits, _allocate_in_memory, _no_log, window_s)
    return (pool or default_pool()).sample_clips(path, clips, limits, window_s=window_s)


def clip_frame_plan(
    frame_starts_s: np.ndarray, duration_s: float, clips: ClipSampling
) -> tuple[np.ndarray, np.ndarray, int]:
    """Which video frames :func:`sample_clips` decodes.

    Args:
        frame_starts_s: ``[T]`` each video frame's start time, seconds from the first (non-decreasing).
        duration_s: the video's duration, seconds.
        clips: the sampling.

    Returns:
        ``(indices [M], times_s [M], num_clips)``: the video frame shown by each output frame, its
        time ``k / fps``, and how many whole clips the video has (``M = min(n, max_clips) *
        clip_frames``).

    >>> idx, t, n = clip_frame_plan(np.arange(50) / 25.0, 2.0, ClipSampling(fps=4, clip_frames=4))
    >>> n, idx.tolist()
    (2, [3, 9, 15, 21, 28, 34, 40, 46])
    """
    total = math.floor(duration_s * clips.fps + 0.5)  # output frames of the fps filter
    num_clips = total // clips.clip_frames
    chosen = np.arange(num_clips, dtype=np.int64)
    if clips.max_clips is not None and num_clips > clips.max_clips:
        chosen = np.arange(clips.max_clips, dtype=np.int64) * num_clips // clips.max_clips
    k = (chosen[:, None] * clips.clip_frames + np.arange(clips.clip_frames)).reshape(-1)  # [M]
    # Output frame k takes the last input frame whose time rounds to a slot <= k.
    indices = np.searchsorted(frame_starts_s, (k + 0.5) / clips.fps, side="left") - 1
    indices = np.clip(indices, 0, len(frame_starts_s) - 1).astype(np.int64)
    return indices, k / clips.fps, num_clips


def clip_resize_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(height, width)`` with the short side ``short_side`` and the long side
    ``int(long * short_side / short)`` (truncated, as the S3D VideoQA extraction computes it).

    >>> clip_resize_size(720, 1280, 224)
    (224, 398)
    """
    if height >= width:
        return int(height * short_side / width), short_side
    return short_side, int(width * short_side / height)


def center_crop_offsets(height: int, width: int, crop: int) -> tuple[int, int]:
    """``(top, left)`` of the centred ``crop × crop`` window: ``int((size - crop) / 2)`` per axis."""
    return int((height - crop) / 2), int((width - crop) / 2)


def stream_frames(
    path: str | os.PathLike[str],
    num_frames: int | None = None,
    fps: float | None = None,
    limits: VideoLimits = DEFAULT_LIMITS,
    size: int | None = None,
    *,
    window_s: tuple[float, float] | None = None,
    strategy: DecodeStrategy = "auto",
    decoder_threads: int = 0,
    encode_cost: float | None = None,
    in_process: bool = False,
    pool: VideoWorkerPool | None = None,
) -> FrameStream:
    """:func:`sample_frames`, but returning as soon as the video is probed: the frames arrive
    through the :class:`FrameStream` while they are decoded (in a worker, unless ``in_process``,
    where each frame is decoded when the stream is asked for it). Use the stream as a context
    manager: leaving it early waits for the worker to finish (bounded by the time limit).

    ``encode_cost``: the frames feed a CPU encoder costing this much per frame (in frames of one
    megapixel decoded on one thread); the decoder threads are then chosen once the video is
    probed (:func:`decoder_threads_beside_encoder`) instead of ``decoder_threads``.

    Raises like :func:`sample_frames` for a video that fails a check; a video that fails part way
    raises from the stream.
    """
    _check_arguments(num_frames, fps, size, limits, strategy, decoder_threads, window_s)
    if encode_cost is not None and not encode_cost > 0:
        raise ValueError(f"encode_cost must be positive, got {encode_cost}")
    if in_process:
        try:
            plan = _plan_sampling(
                os.fspath(path),
                num_frames,
                fps,
                limits,
                size,
                _no_log,
                strategy,
                decoder_threads,
                encode_cost,
                window_s,
            )
        except _Unseekable as unseekable:
            return FrameStream(_LocalFrames.decoded(unseekable.sample(_allocate_in_memory)))
        return FrameStream(_LocalFrames.planned(plan))
    return (pool or default_pool()).stream(
        path, num_frames, fps, limits, size, strategy, decoder_threads, encode_cost, window_s=window_s
    )


class FrameStream:
    """The sampled frames of one video, filled in while a decoder produces them.

    ``info``, ``indices`` ``[N]``, ``timestamps_s`` ``[N]``, ``strategy`` and ``decoder_threads``
    are known from the start; ``frames`` ``[N, H, W, 3]`` uint8 holds valid frames in ``[0, decoded)``, and
    :meth:`poll` takes in the ones decoded since; :meth:`result` waits for all.
    """

    def __init__(self, source: _WorkerFrames | _LocalFrames) -> None:
        self._source = source
        header = source.header
        self.info = VideoInfo(**header["info"])
        self.indices = np.asarray(header["indices"], dtype=np.int64)
        self.timestamps_s = np.asarray(header["timestamps_s"], dtype=np.float64)
        self.strategy: str = header["strategy"]
        self.decoder_threads: int = header["threads"]
        self.frames = np.empty(tuple(header["shape"]), dtype=np.uint8)
        self.decoded = 0
        # A stream dropped without close() must still give its worker back to the pool.
        self._release = weakref.finalize(self, source.close)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def done(self) -> bool:
        """Whether every frame has been decoded."""
        return self.decoded == len(self)

    @property
    def decode_seconds(self) -> float | None:
        """The decoder's own time for probe and decode, seconds (known once done)."""
        return self._source.decode_seconds

    def poll(self, block: bool = False) -> int:
        """Take in the frames decoded so far (``block``: wait for at least one more unless done);
        returns :attr:`decoded`."""
        if not self.done:
            self.decoded = self._source.advance(self.frames, self.decoded, block)
        return self.decoded

    def result(self) -> SampledFrames:
        """Wait for every frame; the whole sample."""
        while not self.done:
            self.poll(block=True)
        self.close()
        return SampledFrames(self.frames, self.timestamps_s, self.indices, self.info)

    def close(self) -> None:
        """Release the decoder (waits for a worker still decoding; idempotent)."""
        self._release()

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _LocalFrames:
    """A stream decoded in this process, one frame each time it is asked for more (or, for a video
    read front to back, all of them at once)."""

    def __init__(self, header: dict[str, Any], decode: Callable[[np.ndarray], Iterator[int]]) -> None:
        self.header = header
        self.decode = decode
        self.decode_seconds: float | None = None
        self._started = time.perf_counter()
        self._frames: Iterator[int] | None = None

    @classmethod
    def planned(cls, plan: _Plan) -> _LocalFrames:
        return cls(plan.header(), lambda frames: _decode_into(plan, frames))

    @classmethod
    def decoded(cls, sampled: SampledFrames) -> _LocalFrames:
        def copy(frames: np.ndarray) -> Iterator[int]:
            frames[:] = sampled.frames
            yield len(frames)

        return cls(_header(sampled.info, sampled.indices, sampled.timestamps_s, sampled.frames.shape), copy)

    def advance(self, frames: np.ndarray, decoded: int, block: bool) -> int:
        if not block:
            return decoded
        if self._frames is None:
            self._frames = self.decode(frames)
        done = next(self._frames)
        if done == len(frames):
            self.decode_seconds = time.perf_counter() - self._started
        return done

    def close(self) -> None:
        self._frames = None


def video_content_hash(path: str | os.PathLike[str], chunk_bytes: int = 1024**2) -> str:
    """SHA-256 of the file's bytes as 64 hex digits, read in chunks (keys the feature cache)."""
    path = _regular_file(os.fspath(path))[0]
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


_default_pool: VideoWorkerPool | None = None
_default_pool_lock = threading.Lock()
_parent_pools: list[VideoWorkerPool] = []
"""Pools a forked child inherited: kept (never used, never shut down) so that the parent's workers
and scratch folder stay the parent's."""


def default_pool() -> VideoWorkerPool:
    """The process-wide pool used when no ``pool`` is given; created (and its first worker
    started) on first use — call it at app start-up to take that cost off the first request.

    A forked child (e.g. a ZeroGPU worker) never uses its parent's pool: the workers' pipes and
    the condition guarding them belong to the parent. It gets its own pool on first use.
    """
    global _default_pool
    with _default_pool_lock:
        if _default_pool is None:
            _default_pool = VideoWorkerPool()
        return _default_pool


def _forget_parent_pool() -> None:
    """In a forked child: a fresh lock (another thread may have held the parent's at the fork) and no pool."""
    global _default_pool, _default_pool_lock
    _default_pool_lock = threading.Lock()
    if _default_pool is not None:
        _default_pool._finalizer.detach()  # collecting it here must not stop the parent's workers
        _parent_pools.append(_default_pool)
        _default_pool = None


os.register_at_fork(after_in_child=_forget_parent_pool)


# ----------------------------------------------------------------------------------------------
# Worker pool (the serving process's side).


class VideoWorkerPool:
    """Subprocesses that probe and decode videos, kept alive between calls; thread-safe.

    Up to ``max_workers`` requests run at once (more wait for a free worker). A worker that
    times out is killed; one that times out or dies is replaced by a freshly started one.
    Frames come back through a ``.npy`` file in a private temporary directory (mode 0700),
    deleted as soon as it is read. :meth:`close` (or garbage collection, or interpreter exit)
    stops the workers and removes the directory.
    """

    def __init__(self, max_workers: int = 2) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self._max_workers = max_workers
        root = _scratch_root(max_workers)
        _remove_orphaned_scratch(root or tempfile.gettempdir())
        self._tmpdir = tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}_", dir=root)
        self._workers: list[_Worker] = []  # all live workers, idle or busy
        self._idle: list[_Worker] = []
        self._closed = False
        self._cond = threading.Condition()
        self._finalizer = weakref.finalize(self, _shut_down, self._workers, self._tmpdir)
        with self._cond:
            self._idle.append(self._start_worker())  # the first call should not pay the start-up

    def probe(self, path: str | os.PathLike[str], limits: VideoLimits = DEFAULT_LIMITS) -> VideoInfo:
        """:func:`probe_video` in a worker."""
        path = _check_file(os.path.abspath(path), limits)[0]
        reply = self._call({"op": "probe", "path": path, "limits": dataclasses.asdict(limits)}, path, limits)
        return VideoInfo(**reply["info"])

    def sample(
        self,
        path: str | os.PathLike[str],
        num_frames: int | None = None,
        fps: float | None = None,
        limits: VideoLimits = DEFAULT_LIMITS,
        size: int | None = None,
        strategy: DecodeStrategy = "auto",
        decoder_threads: int = 0,
        *,
        window_s: tuple[float, float] | None = None,
    ) -> SampledFrames:
        """:func:`sample_frames` in a worker."""
        request, path = self._sample_request(
            path, num_frames, fps, limits, size, strategy, decoder_threads, window_s, False
        )
        return self._frames(request, path, limits)

    def sample_clips(
        self,
        path: str | os.PathLike[str],
        clips: ClipSampling,
        limits: VideoLimits = DEFAULT_LIMITS,
        *,
        window_s: tuple[float, float] | None = None,
    ) -> SampledFrames:
        """:func:`sample_clips` in a worker."""
        _check_window(window_s)
        path = _check_file(os.path.abspath(path), limits)[0]
        request = {
            "op": "clips",
            "path": path,
            "clips": dataclasses.asdict(clips),
            "window_s": None if window_s is None else list(window_s),
            "limits": dataclasses.asdict(limits),
            "out": os.path.join(self._tmpdir, f"{uuid.uuid4().hex}.npy"),
        }
        return self._frames(request, path, limits)

    def _frames(self, request: dict[str, Any], path: str, limits: VideoLimits) -> SampledFrames:
        """Run a frame-returning ``request`` in a worker; the frames come back through its ``.npy`` file."""
        try:
            reply = self._call(request, path, limits)
            frames = np.load(request["out"])
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(request["out"])
        return SampledFrames(
            frames=frames,
            timestamps_s=np.asarray(reply["timestamps_s"], dtype=np.float64),
            indices=np.asarray(reply["indices"], dtype=np.int64),
            info=VideoInfo(**reply["info"]),
        )

    def stream(
        self,
        path: str | os.PathLike[str],
        num_frames: int | None = None,
        fps: float | None = None,
        limits: VideoLimits = DEFAULT_LIMITS,
        size: int | None = None,
        strategy: DecodeStrategy = "auto",
        decoder_threads: int = 0,
        encode_cost: float | None = None,
        *,
        window_s: tuple[float, float] | None = None,
    ) -> FrameStream:
        """:func:`stream_frames` in a worker; the worker stays busy until the stream is closed."""
        request, path = self._sample_request(
            path, num_frames, fps, limits, size, strategy, decoder_threads, window_s, True
        )
        request["encode_cost"] = encode_cost
        worker = self._acquire()
        try:
            source = _WorkerFrames(worker, request, os.path.basename(path), limits, self._release)
        except BaseException:
            self._release(worker)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(request["out"])
            raise
        return FrameStream(source)

    def _sample_request(
        self,
        path: str | os.PathLike[str],
        num_frames: int | None,
        fps: float | None,
        limits: VideoLimits,
        size: int | None,
        strategy: DecodeStrategy,
        decoder_threads: int,
        window_s: tuple[float, float] | None,
        stream: bool,
    ) -> tuple[dict[str, Any], str]:
        _check_arguments(num_frames, fps, size, limits, strategy, decoder_threads, window_s)
        # The cheap file checks run here too, so that no FIFO, directory or missing path
        # ever reaches a worker.
        path = _check_file(os.path.abspath(path), limits)[0]
        request = {
            "op": "sample",
            "path": path,
            "num_frames": num_frames,
            "fps": fps,
            "size": size,
            "window_s": None if window_s is None else list(window_s),
            "strategy": strategy,
            "threads": decoder_threads,
            "stream": stream,
            "encode_cost": None,
            "limits": dataclasses.asdict(limits),
            "out": os.path.join(self._tmpdir, f"{uuid.uuid4().hex}.npy"),
        }
        return request, path

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring)."""
        with self._cond:
            return [worker.pid for worker in self._workers]

    def close(self) -> None:
        """Stop all workers and remove the temporary directory; the pool is unusable after."""
        with self._cond:
            self._closed = True
            self._idle.clear()
            self._cond.notify_all()
        self._finalizer()

    def __enter__(self) -> VideoWorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, request: dict[str, Any], path: str, limits: VideoLimits) -> dict[str, Any]:
        worker = self._acquire()
        try:
            return worker.call(request, os.path.basename(path), limits)
        finally:
            self._release(worker)

    def _start_worker(self) -> _Worker:
        worker = _Worker(self._tmpdir)
        self._workers.append(worker)
        return worker

    def _discard(self, worker: _Worker) -> None:
        worker.stop()
        self._workers.remove(worker)

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the video worker pool is closed")
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        return worker
                    self._discard(worker)  # died while idle (e.g. the OOM killer)
                if len(self._workers) < self._max_workers:
                    return self._start_worker()
                self._cond.wait()

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            if self._closed:
                worker.stop()
            elif worker.broken:
                self._discard(worker)
                self._idle.append(self._start_worker())  # start-up overlaps the caller's next step
            else:
                self._idle.append(worker)
            self._cond.notify()


_SCRATCH_PREFIX = "glance_focus_video_"


def _remove_orphaned_scratch(root: str) -> None:
    """Delete the scratch folders that pools of processes no longer alive left in ``root``.

    A pool removes its folder when it closes or its process exits, but not when the process is
    killed (SIGKILL, the OOM killer); in ``/dev/shm`` the frames of the requests it was serving
    would then hold RAM until reboot. Folders are named ``glance_focus_video_<pid>_<random>``.
    """
    with contextlib.suppress(OSError):
        for name in os.listdir(root):
            owner = name[len(_SCRATCH_PREFIX) :].split("_", 1)[0]
            if not (name.startswith(_SCRATCH_PREFIX) and owner.isdigit()) or _process_exists(int(owner)):
                continue
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _scratch_root(max_workers: int) -> str | None:
    """``/dev/shm`` (RAM) when it has room for every worker's largest result, else None (the
    default temporary directory). Frames passed through a disk-backed directory cost about
    2.5 ms per MB more (measured: 32 frames of 1280x720, 88 MB: +275 ms on disk, +60 ms in RAM)."""
    try:
        fs = os.statvfs("/dev/shm")
    except OSError:
        return None
    room = fs.f_frsize * fs.f_bavail
    if room >= max_workers * DEFAULT_LIMITS.max_decode_memory_bytes and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return None


def _shut_down(workers: list[_Worker], tmpdir: str) -> None:
    for worker in workers:
        worker.stop()
    workers.clear()
    shutil.rmtree(tmpdir, ignore_errors=True)


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # glibc reserves 64 MiB of address space per thread arena; few arenas keep RLIMIT_AS a
    # bound on real allocations rather than on reservations.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    # numpy's BLAS would start a thread pool at import; the worker never multiplies matrices.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


class _Worker:
    """One decoding subprocess: JSON lines on stdin/stdout, stderr (FFmpeg's log) to a file."""

    def __init__(self, tmpdir: str) -> None:
        self.log_path = os.path.join(tmpdir, f"worker-{uuid.uuid4().hex}.log")
        with open(self.log_path, "a+b") as log:  # readable too: the worker reads its own log
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_BOOT, os.path.abspath(__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=_worker_env(),
                bufsize=0,
                close_fds=True,
            )
        self.pid = self.process.pid
        self.broken = False
        self._ready = False
        self._buffer = b""

    def alive(self) -> bool:
        return self.process.poll() is None

    def call(self, request: dict[str, Any], name: str, limits: VideoLimits) -> dict[str, Any]:
        """Send one request and wait for its final reply; on any failure mark the worker broken."""
        deadline = self.send(request, name, limits)
        while True:
            reply = self.receive(name, limits, deadline)
            if reply is not None and "ok" in reply:
                return reply

    def send(self, request: dict[str, Any], name: str, limits: VideoLimits) -> float:
        """Send one request; returns its deadline (``time.monotonic()`` seconds)."""
        try:
            if not self._ready:
                if (self._read_reply(_WORKER_START_TIMEOUT_S, name) or {}).get("ready") is not True:
                    raise DecoderCrashError("The video decoding worker did not start in time.")
                self._ready = True
            try:
                self.process.stdin.write(json.dumps(request).encode() + b"\n")
            except (BrokenPipeError, OSError):
                raise self._crash_error(name, limits) from None
        except BaseException:
            self.broken = True
            raise
        return time.monotonic() + limits.decode_timeout_s

    def receive(self, name: str, limits: VideoLimits, deadline: float, block: bool = True) -> dict[str, Any] | None:
        """The request's next message: progress (no ``ok`` key) or the final reply (a failed one is
        raised as its error). Without ``block``, None when no message is waiting."""
        try:
            reply = self._read_reply(deadline - time.monotonic() if block else 0.0, name, limits)
            if reply is None and block:
                raise DecodeTimeoutError(
                    f"Reading '{name}' took longer than {limits.decode_timeout_s:g} s, so it was stopped. "
                    "The file may be damaged, or too long or too large to decode in time."
                )
        except BaseException:
            self.broken = True
            raise
        if reply is not None and reply.get("ok") is False:
            raise _ERRORS_BY_NAME.get(reply["error"], VideoError)(reply["message"])
        return reply

    def _read_reply(self, timeout_s: float, name: str, limits: VideoLimits = DEFAULT_LIMITS) -> dict[str, Any] | None:
        """The next JSON line, or None when none is complete within ``timeout_s`` (0: only what is
        already waiting); raises if the worker died."""
        deadline = time.monotonic() + timeout_s
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise self._crash_error(name, limits)
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise DecoderCrashError(f"The video decoder sent an unreadable reply while reading '{name}'.") from None

    def _crash_error(self, name: str, limits: VideoLimits) -> VideoError:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        log = _tail(self.log_path)
        if "bad_alloc" in log or "MemoryError" in log:
            return DecodeMemoryError(
                f"Decoding '{name}' ran out of memory "
                f"(limit {limits.max_decode_memory_bytes / _MB:.0f} MB); try fewer frames or a smaller size."
            )
        cause = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        if not self._ready:
            return DecoderCrashError(f"The video decoding worker failed to start ({cause}): {log[-300:]}")
        return DecoderCrashError(
            f"The video decoder crashed ({cause}) while reading '{name}'; the file is probably corrupt."
        )

    def stop(self) -> None:
        """End the process (politely if idle, else killed) and remove its log."""
        if self.alive():
            if not self.broken:
                with contextlib.suppress(OSError):
                    self.process.stdin.close()  # the worker's loop ends at end of input
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=2)
            if self.alive():
                self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log_path)


class _WorkerFrames:
    """The caller's side of a streamed request: the worker's progress messages, and its frames read
    from the shared ``.npy`` file into the stream's array. The worker goes back to the pool as soon
    as its final reply arrives (or, should the stream be left early, once it has finished)."""

    def __init__(
        self,
        worker: _Worker,
        request: dict[str, Any],
        name: str,
        limits: VideoLimits,
        release: Callable[[_Worker], None],
    ) -> None:
        self._worker: _Worker | None = worker
        self._name, self._limits, self._release = name, limits, release
        self._deadline = worker.send(request, name, limits)
        self.decode_seconds: float | None = None
        self.header: dict[str, Any] = worker.receive(name, limits, self._deadline)["header"]
        # The worker created the file before its header; unlinked now, it lives while it is open.
        with open(request["out"], "rb") as file:
            np.lib.format.read_magic(file)
            np.lib.format.read_array_header_1_0(file)
            self._offset = file.tell()
            self._fd = os.dup(file.fileno())
        os.unlink(request["out"])
        self._frame_bytes = math.prod(self.header["shape"][1:])

    def advance(self, frames: np.ndarray, decoded: int, block: bool) -> int:
        try:
            ready = decoded
            message = self._worker.receive(self._name, self._limits, self._deadline, block)
            while message is not None:
                if "ok" in message:  # the final reply: every frame is written
                    ready, self.decode_seconds = len(frames), message["decode_s"]
                    break
                ready = message["decoded"]
                message = self._worker.receive(self._name, self._limits, self._deadline, block=False)
            if ready > decoded:
                self._read(frames[decoded:ready], self._offset + decoded * self._frame_bytes)
        except BaseException:
            self.close()
            raise
        if self.decode_seconds is not None:
            self._give_back()
        return ready

    def _read(self, into: np.ndarray, offset: int) -> None:
        """Fill ``into`` from the file at ``offset`` (unbuffered: the file is still being written)."""
        view = memoryview(into).cast("B")
        while len(view):
            count = os.preadv(self._fd, [view], offset)
            if count <= 0:
                raise DecoderCrashError(f"The frames of '{self._name}' could not be read back from the decoder.")
            view, offset = view[count:], offset + count

    def _give_back(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            self._release(worker)

    def close(self) -> None:
        worker = self._worker
        if worker is not None and self.decode_seconds is None and not worker.broken:
            with contextlib.suppress(VideoError):  # let the worker finish (bounded by the deadline)
                while "ok" not in (worker.receive(self._name, self._limits, self._deadline) or {}):
                    pass
        self._give_back()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _tail(path: str, num_bytes: int = 4096) -> str:
    with contextlib.suppress(OSError), open(path, "rb") as file:
        file.seek(max(0, os.fstat(file.fileno()).st_size - num_bytes))
        return file.read().decode(errors="replace")
    return ""


# ----------------------------------------------------------------------------------------------
# Worker (the subprocess's side).


def _worker_main() -> None:
    """Serve requests until stdin closes. Runs in the subprocess started by :class:`_Worker`."""
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything the decoder prints goes to the log, never into the replies
    # decord2 dlopens every CUDA library of the pip ``nvidia`` packages it can find (≈0.6 s and
    # ≈800 MB resident when torch's CUDA wheels are installed); CPU decoding needs none of
    # them, and hiding the namespace package from its import-time search skips that.
    sys.modules.setdefault("nvidia", None)
    import decord  # noqa: F401  (loaded once, before the first request)

    _send(replies, {"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        with contextlib.suppress(OSError):
            os.ftruncate(2, 0)  # the log holds this request's messages only
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        budget = _address_space_bytes() + request["limits"]["max_decode_memory_bytes"] + _DECODER_HEADROOM_BYTES
        if hard != resource.RLIM_INFINITY:
            budget = min(budget, hard)
        resource.setrlimit(resource.RLIMIT_AS, (budget, hard))
        # The parent kills a worker that overruns; should the parent itself be gone, SIGALRM's
        # default action ends the worker a little later instead.
        signal.alarm(math.ceil(request["limits"]["decode_timeout_s"]) + 5)
        try:
            reply = {"ok": True, **_serve(request, lambda message: _send(replies, message))}
        except VideoError as exc:
            reply = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
        except MemoryError:
            reply = {"ok": False, "error": "DecodeMemoryError", "message": _memory_message(request["path"])}
        except Exception as exc:
            name = os.path.basename(request["path"])
            print(f"unexpected error while reading {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            message = (
                f"'{name}' could not be read as a video (an unexpected decoding error). "
                "Try converting it to MP4 (H.264), or another video."
            )
            reply = {"ok": False, "error": "VideoError", "message": message}
        finally:
            signal.alarm(0)
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        _send(replies, reply)


def _send(stream: Any, message: dict[str, Any]) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def _worker_log() -> str:
    """FFmpeg's and decord's messages for the current request (the worker's stderr file)."""
    with contextlib.suppress(OSError):
        size = os.fstat(2).st_size
        return os.pread(2, min(size, 16384), max(0, size - 16384)).decode(errors="replace")
    return ""


def _serve(request: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Answer one request; a streamed sample also ``send``s its plan, then a count after each frame."""
    started = time.perf_counter()
    limits = VideoLimits(**request["limits"])
    if request["op"] == "probe":
        return {"info": dataclasses.asdict(_probe_local(request["path"], limits, _worker_log))}
    window = request["window_s"]
    window_s = None if window is None else (float(window[0]), float(window[1]))

    def allocate(shape: tuple[int, ...]) -> np.ndarray:
        return _create_npy(request["out"], shape, request["path"])

    if request["op"] == "clips":
        clips = ClipSampling(**request["clips"])
        sampled = _sample_clips_local(request["path"], clips, limits, allocate, _worker_log, window_s)
        sampled.frames.flush()
        header = _header(sampled.info, sampled.indices, sampled.timestamps_s, sampled.frames.shape)
        return {key: header[key] for key in ("info", "indices", "timestamps_s")}
    try:
        plan = _plan_sampling(
            request["path"],
            request["num_frames"],
            request["fps"],
            limits,
            request["size"],
            _worker_log,
            request["strategy"],
            request["threads"],
            request["encode_cost"],
            window_s,
        )
    except _Unseekable as unseekable:  # read front to back, whole; announced once done
        sampled = unseekable.sample(allocate)
        sampled.frames.flush()
        header = _header(sampled.info, sampled.indices, sampled.timestamps_s, sampled.frames.shape)
        if request["stream"]:
            send({"header": header})
    else:
        header = plan.header()
        frames = allocate(plan.shape)
        if request["stream"]:
            send({"header": header})
        for done in _decode_into(plan, frames):
            if request["stream"] and done < len(plan.indices):  # the final reply announces the last one
                send({"decoded": done})  # MAP_SHARED: the caller's reads see the frame already
        frames.flush()
    if request["stream"]:
        return {"decode_s": time.perf_counter() - started}
    return {key: header[key] for key in ("info", "indices", "timestamps_s")}


def _create_npy(path: str, shape: tuple[int, ...], video_path: str) -> np.memmap:
    """A uint8 ``.npy`` file of ``shape`` mapped for writing, its space reserved up front so that
    a full disk or RAM disk fails here rather than with SIGBUS in the middle of decoding."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, header)
        offset = file.tell()
        try:
            os.posix_fallocate(file.fileno(), 0, offset + math.prod(shape))
        except OSError as exc:
            raise DecodeMemoryError(
                f"There is not enough temporary space for the frames of '{os.path.basename(video_path)}' "
                f"({math.prod(shape) / _MB:.0f} MB, {exc.strerror}); try fewer frames or a smaller size."
            ) from None
    return np.memmap(path, dtype=np.uint8, mode="r+", offset=offset, shape=shape)


# ----------------------------------------------------------------------------------------------
# Probing and decoding (in whichever process runs them).


def _no_log() -> str:
    return ""


def _allocate_in_memory(shape: tuple[int, ...]) -> np.ndarray:
    return np.empty(shape, dtype=np.uint8)


def _check_arguments(
    num_frames: int | None,
    fps: float | None,
    size: int | None,
    limits: VideoLimits,
    strategy: str = "auto",
    threads: int = 0,
    window_s: tuple[float, float] | None = None,
) -> None:
    if strategy not in ("auto", "seek", "sequential"):
        raise ValueError(f"strategy must be 'auto', 'seek' or 'sequential', not {strategy!r}")
    if threads < 0:
        raise ValueError(f"decoder_threads must be 0 (automatic) or more, got {threads}")
    if (num_frames is None) == (fps is None):
        raise ValueError("give exactly one of num_frames and fps")
    if num_frames is not None and not 1 <= num_frames <= limits.max_frames_to_sample:
        raise ValueError(f"num_frames must be in [1, {limits.max_frames_to_sample}], got {num_frames}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    _check_window(window_s)


def _check_window(window_s: tuple[float, float] | None) -> None:
    if window_s is not None and not (
        len(window_s) == 2 and all(math.isfinite(t) for t in window_s) and 0 <= window_s[0] < window_s[1]
    ):
        raise ValueError(f"window_s must be (start, end) seconds with 0 <= start < end, got {window_s!r}")


def _window_frames(
    starts: np.ndarray, info: VideoInfo, window_s: tuple[float, float], name: str
) -> tuple[int, int, float]:
    """``(first frame, frame count, length in seconds)`` of the frames starting in ``window_s``."""
    inside = np.flatnonzero((starts >= window_s[0]) & (starts < window_s[1]))
    if inside.size == 0:
        raise NoFramesError(
            f"'{name}' has no frame between {window_s[0]:.2f} s and {window_s[1]:.2f} s "
            f"(the video lasts {info.duration_s:.2f} s)."
        )
    return int(inside[0]), int(inside.size), min(window_s[1], info.duration_s) - window_s[0]


def _regular_file(path: str) -> tuple[str, int]:
    """``(path, size in bytes)`` of an existing regular file."""
    name = os.path.basename(path)
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise VideoNotFoundError(f"The file '{name}' does not exist.") from None
    except OSError as exc:
        raise NotAVideoError(f"The file '{name}' cannot be read ({exc.strerror}).") from None
    if not stat.S_ISREG(status.st_mode):
        raise NotAVideoError(f"'{name}' is not a regular file, so it cannot be a video.")
    return path, status.st_size


def _check_file(path: str, limits: VideoLimits) -> tuple[str, int]:
    path, size = _regular_file(path)
    name = os.path.basename(path)
    if size == 0:
        raise EmptyVideoFileError(f"The file '{name}' is empty (0 bytes); the upload may have failed.")
    if size > limits.max_file_bytes:
        raise VideoFileTooLargeError(
            f"The file '{name}' is {size / _MB:.1f} MB; the limit is {limits.max_file_bytes / _MB:.1f} MB."
        )
    if _is_text(path):
        # FFmpeg would render a text file as a video of its characters (its "tty" format).
        raise NotAVideoError(
            f"The file '{name}' is not a video: it holds text. Upload a video file, e.g. MP4 (H.264) or WebM."
        )
    overrun = _mp4_box_past_end(path, size)
    if overrun:
        # Decoders would silently return the frames before the cut (or fail to find the index).
        raise CorruptVideoError(
            f"'{name}' is a truncated MP4/MOV file: it ends part way through its '{overrun}' box, "
            "e.g. an incomplete upload or recording."
        )
    return path, size


_TEXT_PROBE_BYTES = 4096
_TEXT_CONTROLS = frozenset(b"\t\n\r\x0c\x1b")


def _is_text(path: str) -> bool:
    """Whether the file starts with text: UTF-8 with no control bytes but tab, newlines, form feed
    and escape. Every video container starts with binary fields (sizes, sync bytes, zeros)."""
    with open(path, "rb") as file:
        head = file.read(_TEXT_PROBE_BYTES)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the end of the probe
            return False
    return all(byte >= 0x20 or byte in _TEXT_CONTROLS for byte in head) and 0x7F not in head


_MP4_TOP_LEVEL_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide")


def _has_mp4_header(path: str) -> bool:
    """Whether the file starts like an ISO-BMFF (MP4/MOV) file: a top-level box type at byte 4."""
    with open(path, "rb") as file:
        return file.read(8)[4:] in _MP4_TOP_LEVEL_BOXES


def _mp4_box_past_end(path: str, file_bytes: int) -> str | None:
    """For an MP4/MOV file, the type of the top-level box that runs past the end of the file
    (the file is truncated), else None. Reads 16 bytes per top-level box."""
    if not _has_mp4_header(path):
        return None
    offset = 0
    with open(path, "rb") as file:
        while offset + 8 <= file_bytes:
            file.seek(offset)
            header = file.read(16)
            box_bytes, box_type = int.from_bytes(header[:4], "big"), header[4:8]
            if box_bytes == 1:  # 64-bit size follows the type
                box_bytes = int.from_bytes(header[8:16], "big") if len(header) == 16 else file_bytes + 1
            elif box_bytes == 0:  # the box extends to the end of the file
                return None
            if box_bytes < 8:
                return None  # not a box structure; the decoder will judge
            offset += box_bytes
    return box_type.decode("latin-1") if offset > file_bytes else None


def _open_reader(path: str, ffmpeg_log: Callable[[], str], width: int = -1, height: int = -1, threads: int = 0) -> Any:
    """A ``decord.VideoReader`` (``width``/``height`` of -1 keep the original size; ``threads``
    decoder threads, 0 for FFmpeg's choice, one per core)."""
    import decord

    name = os.path.basename(path)
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), width=width, height=height, num_threads=threads)
    except MemoryError:
        raise DecodeMemoryError(_memory_message(path)) from None
    except Exception as exc:  # decord raises RuntimeError, DECORDError or AssertionError here
        message, log = str(exc), ffmpeg_log()
        if "cannot find video stream" in message:
            raise NoVideoStreamError(f"'{name}' has no video stream (is it an audio-only file?).") from exc
        if "Invalid frame count" in message or "avfilter_graph_create_filter" in message:
            # The stream's decoder parameters are unknown because no frame could be read.
            raise NoFramesError(
                f"'{name}' has a video stream but no frame that can be decoded; the file may be empty or truncated."
            ) from exc
        if message.startswith("Error reading") and _has_mp4_header(path):
            detail = "its index (moov atom) is missing" if "moov atom not found" in log else "it cannot be opened"
            raise CorruptVideoError(
                f"'{name}' is an MP4/MOV file but {detail}: the file is truncated or damaged, "
                "e.g. an incomplete upload or recording."
            ) from exc
        marker = f"ERROR opening: {path}, "
        reasons = [line.split(marker, 1)[1].strip() for line in log.splitlines() if marker in line]
        if reasons:
            reason = reasons[-1]
        elif message.startswith("Error reading"):  # decord's generic text; FFmpeg's went to stderr
            reason = "unrecognised or damaged container"
        else:
            reason = "unrecognised or damaged container"
        raise NotAVideoError(
            f"The file '{name}' is not a video this server can read ({reason}). "
            "Upload a video file, e.g. MP4 (H.264) or WebM."
        ) from exc
    return reader


def _memory_message(path: str) -> str:
    return (
        f"Decoding '{os.path.basename(path)}' ran out of memory; "
        "try fewer frames or a smaller size, or a shorter video."
    )


def _probe_reader(reader: Any, path: str, file_bytes: int, limits: VideoLimits) -> tuple[VideoInfo, np.ndarray]:
    """The video's :class:`VideoInfo` and its frames' start times ``[T]`` in seconds."""
    name = os.path.basename(path)
    num_frames = len(reader)
    fps = float(reader.get_avg_fps())
    pts = np.asarray(reader.get_frame_timestamp(np.arange(num_frames)), dtype=np.float64)  # [T, 2] (start, end)
    # Demuxers sometimes report garbage (AV_NOPTS_VALUE) or no times at all; then the frame
    # rate gives the times.
    pts_ok = (
        bool(np.isfinite(pts).all())
        and bool((np.abs(pts) < 1e7).all())
        and bool((np.diff(pts[:, 0]) >= 0).all())
        and pts[-1, 1] > pts[0, 0]
    )
    if pts_ok:
        starts = pts[:, 0] - pts[0, 0]
        duration_s = float(pts[-1, 1] - pts[0, 0])
        if not (math.isfinite(fps) and fps > 0):
            fps = num_frames / duration_s
    elif math.isfinite(fps) and fps > 0:
        starts = np.arange(num_frames, dtype=np.float64) / fps
        duration_s = num_frames / fps
    else:
        raise CorruptVideoError(f"'{name}' has neither frame timestamps nor a frame rate.")
    if duration_s > limits.max_duration_s:
        raise VideoTooLongError(
            f"'{name}' is {_format_duration(duration_s)} long; the limit is {_format_duration(limits.max_duration_s)}."
        )
    try:
        height, width = reader.next().shape[:2]
    except StopIteration:
        raise NoFramesError(f"'{name}' has a video stream but no frame that can be decoded.") from None
    except MemoryError:
        raise DecodeMemoryError(_memory_message(path)) from None
    except Exception as exc:
        raise CorruptVideoError(
            f"The first frame of '{name}' cannot be decoded: the file is corrupt or uses a codec this server "
            "cannot decode. Try converting it to MP4 (H.264)."
        ) from exc
    if width * height > limits.max_pixels:
        raise VideoResolutionTooLargeError(
            f"'{name}' is {width}x{height} pixels; the limit is {limits.max_pixels / 1e6:.1f} megapixels "
            "(4K UHD is 8.3)."
        )
    info = VideoInfo(path, file_bytes, num_frames, fps, duration_s, int(width), int(height))
    return info, starts


def _format_duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _probe_local(path: str, limits: VideoLimits, ffmpeg_log: Callable[[], str]) -> VideoInfo:
    path, file_bytes = _check_file(path, limits)
    try:
        return _probe_reader(_open_reader(path, ffmpeg_log), path, file_bytes, limits)[0]
    except CorruptVideoError as error:
        return _read_in_order(path, file_bytes, limits, error)[0]


def _read_in_order(
    path: str,
    file_bytes: int,
    limits: VideoLimits,
    error: CorruptVideoError,
    count_for: Callable[[VideoInfo], int] | None = None,
    size: int | None = None,
    allocate: Callable[[tuple[int, ...]], np.ndarray] | None = None,
) -> tuple[VideoInfo, SampledFrames | None]:
    """For a container the seeking reader fails on although FFmpeg reads it front to back (e.g.
    MPEG-TS: no index to seek with): count the frames from the packets, then decode in order and
    keep ``count_for(info)`` uniformly spaced ones (with ``allocate``; else probe only).

    Raises ``error`` (what the seeking reader found) when this way fails too.
    """
    import av

    # Importing PyAV routes FFmpeg's log into Python, away from the worker's log file, where the
    # seeking reader's diagnoses (e.g. "moov atom not found") are read for later requests.
    av.logging.restore_default_callback()
    name = os.path.basename(path)
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            times = sorted(
                float(packet.pts * packet.time_base)
                for packet in container.demux(stream)
                if packet.pts is not None and packet.size
            )
            width, height = stream.codec_context.width, stream.codec_context.height
            rate = float(stream.average_rate or 0) or (len(times) / max(times[-1] - times[0], 1e-3))
    except (av.FFmpegError, IndexError, ZeroDivisionError, OverflowError, ValueError):
        raise error from None
    if not times or width <= 0 or height <= 0:
        raise error
    starts = np.asarray(times, dtype=np.float64) - times[0]  # [T]
    duration_s = float(starts[-1] + 1.0 / rate)
    if duration_s > limits.max_duration_s:
        raise VideoTooLongError(
            f"'{name}' is {_format_duration(duration_s)} long; the limit is {_format_duration(limits.max_duration_s)}."
        )
    if width * height > limits.max_pixels:
        raise VideoResolutionTooLargeError(
            f"'{name}' is {width}x{height} pixels; the limit is {limits.max_pixels / 1e6:.1f} megapixels "
            "(4K UHD is 8.3)."
        )
    info = VideoInfo(path, file_bytes, len(starts), rate, duration_s, int(width), int(height))
    if allocate is None or count_for is None:
        return info, None
    count = count_for(info)
    indices = uniform_indices(info.num_frames, count)
    out_height, out_width = _output_size(height, width, size)
    _check_decode_memory(name, count, out_height, out_width, limits)
    frames = allocate((count, out_height, out_width, 3))  # [N, H, W, 3]
    wanted = {int(index): row for row, index in enumerate(indices)}
    found = 0
    try:
        with av.open(path) as container:
            for number, frame in enumerate(container.decode(container.streams.video[0])):
                row = wanted.get(number)
                if row is not None:
                    frames[row] = frame.to_ndarray(format="rgb24", width=out_width, height=out_height)
                    found += 1
                if found == count:
                    break
    except av.FFmpegError:
        raise error from None
    if found == 0:
        raise error
    if found < count:  # fewer frames decoded than packets counted: repeat the last one found
        frames[found:] = frames[found - 1]
    return info, SampledFrames(frames=frames, timestamps_s=starts[indices], indices=indices, info=info)


def _check_decode_memory(name: str, count: int, height: int, width: int, limits: VideoLimits) -> None:
    frame_bytes = height * width * 3
    if count * frame_bytes > limits.max_decode_memory_bytes:
        raise DecodeMemoryError(
            f"{count} frames of {width}x{height} from '{name}' need {count * frame_bytes / _MB:.0f} MB; "
            f"the limit is {limits.max_decode_memory_bytes / _MB:.0f} MB. Sample fewer frames or a smaller size."
        )


def _output_size(height: int, width: int, size: int | None) -> tuple[int, int]:
    """``(height, width)`` with the short side ``size`` and the aspect ratio kept."""
    if size is None:
        return height, width
    if height <= width:
        return size, max(1, round(width * size / height))
    return max(1, round(height * size / width)), size


@dataclass(frozen=True, eq=False)
class _Plan:
    """What to decode from one opened video: the reader (at the output size), the probe, and the
    sampled frames' indices ``[N]``, times ``[N]`` s, output shape ``(N, H, W, 3)`` and order."""

    reader: Any
    path: str
    info: VideoInfo
    indices: np.ndarray
    timestamps_s: np.ndarray
    shape: tuple[int, int, int, int]
    strategy: Literal["seek", "sequential"]
    threads: int

    def header(self) -> dict[str, Any]:
        """The plan as JSON (what a worker tells its caller before the first frame)."""
        return _header(self.info, self.indices, self.timestamps_s, self.shape, self.strategy, self.threads)


def _header(
    info: VideoInfo,
    indices: np.ndarray,
    timestamps_s: np.ndarray,
    shape: tuple[int, ...],
    strategy: str = "sequential",
    threads: int = 0,
) -> dict[str, Any]:
    return {
        "info": dataclasses.asdict(info),
        "indices": indices.tolist(),
        "timestamps_s": timestamps_s.tolist(),
        "shape": list(shape),
        "strategy": strategy,
        "threads": threads,
    }


class _Unseekable(Exception):  # noqa: N818  (a signal between two functions, not an error to report)
    """The seeking reader failed to open a video that may still read front to back (e.g. MPEG-TS)."""

    def __init__(
        self,
        error: CorruptVideoError,
        path: str,
        file_bytes: int,
        num_frames: int | None,
        fps: float | None,
        limits: VideoLimits,
        size: int | None,
    ) -> None:
        super().__init__(str(error))
        self.error, self.path, self.file_bytes = error, path, file_bytes
        self.num_frames, self.fps, self.limits, self.size = num_frames, fps, limits, size

    def sample(self, allocate: Callable[[tuple[int, ...]], np.ndarray]) -> SampledFrames:
        """The sample read front to back (raises the seeking reader's error if that fails too)."""

        def count_for(info: VideoInfo) -> int:
            wanted = self.num_frames if self.num_frames is not None else max(1, round(info.duration_s * self.fps))
            return min(wanted, self.limits.max_frames_to_sample, info.num_frames)

        sampled = _read_in_order(self.path, self.file_bytes, self.limits, self.error, count_for, self.size, allocate)[1]
        assert sampled is not None
        return sampled


def _plan_sampling(
    path: str,
    num_frames: int | None,
    fps: float | None,
    limits: VideoLimits,
    size: int | None,
    ffmpeg_log: Callable[[], str],
    strategy: DecodeStrategy = "auto",
    threads: int = 0,
    encode_cost: float | None = None,
    window_s: tuple[float, float] | None = None,
) -> _Plan:
    """Check and probe ``path``, choose the frames, check their memory, open the reader that decodes
    them (with ``threads`` decoder threads, or, given an ``encode_cost``, as many as
    :func:`decoder_threads_beside_encoder` says)."""
    path, file_bytes = _check_file(path, limits)
    name = os.path.basename(path)
    try:
        reader = _open_reader(path, ffmpeg_log, threads=threads)
        info, starts = _probe_reader(reader, path, file_bytes, limits)
    except CorruptVideoError as error:
        if window_s is not None:  # reading front to back cannot start at a time
            raise
        raise _Unseekable(error, path, file_bytes, num_frames, fps, limits, size) from None

    first, available, span_s = 0, info.num_frames, info.duration_s
    if window_s is not None:
        first, available, span_s = _window_frames(starts, info, window_s, name)
    wanted = num_frames if num_frames is not None else max(1, round(span_s * fps))
    count = min(wanted, limits.max_frames_to_sample, available)
    indices = first + uniform_indices(available, count)  # strictly increasing: count <= available
    out_height, out_width = _output_size(info.height, info.width, size)
    _check_decode_memory(name, count, out_height, out_width, limits)
    key_indices = np.asarray(reader.get_key_indices())
    if strategy == "auto":
        strategy = choose_decode_strategy(key_indices, indices)
    probe_threads = threads
    if encode_cost is not None:
        decode_frames = decode_costs(key_indices, indices)[strategy]
        threads = decoder_threads_beside_encoder(decode_frames, info.width * info.height / 1e6, count, encode_cost)
    if (out_height, out_width) != (info.height, info.width) or threads != probe_threads:
        reader = _open_reader(path, ffmpeg_log, width=out_width, height=out_height, threads=threads)
    else:
        reader.seek(0)  # the probe read the first frame
    shape = (count, out_height, out_width, 3)
    return _Plan(reader, path, info, indices, starts[indices], shape, strategy, threads)


def _decode_into(plan: _Plan, frames: np.ndarray) -> Iterator[int]:
    """Decode the plan's frames into ``frames`` ``[N, H, W, 3]`` in order, yielding how many are done
    after each one. ``seek`` reads each frame with decord's accurate seek; ``sequential`` never seeks:
    it discards frames up to the one before each keyframe, reads across the keyframe, and so on."""
    reader, name = plan.reader, os.path.basename(plan.path)
    keys = np.asarray(reader.get_key_indices(), dtype=np.int64) if plan.strategy == "sequential" else None
    position = 0  # the next frame the reader returns
    for done, target in enumerate(plan.indices.tolist(), start=1):
        try:
            if keys is None:
                frame = reader.get_batch([target]).asnumpy()[0]  # [H, W, 3]
            else:
                # decord's skip_frames seeks when it would cross a keyframe; stop just before each
                # one and read across it instead.
                for key in keys[(keys > position) & (keys <= target)].tolist():
                    if key - 1 > position:
                        reader.skip_frames(key - 1 - position)
                    reader.next()
                    position = key
                if target > position:
                    reader.skip_frames(target - position)
                frame = reader.next().asnumpy()
                position = target + 1
        except MemoryError:
            raise DecodeMemoryError(_memory_message(plan.path)) from None
        except Exception as exc:
            raise CorruptVideoError(
                f"Decoding '{name}' failed part way through (near frame {target} of "
                f"{plan.info.num_frames}); the file is truncated or corrupt."
            ) from exc
        if frame.shape != plan.shape[1:]:
            raise CorruptVideoError(
                f"Decoding '{name}' returned frames of an unexpected size; the file may be damaged. "
                "Try converting it to MP4 (H.264)."
            )
        frames[done - 1] = frame
        yield done


def _sample_local(
    path: str,
    num_frames: int | None,
    fps: float | None,
    limits: VideoLimits,
    size: int | None,
    allocate: Callable[[tuple[int, ...]], np.ndarray],
    ffmpeg_log: Callable[[], str],
    strategy: DecodeStrategy = "auto",
    threads: int = 0,
    window_s: tuple[float, float] | None = None,
) -> SampledFrames:
    try:
        plan = _plan_sampling(path, num_frames, fps, limits, size, ffmpeg_log, strategy, threads, None, window_s)
    except _Unseekable as unseekable:
        return unseekable.sample(allocate)
    frames = allocate(plan.shape)  # [N, H, W, 3]
    for _ in _decode_into(plan, frames):
        pass
    return SampledFrames(frames=frames, timestamps_s=plan.timestamps_s, indices=plan.indices, info=plan.info)


def _sample_clips_local(
    path: str,
    clips: ClipSampling,
    limits: VideoLimits,
    allocate: Callable[[tuple[int, ...]], np.ndarray],
    ffmpeg_log: Callable[[], str],
    window_s: tuple[float, float] | None = None,
) -> SampledFrames:
    path, file_bytes = _check_file(path, limits)
    name = os.path.basename(path)
    reader = _open_reader(path, ffmpeg_log)
    info, starts = _probe_reader(reader, path, file_bytes, limits)
    first, available, span_s = 0, info.num_frames, info.duration_s
    if window_s is not None:
        first, available, span_s = _window_frames(starts, info, window_s, name)
    origin = float(starts[first])
    indices, times, num_clips = clip_frame_plan(starts[first : first + available] - origin, span_s, clips)
    indices, times = indices + first, times + origin
    if num_clips == 0:
        raise VideoTooShortError(
            f"'{name}' is {span_s:.2f} s long{' in that window' if window_s else ''}; this model reads the video "
            f"in clips of {clips.clip_seconds:g} s, so it needs at least {clips.clip_seconds:g} s."
        )
    frame_bytes = clips.crop * clips.crop * 3
    if len(indices) * frame_bytes > limits.max_decode_memory_bytes:
        raise DecodeMemoryError(
            f"{num_clips} clips of '{name}' need {len(indices) * frame_bytes / _MB:.0f} MB; the limit is "
            f"{limits.max_decode_memory_bytes / _MB:.0f} MB. Use a shorter video."
        )
    out_height, out_width = clip_resize_size(info.height, info.width, clips.short_side)
    top, left = center_crop_offsets(out_height, out_width, clips.crop)
    reader = _open_reader(path, ffmpeg_log, width=out_width, height=out_height)

    frames = allocate((len(indices), clips.crop, clips.crop, 3))  # [M, crop, crop, 3]
    unique, inverse = np.unique(indices, return_inverse=True)  # both sorted: indices never decrease
    per_batch = max(1, _DECODE_CHUNK_BYTES // (out_height * out_width * 3))
    for start in range(0, len(unique), per_batch):
        batch_indices = unique[start : start + per_batch]
        try:
            batch = reader.get_batch(batch_indices).asnumpy()  # [b, H', W', 3]
        except MemoryError:
            raise DecodeMemoryError(_memory_message(path)) from None
        except Exception as exc:
            raise CorruptVideoError(
                f"Decoding '{name}' failed part way through (near frame {batch_indices[0]} of "
                f"{info.num_frames}); the file is truncated or corrupt."
            ) from exc
        if batch.shape != (len(batch_indices), out_height, out_width, 3):
            raise CorruptVideoError(f"Decoding '{name}' returned frames of an unexpected shape {batch.shape}.")
        cropped = batch[:, top : top + clips.crop, left : left + clips.crop]
        first, stop = np.searchsorted(inverse, [start, start + len(batch_indices)])
        frames[first:stop] = cropped[inverse[first:stop] - start]
    return SampledFrames(frames=frames, timestamps_s=times, indices=indices, info=info)
