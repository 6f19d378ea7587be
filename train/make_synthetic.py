"""Generate the synthetic multi-event video world in the STAR layout.

Examples:
    python train/make_synthetic.py --out data/synthetic --seed 0 --num-videos 4000 --workers 2
    python train/make_synthetic.py --out data/synthetic_test_7 --seed 7 --num-videos 400 --split test
    python train/make_synthetic.py --out data/synthetic --seed 0 --num-videos 4000 --split train \
        --questions-per-type 6

Without ``--split`` the videos are divided 80/10/10 into train / val / test; with it, all of them
go to that split. Rerunning only renders the videos that are missing (the questions are rewritten),
so a split can be grown by rerunning with a larger --num-videos. --questions-per-type asks up to
that many distinct questions of each type about every video (the first is the one a run with 1
asks): more supervision for a training split without more videos to encode.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from glance_focus.synthetic.star_layout import generate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="dataset root to write (created if missing)")
    parser.add_argument("--seed", required=True, type=int, help="generation seed")
    parser.add_argument("--num-videos", required=True, type=int, help="number of videos in all")
    parser.add_argument("--split", default=None, help="make only this split (e.g. test) with all the videos")
    parser.add_argument(
        "--questions-per-type", type=int, default=1, help="questions of each type per video, at most (default 1)"
    )
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="processes rendering videos")
    args = parser.parse_args(argv)
    if args.num_videos < 1:
        parser.error("--num-videos must be at least 1")
    if args.questions_per_type < 1:
        parser.error("--questions-per-type must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    """Generate and print a one-line summary per split."""
    args = parse_args(argv)
    started = time.perf_counter()
    summaries = generate(
        args.out,
        args.seed,
        args.num_videos,
        split=args.split,
        workers=args.workers,
        questions_per_type=args.questions_per_type,
    )
    elapsed = time.perf_counter() - started
    for summary in summaries:
        counts = ", ".join(f"{qtype} {n}" for qtype, n in summary.questions_by_type.items())
        print(f"{summary.split}: {summary.num_videos} videos ({summary.rendered} rendered now); questions: {counts}")
    rendered = sum(summary.rendered for summary in summaries)
    print(f"done in {elapsed:.1f} s ({rendered / elapsed:.1f} videos/s rendered) -> {args.out}")


if __name__ == "__main__":
    main()
