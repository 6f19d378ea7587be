"""STAR in exactly the reference's form: features (vis_db/s3d.pth) and events.json keyed by question id.

Each question is about its own clip of a Charades video, so two questions on one video have
different features, durations and events. Training, evaluation and Inspect must each see the
question's own clip, never the video's or another question's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glance_focus.batching import VideoQADataset
from glance_focus.checkpoint import load_checkpoint
from glance_focus.data import FeatureStore, load_split, sample_features
from glance_focus.evaluation import evaluate_checkpoint
from glance_focus.inspection import example_detail, run_inspection
from glance_focus.trainer import train
from train.train import build_parser, config_from_args

FEATURE_DIM = 8
CLASSES = ["hold some clothes", "put clothes somewhere", "open a door", "close a door", "sit on a table"]
# question id -> (video id, clip duration s, frames in the clip's features, [(class, start, end)] in clip time)
CLIPS = {
    "Interaction_T1_13": ("6H78U", 6.0, 5, [(0, 0.0, 4.0), (2, 1.0, 6.0)]),
    "Sequence_T1_31": ("6H78U", 4.0, 3, [(2, 0.0, 4.0)]),
    "Prediction_T4_40": ("6H78U", 12.0, 9, [(3, 2.0, 3.0), (1, 6.0, 12.0), (4, 9.0, 10.0)]),
    "Feasibility_T2_77": ("YSKX3", 20.0, 14, [(4, 5.0, 15.0)]),
    "Interaction_T2_90": ("YSKX3", 8.0, 6, [(0, 0.5, 1.5), (1, 2.0, 7.5)]),
    "Sequence_T3_91": ("YSKX3", 10.0, 7, []),
}
SPLITS = {"train": list(CLIPS)[:4], "val": list(CLIPS)[2:]}
NUM_FRAMES = 8


def write_reference_star(root: Path) -> dict[str, torch.Tensor]:
    """The reference's STAR folder: jsonl with only the fields its loader reads, events and features by
    question id, action_mapping.txt as the authors would write it. Returns the features written."""
    txt_db = root / "txt_db"
    txt_db.mkdir(parents=True)
    (txt_db / "action_mapping.txt").write_text("".join(f"a{i:03d} {name}\n" for i, name in enumerate(CLASSES)))
    events = {
        qid: {"duration": duration, "actions": [list(a) for a in actions]}
        for qid, (_, duration, _, actions) in CLIPS.items()
    }
    (txt_db / "events.json").write_text(json.dumps(events))
    for split, qids in SPLITS.items():
        lines = []
        for n, qid in enumerate(qids):
            options = [f"Option {k} of {qid}." for k in range(4)]
            record = {"question": f"What happened in clip {qid}?", "video_id": CLIPS[qid][0]}
            record |= {"answer": n % 4, "question_id": qid, "options": options}
            lines.append(json.dumps(record))
        (txt_db / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    # each clip's features say which clip they are: row t of clip k is k + t / 100 everywhere
    features = {
        qid: (k + torch.arange(frames, dtype=torch.float32) / 100)[:, None].repeat(1, FEATURE_DIM)
        for k, (qid, (_, _, frames, _)) in enumerate(CLIPS.items())
    }
    (root / "vis_db").mkdir()
    torch.save(features, root / "vis_db" / "s3d.pth")
    return features


@pytest.fixture(scope="module")
def star(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    root = tmp_path_factory.mktemp("reference-star") / "star"
    return root, write_reference_star(root)


@pytest.fixture(scope="module")
def trained(star, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, _ = star
    out = tmp_path_factory.mktemp("run") / "run"
    args = ["--dataset", "star", "--data", str(root), "--out", str(out), "--num-frames", str(NUM_FRAMES)]
    args += ["--d-model", "32", "--heads", "4", "--ffn", "64", "--prompts", "4", "--lr", "1e-3"]
    args += ["--batch-size", "2", "--max-steps", "3", "--eval-every", "3", "--device", "cpu"]
    train(config_from_args(build_parser().parse_args(args)))
    return out / "last"


def test_reader_keys_clips_by_question(star):
    root, _ = star
    split = load_split("star", root, "train")
    assert [ex.clip_id for ex in split.examples] == SPLITS["train"]
    assert [ex.video_id for ex in split.examples] == ["6H78U", "6H78U", "6H78U", "YSKX3"]
    assert set(split.events) == set(SPLITS["train"])
    for ex in split.examples:
        _, duration, _, actions = CLIPS[ex.question_id]
        clip = split.events[ex.clip_id]
        assert clip.duration_s == duration
        assert sorted((e.label, e.start_s, e.end_s) for e in clip.events) == sorted(actions)
    assert split.features_path == root / "vis_db" / "s3d.pth"


def test_training_items_carry_each_questions_own_clip(star):
    root, features = star
    split = load_split("star", root, "train")
    data = VideoQADataset(split, FeatureStore(split.features_path), NUM_FRAMES, max_events=4, span_format="se")
    for index, ex in enumerate(split.examples):
        item = data[index]
        expected = sample_features(features[ex.question_id], NUM_FRAMES)
        assert torch.equal(item.features, expected.features) and torch.equal(item.padding, expected.padding)
        _, duration, frames, actions = CLIPS[ex.question_id]
        assert int((~item.padding).sum()) == min(frames, NUM_FRAMES)
        ordered = sorted(actions, key=lambda a: (a[1], a[2]))
        assert item.event_labels.tolist() == [a[0] for a in ordered]
        spans = [[a[1] / duration, a[2] / duration] for a in ordered]
        assert torch.allclose(item.event_spans, torch.tensor(spans).reshape(-1, 2))


def test_training_and_evaluation_see_question_clips(star, trained):
    root, _ = star
    loaded = load_checkpoint(trained)
    assert loaded.info.event_classes == tuple(CLASSES)
    val = load_split("star", root, "val")
    result = evaluate_checkpoint(loaded, val, val.features_path, device="cpu")
    assert [p.clip_id for p in result.predictions] == SPLITS["val"]
    assert {p.video_id for p in result.predictions} == {"6H78U", "YSKX3"}
    # event quality counts clips (questions), not the two videos; the clip without events adds none
    assert result.event_quality is not None
    assert result.event_quality.num_videos == 4
    assert result.event_quality.num_events == sum(min(len(CLIPS[q][3]), 4) for q in SPLITS["val"])


def test_inspect_shows_each_questions_clip(star, trained, tmp_path):
    root, features = star
    run = run_inspection(trained, "star", root, "val", tmp_path / "cache", device="cpu")
    rows = {row.question_id: row for row in run.rows}
    assert set(rows) == set(SPLITS["val"])
    for qid, row in rows.items():
        video, duration, _, actions = CLIPS[qid]
        assert (row.video_id, row.clip_id, row.duration_s) == (video, qid, duration)
        assert row.clip_window_s is None  # the reference's jsonl does not say where the clip lies
        gt = sorted((e.label, round(e.start * duration, 6), round(e.end * duration, 6)) for e in row.gt_events)
        assert gt == sorted((CLASSES[c], s, e) for c, s, e in actions)
    detail = example_detail(run, "Prediction_T4_40")
    assert detail.attention is not None
    # the attention maps were computed on that question's clip: its 9 frames sampled to 8
    assert detail.attention.prompt_to_frame.shape[-1] == min(CLIPS["Prediction_T4_40"][2], NUM_FRAMES)
    short = example_detail(run, "Interaction_T2_90")
    assert short.attention is not None and short.attention.prompt_to_frame.shape[-1] == 6
    assert torch.equal(FeatureStore(root / "vis_db" / "s3d.pth")["Sequence_T3_91"], features["Sequence_T3_91"])
