"""Inference: a :class:`Predictor` loads a checkpoint and its encoders once and answers questions
about video files (or precomputed features) with plain results: the answer, per-option
probabilities, one event per memory prompt, the attention maps aligned to frame timestamps and
a timing breakdown. No UI code here.

A new video's frames are encoded while the decoding worker is still producing the later ones
(``prepare(..., encode_while_decoding=True)``, what :meth:`Predictor.predict` does, through
:func:`~glance_focus.overlap.encode_stream`); on ZeroGPU the frames are decoded first and encoded in
the GPU function (:meth:`Predictor.answer_prepared`). Each timing covers its own step only:
one-time costs (building an encoder, first calls) are paid by :meth:`Predictor.warm_up` or, without
it, shown as ``start_up``.

On an accelerator, a request that runs out of its memory (``torch.OutOfMemoryError``) is answered
again on the CPU by a second copy of the model and encoders, built on first need, so a busy GPU
slows a request down instead of failing it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from glance_focus.checkpoint import CheckpointInfo, LoadedCheckpoint, load_checkpoint
from glance_focus.data.features import sample_features
from glance_focus.encoders import FrameEncoder, load_frame_encoder, resolve_device
from glance_focus.evaluation import checkpoint_text_features
from glance_focus.evidence import (
    Evidence,
    HiddenRangeError,
    build_evidence,
    hidden_frame_mask,
    hidden_range_evidence,
    leave_one_out,
)
from glance_focus.extraction import DECODE_SHORT_SIDE
from glance_focus.feature_cache import FeatureCache, FeatureKey
from glance_focus.forksafe import ForkSafeLock
from glance_focus.overlap import BATCH_WHILE_DECODING, encode_cost_for, encode_stream, intra_op_threads
from glance_focus.spans import spans_to_se
from glance_focus.text_features import TextFeatureCache, TextTooLongError, question_sequences
from glance_focus.video import (
    DEFAULT_LIMITS,
    SampledFrames,
    VideoLimits,
    default_pool,
    sample_clips,
    sample_frames,
    stream_frames,
    video_content_hash,
)

MAX_QUESTION_CHARS = 1000
MAX_OPTION_CHARS = 300
MAX_OPTIONS = 10
THUMBNAIL_HEIGHT = 72
TEXT_MEMO_ENTRIES = 10_000
"""Question strings whose token states a Predictor keeps (float16; with MiniLM's 384-d tokens and 64
tokens at most 49 KB each, about 0.5 GB in all); a public server sees an endless stream of new questions."""

log = logging.getLogger(__name__)


class InputError(ValueError):
    """The question or the options cannot be answered as given (the message says why)."""


@dataclass(frozen=True)
class PredictedSpan:
    """The event one memory prompt found."""

    slot: int
    """Position of the prompt in temporal order (what the focus stage reads)."""
    start_s: float
    end_s: float
    label: str
    """Event class name, or ``"background"``."""
    label_index: int
    score: float
    """Probability of ``label``."""
    background: bool


@dataclass(frozen=True)
class AttentionMaps:
    """Attention aligned to the sampled frames (``frame_times_s``) and to the memory prompts
    (in temporal order). Question maps are for the sequence of the predicted answer."""

    frame_times_s: np.ndarray
    """``[T]``"""
    prompt_to_frame: np.ndarray
    """``[Q, T]``: glance stage, each memory prompt over the frames."""
    question_tokens: list[str]
    """``L`` token strings of the predicted answer's text sequence."""
    question_to_memory: np.ndarray
    """``[L, Q]``: focus stage step 1, each question token over the memory prompts."""
    events_to_frames: np.ndarray
    """``[L, T]``: focus stage step 2, each token's selected events over the frames."""
    answer_to_frames: np.ndarray
    """``[T]``: the answer query's attention carried through to the frames."""
    padding_rows: int = 0
    """Zero rows appended after the ``T`` real rows (a clip model reading a short video); not in the maps."""
    padding_share: float = 0.0
    """Fraction of the glance and answer attention (mean over memory prompts and the answer query)
    that went to those zero rows, which a reference-compat model does not mask."""
    question_memory_keys: list[str] | None = None
    """What the columns of ``question_to_memory`` are when they are not the memory prompts:
    reference-compatible models read the last 10 encoded positions, mostly text tokens and padding
    (labelled by token, ``P<k>`` for a prompt). None: the memory prompts in temporal order.
    All focus maps come from the decoder layer the answer is read from."""


