"""Copy a trained synthetic-world model, its validation split and example videos into ``assets/``.

    python train/bundle_assets.py --checkpoint runs/syn-sup/best --data data/syn2k \
        --examples-data data/syn-test --test-metrics test.json --out assets

Writes ``assets/models/<name>/`` (config.json, model.safetensors; the test metrics are added to the
config's metadata), ``assets/data/synthetic/`` (the validation split in the STAR layout with its
videos and float16 features, for the app's Inspect tab) and ``assets/examples/`` (a few test videos
with one question of each type, ``examples.json``). The model card is written by hand; an existing
``MODEL_CARD.md`` is kept.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from glance_focus.checkpoint import load_checkpoint, save_checkpoint
from glance_focus.data.features import FeatureStore, write_features
from glance_focus.data.registry import load_split
from glance_focus.extraction import features_path_for


def copy_split(data: Path, split_name: str, out: Path, encoder: str) -> None:
    """The split's questions, events, class names, videos and features (float16) under ``out``."""
    split = load_split("synthetic", data, split_name)
    videos = sorted({ex.video_id for ex in split.examples})
    (out / "txt_db").mkdir(parents=True, exist_ok=True)
    (out / "videos").mkdir(exist_ok=True)
    shutil.copy(data / "txt_db" / f"{split_name}.jsonl", out / "txt_db" / f"{split_name}.jsonl")
    shutil.copy(data / "txt_db" / "action_mapping.txt", out / "txt_db" / "action_mapping.txt")
    shutil.copy(data / "meta.json", out / "meta.json")
    events = json.loads((data / "txt_db" / "events.json").read_text())
    (out / "txt_db" / "events.json").write_text(json.dumps({v: events[v] for v in videos}))
    for video_id in videos:
        path = split.video_path(video_id)
        assert path is not None, video_id
        shutil.copy(path, out / "videos" / path.name)
    store = FeatureStore(features_path_for(data, split_name, encoder))
    target = features_path_for(out, split_name, encoder)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_features(target, {v: store[v].half() for v in videos}, store.metadata)


def copy_examples(data: Path, split_name: str, out: Path, count: int) -> None:
    """``count`` videos of the split with one question per type, as ``examples.json`` + mp4 files."""
    split = load_split("synthetic", data, split_name)
    by_video: dict[str, list] = {}
    for ex in split.examples:
        by_video.setdefault(ex.video_id, []).append(ex)
    out.mkdir(parents=True, exist_ok=True)
    examples = []
    for video_id in sorted(by_video)[:count]:
        path = split.video_path(video_id)
        assert path is not None
        shutil.copy(path, out / path.name)
        for ex in by_video[video_id]:
            examples.append(
                {
                    "video": path.name,
                    "question": ex.question,
                    "options": list(ex.options),
                    "answer": ex.answer,
                    "question_type": ex.question_type,
                }
            )
    (out / "examples.json").write_text(json.dumps(examples, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--name", default="synthetic-sup")
    p.add_argument("--data", type=Path, required=True, help="the training dataset (its val split is bundled)")
    p.add_argument("--examples-data", type=Path, required=True, help="a held-out split to take examples from")
    p.add_argument("--examples-split", default="test")
    p.add_argument("--num-examples", type=int, default=4)
    p.add_argument("--test-metrics", type=Path, help="evaluate.py --json output of the held-out test split")
    p.add_argument("--out", type=Path, default=Path("assets"))
    p.add_argument("--skip-data", action="store_true", help="only the model")
    args = p.parse_args()

    loaded = load_checkpoint(args.checkpoint)
    metadata = dict(loaded.info.metadata)
    if args.test_metrics:
        metadata["test"] = json.loads(args.test_metrics.read_text().strip().splitlines()[-1])
    info = loaded.info.__class__(**{**loaded.info.__dict__, "metadata": metadata})
    model_dir = args.out / "models" / args.name
    card = model_dir / "MODEL_CARD.md"
    card_text = card.read_text(encoding="utf-8") if card.is_file() else None
    save_checkpoint(model_dir, loaded.model, info)  # replaces the directory
    if card_text is not None:
        card.write_text(card_text, encoding="utf-8")
    if not args.skip_data:
        copy_split(args.data, "val", args.out / "data" / "synthetic", loaded.info.frame_encoder)
        copy_examples(args.examples_data, args.examples_split, args.out / "examples", args.num_examples)


if __name__ == "__main__":
    main()
