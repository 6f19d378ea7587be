"""S3D feature extraction speed, as ratios against the S3D forward alone measured in the same run.

    python benchmarks/bench_s3d.py [--video FILE] [--seconds 8] [--videos 3] [--encoder S3D:random-seed0]
                                   [--device cpu|cuda] [--repeats 2] [--bf16]

Generates (unless --video) a SECONDS-long 640x360 30 fps H.264 video, then measures, for the
S3D recipe (16 fps, short side 224, centre crop, one 16-frame clip per second, float32):
- decode_s: ``sample_clips`` alone (decode + resample + crop of every clip of one video);
- forward_s: the S3D forward alone on those clips (the encoder's batch: 8 clips on CPU, 32 on GPU);
- extract_s: ``extract_features`` on VIDEOS copies of the file (decoding in a worker process,
  overlapped with the forward of the previous video), the path ``train/extract_features.py`` runs;
and reports frames/s (16-fps frames, i.e. 16 per clip) and clips/s (= seconds of video per
second) of each, with ``extract / forward`` and ``extract / serial`` throughput ratios (serial =
decode_s + forward_s per video). The three are timed in turn in every repeat (medians), so that
load from other processes weighs on all of them alike. The weights do not change the speed, so the
seeded encoder stands in for the released ones. ``--bf16`` also times a bf16-autocast forward where
the CPU computes bf16 natively (not the recipe's precision: reported with its cosine to fp32). The last line printed
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import make_video  # a sibling script, not a package


def cpu_features() -> dict[str, object]:
    """CPU model, core count and the vector/bf16 flags that decide CPU speed and precision choices."""
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.partition(":")[2].split())
            elif line.startswith("model name"):
                model = line.partition(":")[2].strip()
    except OSError:
        pass
    from glance_focus.encoders import cpu_supports_bf16

    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
    return {
        "model": model,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "flags": [flag for flag in wanted if flag in flags],
        "native_bf16": cpu_supports_bf16(),
    }


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, help="a video file (default: a generated 640x360 30 fps video)")
    parser.add_argument("--seconds", type=int, default=8, help="length of the generated video")
    parser.add_argument("--videos", type=int, default=3, help="videos per extraction run (copies of the video)")
    parser.add_argument("--encoder", default="S3D:random-seed0", help="S3D spec (the speed does not depend on weights)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="also time a bf16-autocast forward (native bf16 only)")
    args = parser.parse_args(argv)

    from glance_focus.encoders import load_frame_encoder
    from glance_focus.extraction import extract_features
    from glance_focus.video import ClipSampling, sample_clips

    work = Path(tempfile.mkdtemp(prefix="bench_s3d_"))
    video = args.video or make_video(work / "bench.mp4", seconds=args.seconds)
    encoder = load_frame_encoder(args.encoder, device=args.device, precision="fp32")
    clips = ClipSampling()

    sampled = sample_clips(video, clips, in_process=True)
    frames = sampled.frames
    num_clips = len(frames) // clips.clip_frames
    frames_16fps = num_clips * clips.clip_frames
    copies = {}
    for i in range(args.videos):
        copies[f"video{i}"] = work / f"video{i}{video.suffix}"
        copies[f"video{i}"].write_bytes(video.read_bytes())
    encoder.encode(frames[: clips.clip_frames])  # warm-up (allocator, kernels)

    times: dict[str, list[float]] = {"decode": [], "forward": [], "extract": []}
    features = torch.zeros(0)
    for repeat in range(args.repeats):
        start = time.perf_counter()
        sample_clips(video, clips, in_process=True)
        times["decode"].append(time.perf_counter() - start)
        start = time.perf_counter()
        features = encoder.encode(frames)
        times["forward"].append(time.perf_counter() - start)
        start = time.perf_counter()
        extract_features(copies, work / f"extract{repeat}.safetensors", encoder, 1, workers=1, progress=False)
        times["extract"].append(time.perf_counter() - start)
    decode_s, forward_s, extract_s = (statistics.median(times[k]) for k in ("decode", "forward", "extract"))
    per_video_extract_s = extract_s / args.videos
    serial_s = decode_s + forward_s

    def rates(seconds: float) -> dict[str, float]:
        return {"frames_per_s": round(frames_16fps / seconds, 2), "clips_per_s": round(num_clips / seconds, 3)}

    result: dict[str, object] = {
        "encoder": args.encoder,
        "device": str(encoder.device),
        "precision": "fp32",
        "clips_per_video": num_clips,
        "videos_extracted": args.videos,
        "repeats": args.repeats,
        "decode_s": round(decode_s, 3),
        "forward_s": round(forward_s, 3),
        "extract_s": round(extract_s, 3),
        "decode": rates(decode_s),
        "forward": rates(forward_s),
        "extract": rates(per_video_extract_s),
        "extract_over_forward": round(forward_s / per_video_extract_s, 3),
        "extract_over_serial": round(serial_s / per_video_extract_s, 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu": cpu_features(),
        "torch": torch.__version__,
    }
    if encoder.device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(encoder.device)
        result["tf32_conv"] = torch.backends.cudnn.allow_tf32
    if args.bf16 and encoder.device.type == "cpu" and result["cpu"]["native_bf16"]:  # type: ignore[index]
        bf16 = load_frame_encoder(args.encoder, device=args.device, precision="bf16")
        bf16.encode(frames[: clips.clip_frames])
        bf16_s, bf16_features = median_time(lambda: bf16.encode(frames), args.repeats)
        forward_again_s, _ = median_time(lambda: encoder.encode(frames), args.repeats)  # same load as bf16
        result["forward_again_s"] = round(forward_again_s, 3)
        cosine = torch.nn.functional.cosine_similarity(bf16_features.double(), features.double(), dim=-1)
        result["bf16_forward"] = {
            **rates(bf16_s),
            "over_fp32": round(forward_again_s / bf16_s, 3),
            "min_cosine_to_fp32": round(float(cosine.min()), 6),
        }
    print(
        f"S3D on {result['device']} ({args.encoder}, fp32): {num_clips} clips; "
        f"forward {result['forward']}, extraction {result['extract']} "
        f"= {result['extract_over_forward']} x the forward alone"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
