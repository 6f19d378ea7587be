"""Batch frame-feature extraction: a set of videos -> one safetensors file ``clip_id -> [T, F]``.

A clip is a whole video, or a window of one (STAR: each question's window, keyed by question id);
a window's frames are sampled from its own frame range, decoded frame-accurately.

Decoding runs in DataLoader worker processes that stay ahead of the encoder (a bounded queue of
decoded videos) while the main process encodes, so the two overlap. On the CPU the decoders get one
thread each and the encoder one single-threaded lane per core (see :mod:`glance_focus.overlap`).
Each finished video is written at once (atomically) to a ``.parts`` folder beside the output, so an
interrupted run resumes without redoing finished videos; the final file is assembled from the parts
at the end. Under ``torchrun`` each process takes every ``world``-th video and rank 0 assembles.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset

from glance_focus.checkpoint import CheckpointInfo
from glance_focus.data.features import FeatureStore, write_features
from glance_focus.data.types import DatasetSplit, atomic_path
from glance_focus.encoders import EncoderUnavailableError, FrameEncoder, load_frame_encoder
from glance_focus.overlap import cpu_cores, decoder_threads_for, encode_single_threaded
from glance_focus.sampling import FrameSampling
from glance_focus.video import ClipSampling, VideoError, VideoLimits, sample_clips, sample_frames

DECODE_SHORT_SIDE = 224
"""Frames are decoded with this short side (the CLIP encoders then resize/crop to their input)."""
FEATURES_DIR = "features"


class ExtractionError(ValueError):
    """Features for a split are missing and cannot be made (the message says why)."""


def encoder_slug(spec: str) -> str:
    """A folder name for an encoder spec: ``ViT-B-32:random-seed0`` -> ``ViT-B-32_random-seed0``."""
    if "/" in spec or "\\" in spec:  # a local weights file: name it by its content-free path hash
        arch = spec.split(":", 1)[0]
        return f"{re.sub(r'[^A-Za-z0-9.-]+', '_', arch)}_file-{hashlib.sha1(spec.encode()).hexdigest()[:10]}"
    return re.sub(r"[^A-Za-z0-9.-]+", "_", spec)


def features_path_for(root: Path, split: str, encoder_spec: str) -> Path:
    """Where extraction writes the features of ``split`` made with ``encoder_spec``."""
    return Path(root) / FEATURES_DIR / encoder_slug(encoder_spec) / f"{split}.safetensors"


def resolve_features(split: DatasetSplit, encoder_spec: str | None) -> Path | None:
    """The feature file to use for ``split``.

    With an encoder spec: the file extracted with that encoder, else the split's own features file
    if its metadata names the same encoder (or names none, like the reference's ``.pth`` files).
    Without: the split's own file, else the only extracted file present.
    """
    if encoder_spec is not None:
        extracted = features_path_for(split.root, split.split, encoder_spec)
        if extracted.is_file():
            return extracted
        if split.features_path is not None:
            recorded = FeatureStore(split.features_path).metadata.get("frame_encoder")
            if recorded in (None, encoder_spec):
                return split.features_path
        return None
    if split.features_path is not None:
        return split.features_path
    found = sorted((Path(split.root) / FEATURES_DIR).glob(f"*/{split.split}.safetensors"))
    return found[0] if len(found) == 1 else None


@dataclass(frozen=True)
class ExtractionResult:
    path: Path | None
    """The assembled file (None on ranks other than 0)."""
    encoded_videos: int
    encoded_frames: int
    skipped_videos: int
    """Already finished in an earlier run."""
    failed: dict[str, str]
    """video id -> error message."""
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.encoded_frames / self.seconds if self.seconds > 0 else 0.0


class _DecodeDataset(Dataset):
    """Decodes one clip per item in a DataLoader worker: (clip id, frames uint8 [N,H,W,3] or error).

    ``clips``: decode every clip of the video (or window) instead, for clip encoders (S3D);
    ``num_frames`` then does not apply. ``decoder_threads``: FFmpeg threads for uniform frames (0:
    every core); clip sampling keeps FFmpeg's choice.
    """

    def __init__(
        self,
        items: list[tuple[str, Path]],
        num_frames: int,
        limits: VideoLimits,
        windows: Mapping[str, tuple[float, float]] | None = None,
        clips: ClipSampling | None = None,
        decoder_threads: int = 0,
    ) -> None:
        self.items = items
        self.num_frames = num_frames
        self.limits = limits
        self.windows = dict(windows or {})
        self.clips = clips
        self.decoder_threads = decoder_threads

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor | None, str | None]:
        video_id, path = self.items[index]
        try:
            if self.clips is not None:
                sampled = sample_clips(
                    path, self.clips, self.limits, window_s=self.windows.get(video_id), in_process=True
                )
            else:
                sampled = sample_frames(
                    path,
                    num_frames=self.num_frames,
                    limits=self.limits,
                    size=DECODE_SHORT_SIDE,
                    window_s=self.windows.get(video_id),
                    decoder_threads=self.decoder_threads,
                    in_process=True,
                )
        except VideoError as exc:
            return video_id, None, str(exc)
        return video_id, torch.from_numpy(sampled.frames), None


def _part_path(parts: Path, video_id: str) -> Path:
    return parts / f"{hashlib.sha1(video_id.encode()).hexdigest()}.safetensors"


def _first(batch: list):
    return batch[0]


def extract_features(
    videos: Mapping[str, Path],
    out_path: Path,
    encoder: FrameEncoder,
    num_frames: int,
    *,
    workers: int = 2,
    rank: int = 0,
    world: int = 1,
    limits: VideoLimits | None = None,
    progress: bool = True,
    on_video: Callable[[str], None] | None = None,
    windows: Mapping[str, tuple[float, float]] | None = None,
) -> ExtractionResult:
    """Encode ``num_frames`` uniformly sampled frames of each video and write ``out_path``; with a clip
    encoder (S3D), every whole clip of each video instead (one row per second, ``num_frames`` unused;
    the row rule is applied when the features are read, as the STAR loader does).

    ``videos`` maps each clip id (the key written) to its video file; ``windows`` gives a clip's
    ``(start, end)`` seconds in that file where it is not the whole video.

    Resumable: videos finished by an earlier (interrupted) run are not decoded again. Videos that
    fail to decode are reported in the result and left out of the file. Call on every rank under
    torchrun; synchronise (barrier) before calling :func:`assemble_features` on rank 0 — or use
    ``world == 1``, where it is done here.
    """
    from tqdm.auto import tqdm

    out_path = Path(out_path)
    parts = out_path.with_name(out_path.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    mine = sorted(videos)[rank::world]
    todo = [(v, Path(videos[v])) for v in mine if not _part_path(parts, v).is_file()]
    skipped = len(mine) - len(todo)
    limits = limits or VideoLimits(max_frames_to_sample=max(num_frames, 1))
    sampling = FrameSampling.for_encoder(str(encoder.spec))
    loader = DataLoader(
        _DecodeDataset(
            todo,
            num_frames,
            limits,
            windows,
            sampling.clips() if sampling.is_clips else None,
            decoder_threads_for(encoder) if workers else 0,
        ),
        batch_size=1,
        collate_fn=_first,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        worker_init_fn=_single_thread_worker,
    )
    failed: dict[str, str] = {}
    encoded_frames = 0
    started = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"extract[{rank}]", disable=not progress, dynamic_ncols=True)
    # One single-threaded encoder lane per core on the CPU (see glance_focus.overlap), one on a GPU;
    # videos are finished (written, reported) in order, at most one more than the lanes in flight.
    lanes = cpu_cores() if encoder.device.type == "cpu" else 1
    pending: deque[tuple[str, Future[torch.Tensor] | None, int, str | None]] = deque()

    def finish() -> None:
        nonlocal encoded_frames
        video_id, encoding, count, error = pending.popleft()
        if encoding is None:
            failed[video_id] = error or "decode failed"
        else:
            features = encoding.result()
            with atomic_path(_part_path(parts, video_id)) as tmp:
                save_file({"features": features.contiguous()}, str(tmp), metadata={"video_id": video_id})
            encoded_frames += count
        bar.update(1)
        if on_video is not None:
            on_video(video_id)

    def encode(frames: torch.Tensor) -> torch.Tensor:
        return encode_single_threaded(encoder, frames) if lanes > 1 else encoder.encode(frames)

    decoded = iter(loader)  # starts the decoding workers before any encoder thread exists
    with ThreadPoolExecutor(lanes, thread_name_prefix="extract-encode") as lane_pool:
        for video_id, frames, error in decoded:
            encoding = None if frames is None else lane_pool.submit(encode, frames)
            pending.append((video_id, encoding, 0 if frames is None else len(frames), error))
            while len(pending) > lanes:
                finish()
        while pending:
            finish()
    bar.close()
    seconds = time.perf_counter() - started
    if failed:
        failures = parts / f"failed-rank{rank}.json"
        failures.write_text(json.dumps(failed, indent=1))
    path = None
    if world == 1:
        path = assemble_features(videos, out_path, encoder, num_frames)
    return ExtractionResult(path, len(todo) - len(failed), encoded_frames, skipped, failed, seconds)


def assemble_features(videos: Mapping[str, Path], out_path: Path, encoder: FrameEncoder, num_frames: int) -> Path:
    """Write the finished parts of ``videos`` into ``out_path`` (atomically) with the encoder in its metadata."""
    out_path = Path(out_path)
    parts = out_path.with_name(out_path.name + ".parts")
    mapping: dict[str, torch.Tensor] = {}
    for video_id in sorted(videos):
        part = _part_path(parts, video_id)
        if part.is_file():
            with safe_open(str(part), framework="pt") as f:
                mapping[video_id] = f.get_tensor("features")
    if not mapping:
        raise RuntimeError(f"no video could be encoded for {out_path}")
    sampling = FrameSampling.for_encoder(str(encoder.spec))
    metadata = {
        "frame_encoder": encoder.spec if isinstance(encoder.spec, str) else str(encoder.spec),
        "fingerprint": encoder.fingerprint,
        "num_frames": str(num_frames),
        "sampling": "uniform",
        "decode_short_side": str(DECODE_SHORT_SIDE),
    }
    if sampling.is_clips:  # every clip of each video: one row per clip
        metadata.update(num_frames="all clips", sampling=json.dumps(sampling.to_json()))
        metadata.pop("decode_short_side")
    write_features(out_path, mapping, metadata)
    return out_path


def _single_thread_worker(_: int) -> None:
    torch.set_num_threads(1)


def split_videos(split: DatasetSplit) -> tuple[dict[str, Path], list[str]]:
    """The video file of each clip of a split's questions (by clip id), and the clip ids whose video
    file is missing. Clips that are windows of their video: :func:`split_windows`."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for clip_id, (video_id, _) in split.clips().items():
        path = split.video_path(video_id)
        if path is None:
            missing.append(clip_id)
        else:
            found[clip_id] = path
    return found, missing


def split_windows(split: DatasetSplit) -> dict[str, tuple[float, float]]:
    """Clip id -> its ``(start, end)`` seconds in its video, for the clips that are not a whole video."""
    return {clip_id: window for clip_id, (_, window) in split.clips().items() if window is not None}


def features_for_checkpoint(
    split: DatasetSplit,
    info: CheckpointInfo,
    device: torch.device | str = "cpu",
    on_video: Callable[[int, int], None] | None = None,
) -> Path:
    """The feature file of ``split`` made with the checkpoint's frame encoder, extracted first if needed.

    The split's own file or one extracted earlier
    (:func:`~glance_focus.extraction.resolve_features`), else the split's videos are encoded with the
    checkpoint's encoder into ``ROOT/features/<encoder>/<split>.safetensors`` (cached, resumable).
    ``on_video(done, total)`` follows extraction. A file made by another build of the encoder
    (fingerprint in its metadata) is refused.
    """
    path = resolve_features(split, info.frame_encoder)
    if path is None:
        videos, missing = split_videos(split)
        if missing:
            raise ExtractionError(
                f"{len(missing)} clips of {split.name}/{split.split} have neither a video file nor features "
                f"(first: {missing[:3]})"
            )
        try:
            encoder = load_frame_encoder(info.frame_encoder, device=device)
        except (EncoderUnavailableError, ValueError) as exc:
            raise ExtractionError(
                f"{split.name}/{split.split} has no features and they cannot be extracted: {exc}"
            ) from exc
        encoder.verify_fingerprint(info.frame_encoder_fingerprint)
        path = features_path_for(split.root, split.split, info.frame_encoder)
        done = [0]

        def count(_: str) -> None:
            done[0] += 1
            if on_video is not None:
                on_video(done[0], len(videos))

        result = extract_features(
            videos, path, encoder, info.num_frames, progress=False, on_video=count, windows=split_windows(split)
        )
        if result.failed:
            raise ExtractionError(
                f"{len(result.failed)} videos failed to decode: {dict(list(result.failed.items())[:3])}"
            )
    recorded = FeatureStore(path).metadata.get("fingerprint")
    if recorded and info.frame_encoder_fingerprint and recorded != info.frame_encoder_fingerprint:
        raise ExtractionError(f"{path} was made with another encoder build than the checkpoint's")
    return path
