"""Extract frame features for a dataset split or a folder of videos.

    python train/extract_features.py --dataset synthetic --data DIR --split train \
        --encoder ViT-B-32:random-seed0 --num-frames 32
    python train/extract_features.py --videos DIR --out features.safetensors --encoder ViT-B-32:openai

Decoding runs in worker processes, overlapped with encoding; finished videos are kept when the run
is interrupted, so rerunning resumes. Features are keyed as the dataset's reader looks them up: by
video id, or for STAR questions by question id, each encoded from its question's window of the
video (frame-accurate: the window's first frame is decoded exactly, not the keyframe before it).
Several GPUs: ``torchrun --nproc_per_node=N train/extract_features.py ...``
(each process takes every N-th video; rank 0 writes the file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import SafetensorError

from glance_focus.data.registry import DATASETS, load_split
from glance_focus.data.types import VIDEO_EXTENSIONS
from glance_focus.encoders import load_frame_encoder
from glance_focus.extraction import (
    assemble_features,
    extract_features,
    features_path_for,
    split_videos,
    split_windows,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("source (a dataset split or a folder)")
    source.add_argument("--dataset", choices=DATASETS)
    source.add_argument("--data", type=Path, help="dataset root")
    source.add_argument("--split", nargs="+", default=["train", "val", "test"], help="splits (default: all three)")
    source.add_argument("--videos", type=Path, help="a folder of videos (recursively); ids are file stems")
    parser.add_argument(
        "--out", type=Path, help="output file (default for datasets: DATA/features/ENCODER/SPLIT.safetensors)"
    )
    parser.add_argument("--encoder", default="ViT-B-32:random-seed0", help="frame encoder ARCH:PRETRAINED")
    parser.add_argument(
        "--num-frames", type=int, default=32, help="frames sampled uniformly per video (S3D: every 1-s clip instead)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16")
    parser.add_argument("--batch-size", type=int, default=32, help="frames (S3D: clips) per encoder forward")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes")
    args = parser.parse_args(argv)
    if (args.videos is None) == (args.dataset is None):
        parser.error("give either --dataset/--data or --videos")
    if args.dataset and args.data is None:
        parser.error("--dataset needs --data")
    if args.videos and args.out is None:
        parser.error("--videos needs --out")
    return args


def folder_videos(folder: Path) -> dict[str, Path]:
    videos = {p.stem: p for p in sorted(folder.rglob("*")) if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()}
    if not videos:
        raise SystemExit(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {folder}")
    return videos


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = args.device
    if world > 1:
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            device = f"cuda:{torch.cuda.current_device()}"
        dist.init_process_group("nccl" if use_cuda else "gloo")
    encoder = load_frame_encoder(args.encoder, device=device, precision=args.precision)
    encoder.batch_size = args.batch_size
    jobs: list[tuple[str, dict[str, Path], Path, dict[str, tuple[float, float]]]] = []
    if args.videos:
        jobs.append((str(args.videos), folder_videos(args.videos), args.out, {}))
    else:
        for split_name in args.split:
            try:
                split = load_split(args.dataset, args.data, split_name)
            except FileNotFoundError as exc:
                print(f"skipping split {split_name}: {exc}", file=sys.stderr)
                continue
            videos, missing = split_videos(split)
            if missing:
                print(f"{split_name}: {len(missing)} clips have no video file (first: {missing[:3]})", file=sys.stderr)
            out = args.out or features_path_for(args.data, split_name, args.encoder)
            jobs.append((split_name, videos, out, split_windows(split)))
    summary = {}
    for name, videos, out, windows in jobs:
        try:
            result = extract_features(
                videos,
                out,
                encoder,
                args.num_frames,
                workers=args.workers,
                rank=rank,
                world=world,
                progress=rank == 0,
                windows=windows,
            )
            if world > 1:
                dist.barrier()
                if rank == 0:
                    assemble_features(videos, out, encoder, args.num_frames)
                dist.barrier()
        except (OSError, SafetensorError) as exc:  # full disk, unwritable folder: finished videos stay
            # A nonzero exit of one rank makes torchrun stop the others.
            print(f"error: cannot write the features of {name} to {out}: {exc}", file=sys.stderr)
            return 2
        summary[name] = {
            "file": str(out),
            "encoded_videos": result.encoded_videos,
            "skipped_videos": result.skipped_videos,
            "failed": result.failed,
            "frames_per_second": round(result.frames_per_second, 2),
        }
    if world > 1:
        dist.destroy_process_group()
    if rank == 0:
        print(json.dumps({"encoder": args.encoder, "fingerprint": encoder.fingerprint, "splits": summary}))
    return 1 if any(s["failed"] for s in summary.values()) and rank == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
