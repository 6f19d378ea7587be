"""Import a checkpoint written by the reference code (github ByZ0e/Glance-Focus) as a checkpoint
directory of this project (config.json, model.safetensors, text_encoder.safetensors, MODEL_CARD.md).

    python train/import_reference.py model_3000.tar --out models/star-released \\
        --frame-encoder S3D:/path/s3d_howto100m.pth --text-encoder roberta-base \\
        --events STAR/txt_db/action_mapping.txt

--frame-encoder names the encoder the model's training features came from (the released STAR
model: S3D HowTo100M, `S3D:PATH` or `S3D:howto100m`); the app then computes the same features
from any video. --text-encoder gives the tokenizer and architecture of the text encoder fine-tuned
inside the checkpoint (only its tokenizer and config files are read). Then:

    python app.py --checkpoint models/star-released
    python train/evaluate.py --checkpoint models/star-released --data STAR --split val
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from glance_focus.data.registry import DATASETS
from glance_focus.encoders import EncoderUnavailableError
from glance_focus.reference_import import REFERENCE_NUM_FRAMES, import_reference_checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="the reference checkpoint (.tar / .pth with model_state_dict)")
    p.add_argument("--out", required=True, type=Path, help="checkpoint directory to write (replaced atomically)")
    p.add_argument("--frame-encoder", required=True, help="S3D:PATH, S3D:howto100m, or ARCH:PRETRAINED for CLIP")
    p.add_argument("--text-encoder", default="roberta-base", help="tokenizer/architecture spec (default roberta-base)")
    p.add_argument("--events", required=True, type=Path, help="the dataset's action_mapping.txt (event class names)")
    p.add_argument("--dataset", choices=DATASETS, default="star", help="dataset the model was trained on")
    p.add_argument("--num-heads", type=int, default=8, help="attention heads (not stored in the weights; reference 8)")
    p.add_argument(
        "--num-frames", type=int, default=REFERENCE_NUM_FRAMES, help="feature rows per video (reference STAR: 80)"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.events.is_file():
        print(f"error: event class file {args.events} not found", file=sys.stderr)
        return 2
    try:
        out = import_reference_checkpoint(
            args.checkpoint,
            args.out,
            frame_encoder=args.frame_encoder,
            text_encoder=args.text_encoder,
            action_mapping=args.events,
            dataset=args.dataset,
            num_heads=args.num_heads,
            num_frames=args.num_frames,
        )
    except (ValueError, EncoderUnavailableError, OSError) as exc:  # a person's mistake: one line, no traceback
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(f"wrote {out} (model card: {out / 'MODEL_CARD.md'})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
