"""The app with an S3D model: the frames control shows the seconds of video it reads (fixed, one
clip per second) instead of a frame count; the model summary and timings say clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from glance_focus.app.messages import frame_control, model_summary, timings_markdown
from glance_focus.app.models import Models
from glance_focus.app.page import build_app
from glance_focus.checkpoint import CheckpointInfo, save_checkpoint
from glance_focus.config import GlanceFocusConfig
from glance_focus.model import GlanceFocus
from glance_focus.pipeline import AttentionMaps, Prediction, Timings, VideoSummary
from tests.test_pipeline import make_checkpoint


def s3d_checkpoint(directory: Path, rows: int = 80) -> Path:
    """An untrained reference-compat S3D model (``S3D:random-seed0``) reading ``rows`` clips."""
    config = GlanceFocusConfig(
        feature_dim=1024, d_model=32, num_heads=4, ffn_dim=64, num_event_classes=3, text_hidden_size=384
    ).reference_compat()
    info = CheckpointInfo(
        model=config,
        frame_encoder="S3D:random-seed0",
        frame_encoder_fingerprint=None,
        num_frames=rows,
        text_encoder="minilm",
        event_classes=("a", "b", "c"),
    )
    torch.manual_seed(0)
    return save_checkpoint(directory, GlanceFocus(config), info)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("s3d-app")
    return Models([s3d_checkpoint(root / "star-s3d"), make_checkpoint(root / "clip")], device="cpu")


def _frames_component(demo) -> dict:
    found = [c for c in demo.config["components"] if c.get("props", {}).get("elem_id") == "frames"]
    assert len(found) == 1
    return found[0]["props"]


def test_s3d_model_frames_control_shows_seconds_not_frames(models: Models) -> None:
    s3d, clip = models.choices["star-s3d"], models.choices["clip"]
    control = frame_control(s3d.info)
    assert control["label"].startswith("Seconds of video") and control["interactive"] is False
    assert control["value"] == 80 and "16 frames at 16 fps" in control["info"] and "up to 80 clips" in control["info"]
    uniform = frame_control(clip.info)
    assert (
        uniform["label"] == "Frames to sample" and uniform["interactive"] and uniform["value"] == clip.info.num_frames
    )
    # The page opens on the S3D model with that control.
    demo = build_app(models)
    try:
        props = _frames_component(demo)
        assert props["label"] == control["label"] and props["interactive"] is False and props["value"] == 80
    finally:
        demo.close()


def test_s3d_model_summary_and_timings_say_clips(models: Models) -> None:
    summary = model_summary(models.choices["star-s3d"])
    assert "80 one-second clips per video" in summary and "S3D:random-seed0" in summary
    assert "Sampling: one clip per second of video (16 frames at 16 fps, 224×224 centre crop)" in summary
    assert "frames per video" in model_summary(models.choices["clip"])
    n = 5
    prediction = Prediction(
        "a",
        0,
        ["a", "b"],
        [0.6, 0.4],
        [],
        AttentionMaps(np.arange(n) + 0.5, np.zeros((3, n)), [], np.zeros((0, 3)), np.zeros((0, n)), np.zeros(n)),
        Timings(),
        VideoSummary(5.28, 25.0, 1280, 720, 132),
    )
    assert "video encoder (5 one-second clips)" in timings_markdown(prediction, "cpu", clips=True)
    assert "5 one-second clips read" in timings_markdown(prediction, "cpu", clips=True)
    assert "image encoder (5 frames)" in timings_markdown(prediction, "cpu")