def _mean_share(rows: list[torch.Tensor], start: int, stop: int) -> float:
    """Mean over attention rows ``[K]`` (each over frames and, in the focus stage, more positions after
    them) of the share of each row's total that falls on positions ``start:stop``."""
    shares = [float(row[start:stop].float().sum() / row.float().sum().clamp_min(1e-12)) for row in rows]
    return sum(shares) / len(shares)


@dataclass(frozen=True)
class VideoSummary:
    duration_s: float
    fps: float
    width: int
    height: int
    num_frames: int


@dataclass(frozen=True)
class Timings:
    """Seconds spent in each step (0 for steps a cache hit skipped).

    ``probe_decode`` (the decoder's own time) and ``image_encoder`` (the encoder's computing time)
    overlap when frames are encoded while decoding continues, so they may add up to more than
    ``total``. ``start_up`` is one-time work this request paid for (building an encoder) because
    the predictor was not warmed up; no other step includes it.
    """

    hash: float = 0.0
    probe_decode: float = 0.0
    image_encoder: float = 0.0
    text_encoder: float = 0.0
    model: float = 0.0
    total: float = 0.0
    feature_cache_hit: bool = False
    start_up: float = 0.0

    def as_dict(self) -> dict[str, float | bool]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Prediction:
    answer: str
    answer_index: int
    options: list[str]
    """The options asked about (multiple-choice), or the top answers (open-ended)."""
    probabilities: list[float]
    """One per entry of ``options`` (open-ended: the top-k of the vocabulary, sorted)."""
    events: list[PredictedSpan]
    attention: AttentionMaps
    timings: Timings
    video: VideoSummary | None = None
    thumbnails: np.ndarray | None = field(default=None, repr=False)
    """``[T, h, w, 3]`` uint8, one per sampled frame (None for precomputed features)."""
    features: torch.Tensor | None = field(default=None, repr=False)
    """``[T, F]`` float32 on the CPU: the frame features the answer was computed from (to cache them,
    or to answer again with some of them hidden)."""

    def to_json(self) -> dict:
        """The API's plain JSON view."""
        return {
            "answer": self.answer,
            "answer_index": self.answer_index,
            "options": self.options,
            "probabilities": [round(p, 6) for p in self.probabilities],
            "events": [
                {
                    "start_s": round(e.start_s, 3),
                    "end_s": round(e.end_s, 3),
                    "label": e.label,
                    "score": round(e.score, 4),
                    "background": e.background,
                }
                for e in self.events
            ],
            "timings_s": self.timings.as_dict(),
        }


@dataclass(frozen=True)
class PreparedVideo:
    """A video with everything done that needs no accelerator (:meth:`Predictor.prepare`): the file
    hashed and probed, the feature cache asked, the frames decoded and their thumbnails made.

    Plain arrays only, so it can cross into another process (the ZeroGPU worker) by pickling.
    """

    timestamps_s: np.ndarray
    """``[T]`` seconds of the sampled frames."""
    frames: np.ndarray | None
    """``[T, H, W, 3]`` uint8 decoded frames; None when the features came from the cache."""
    features: torch.Tensor | None
    """``[T, F]`` float32 features, cached or encoded while decoding; None when the frames still
    need encoding."""
    thumbnails: np.ndarray | None = field(default=None, repr=False)
    summary: VideoSummary | None = None
    timings: Timings = Timings()
    """``hash``, ``probe_decode``, ``feature_cache_hit`` and ``total`` (seconds spent preparing)."""
    cache_key: FeatureKey | None = None
    """Where the features go in the feature cache once encoded (None: no cache)."""

    @property
    def num_frames(self) -> int:
        return len(self.timestamps_s)

    @property
    def frames_to_encode(self) -> int:
        """Frames the image encoder still has to see (0 on a feature-cache hit)."""
        return 0 if self.frames is None else len(self.frames)

    @property
    def duration_s(self) -> float:
        if self.summary is not None:
            return self.summary.duration_s
        return float(self.timestamps_s[-1]) if len(self.timestamps_s) else 0.0


