"""Evaluate a checkpoint on a dataset split.

    python train/evaluate.py --checkpoint assets/models/synthetic-sup --data DIR --split test --json
    python train/evaluate.py --checkpoint hf://OWNER/REPO --data DIR --split val

A Hub checkpoint is downloaded into the Hugging Face cache on first use (offline: the cached copy).

Frame features come from the split's feature file made with the checkpoint's own frame encoder;
when there is none they are extracted from the split's videos first (and cached under
DATA/features/). Reports answer accuracy overall and per question type, the mean predicted span
width and, where ground-truth events exist, event quality (Hungarian-matched mean temporal IoU,
recall at IoU 0.5, matched class accuracy, and ``span_miou_class_agnostic``: the mean IoU when
prompts are matched on their spans alone, the measure for unsupervised models whose classes are
pseudo-classes). With --json the last stdout line is one JSON object. For a split without answers
(STAR test) it writes the leaderboard submission JSON instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from glance_focus.checkpoint import load_checkpoint, resolve_checkpoint_path
from glance_focus.data.registry import DATASETS, load_split
from glance_focus.data.star import write_star_submission
from glance_focus.evaluation import evaluate_checkpoint, prediction_to_json
from glance_focus.extraction import features_for_checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory, or hf://OWNER/REPO[@REVISION][/SUBDIR]")
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
    try:
        return evaluate(args)
    except ValueError as exc:  # bad checkpoint, data layout, missing features: say what, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


def evaluate(args: argparse.Namespace) -> int:
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_checkpoint(resolve_checkpoint_path(args.checkpoint), device=device)
    info = loaded.info
    dataset = args.dataset or info.metadata.get("dataset", "star")
    split = load_split(dataset, args.data, args.split)

    features_path = args.features or features_for_checkpoint(split, info, device)
    result = evaluate_checkpoint(loaded, split, features_path, device, args.batch_size)

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
                f"class acc {summary['event_class_accuracy']:.4f}, "
                f"class-agnostic mIoU {summary['span_miou_class_agnostic']:.4f}",
                file=sys.stderr,
            )
        if summary["span_mean_width"] is not None:
            print(f"mean predicted span width {summary['span_mean_width']:.4f}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
