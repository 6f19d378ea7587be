"""Clip-based extraction: each STAR question's window of its video, frame-accurate, keyed by question id.

The test video has one keyframe (frame 0) and 60 frames whose grey level says their index, so a
decoder that snapped a window to the keyframe before it, or counted frames from the wrong place,
shows up as the wrong grey levels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from glance_focus.data import FeatureStore, load_split
from glance_focus.extraction import extract_features, split_videos, split_windows
from glance_focus.video import NoFramesError, VideoWorkerPool, sample_frames

ROOT = Path(__file__).resolve().parents[1]
FPS = 10
NUM_FRAMES = 60
LEVEL = 4  # frame i is grey level LEVEL * i


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    av = pytest.importorskip("av")
    if "libx264" not in av.codecs_available:
        pytest.skip("PyAV was built without libx264")
    path = tmp_path_factory.mktemp("clip") / "COUNT.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"g": "600", "keyint_min": "600", "sc_threshold": "0", "bf": "0", "crf": "10"}
        for i in range(NUM_FRAMES):
            image = np.full((48, 64, 3), LEVEL * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def frame_numbers(frames: np.ndarray) -> list[int]:
    """The frame index each decoded frame shows (its grey level / LEVEL)."""
    return [round(float(f.mean()) / LEVEL) for f in frames]


def test_window_sampling_starts_at_the_exact_frame(counter_video: Path) -> None:
    sampled = sample_frames(counter_video, num_frames=19, window_s=(2.05, 4.0), in_process=True)
    assert sampled.indices.tolist() == list(range(21, 40))  # frames starting in [2.05, 4.0)
    assert frame_numbers(sampled.frames) == list(range(21, 40))  # decoded exactly, not from frame 0
    assert sampled.timestamps_s == pytest.approx(np.arange(21, 40) / FPS)
    fewer = sample_frames(counter_video, num_frames=4, window_s=(3.0, 5.0), in_process=True)
    assert frame_numbers(fewer.frames) == [32, 37, 42, 47]  # segment centres of frames 30..49
    with VideoWorkerPool(max_workers=1) as pool:  # the same through a worker process
        again = sample_frames(counter_video, num_frames=4, window_s=(3.0, 5.0), pool=pool)
    assert again.indices.tolist() == fewer.indices.tolist()
    assert np.array_equal(again.frames, fewer.frames)
    at_rate = sample_frames(counter_video, fps=2.0, window_s=(1.0, 3.0), in_process=True)
    assert len(at_rate.frames) == 4  # the rate counts the window's 2 s, not the video's 6 s


def test_bad_windows_are_refused(counter_video: Path) -> None:
    with pytest.raises(NoFramesError, match=r"no frame between 7\.00 s and 9\.00 s \(the video lasts 6\.00 s\)"):
        sample_frames(counter_video, num_frames=4, window_s=(7.0, 9.0), in_process=True)
    for window in ((3.0, 3.0), (-1.0, 2.0), (1.0, float("nan"))):
        with pytest.raises(ValueError, match="window_s must be"):
            sample_frames(counter_video, num_frames=4, window_s=window, in_process=True)


def write_question_windows(root: Path, video: Path) -> None:
    """A STAR folder as prepare_data.py writes it: questions with windows, videos beside."""
    (root / "txt_db").mkdir(parents=True)
    (root / "videos").mkdir()
    (root / "videos" / "COUNT.mp4").write_bytes(video.read_bytes())
    questions = [
        {"question_id": "Interaction_T1_1", "video_id": "COUNT", "question": "q1", "options": ["a", "b"], "answer": 0},
        {"question_id": "Sequence_T1_2", "video_id": "COUNT", "question": "q2", "options": ["a", "b"], "answer": 1},
    ]
    questions[0] |= {"start": 0.0, "end": 2.0}
    questions[1] |= {"start": 3.0, "end": 5.0}
    (root / "txt_db" / "val.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))


class GreyLevelEncoder:
    """Encodes a frame as its mean grey level (enough to tell which frames were encoded)."""

    spec = "grey-level"
    fingerprint = "grey-level"
    feature_dim = 1
    device = torch.device("cpu")

    def encode(self, frames: torch.Tensor) -> torch.Tensor:  # [N, H, W, 3] uint8 -> [N, 1]
        return frames.float().mean(dim=(1, 2, 3))[:, None]


def test_extraction_encodes_each_question_window_under_its_id(counter_video: Path, tmp_path: Path) -> None:
    root = tmp_path / "star"
    write_question_windows(root, counter_video)
    split = load_split("star", root, "val")
    videos, missing = split_videos(split)
    assert not missing and set(videos) == {"Interaction_T1_1", "Sequence_T1_2"}
    windows = split_windows(split)
    assert windows == {"Interaction_T1_1": (0.0, 2.0), "Sequence_T1_2": (3.0, 5.0)}
    out = tmp_path / "features.safetensors"
    result = extract_features(videos, out, GreyLevelEncoder(), 4, workers=0, progress=False, windows=windows)
    assert result.encoded_videos == 2 and not result.failed
    store = FeatureStore(out)
    assert frame_numbers(store["Interaction_T1_1"].numpy()) == [2, 7, 12, 17]
    assert frame_numbers(store["Sequence_T1_2"].numpy()) == [32, 37, 42, 47]


def test_extract_features_cli_keys_star_features_by_question(counter_video: Path, tmp_path: Path) -> None:
    root = tmp_path / "star"
    write_question_windows(root, counter_video)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "train" / "extract_features.py"), "--dataset", "star", "--data", str(root)]
    command += ["--split", "val", "--num-frames", "2", "--workers", "0", "--device", "cpu"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    store = FeatureStore(summary["splits"]["val"]["file"])
    assert store.keys() == ["Interaction_T1_1", "Sequence_T1_2"]
    assert not torch.equal(store["Interaction_T1_1"], store["Sequence_T1_2"])  # two windows, two clips
