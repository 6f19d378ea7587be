"""The unsupervised setting: the reference's losses under --reference-compat, pseudo-classes,
spans that cannot run backwards (while old checkpoints keep their head), and the class-agnostic
span metrics of train/evaluate.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from glance_focus.checkpoint import load_checkpoint, save_checkpoint
from glance_focus.config import LossConfig
from glance_focus.data.features import FeatureStore, sample_features
from glance_focus.data.registry import load_split
from glance_focus.model import GlanceFocus
from glance_focus.spans import spans_to_se, temporal_iou_se
from tests.test_training import FIXTURES, run_args, train_in_process
from tests.tiny import random_inputs, tiny_config
from train import evaluate as evaluate_program
from train.train import build_parser, check_args, config_from_args

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "assets" / "models" / "synthetic-sup"
BUNDLED_VAL = ROOT / "assets" / "data" / "synthetic" / "features" / "ViT-B-32_random-seed0" / "val.safetensors"


def parse(*extra: str):
    parser = build_parser()
    args = parser.parse_args(run_args("star", Path("unused"), *extra))
    check_args(parser, args)
    return config_from_args(args)


def test_reference_compat_implies_the_reference_losses() -> None:
    assert parse("--reference-compat", "--setting", "uns").loss == LossConfig.reference("uns")
    assert parse("--reference-compat").loss == LossConfig.reference("sup")
    assert parse("--setting", "uns").loss == LossConfig.unsupervised()
    # An explicit term list still wins, and the matched-only class loss stays.
    chosen = parse("--reference-compat", "--setting", "uns", "--losses", "qa", "overlap", "coverage").loss
    assert chosen.losses == ("qa", "overlap", "coverage") and not chosen.unmatched_as_background


def test_span_anchors_default_to_the_unsupervised_setting() -> None:
    assert parse("--setting", "uns").model.span_anchors
    assert not parse().model.span_anchors
    assert not parse("--setting", "uns", "--reference-compat").model.span_anchors
    assert not parse("--setting", "uns", "--span-anchors", "off").model.span_anchors
    with pytest.raises(SystemExit):
        parse("--reference-compat", "--span-anchors", "on")


def test_anchored_prompts_start_in_their_own_slots_and_in_order() -> None:
    torch.manual_seed(0)
    model = GlanceFocus(tiny_config(span_format="cw", span_anchors=True)).eval()
    prompts = model.config.num_memory_prompts
    with torch.no_grad():
        model.span_head.layers[-1].weight.zero_()
        model.span_head.layers[-1].bias.zero_()
        feats, _, _ = random_inputs(model.config)
        glance = model.glance(feats)
    se = spans_to_se(glance.spans, "cw")
    slots = torch.arange(prompts) / prompts
    assert torch.allclose(se[0, :, 0], slots, atol=2e-3)
    assert torch.allclose(se[0, :, 1], slots + 1 / prompts, atol=2e-3)
    assert torch.equal(model.sort_memory_prompts(glance)[1][0], torch.arange(prompts))
    assert "span_head.anchors" not in model.state_dict(), "a function of Q, not a weight"
    with pytest.raises(ValueError, match="ordered"):
        tiny_config(span_anchors=True, span_parametrization="independent")


def test_uns_with_start_end_spans_is_refused_only_under_reference_compat() -> None:
    with pytest.raises(SystemExit):
        parse("--reference-compat", "--setting", "uns", "--span-format", "se")
    assert parse("--setting", "uns", "--span-format", "se").model.span_format == "se"


def test_pseudo_classes_size_the_event_head(tmp_path: Path) -> None:
    out = tmp_path / "nextqa"
    args = run_args("nextqa", out, "--setting", "uns", "--val-split", "none", "--batch-size", "2", "--max-steps", "1")
    train_in_process([*args, "--pseudo-classes", "7"])
    loaded = load_checkpoint(out / "last")
    assert loaded.model.config.num_event_classes == 7
    assert loaded.model.class_head.out_features == 8  # + background
    assert loaded.info.event_classes == tuple(f"pseudo-class {i}" for i in range(7))
    assert parse("--setting", "uns").pseudo_classes == 110


def test_supervised_training_without_events_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no event annotations"):
        train_in_process(run_args("nextqa", tmp_path / "n", "--setting", "sup", "--val-split", "none"))


@pytest.mark.parametrize("span_format", ["se", "cw"])
def test_spans_never_run_backwards(span_format: str) -> None:
    torch.manual_seed(0)
    model = GlanceFocus(tiny_config(span_format=span_format)).eval()
    with torch.no_grad():
        model.span_head.layers[-1].weight.mul_(50)  # extreme outputs, far into both sigmoids' tails
        model.span_head.layers[-1].bias.normal_(0, 10)
        feats, _, _ = random_inputs(model.config, batch=4)
        se = spans_to_se(model.glance(feats).spans, span_format)
    assert (se[..., 0] <= se[..., 1]).all()
    assert (se >= -1e-6).all() and (se <= 1 + 1e-6).all()


def test_an_old_format_checkpoint_keeps_its_head_and_its_predictions(tmp_path: Path) -> None:
    """The bundled checkpoint predates ordered spans: it must predict exactly as it was trained."""
    assert "span_parametrization" not in json.loads((BUNDLED / "config.json").read_text())["model"]
    loaded = load_checkpoint(BUNDLED)
    assert loaded.model.config.span_parametrization == "independent"
    store = FeatureStore(BUNDLED_VAL)
    sampled = [sample_features(store[v], loaded.info.num_frames) for v in ("syn_val_00000", "syn_val_00001")]
    feats = torch.stack([s.features for s in sampled])
    padding = torch.stack([s.padding for s in sampled])
    with torch.no_grad():
        glance = loaded.model.glance(feats, padding)
        # The head as it was: two independent sigmoids over the MLP.
        x = glance.memory_prompts
        for layer in loaded.model.span_head.layers[:-1]:
            x = F.relu(layer(x))
        old = loaded.model.span_head.layers[-1](x).sigmoid()
    assert torch.equal(glance.spans, old)
    # Saved again, the choice is written down and survives the round trip.
    save_checkpoint(tmp_path / "again", loaded.model, loaded.info)
    saved = json.loads((tmp_path / "again" / "config.json").read_text())["model"]
    assert saved["span_parametrization"] == "independent"
    with torch.no_grad():
        assert torch.equal(load_checkpoint(tmp_path / "again").model.glance(feats, padding).spans, glance.spans)


def test_evaluate_reports_class_agnostic_span_quality_and_width(tmp_path: Path, capsys) -> None:
    out = tmp_path / "uns"
    args = run_args("star", out, "--setting", "uns", "--val-split", "none", "--batch-size", "2", "--max-steps", "1")
    train_in_process([*args, "--span-anchors", "off"])  # below: one span for every prompt
    loaded = load_checkpoint(out / "last")
    start, end = 0.2, 0.6
    assert loaded.model.config.span_format == "cw"
    with torch.no_grad():  # every prompt predicts (start 0.2, end 0.6) whatever the video
        last = loaded.model.span_head.layers[-1]
        last.weight.zero_()
        raw_start = math.log(start / (1 - start))
        fraction = (end - start) / (1 - start)  # of the rest of the video (ordered spans)
        raw_fraction = math.log(fraction / (1 - fraction))
        last.bias.copy_(torch.tensor([raw_start, raw_fraction]))
    save_checkpoint(out / "fixed", loaded.model, loaded.info)

    features = FIXTURES / "star" / "features" / "train.safetensors"
    argv = ["--checkpoint", str(out / "fixed"), "--data", str(FIXTURES / "star"), "--split", "train"]
    assert evaluate_program.main([*argv, "--features", str(features), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    split = load_split("star", FIXTURES / "star", "train")
    prompts = loaded.model.config.num_memory_prompts
    expected = []
    for video_id in dict.fromkeys(e.video_id for e in split.examples):
        events = split.events.get(video_id)
        if events and events.events:
            gt = torch.tensor(events.spans_normalized()[:prompts], dtype=torch.float32)
            expected += temporal_iou_se(torch.tensor([[start, end]]), gt)[0].tolist()
    assert expected, "the fixture has events"
    assert summary["span_mean_width"] == pytest.approx(end - start, abs=1e-5)
    assert summary["span_miou_class_agnostic"] == pytest.approx(sum(expected) / len(expected), abs=1e-5)
