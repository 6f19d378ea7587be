"""Parity with the published reference implementation (minGPT-style logits parity).

The fixture (../shared/fixtures/reference/, or the directories listed in the environment variable
GLANCE_FOCUS_REFERENCE_FIXTURES separated by ':') holds the reference code's weights, inputs,
outputs, attention maps, losses and Hungarian assignment. Sizes are read from its reference.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glance_focus.config import LossConfig
from glance_focus.losses import GlanceFocusCriterion
from glance_focus.matcher import EventTargets
from glance_focus.model import GlanceFocus
from glance_focus.reference import convert_reference_state_dict, reference_config

TOLERANCE = 1e-5
_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "reference"
FIXTURE_DIRS = [Path(p) for p in os.environ.get("GLANCE_FOCUS_REFERENCE_FIXTURES", str(_DEFAULT)).split(":") if p]


class Fixture:
    def __init__(self, directory: Path) -> None:
        if not (directory / "reference.json").is_file():
            pytest.skip(f"reference fixture not found at {directory}")
        self.meta = json.loads((directory / "reference.json").read_text())
        self.tensors = load_file(str(directory / "reference.safetensors"))
        self.weights = {k.removeprefix("weights."): v for k, v in self.tensors.items() if k.startswith("weights.")}
        cfg = self.meta["config"]
        self.batch, self.options = cfg["batch"], cfg["num_options"]
        self.converted = convert_reference_state_dict(self.weights)
        self.config = reference_config(self.weights, num_heads=cfg["nhead"])
        self.model = GlanceFocus(self.config)
        self.model.load_state_dict(self.converted.model_state, strict=True)
        self.model.eval()
        frames = self.tensors["inputs.frames"]
        text = self.tensors["inputs.text_hidden"]
        padding = self.tensors["inputs.text_padding"]
        with torch.no_grad():
            self.out = self.model(
                frames,
                None,
                text.view(self.batch, self.options, *text.shape[1:]),
                padding.view(self.batch, self.options, -1),
            )

    def per_option(self, x: torch.Tensor) -> torch.Tensor:
        """Our glance runs once per video; the reference repeats each video once per option."""
        return x.repeat_interleave(self.options, 0)

    def targets(self) -> tuple[EventTargets, torch.Tensor]:
        t = self.meta["targets"]
        labels = [torch.tensor(c, dtype=torch.long) for c in t["classes"]]
        spans = [torch.tensor(s, dtype=torch.float32).view(-1, 2) for s in t["spans"]]
        return EventTargets.from_lists(labels, spans), torch.tensor(t["qa_labels"])


@pytest.fixture(scope="module", params=FIXTURE_DIRS, ids=lambda p: p.name)
def fixture(request: pytest.FixtureRequest) -> Fixture:
    return Fixture(request.param)


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(theirs.shape)}"
    err = (ours - theirs).abs().max().item()
    assert err <= TOLERANCE, f"{what}: max abs error {err:.2e}"


def test_config_is_read_from_shapes(fixture: Fixture) -> None:
    cfg, ref = fixture.config, fixture.meta["config"]
    assert (cfg.d_model, cfg.ffn_dim, cfg.feature_dim) == (ref["d_model"], ref["ff"], ref["feature_dim"])
    assert cfg.num_event_logits == ref["event_pred_dim"]
    assert cfg.num_memory_prompts == ref["num_queries"]
    assert cfg.text_hidden_size == ref["text_hidden"]
    assert cfg.num_encoder_layers == cfg.num_decoder_layers == ref["layers"]


def test_glance_outputs(fixture: Fixture) -> None:
    g, t = fixture.out.glance, fixture.tensors
    assert_close(fixture.per_option(g.event_logits), t["outputs.glance.pred_logits"], "event logits")
    assert_close(fixture.per_option(g.spans), t["outputs.glance.pred_spans"], "spans")
    assert_close(fixture.per_option(g.memory_prompts), t["outputs.glance.memory_prompt"], "memory prompts")
    sorted_prompts = fixture.per_option(fixture.out.sorted_memory_prompts)
    assert_close(sorted_prompts, t["outputs.glance.sorted_memory_prompt"], "sorted memory prompts")


def test_answer_logits(fixture: Fixture) -> None:
    assert_close(fixture.out.focus.answer_logits, fixture.tensors["outputs.focus.pred_answer"], "answer logits")


def test_every_attention_map_in_call_order(fixture: Fixture) -> None:
    g, f = fixture.out.glance, fixture.out.focus
    ours = [fixture.per_option(m) for m in g.encoder_attention]
    for self_map, cross_map in zip(g.decoder_self_attention, g.cross_attention, strict=True):
        ours += [fixture.per_option(self_map), fixture.per_option(cross_map)]
    ours += list(f.encoder_attention)
    for layer in f.layers:
        ours += [layer.self_attention, layer.question_to_memory, layer.events_to_frames, layer.query_to_selection]
    calls = fixture.meta["attention_calls"]
    keys = sorted(k for k in fixture.tensors if k.startswith("attention."))
    assert len(ours) == len(calls) == len(keys)
    glance_calls = fixture.meta["glance_attention_calls"]
    assert len(g.encoder_attention) + 2 * len(g.cross_attention) == glance_calls
    for i, (key, ours_map) in enumerate(zip(keys, ours, strict=True)):
        assert key.endswith(calls[i])
        assert_close(ours_map, fixture.tensors[key], key)


def test_supervised_losses_and_assignment(fixture: Fixture) -> None:
    targets, answers = fixture.targets()
    g = fixture.out.glance
    criterion = GlanceFocusCriterion(LossConfig.reference("sup"), span_format="se")
    out = criterion(g.event_logits, g.spans, fixture.out.focus.answer_logits, answers, targets)
    for name in ("qa", "cls", "l1"):
        assert abs(out.terms[name].item() - fixture.meta["loss_sup"][f"loss_{name}"]) <= TOLERANCE, name
    assert out.matching is not None
    ours = [[p.tolist(), t.tolist()] for p, t in out.matching.pairs]
    assert ours == fixture.meta["hungarian_match"]


def test_unsupervised_losses(fixture: Fixture) -> None:
    _, answers = fixture.targets()
    g = fixture.out.glance
    # The reference's unsupervised criterion reads predicted spans as (center, width).
    criterion = GlanceFocusCriterion(LossConfig.reference("uns"), span_format="cw")
    out = criterion(g.event_logits, g.spans, fixture.out.focus.answer_logits, answers)
    for name in ("qa", "cls", "giou", "cert"):
        assert abs(out.terms[name].item() - fixture.meta["loss_uns"][f"loss_{name}"]) <= TOLERANCE, name


def test_text_encoder_weights_convert_to_a_roberta(fixture: Fixture) -> None:
    """The fine-tuned text encoder inside a reference checkpoint loads strictly into a RoBERTa."""
    from transformers import RobertaConfig, RobertaModel

    from glance_focus.reference import roberta_config_from_state

    text_state = fixture.converted.text_encoder_state
    assert text_state, "the fixture holds transformer.text_encoder.* weights"
    hidden = text_state["embeddings.word_embeddings.weight"].shape[1]
    roberta = RobertaModel(RobertaConfig(**roberta_config_from_state(text_state, num_attention_heads=hidden // 16)))
    roberta.load_state_dict(text_state, strict=True)
