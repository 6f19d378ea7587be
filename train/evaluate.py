"""Evaluate a checkpoint on a dataset split.

    python train/evaluate.py --checkpoint assets/models/synthetic-sup --data DIR --split test --json

Frame features come from the split's feature file made with the checkpoint's own frame encoder;
when there is none they are extracted from the split's videos first (and cached under
DATA/features/). Reports answer accuracy overall and per question type and, where ground-truth
events exist, event quality (Hungarian-matched mean temporal IoU, recall at IoU 0.5, matched class
accuracy). With --json the last stdout line is one JSON object. For a split without answers
(STAR test) it writes the leaderboard submission JSON instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from glance_focus.batching import VideoQADataset
from glance_focus.checkpoint import load_checkpoint
from glance_focus.data.features import FeatureStore
from glance_focus.data.registry import DATASETS, load_split
from glance_focus.data.star import write_star_submission
from glance_focus.encoders import load_frame_encoder, load_text_encoder
from glance_focus.evaluation import evaluate_split, prediction_to_json
from glance_focus.extraction import extract_features, features_path_for, resolve_features, split_videos
from glance_focus.text_features import TextFeatureCache


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint directory")
    p.add_argument("--data", required=True, type=Path, help="dataset root")
    p.add_argument("--dataset", choices=DATASETS, help="default: the one the checkpoint was trained on, else star")
    p.add_argument("--split", default="test")
    p.add_argument("--features", type=Path, help="feature file (default: found or extracted)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--predictions", type=Path, help="write per-question predictions (JSON lines) here")
    p.add_argument("--submission", type=Path, help="STAR leaderboard JSON for splits without answers")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON line at the end")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_checkpoint(args.checkpoint, device=device)
    info = loaded.info
    dataset = args.dataset or info.metadata.get("dataset", "star")
    split = load_split(dataset, args.data, args.split)

    features_path = args.features or resolve_features(split, info.frame_encoder)
    if features_path is None:
        encoder = load_frame_encoder(info.frame_encoder, device=device)
        encoder.verify_fingerprint(info.frame_encoder_fingerprint)
        videos, missing = split_videos(split)
        if missing:
            raise SystemExit(
                f"{len(missing)} videos of {args.split} have no file and no features (first: {missing[:3]})"
            )
        features_path = features_path_for(args.data, args.split, info.frame_encoder)
        print(
            f"extracting features of {len(videos)} videos with {info.frame_encoder} -> {features_path}", file=sys.stderr
        )
        result = extract_features(videos, features_path, encoder, info.num_frames)
        if result.failed:
            raise SystemExit(f"{len(result.failed)} videos failed to decode: {dict(list(result.failed.items())[:3])}")
    features = FeatureStore(features_path)
    recorded = features.metadata.get("fingerprint")
    if recorded and info.frame_encoder_fingerprint and recorded != info.frame_encoder_fingerprint:
        raise SystemExit(f"{features_path} was made with another encoder build than the checkpoint's")

    text = TextFeatureCache(load_text_encoder(info.text_encoder, device="cpu", max_length=info.text_max_length))
    config = loaded.model.config
    data = VideoQADataset(split, features, info.num_frames, config.num_memory_prompts, config.span_format)
    result = evaluate_split(loaded.model, split, data, text, args.batch_size, device)

    if args.predictions:
        args.predictions.parent.mkdir(parents=True, exist_ok=True)
        with args.predictions.open("w", encoding="utf-8") as f:
            for p in result.predictions:
                f.write(json.dumps(prediction_to_json(p)) + "\n")
    summary = {"checkpoint": str(args.checkpoint), "dataset": dataset, "split": args.split, **result.summary()}
    if not split.has_answers:
        target = args.submission or Path(f"{dataset}_{args.split}_submission.json")
        write_star_submission({p.question_id: p.prediction for p in result.predictions}, target)
        summary["submission"] = str(target)
        print(f"answers of {args.split} are hidden: wrote the submission file {target}", file=sys.stderr)
    else:
        print(f"accuracy {summary['accuracy']:.4f} on {summary['num_questions']} questions", file=sys.stderr)
        for qtype, acc in summary["accuracy_by_type"].items():
            print(f"  {qtype:<12} {acc:.4f}", file=sys.stderr)
        if summary["span_miou"] is not None:
            print(
                f"event span mIoU {summary['span_miou']:.4f}, R@0.5 {summary['span_recall_at_0.5']:.4f}, "
                f"class acc {summary['event_class_accuracy']:.4f}",
                file=sys.stderr,
            )
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
