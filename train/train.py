"""Train Glance-Focus, supervised or unsupervised, on any supported dataset.

    python train/train.py --dataset synthetic --data DIR --setting sup --out runs/syn
    python train/train.py --dataset nextqa --data DIR --setting uns --out runs/nextqa --num-frames 80
    torchrun --nproc_per_node=2 train/train.py ...            # several processes (gloo on CPU)

Rerunning with the same --out resumes from its last checkpoint. The best checkpoint (by
validation accuracy) is in OUT/best; logs are OUT/metrics.jsonl and TensorBoard under OUT/tb.
Defaults follow the reference (D 512, 8 heads, FFN 2048, 2+2 layers, Q 10, Adam 5e-6, batch 64).
"""

from __future__ import annotations

import argparse
import json
import sys

from glance_focus.config import GlanceFocusConfig, LossConfig
from glance_focus.data.registry import DATASETS
from glance_focus.trainer import TrainConfig, train


def parse_weights(items: list[str]) -> dict[str, float]:
    weights = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--loss-weights takes NAME=VALUE pairs, got {item!r}")
        weights[name] = float(value)
    return weights


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse combinations that cannot train, before any data is read."""
    if args.reference_compat and args.span_anchors == "on":
        parser.error("--span-anchors on is not part of the reference; drop it or --reference-compat")
    if args.reference_compat and args.setting == "uns" and args.span_format == "se":
        parser.error(
            "--reference-compat --setting uns reads spans as (center, width), as the reference's "
            "unsupervised loss does; drop --span-format se or --reference-compat"
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--dataset", required=True, choices=DATASETS)
    data.add_argument("--data", required=True, help="dataset root (published layout)")
    data.add_argument("--train-split", default="train")
    data.add_argument("--val-split", default="val", help="'none' to skip validation")
    data.add_argument("--features", help="feature file for every split (default: found per split)")
    data.add_argument("--frame-encoder", help="encoder of the features (default: from the feature file)")
    data.add_argument("--text-encoder", default="minilm", help="HF directory or name, or 'minilm'")
    data.add_argument("--text-max-length", type=int, default=64)
    data.add_argument("--num-frames", type=int, default=32, help="frame features per video (reference: 80)")
    model = p.add_argument_group("model")
    model.add_argument("--d-model", type=int, default=512)
    model.add_argument("--heads", type=int, default=8)
    model.add_argument("--ffn", type=int, default=2048)
    model.add_argument("--encoder-layers", type=int, default=2)
    model.add_argument("--decoder-layers", type=int, default=2)
    model.add_argument("--dropout", type=float, default=0.1)
    model.add_argument("--prompts", type=int, default=10, help="memory prompts Q")
    model.add_argument("--span-format", choices=["se", "cw"], help="default: se (sup), cw (uns)")
    model.add_argument("--temporal-position", choices=["sine", "none"], default="sine")
    model.add_argument("--separate-mla-attention", action="store_true", help="own modules for MLA steps 1-2")
    model.add_argument(
        "--reference-compat",
        action="store_true",
        help="replicate the reference code exactly: its model switches and its losses "
        "(matched-only class loss; pairwise GIoU when unsupervised) unless --losses is given",
    )
    model.add_argument(
        "--span-anchors",
        choices=["on", "off"],
        help="offset each memory prompt's span head to its own slot of the video "
        "(default: on for --setting uns, off for sup and under --reference-compat)",
    )
    model.add_argument(
        "--pseudo-classes",
        type=positive_int,
        default=110,
        help="unsupervised setting: event classes of the event head, which no label trains (default 110)",
    )
    loss = p.add_argument_group("loss")
    loss.add_argument("--setting", choices=["sup", "uns"], default="sup")
    loss.add_argument(
        "--losses",
        nargs="+",
        help="default: qa cls l1 (sup) / qa cls overlap coverage cert (uns; the reference: qa cls giou cert); "
        "'align' ties each span to its prompt's glance attention",
    )
    loss.add_argument("--loss-weights", nargs="+", default=[], metavar="NAME=W", help="e.g. cls=0.5 l1=0.5")
    loss.add_argument("--matched-only-class-loss", action="store_true", help="reference: no background target")
    loss.add_argument("--background-weight", type=float, default=0.1)
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--batch-size", type=int, default=64)
    opt.add_argument("--epochs", type=int, default=10)
    opt.add_argument("--max-steps", type=int)
    opt.add_argument("--lr", type=float, default=5e-6)
    opt.add_argument("--weight-decay", type=float, default=0.0)
    opt.add_argument("--warmup-steps", type=int, default=0)
    opt.add_argument("--schedule", choices=["constant", "cosine"], default="constant")
    opt.add_argument("--grad-clip", type=float)
    run = p.add_argument_group("run")
    run.add_argument("--out", required=True, help="run directory (resumes if it holds a last checkpoint)")
    run.add_argument("--eval-every", type=int, default=300)
    run.add_argument("--save-every", type=int)
    run.add_argument("--log-every", type=int, default=20)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="auto")
    run.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    run.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    return p


def loss_from_args(args: argparse.Namespace) -> LossConfig:
    """The criterion: the reference's under --reference-compat, else the corrected one; flags override."""
    if args.reference_compat:
        base = LossConfig.reference(args.setting)
    else:
        base = LossConfig.unsupervised() if args.setting == "uns" else LossConfig()
    losses = tuple(args.losses) if args.losses else base.losses
    return LossConfig(
        setting=args.setting,
        losses=losses,
        weights={**base.weights, **parse_weights(args.loss_weights)},
        background_weight=args.background_weight,
        unmatched_as_background=base.unmatched_as_background and not args.matched_only_class_loss,
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    loss = loss_from_args(args)
    model = GlanceFocusConfig(
        d_model=args.d_model,
        num_heads=args.heads,
        ffn_dim=args.ffn,
        num_encoder_layers=args.encoder_layers,
        num_decoder_layers=args.decoder_layers,
        dropout=args.dropout,
        text_dropout=args.dropout,
        num_memory_prompts=args.prompts,
        span_format=args.span_format or ("se" if args.setting == "sup" else "cw"),
        temporal_position=args.temporal_position,
        share_mla_attention=not args.separate_mla_attention,
        span_anchors=(args.span_anchors or ("on" if args.setting == "uns" else "off")) == "on",
    )
    if args.reference_compat:
        model = model.reference_compat()
    return TrainConfig(
        dataset=args.dataset,
        data=args.data,
        out=args.out,
        model=model,
        loss=loss,
        train_split=args.train_split,
        val_split=None if args.val_split == "none" else args.val_split,
        features=args.features,
        frame_encoder=args.frame_encoder,
        text_encoder=args.text_encoder,
        text_max_length=args.text_max_length,
        num_frames=args.num_frames,
        pseudo_classes=args.pseudo_classes,
        batch_size=args.batch_size,
        epochs=args.epochs,
        max_steps=args.max_steps,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        schedule=args.schedule,
        grad_clip=args.grad_clip,
        eval_every=args.eval_every,
        save_every=args.save_every,
        log_every=args.log_every,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        num_workers=args.workers,
        metadata={"command": " ".join(["python", "train/train.py", *sys.argv[1:]])},
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    result = train(config)
    if result is not None:
        print(json.dumps(result.summary()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