def check_question(question: str, options: list[str] | None, task: str) -> tuple[str, list[str]]:
    """Normalise and validate a question and its options; :class:`InputError` with a clear message."""
    if not isinstance(question, str):
        raise InputError("The question must be text.")
    question = " ".join(question.replace("\x00", " ").split())
    if not question:
        raise InputError("Please type a question.")
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError(f"The question is too long ({len(question)} characters; the limit is {MAX_QUESTION_CHARS}).")
    cleaned = [" ".join(str(o).replace("\x00", " ").split()) for o in (options or [])]
    if task == "open_ended":
        if any(cleaned):
            raise InputError("This model answers open-ended questions: leave the answer options empty.")
        return question, []
    cleaned = [o for o in cleaned if o]
    if len(cleaned) < 2:
        raise InputError("This model chooses among answer options: give at least two (one per line).")
    if len(cleaned) > MAX_OPTIONS:
        raise InputError(f"Too many answer options ({len(cleaned)}; the limit is {MAX_OPTIONS}).")
    if any(len(o) > MAX_OPTION_CHARS for o in cleaned):
        raise InputError(f"An answer option is longer than {MAX_OPTION_CHARS} characters.")
    lowered = [o.casefold() for o in cleaned]
    duplicates = sorted({o for o in cleaned if lowered.count(o.casefold()) > 1})
    if duplicates:
        raise InputError(f"The answer options must differ; repeated: {', '.join(duplicates)}.")
    return question, cleaned


def _thumbnails(frames: np.ndarray, height: int = THUMBNAIL_HEIGHT) -> np.ndarray:
    """Frames ``[T, H, W, 3]`` uint8 -> thumbnails ``[T, height, w, 3]`` (nearest-neighbour, aspect kept)."""
    _, h, w, _ = frames.shape
    width = max(1, round(w * height / h))
    rows = np.minimum((np.arange(height) + 0.5) * h / height, h - 1).astype(int)
    cols = np.minimum((np.arange(width) + 0.5) * w / width, w - 1).astype(int)
    return np.ascontiguousarray(frames[:, rows][:, :, cols])


