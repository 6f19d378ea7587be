"""Converting reference checkpoints: the released STAR layout, extra keys, file formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glance_focus.model import GlanceFocus
from glance_focus.reference import (
    convert_reference_state_dict,
    load_reference_checkpoint,
    reference_config,
    roberta_config_from_state,
)

RELEASED_KEYS = (
    Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "reference" / "released_star_keys.json"
)


@pytest.fixture(scope="module")
def released_state() -> dict[str, torch.Tensor]:
    if not RELEASED_KEYS.is_file():
        pytest.skip(f"{RELEASED_KEYS} not found")
    keys = json.loads(RELEASED_KEYS.read_text())["keys"]
    generator = torch.Generator().manual_seed(0)
    return {k: torch.randn(shape, generator=generator) * 0.02 for k, shape in keys.items()}


def test_released_star_layout_converts_without_leftovers(released_state: dict[str, torch.Tensor]) -> None:
    from transformers import RobertaConfig, RobertaModel

    converted = convert_reference_state_dict(released_state)
    config = reference_config(released_state, num_heads=8)
    assert (config.d_model, config.feature_dim, config.num_event_logits) == (512, 1024, 112)
    assert config.num_memory_prompts == 10 and config.text_hidden_size == 768
    model = GlanceFocus(config)
    result = model.load_state_dict(converted.model_state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # Every reference key went somewhere.
    text_keys = [k for k in released_state if k.startswith("transformer.text_encoder.")]
    assert len(converted.model_state) + len(converted.text_encoder_state) == len(released_state)
    assert len(converted.text_encoder_state) == len(text_keys)
    roberta = RobertaModel(RobertaConfig(**roberta_config_from_state(converted.text_encoder_state)))
    roberta.load_state_dict(converted.text_encoder_state, strict=True)


def test_tar_with_model_state_dict_and_position_ids(tmp_path: Path, released_state: dict[str, torch.Tensor]) -> None:
    state = dict(released_state)
    state["transformer.text_encoder.embeddings.position_ids"] = torch.arange(514)[None]
    path = tmp_path / "model_3000.tar"
    torch.save({"model_state_dict": state, "global_step": 3000, "loss": torch.tensor(0.5)}, path)
    converted = convert_reference_state_dict(load_reference_checkpoint(path))
    assert "embeddings.position_ids" not in converted.text_encoder_state
    GlanceFocus(reference_config(state)).load_state_dict(converted.model_state, strict=True)


def test_bare_state_dict_saved_from_ddp(tmp_path: Path, released_state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in released_state.items()}, path)
    converted = convert_reference_state_dict(load_reference_checkpoint(path))
    assert "input_proj.weight_direction" in converted.model_state


def test_unknown_key_is_refused(released_state: dict[str, torch.Tensor]) -> None:
    state = dict(released_state)
    state["transformer.CLS.weight"] = torch.zeros(1, 512)
    with pytest.raises(ValueError, match="transformer.CLS.weight"):
        convert_reference_state_dict(state)


def test_pickle_with_code_payload_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.tar"
    torch.save({"model_state_dict": {"x": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(ValueError, match="weights-only"):
        load_reference_checkpoint(path)
    assert not marker.exists()
