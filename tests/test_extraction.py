"""Batch feature extraction: output file, resumability, failures, torchrun sharding, and
train/evaluate.py extracting features with the checkpoint's own encoder when they are missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glance_focus.data.features import FeatureStore
from glance_focus.data.registry import load_split
from glance_focus.encoders import load_frame_encoder
from glance_focus.extraction import extract_features, features_path_for, resolve_features, split_videos
from glance_focus.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
ENCODER = "ViT-B-32:random-seed0"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("syn")
    generate(root, seed=5, num_videos=4, split="val")
    return root


@pytest.fixture(scope="module")
def encoder():
    return load_frame_encoder(ENCODER, device="cpu")


def test_extracts_every_video_with_encoder_metadata(dataset: Path, encoder, tmp_path: Path) -> None:
    split = load_split("synthetic", dataset, "val")
    videos, missing = split_videos(split)
    assert not missing and len(videos) == 4
    out = tmp_path / "f.safetensors"
    result = extract_features(videos, out, encoder, num_frames=6, workers=1, progress=False)
    store = FeatureStore(out)
    assert sorted(store.keys()) == sorted(videos)
    assert store[next(iter(videos))].shape == (6, encoder.feature_dim)
    assert store.metadata["frame_encoder"] == ENCODER and store.metadata["fingerprint"] == encoder.fingerprint
    assert result.encoded_videos == 4 and result.encoded_frames == 24 and not result.failed


def test_resumes_without_redoing_finished_videos(dataset: Path, encoder, tmp_path: Path) -> None:
    videos, _ = split_videos(load_split("synthetic", dataset, "val"))
    out = tmp_path / "f.safetensors"
    done: list[str] = []

    def crash_after_two(video_id: str) -> None:
        done.append(video_id)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_features(videos, out, encoder, num_frames=4, workers=0, progress=False, on_video=crash_after_two)
    assert not out.exists()
    again = extract_features(videos, out, encoder, num_frames=4, workers=0, progress=False)
    assert again.skipped_videos == 2 and again.encoded_videos == 2
    straight = extract_features(videos, tmp_path / "g.safetensors", encoder, num_frames=4, workers=0, progress=False)
    a, b = FeatureStore(out), FeatureStore(straight.path)
    for video_id in videos:
        assert torch.allclose(a[video_id], b[video_id], atol=1e-6)


def test_broken_video_is_reported_and_left_out(dataset: Path, encoder, tmp_path: Path) -> None:
    videos, _ = split_videos(load_split("synthetic", dataset, "val"))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    videos = {**videos, "broken": broken}
    result = extract_features(videos, tmp_path / "f.safetensors", encoder, num_frames=4, workers=0, progress=False)
    assert set(result.failed) == {"broken"}
    assert "broken" not in FeatureStore(result.path)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


@pytest.mark.slow
def test_torchrun_shards_videos_over_processes(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp.safetensors"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29533",
        str(ROOT / "train" / "extract_features.py"),
        "--dataset",
        "synthetic",
        "--data",
        str(dataset),
        "--split",
        "val",
        "--out",
        str(out),
        "--num-frames",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(FeatureStore(out).keys()) == 4
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["splits"]["val"]["encoded_videos"] == 2  # rank 0's share; rank 1 did the rest


def test_evaluate_extracts_missing_features_with_the_checkpoint_encoder(dataset: Path, tmp_path: Path) -> None:
    from tests.test_pipeline import make_checkpoint

    split = load_split("synthetic", dataset, "val")
    checkpoint = make_checkpoint(tmp_path / "ckpt", event_classes=tuple(split.event_classes), dataset="synthetic")
    assert resolve_features(split, ENCODER) is None
    cmd = [
        sys.executable,
        str(ROOT / "train" / "evaluate.py"),
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(dataset),
        "--split",
        "val",
        "--json",
    ]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["num_questions"] == len(split.examples)
    assert 0.0 <= summary["accuracy"] <= 1.0 and summary["span_miou"] is not None
    assert features_path_for(dataset, "val", ENCODER).is_file()