class Predictor:
    """Loads a checkpoint and the encoders its config names, once; then answers questions.

    Thread-safe: concurrent calls share the model and encoders (inference only).
    """

    def __init__(
        self,
        checkpoint: str | Path,
        device: str = "auto",
        cache_dir: str | Path | None = None,
        cache_bytes: int = 512 * 1024**2,
        video_limits: VideoLimits = DEFAULT_LIMITS,
    ) -> None:
        self.device = resolve_device(device)
        self.loaded: LoadedCheckpoint = load_checkpoint(checkpoint, device=self.device)
        self.info: CheckpointInfo = self.loaded.info
        self.model = self.loaded.model
        self.video_limits = video_limits
        self.feature_cache = FeatureCache(cache_dir, cache_bytes) if cache_dir is not None else None
        self._frame_encoder: FrameEncoder | None = None
        self._text: TextFeatureCache | None = None
        self._lock = ForkSafeLock()
        self._cache_dir = cache_dir
        self._cache_bytes = cache_bytes
        self._cpu_fallback: Predictor | None = None
        self._first_calls_done = False
        self._fallback_lock = ForkSafeLock()

    # ------------------------------------------------------------------ encoders (lazy)
    @property
    def frame_encoder(self) -> FrameEncoder:
        if self._frame_encoder is not None:  # loaded: no lock (a forked GPU worker never waits on one)
            return self._frame_encoder
        with self._lock:
            if self._frame_encoder is None:
                encoder = load_frame_encoder(self.info.frame_encoder, device=self.device)
                encoder.verify_fingerprint(self.info.frame_encoder_fingerprint)
                self._frame_encoder = encoder
            return self._frame_encoder

    @property
    def text(self) -> TextFeatureCache:
        if self._text is not None:
            return self._text
        with self._lock:
            if self._text is None:
                self._text = checkpoint_text_features(self.loaded, self.device)
                self._text.max_entries = TEXT_MEMO_ENTRIES
            return self._text

    @property
    def task(self) -> str:
        return self.model.config.task

    @property
    def cpu_fallback(self) -> Predictor:
        """A copy of this predictor on the CPU (same checkpoint, same feature cache), built on first use;
        it answers the requests that ran out of accelerator memory."""
        with self._fallback_lock:
            if self._cpu_fallback is None:
                self._cpu_fallback = Predictor(
                    self.loaded.path,
                    device="cpu",
                    cache_dir=self._cache_dir,
                    cache_bytes=self._cache_bytes,
                    video_limits=self.video_limits,
                )
            return self._cpu_fallback

    def _out_of_memory(self, error: torch.OutOfMemoryError) -> Predictor:
        """The predictor to retry on after ``error``: the CPU copy (re-raises when already on the CPU)."""
        if self.device.type == "cpu":
            raise error
        log.warning("%s ran out of memory (%s); answering on the CPU instead", self.device, str(error)[:200])
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return self.cpu_fallback

    def warm_up(self, first_calls: bool = False) -> None:
        """Pay the one-time costs now rather than in the first request: build both encoders and
        start the video workers (cheap once done) and, with ``first_calls``, once, run the image
        encoder at the batch sizes requests use, the text encoder and the model (not on ZeroGPU,
        whose device exists only inside a request)."""
        default_pool()
        encoder = self.frame_encoder
        _ = self.text
        if not first_calls or self._first_calls_done:
            return
        if not self.info.sampling.is_clips:
            height, width = DECODE_SHORT_SIDE, DECODE_SHORT_SIDE * 16 // 9
            frames = np.zeros((encoder.batch_size, height, width, 3), dtype=np.uint8)
            for size in {1, BATCH_WHILE_DECODING, encoder.batch_size}:
                encoder.encode(frames[:size])
        features = torch.zeros(self.info.num_frames, self.model.config.feature_dim)
        options = None if self.task == "open_ended" else ["yes", "no"]
        self._predict_features(features, "What happens?", options, duration_s=1.0, frame_times_s=None, top_k=1)
        self._first_calls_done = True

    def _start_up(self, *, frame: bool = False, text: bool = False) -> float:
        """Build the named encoders if they are not yet (seconds it took: a one-time cost)."""
        started = time.perf_counter()
        built = False
        if frame and self._frame_encoder is None:
            _, built = self.frame_encoder, True
        if text and self._text is None:
            _, built = self.text, True
        return time.perf_counter() - started if built else 0.0

    # ------------------------------------------------------------------ video -> features
    # A question about a video file is answered in three steps, so that a server can run each
    # where it belongs (on Hugging Face ZeroGPU only the middle one runs in the GPU worker):
    #   prepare()          CPU: hash, feature-cache lookup, probe, decode, thumbnails
    #   answer_prepared()  accelerator: image encoder (unless cached), text encoder, model
    #   remember()         CPU: the new features into the feature cache
    # predict() does all three in this process.

    def check_question(self, question: str, options: list[str] | None) -> tuple[str, list[str]]:
        """:func:`check_question` for this model's task (cheap: call it before decoding anything)."""
        return check_question(question, options, self.task)

    def prepare(
        self, video: str | Path, num_frames: int | None = None, *, encode_while_decoding: bool = False
    ) -> PreparedVideo:
        """Everything about ``video`` that needs no accelerator: :class:`~glance_focus.video.VideoError`
        for a file that is not a usable video. Decodes nothing on a feature-cache hit.

        Frames are taken as the checkpoint's :attr:`~CheckpointInfo.frame_sampling` says: ``num_frames``
        (default: the checkpoint's) uniform frames, or for a clip model (S3D) every frame of its clips,
        at most the checkpoint's row count of clips (``num_frames`` does not apply); the timestamps and
        thumbnails are then one per clip, at its centre.

        ``encode_while_decoding``: also encode uniform frames, each while the later ones are still
        being decoded (features, no frames, in the result); only where this process may use the
        encoder's device (not on ZeroGPU). Clip sampling has no stream, so a clip model falls back
        to decode-then-encode: its frames are returned and encoded afterwards.
        """
        clips = self.info.sampling.clips(self.info.num_frames) if self.info.sampling.is_clips else None
        num_frames = num_frames or self.info.num_frames
        sampling_key = f"clips{clips.fps:g}x{clips.clip_frames}c{clips.crop}max{clips.max_clips}" if clips else ""
        start_up = self._start_up(frame=True)
        t0 = time.perf_counter()
        key = None
        if self.feature_cache is not None:
            encoder = self.frame_encoder
            key = FeatureKey(
                video_content_hash(video),
                str(encoder.spec),
                encoder.fingerprint,
                sampling_key or f"uniform{num_frames}",
            )
        t_hash = time.perf_counter() - t0
        if key is not None and self.feature_cache is not None:
            hit = self.feature_cache.get(key)
            if hit is not None:
                return PreparedVideo(
                    timestamps_s=hit.timestamps.numpy().astype(np.float64),
                    frames=None,
                    features=hit.features,
                    thumbnails=hit.thumbnails.numpy() if hit.thumbnails is not None else None,
                    summary=VideoSummary(**hit.info["video"]) if "video" in hit.info else None,
                    timings=Timings(
                        hash=t_hash, feature_cache_hit=True, total=time.perf_counter() - t0, start_up=start_up
                    ),
                    cache_key=key,
                )
        t1 = time.perf_counter()
        sampled: SampledFrames
        features, t_encode, t_decode = None, 0.0, None
        if clips is None and encode_while_decoding:
            encoder = self.frame_encoder
            stream = stream_frames(
                video,
                num_frames=num_frames,
                limits=self.video_limits,
                size=DECODE_SHORT_SIDE,
                encode_cost=encode_cost_for(encoder),  # on the CPU: decoder threads by the work (overlap)
            )
            features, t_encode = encode_stream(encoder, stream)
            sampled = SampledFrames(stream.frames, stream.timestamps_s, stream.indices, stream.info)
            row_frames, row_times, t_decode = sampled.frames, sampled.timestamps_s, stream.decode_seconds
        elif clips is not None:
            sampled = sample_clips(video, clips, limits=self.video_limits)
            row_frames = sampled.frames[clips.clip_frames // 2 :: clips.clip_frames]  # each clip's middle frame
            row_times = sampled.timestamps_s[:: clips.clip_frames] + clips.clip_seconds / 2
        else:
            sampled = sample_frames(video, num_frames=num_frames, limits=self.video_limits, size=DECODE_SHORT_SIDE)
            row_frames, row_times = sampled.frames, sampled.timestamps_s
        info = sampled.info
        thumbnails = _thumbnails(row_frames)
        t2 = time.perf_counter()
        return PreparedVideo(
            timestamps_s=np.asarray(row_times, dtype=np.float64),
            frames=sampled.frames if features is None else None,
            features=features,
            thumbnails=thumbnails,
            summary=VideoSummary(info.duration_s, info.fps, info.width, info.height, info.num_frames),
            timings=Timings(
                hash=t_hash,
                probe_decode=t2 - t1 if t_decode is None else t_decode,
                image_encoder=t_encode,
                total=t2 - t0,
                start_up=start_up,
            ),
            cache_key=key,
        )

    def encode_prepared(self, prepared: PreparedVideo) -> torch.Tensor:
        """Frame features ``[T, F]`` float32 on the CPU of a prepared video (the cached ones, or the
        image encoder's output for its frames)."""
        if prepared.features is not None:
            return prepared.features
        assert prepared.frames is not None
        return self.frame_encoder.encode(prepared.frames)

    def remember(self, prepared: PreparedVideo, features: torch.Tensor | None) -> None:
        """Put the new frame features ``[T, F]`` of ``prepared`` in the feature cache (nothing when
        they came from it, or there is none)."""
        if self.feature_cache is None or prepared.cache_key is None or prepared.timings.feature_cache_hit:
            return
        if features is None:
            return
        try:
            self.feature_cache.put(
                prepared.cache_key,
                features,
                prepared.timestamps_s,
                prepared.thumbnails,
                {"video": prepared.summary.__dict__} if prepared.summary is not None else {},
            )
        except OSError as error:  # full or unwritable disk: the cache only saves time, so answer anyway
            log.warning("feature cache %s not written: %s", self.feature_cache.root, error)

    def video_features(self, video: str | Path, num_frames: int | None = None) -> tuple:
        """(features ``[T, F]``, timestamps ``[T]`` s, thumbnails, VideoSummary, Timings) of a video file,
        taken from the feature cache or computed (uniform frames: encoded while decoding) and put there."""
        prepared = self.prepare(video, num_frames, encode_while_decoding=True)
        t0 = time.perf_counter()
        features = self.encode_prepared(prepared)  # the cached or just-encoded ones, or a clip model's now
        timings = prepared.timings
        if prepared.frames is not None:
            timings = replace(timings, image_encoder=time.perf_counter() - t0)
        self.remember(prepared, features)
        return features, prepared.timestamps_s, prepared.thumbnails, prepared.summary, timings

    # ------------------------------------------------------------------ prediction
    def predict(
        self, video: str | Path, question: str, options: list[str] | None = None, num_frames: int | None = None
    ) -> Prediction:
        """Answer ``question`` about the video file ``video`` (options: multiple-choice models only).

        Runs on the CPU copy (:attr:`cpu_fallback`) when the accelerator runs out of memory.
        """
        question, options = self.check_question(question, options)
        try:
            prepared = self.prepare(video, num_frames, encode_while_decoding=True)
        except torch.OutOfMemoryError as error:  # the image encoder, while decoding
            return self._out_of_memory(error).predict(video, question, options, num_frames)
        prediction = self.answer_prepared(prepared, question, options)
        self.remember(prepared, prediction.features)
        return prediction

    def answer_prepared(self, prepared: PreparedVideo, question: str, options: list[str] | None = None) -> Prediction:
        """Encode the prepared video's frames (unless cached) and answer: the accelerator's part of
        :meth:`predict`; it decodes nothing and touches no cache. ``prediction.features`` holds the
        frame features (give them to :meth:`remember` to cache them).

        Runs on the CPU copy (:attr:`cpu_fallback`) when the accelerator runs out of memory.
        """
        try:
            return self._answer_prepared(prepared, question, options)
        except torch.OutOfMemoryError as error:
            return self._out_of_memory(error).answer_prepared(prepared, question, options)

    def _answer_prepared(self, prepared: PreparedVideo, question: str, options: list[str] | None) -> Prediction:
        started = time.perf_counter()
        features = self.encode_prepared(prepared)
        encoded = time.perf_counter()
        result = self._predict_features(
            features,
            question,
            options,
            duration_s=prepared.duration_s,
            frame_times_s=prepared.timestamps_s,
            top_k=5,
        )
        timings = replace(
            prepared.timings,
            image_encoder=prepared.timings.image_encoder if prepared.frames is None else encoded - started,
            text_encoder=result.timings.text_encoder,
            model=result.timings.model,
            start_up=prepared.timings.start_up + result.timings.start_up,
            total=prepared.timings.total + time.perf_counter() - started,
        )
        return replace(
            result, timings=timings, video=prepared.summary, thumbnails=prepared.thumbnails, features=features
        )

    def predict_features(
        self,
        features: torch.Tensor,
        question: str,
        options: list[str] | None = None,
        *,
        duration_s: float,
        frame_times_s: np.ndarray | None = None,
        top_k: int = 5,
    ) -> Prediction:
        """Answer from precomputed frame features ``[T, F]`` of a video lasting ``duration_s`` seconds.

        A clip model (S3D) reads exactly the checkpoint's row count: more rows are subsampled
        (rows ``floor(j * T / rows)``), fewer get zero rows appended as padding (which a
        reference-compat model does not mask, as the reference did not). Maps cover the real rows.

        Runs on the CPU copy (:attr:`cpu_fallback`) when the accelerator runs out of memory.
        """
        kwargs = {"duration_s": duration_s, "frame_times_s": frame_times_s, "top_k": top_k}
        try:
            return self._predict_features(features, question, options, **kwargs)
        except torch.OutOfMemoryError as error:
            return self._out_of_memory(error).predict_features(features, question, options, **kwargs)

    def _fit_features(
        self, features: torch.Tensor, duration_s: float, frame_times_s: np.ndarray | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray]:
        """Frame features ``[T, F]`` as the model reads them: checked, and for a clip model (S3D) fitted
        to the checkpoint's row count (see :meth:`predict_features`). Returns the features ``[T', F]``,
        their padding ``[1, T']`` on the model's device (None when nothing is padded) and the times in
        seconds of the real rows ``[T'']`` (uniform over ``duration_s`` when not given)."""
        features = torch.as_tensor(features, dtype=torch.float32)
        if features.dim() != 2 or features.shape[1] != self.model.config.feature_dim:
            raise InputError(f"features must be [T, {self.model.config.feature_dim}], got {tuple(features.shape)}")
        frame_padding = None
        if self.info.sampling.is_clips:
            fitted = sample_features(features, self.info.num_frames)
            rows = fitted.positions[~fitted.padding].numpy()  # source row of each real row
            if frame_times_s is None:
                frame_times_s = (rows + 0.5) * self.info.sampling.clips().clip_seconds
            else:
                frame_times_s = np.asarray(frame_times_s, dtype=np.float64)[rows]
            features, frame_padding = fitted.features, fitted.padding[None].to(self.device)
        num_frames = features.shape[0] if frame_padding is None else int((~frame_padding).sum())
        if frame_times_s is None:
            frame_times_s = (np.arange(num_frames) + 0.5) / num_frames * duration_s
        return features, frame_padding, np.asarray(frame_times_s, dtype=np.float64)

    def _encode_question(self, sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states ``[1, O, L, H]`` and padding ``[1, O, L]`` of one question's sequences, in one
        padded batch (what a reference-compatible model's answer depends on); too long: InputError."""
        try:
            return self.text.encode([sequences])
        except TextTooLongError as error:
            raise InputError(str(error)) from error

    @torch.no_grad()
    def _predict_features(
        self,
        features: torch.Tensor,
        question: str,
        options: list[str] | None,
        *,
        duration_s: float,
        frame_times_s: np.ndarray | None,
        top_k: int,
    ) -> Prediction:
        question, options = check_question(question, options, self.task)
        start_up = self._start_up(text=True)
        features, frame_padding, frame_times_s = self._fit_features(features, duration_s, frame_times_s)
        num_frames = len(frame_times_s)
        # One video's question is tens of tokens and the model a few small layers: on the CPU a
        # second thread only adds synchronisation (measured: 14 ms on one thread, 30 ms on two).
        single = intra_op_threads(1) if self.device.type == "cpu" else contextlib.nullcontext()
        t0 = time.perf_counter()
        sequences = question_sequences(question, options)
        with single:
            text_hidden, text_padding = self._encode_question(sequences)
            t1 = time.perf_counter()
            out = self.model(
                features[None].to(self.device),
                frame_padding,
                text_hidden.to(self.device),
                text_padding.to(self.device),
            )
        t2 = time.perf_counter()
        probs = out.focus.answer_logits[0].float().softmax(-1).cpu()
        if options:
            answer_index = int(probs.argmax())
            answer, shown, shown_probs = options[answer_index], options, probs.tolist()
        else:
            vocab = self.info.answer_vocab or ()
            top = probs.topk(min(top_k, len(probs)))
            answer_index = int(top.indices[0])
            answer = vocab[answer_index] if answer_index < len(vocab) else str(answer_index)
            shown = [vocab[i] if i < len(vocab) else str(i) for i in top.indices.tolist()]
            shown_probs = top.values.tolist()
        events = self._events(out.glance.event_logits[0], out.glance.spans[0], out.sort_order[0], duration_s)
        row = answer_index if options else 0
        tokens = self._tokens(sequences[row], int((~text_padding[0, row]).sum()))
        valid = ~text_padding[0, row]
        order = out.sort_order[0].cpu()
        padding_rows = features.shape[0] - num_frames
        glance_and_answer = [*out.glance.prompt_to_frame[0], out.focus.answer_to_frames[row]]
        keys = None
        if self.model.config.compat_event_memory_slice:
            keys = self._last_positions(features.shape[0], tokens, text_padding.shape[-1])
        attention = AttentionMaps(
            frame_times_s=np.asarray(frame_times_s, dtype=np.float64),
            prompt_to_frame=out.glance.prompt_to_frame[0][order][:, :num_frames].float().cpu().numpy(),
            question_tokens=tokens,
            question_to_memory=out.focus.question_to_memory[row][valid].float().cpu().numpy(),
            events_to_frames=out.focus.events_to_frames[row][valid][:, :num_frames].float().cpu().numpy(),
            answer_to_frames=out.focus.answer_to_frames[row][:num_frames].float().cpu().numpy(),
            padding_rows=padding_rows,
            padding_share=_mean_share(glance_and_answer, num_frames, features.shape[0]) if padding_rows else 0.0,
            question_memory_keys=keys,
        )
        timings = Timings(text_encoder=t1 - t0, model=t2 - t1, total=t2 - t0 + start_up, start_up=start_up)
        return Prediction(answer, answer_index, shown, shown_probs, events, attention, timings)

    def _events(
        self, logits: torch.Tensor, spans: torch.Tensor, order: torch.Tensor, duration_s: float
    ) -> list[PredictedSpan]:
        probs = logits.float().softmax(-1).cpu()
        spans_se = spans_to_se(spans.float(), self.model.config.span_format).clamp(0, 1).cpu()
        score, label = probs.max(-1)
        background = probs.shape[-1] - 1
        names = self.info.event_classes
        events = []
        for slot, q in enumerate(order.cpu().tolist()):
            index = int(label[q])
            events.append(
                PredictedSpan(
                    slot=slot,
                    start_s=float(spans_se[q, 0]) * duration_s,
                    end_s=float(spans_se[q, 1]) * duration_s,
                    label="background" if index == background else names[index] if index < len(names) else str(index),
                    label_index=index,
                    score=float(score[q]),
                    background=index == background,
                )
            )
        return events

    # ------------------------------------------------------------------ evidence
    def evidence(
        self,
        video: str | Path,
        question: str,
        options: list[str] | None = None,
        hide: tuple[float, float] | None = None,
        num_frames: int | None = None,
    ) -> Evidence:
        """How much the answer rests on each memory prompt (leave-one-out, :mod:`glance_focus.evidence`)
        and, with ``hide=(start_s, end_s)``, on that stretch of the video. Features come from the cache
        when the video was seen before (in the three steps of :meth:`predict`).
        """
        question, options = self.check_question(question, options)
        prepared = self.prepare(video, num_frames)
        evidence, features = self.evidence_prepared(prepared, question, options, hide)
        self.remember(prepared, features)
        return evidence

    def evidence_prepared(
        self,
        prepared: PreparedVideo,
        question: str,
        options: list[str] | None = None,
        hide: tuple[float, float] | None = None,
    ) -> tuple[Evidence, torch.Tensor]:
        """The accelerator's part of :meth:`evidence` (as :meth:`answer_prepared`): the evidence and
        the frame features ``[T, F]`` (give them to :meth:`remember`). Runs on the CPU copy when the
        accelerator runs out of memory."""
        try:
            features = self.encode_prepared(prepared)
            evidence = self.evidence_features(
                features,
                question,
                options,
                duration_s=prepared.duration_s,
                frame_times_s=prepared.timestamps_s,
                hide=hide,
            )
            return evidence, features
        except torch.OutOfMemoryError as error:
            return self._out_of_memory(error).evidence_prepared(prepared, question, options, hide)

    @torch.no_grad()
    def evidence_features(
        self,
        features: torch.Tensor,
        question: str,
        options: list[str] | None = None,
        *,
        duration_s: float,
        frame_times_s: np.ndarray | None = None,
        hide: tuple[float, float] | None = None,
        top_k: int = 5,
    ) -> Evidence:
        """:meth:`evidence` from precomputed frame features ``[T, F]`` (as :meth:`predict_features`)."""
        question, options = check_question(question, options, self.task)
        features, frame_padding, frame_times_s = self._fit_features(features, duration_s, frame_times_s)
        hidden = None
        if hide is not None:
            try:
                hidden = hidden_frame_mask(frame_times_s, *hide, duration_s=duration_s)
            except (HiddenRangeError, TypeError) as error:
                message = (
                    str(error)
                    if isinstance(error, HiddenRangeError)
                    else "Give the time range to hide as (start, end)."
                )
                raise InputError(message) from None
            padding_rows = features.shape[0] - len(frame_times_s)  # a clip model's appended zero rows
            hidden = torch.cat([hidden, hidden.new_zeros(padding_rows)])
        text_hidden, text_padding = self._encode_question(question_sequences(question, options))
        inputs = (
            features[None].to(self.device),
            frame_padding,
            text_hidden.to(self.device),
            text_padding.to(self.device),
        )
        result = leave_one_out(self.model, *inputs)
        probabilities, without = result.probabilities[0].cpu(), result.without[0].cpu()
        if options:
            names: list[str] = list(options)
            shown = list(range(len(options)))
        else:
            vocab = self.info.answer_vocab or ()
            names = [vocab[i] if i < len(vocab) else str(i) for i in range(len(probabilities))]
            shown = probabilities.topk(min(top_k, len(probabilities))).indices.tolist()
        answer_index = int(probabilities.argmax())
        events = self._events(result.glance.event_logits[0], result.glance.spans[0], result.sort_order[0], duration_s)
        evidence = build_evidence(probabilities, without, answer_index, names, shown, events)
        if hidden is None:
            return evidence
        out = self.model(*inputs, hidden_frames=hidden[None].to(self.device))
        hidden_probabilities = out.focus.answer_logits[0].float().softmax(-1).cpu()
        start_s, end_s = (float(t) for t in hide)
        effect = hidden_range_evidence(
            probabilities, hidden_probabilities, answer_index, names, shown, start_s, end_s, int(hidden.sum())
        )
        return replace(evidence, hidden=effect)

    def _last_positions(self, num_rows: int, tokens: list[str], text_length: int) -> list[str]:
        """Labels of the positions the reference's "event memory" takes from the end of the focus encoder's
        ``[frames; prompts; text]`` sequence: text tokens, padding (``<pad>``), else prompts or frames."""
        config = self.model.config
        labels = [f"frame {t + 1}" for t in range(num_rows)] + [f"P{q + 1}" for q in range(config.num_memory_prompts)]
        labels += tokens + ["<pad>"] * (text_length - len(tokens))
        return labels[-config.compat_event_memory_size :]

    def _tokens(self, text: str, length: int) -> list[str]:
        tokenizer = self.text.encoder.tokenizer
        ids = tokenizer(text, truncation=True, max_length=self.info.text_max_length)["input_ids"][:length]
        return [t.replace("Ġ", "").replace("▁", "") for t in tokenizer.convert_ids_to_tokens(ids)]
