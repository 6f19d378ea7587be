"""Pipeline latency and extraction throughput, as ratios against the CLIP forward measured in the same run.

    python benchmarks/bench_pipeline.py [--video FILE] [--checkpoint DIR] [--device cpu|cuda] [--repeats 3]

Generates (unless --video) a 60 s 640x360 30 fps H.264 video, then measures with the checkpoint's
frame encoder (ViT-B-32) and 32 frames:
- clip_s: the image encoder's forward on the 32 decoded frames alone (median);
- e2e_s: the full ``Predictor.predict`` on a video it has not seen (decode + encoders + model);
- cache_hit_s: the same video, another question (feature cache hit);
- extract: ``extract_features`` over several videos, frames/s against the encoder-only frames/s.
The last line printed is one JSON object. The precision of every figure is the encoder's
(bf16 autocast on CPUs with native bf16, else fp32; bf16/fp16 on GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "assets" / "models" / "synthetic-sup"


def make_video(path: Path, seconds: int = 60, fps: int = 30, width: int = 640, height: int = 360) -> Path:
    """A moving, textured test video (H.264, yuv420p, x264 defaults)."""
    import av

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            t = i / fps
            r = 127 + 120 * np.sin(xx / 37 + t)
            g = 127 + 120 * np.sin(yy / 23 - 0.7 * t)
            b = 127 + 120 * np.sin((xx + yy) / 51 + 0.3 * t)
            frame = np.stack([r, g, b], -1)
            cx, cy = (0.5 + 0.4 * np.sin(t / 3)) * width, (0.5 + 0.3 * np.cos(t / 2)) * height
            frame[(xx - cx) ** 2 + (yy - cy) ** 2 < 40**2] = (255, 255, 0)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame.astype(np.uint8), format="rgb24")))
        container.mux(stream.encode())
    return path


def random_checkpoint(directory: Path) -> Path:
    from glance_focus.checkpoint import CheckpointInfo, save_checkpoint
    from glance_focus.config import GlanceFocusConfig
    from glance_focus.encoders import load_frame_encoder
    from glance_focus.model import GlanceFocus

    spec = "ViT-B-32:random-seed0"
    config = GlanceFocusConfig(feature_dim=512, d_model=256, num_heads=8, ffn_dim=1024, num_event_classes=16)
    info = CheckpointInfo(
        model=config,
        frame_encoder=spec,
        frame_encoder_fingerprint=load_frame_encoder(spec, device="cpu").fingerprint,
        num_frames=32,
        text_encoder="minilm",
        event_classes=tuple(f"event {i}" for i in range(16)),
    )
    return save_checkpoint(directory, GlanceFocus(config), info)


def timed(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, help="a test video (default: generate 60 s 640x360 30 fps H.264)")
    parser.add_argument("--checkpoint", type=Path, help=f"default: {BUNDLED.relative_to(ROOT)} if present")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--extract-videos", type=int, default=4)
    args = parser.parse_args()

    from glance_focus.extraction import DECODE_SHORT_SIDE, extract_features
    from glance_focus.pipeline import Predictor
    from glance_focus.video import default_pool, sample_frames

    work = Path(tempfile.mkdtemp(prefix="gf-bench-"))
    try:
        video = args.video or make_video(work / "bench.mp4")
        checkpoint = args.checkpoint or (BUNDLED if (BUNDLED / "config.json").is_file() else None)
        checkpoint = checkpoint or random_checkpoint(work / "ckpt")
        predictor = Predictor(checkpoint, device=args.device, cache_dir=work / "cache")
        predictor.warm_up()
        default_pool()  # start the decode workers, as the app does at start-up
        encoder = predictor.frame_encoder
        frames = sample_frames(video, num_frames=args.frames, size=DECODE_SHORT_SIDE).frames
        encoder.encode(frames)  # warm-up (autocast kernels, allocator)
        clip_s, clip_runs = timed(lambda: encoder.encode(frames), args.repeats)
        question, options = "What happens first?", ["a circle moves", "the colours change", "nothing"]
        predictor.predict(video, question, options, num_frames=args.frames)  # warm-up of the text path

        def cold() -> None:
            shutil.rmtree(work / "cache", ignore_errors=True)
            (work / "cache").mkdir()
            predictor.predict(video, question, options, num_frames=args.frames)

        e2e_s, e2e_runs = timed(cold, args.repeats)
        predictor.predict(video, question, options, num_frames=args.frames)
        hit_s, hit_runs = timed(
            lambda: predictor.predict(video, "Which colour appears?", ["red", "yellow"], num_frames=args.frames),
            args.repeats,
        )
        copies = {}
        for i in range(args.extract_videos):
            copies[f"v{i}"] = work / f"copy{i}.mp4"
            shutil.copy(video, copies[f"v{i}"])
        result = extract_features(
            copies, work / "features.safetensors", encoder, args.frames, workers=1, progress=False
        )
        clip_fps = args.frames / clip_s
        device_name = torch.cuda.get_device_name() if encoder.device.type == "cuda" else platform.processor() or "cpu"
        report = {
            "e2e_over_clip": round(e2e_s / clip_s, 3),
            "cache_hit_s": round(hit_s, 4),
            "extract_over_clip": round(result.frames_per_second / clip_fps, 3),
            "clip_s": round(clip_s, 4),
            "clip_frames_per_s": round(clip_fps, 2),
            "e2e_s": round(e2e_s, 4),
            "extract_frames_per_s": round(result.frames_per_second, 2),
            "runs": {"clip": clip_runs, "e2e": e2e_runs, "cache_hit": hit_runs},
            "frames": args.frames,
            "encoder": str(encoder.spec),
            "precision": encoder.precision,
            "device": str(encoder.device),
            "device_name": device_name,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "checkpoint": str(checkpoint),
        }
        print(f"CLIP forward ({args.frames} frames): {clip_s:.3f} s  ({clip_fps:.1f} frames/s, {encoder.precision})")
        print(f"predict, new video:              {e2e_s:.3f} s  ({report['e2e_over_clip']} x CLIP)")
        print(f"predict, cached video:           {hit_s:.4f} s")
        print(
            f"extract_features:                {result.frames_per_second:.1f} frames/s "
            f"({report['extract_over_clip']} x CLIP-only)"
        )
        print(json.dumps(report))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
