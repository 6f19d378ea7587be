"""Pipeline latency and extraction throughput, as ratios against decoding and encoding measured in the same run.

    python benchmarks/bench_pipeline.py [--video FILE] [--checkpoint DIR] [--device cpu|cuda] [--repeats 3]

Generates (unless --video) a 60 s 640x360 30 fps H.264 video, then measures with the checkpoint's
frame encoder (ViT-B-32) and 32 frames, each repeat in turn (so that a change in the machine's
load touches every figure alike; medians reported):
- decode_s: sampling the 32 frames alone (the app's decode worker, its default settings);
- clip_s: the image encoder's forward on those frames alone (the encoder's precision);
- e2e_s: the full ``Predictor.predict`` on a video it has not seen (decode and encode overlap,
  then text encoder and model); e2e_over_serial = e2e_s / (decode_s + clip_s);
- cache_hit_s: the same video, another question (feature cache hit);
- extract: ``extract_features`` over several videos; extract_over_serial = its frames/s over the
  serial rate frames / (decode_s + clip_s);
- the decoding order: the same sample decoded by seeking and by one sequential pass, which one
  the keyframe-based choice took, and its gain (time of the other order / time of the chosen one),
  for the 32-frame sample and a dense one (--dense-frames).
With --device cuda also the encoder alone at batch sizes --gpu-batches in fp16 and bf16 (frames
already on the GPU), frames/s and peak GPU memory. The last line printed is one JSON object.
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


def decoding_orders(video: Path, frames: int, repeats: int) -> dict:
    """Seconds to sample ``frames`` frames by seeking and by a sequential pass, and the order chosen."""
    from glance_focus.extraction import DECODE_SHORT_SIDE
    from glance_focus.video import sample_frames, stream_frames

    with stream_frames(video, num_frames=frames, size=DECODE_SHORT_SIDE) as stream:
        chosen = stream.strategy
        stream.result()
    seconds = {}
    for order in ("seek", "sequential"):
        seconds[order], _ = timed(
            lambda order=order: sample_frames(video, num_frames=frames, size=DECODE_SHORT_SIDE, strategy=order),
            repeats,
        )
    other = "sequential" if chosen == "seek" else "seek"
    return {
        "frames": frames,
        "seek_s": round(seconds["seek"], 4),
        "sequential_s": round(seconds["sequential"], 4),
        "chosen": chosen,
        "gain": round(seconds[other] / seconds[chosen], 3),
    }


def encoder_sweep(spec: str, device: str, frames: np.ndarray, precisions: list[str], batches: list[int]) -> dict:
    """Encoder frames/s (and peak GPU memory) per precision and batch size, frames already on the device."""
    from glance_focus.encoders import build_frame_encoder

    results: dict[str, dict[str, dict[str, float]]] = {}
    for precision in precisions:
        encoder = build_frame_encoder(spec, device=device, precision=precision)
        results[precision] = {}
        for batch in batches:
            count = max(batch * 4, len(frames))
            pool = torch.from_numpy(np.resize(frames, (count, *frames.shape[1:]))).to(encoder.device)
            encoder.encode(pool[:batch], batch_size=batch)  # first call: kernels, allocator
            if encoder.device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            seconds, _ = timed(lambda e=encoder, p=pool, b=batch: e.encode(p, batch_size=b), 3)
            figures = {"frames_per_s": round(count / seconds, 1)}
            if encoder.device.type == "cuda":
                figures["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            results[precision][str(batch)] = figures
    return results


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def parse_list(text: str, kind=str) -> list:
    try:
        values = [kind(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one value")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, help="a test video (default: generate 60 s 640x360 30 fps H.264)")
    parser.add_argument("--checkpoint", type=Path, help=f"default: {BUNDLED.relative_to(ROOT)} if present")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--dense-frames", type=int, default=256, help="the dense sample of the decoding-order test")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--extract-videos", type=int, default=8, help="videos for the extraction figure")
    parser.add_argument(
        "--gpu-batches", type=lambda t: parse_list(t, int), default=[32, 128, 512], help="encoder sweep batch sizes"
    )
    parser.add_argument(
        "--gpu-precisions",
        type=lambda t: parse_list(t),
        default=["fp16", "bf16"],
        help="encoder sweep precisions (fp32, bf16, fp16)",
    )
    parser.add_argument(
        "--sweep", action="store_true", help="run the encoder sweep on the CPU too (on CUDA it always runs)"
    )
    args = parser.parse_args()
    if args.frames < 1 or args.repeats < 1 or args.extract_videos < 1 or args.dense_frames < 1:
        parser.error("--frames, --dense-frames, --repeats and --extract-videos must be positive")
    if any(p not in ("fp32", "bf16", "fp16") for p in args.gpu_precisions):
        parser.error("--gpu-precisions takes fp32, bf16 and fp16")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False).", file=sys.stderr)
        return 2

    from glance_focus.encoders import cpu_supports_bf16
    from glance_focus.extraction import DECODE_SHORT_SIDE, extract_features
    from glance_focus.pipeline import Predictor
    from glance_focus.video import default_pool, sample_frames

    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="gf-bench-"))
    try:
        video = args.video or make_video(work / "bench.mp4")
        checkpoint = args.checkpoint or (BUNDLED if (BUNDLED / "config.json").is_file() else None)
        checkpoint = checkpoint or random_checkpoint(work / "ckpt")
        predictor = Predictor(checkpoint, device=args.device, cache_dir=work / "cache")
        predictor.warm_up(first_calls=True)  # encoders, decode workers, first calls: as the app at start-up
        encoder = predictor.frame_encoder
        frames = sample_frames(video, num_frames=args.frames, size=DECODE_SHORT_SIDE).frames
        question, options = "What happens first?", ["a circle moves", "the colours change", "nothing"]
        predictor.predict(video, question, options, num_frames=args.frames)  # this question's text states

        def decode() -> None:
            sample_frames(video, num_frames=args.frames, size=DECODE_SHORT_SIDE)

        def clip() -> None:
            encoder.encode(frames)

        def cold() -> None:
            shutil.rmtree(work / "cache", ignore_errors=True)
            (work / "cache").mkdir()
            predictor.predict(video, question, options, num_frames=args.frames)

        runs: dict[str, list[float]] = {"decode": [], "clip": [], "e2e": []}
        for _ in range(args.repeats):  # interleaved, so that load changes touch every figure alike
            for name, fn in (("decode", decode), ("clip", clip), ("e2e", cold)):
                runs[name] += timed(fn, 1)[1]
        decode_s, clip_s, e2e_s = (statistics.median(runs[name]) for name in ("decode", "clip", "e2e"))
        serial_s = decode_s + clip_s

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
        orders = [decoding_orders(video, n, args.repeats) for n in (args.frames, args.dense_frames)]
        sweep = None
        if args.device == "cuda" or args.sweep:
            sweep = encoder_sweep(str(encoder.spec), args.device, frames, args.gpu_precisions, args.gpu_batches)

        clip_fps = args.frames / clip_s
        serial_fps = args.frames / serial_s
        device_name = torch.cuda.get_device_name() if encoder.device.type == "cuda" else cpu_model()
        report = {
            "e2e_over_serial": round(e2e_s / serial_s, 3),
            "extract_over_serial": round(result.frames_per_second / serial_fps, 3),
            "cache_hit_s": round(hit_s, 4),
            "e2e_over_decode": round(e2e_s / decode_s, 3),
            "e2e_over_clip": round(e2e_s / clip_s, 3),
            "extract_over_clip": round(result.frames_per_second / clip_fps, 3),
            "decode_s": round(decode_s, 4),
            "clip_s": round(clip_s, 4),
            "clip_frames_per_s": round(clip_fps, 2),
            "e2e_s": round(e2e_s, 4),
            "extract_frames_per_s": round(result.frames_per_second, 2),
            "serial_frames_per_s": round(serial_fps, 2),
            "decoding_order": orders,
            "encoder_sweep": sweep,
            "runs": {**runs, "cache_hit": hit_runs},
            "frames": args.frames,
            "encoder": str(encoder.spec),
            "precision": encoder.precision,
            "device": str(encoder.device),
            "device_name": device_name,
            "cpu_native_bf16": cpu_supports_bf16(),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
            "checkpoint": str(checkpoint),
        }
        print(f"device: {device_name} ({encoder.device}); encoder {encoder.spec} in {encoder.precision}")
        print(f"sampling {args.frames} frames alone (decode_s):  {decode_s:.3f} s")
        print(f"CLIP forward alone (clip_s):         {clip_s:.3f} s  ({clip_fps:.1f} frames/s)")
        print(
            f"predict, new video (e2e_s):          {e2e_s:.3f} s  = {report['e2e_over_serial']} x (decode_s + clip_s)"
        )
        print(f"predict, cached video:               {hit_s:.4f} s")
        print(
            f"extract_features:                    {result.frames_per_second:.1f} frames/s "
            f"= {report['extract_over_serial']} x serial ({serial_fps:.1f} frames/s)"
        )
        for order in orders:
            print(
                f"decoding {order['frames']} frames: seek {order['seek_s']:.3f} s, sequential "
                f"{order['sequential_s']:.3f} s; chosen {order['chosen']} (gain {order['gain']}x)"
            )
        for precision, by_batch in (sweep or {}).items():
            for batch, figures in by_batch.items():
                print(f"encoder {precision} batch {batch}: {figures}")
        print(f"load average before/after: {report['load_avg_before']} / {report['load_avg_after']}")
        print(json.dumps(report))
    finally:
        default_pool().close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
