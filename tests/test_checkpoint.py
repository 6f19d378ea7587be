"""Checkpoint directories: round trip, strictness, refusal of unsafe or inconsistent files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glance_focus.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from glance_focus.model import GlanceFocus
from tests.tiny import random_inputs, tiny_config


def make_info(config, **changes) -> CheckpointInfo:
    values = dict(
        model=config,
        frame_encoder="ViT-B-32:random-seed0",
        frame_encoder_fingerprint="0123456789abcdef",
        num_frames=9,
        text_encoder="minilm",
        event_classes=tuple(f"event {i}" for i in range(config.num_event_classes)),
        metadata={"val_accuracy": 0.5},
    )
    values.update(changes)
    return CheckpointInfo(**values)


def test_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = GlanceFocus(tiny_config(num_memory_prompts=4, share_mla_attention=False)).eval()
    info = make_info(model.config)
    save_checkpoint(tmp_path / "ckpt", model, info, text_encoder_state={"w": torch.ones(2)})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json",
        "model.safetensors",
        "text_encoder.safetensors",
    ]
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.info == info
    assert not loaded.model.training
    feats, text, padding = random_inputs(model.config)
    with torch.no_grad():
        a = model(feats, None, text, padding).focus.answer_logits
        b = loaded.model(feats, None, text, padding).focus.answer_logits
    assert torch.equal(a, b)
    assert torch.equal(loaded.text_encoder_state["w"], torch.ones(2))


def test_open_ended_vocab_round_trip(tmp_path: Path) -> None:
    model = GlanceFocus(tiny_config(task="open_ended", answer_vocab_size=3))
    info = make_info(model.config, answer_vocab=("yes", "no", "two"))
    save_checkpoint(tmp_path / "oe", model, info)
    assert read_checkpoint_info(tmp_path / "oe").answer_vocab == ("yes", "no", "two")


def test_overwrite_is_atomic_and_leaves_no_temporaries(tmp_path: Path) -> None:
    model = GlanceFocus(tiny_config())
    save_checkpoint(tmp_path / "best", model, make_info(model.config, metadata={"step": 1}))
    save_checkpoint(tmp_path / "best", model, make_info(model.config, metadata={"step": 2}))
    assert read_checkpoint_info(tmp_path / "best").metadata == {"step": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["best"]


def test_config_with_wrong_shapes_is_refused(tmp_path: Path) -> None:
    model = GlanceFocus(tiny_config())
    save_checkpoint(tmp_path / "c", model, make_info(model.config))
    config_path = tmp_path / "c" / "config.json"
    data = json.loads(config_path.read_text())
    data["model"]["d_model"] = 64
    config_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="do not match config.json"):
        load_checkpoint(tmp_path / "c")


def test_hostile_safetensors_header_is_refused(tmp_path: Path) -> None:
    model = GlanceFocus(tiny_config())
    save_checkpoint(tmp_path / "c", model, make_info(model.config))
    weights = tmp_path / "c" / "model.safetensors"
    weights.write_bytes((2**62).to_bytes(8, "little") + b"{" * 64)  # absurd header length
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_checkpoint(tmp_path / "c")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="not a glance-focus checkpoint"):
        load_checkpoint(tmp_path)


def test_class_names_must_match_the_model() -> None:
    with pytest.raises(CheckpointError, match="event class names"):
        make_info(tiny_config(), event_classes=("only one",))
