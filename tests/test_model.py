"""Behaviour of the corrected model (the default for new models) and of the reference switches."""

from __future__ import annotations

import pytest
import torch

from glance_focus.model import GlanceFocus
from glance_focus.transformer import FocusMemory
from tests.tiny import random_inputs, tiny_config


def build(**changes) -> GlanceFocus:
    torch.manual_seed(0)
    return GlanceFocus(tiny_config(**changes)).eval()


def reference_twin(model: GlanceFocus) -> GlanceFocus:
    """The same weights in a model with every reference switch on (it has no feature statistics)."""
    twin = GlanceFocus(model.config.reference_compat()).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("feature_")}
    twin.load_state_dict(state, strict=True)
    return twin


@pytest.mark.parametrize("num_prompts,frames,options", [(6, 9, 3), (3, 40, 5), (13, 1, 2)])
def test_shapes_for_any_prompt_frame_and_option_count(num_prompts: int, frames: int, options: int) -> None:
    model = build(num_memory_prompts=num_prompts)
    feats, text, padding = random_inputs(model.config, frames=frames, options=options)
    with torch.no_grad():
        out = model(feats, None, text, padding)
    q, c = num_prompts, model.config.num_event_logits
    assert out.glance.event_logits.shape == (2, q, c)
    assert out.glance.spans.shape == (2, q, 2)
    assert ((out.glance.spans >= 0) & (out.glance.spans <= 1)).all()
    assert out.glance.prompt_to_frame.shape == (2, q, frames)
    assert out.focus.answer_logits.shape == (2, options)
    assert out.focus.question_to_memory.shape == (2 * options, 7, q)
    assert out.focus.events_to_frames.shape == (2 * options, 7, frames)
    answer_to_frames = out.focus.answer_to_frames
    assert answer_to_frames.shape == (2 * options, frames)
    assert torch.allclose(answer_to_frames.sum(-1), torch.ones(2 * options), atol=1e-5)


def test_memory_prompts_are_sorted_by_span_start() -> None:
    model = build()
    feats, text, padding = random_inputs(model.config)
    with torch.no_grad():
        out = model(feats, None, text, padding)
    starts = torch.gather(out.glance.spans[..., 0], 1, out.sort_order)
    assert (starts[:, 1:] >= starts[:, :-1]).all()
    expected = out.glance.memory_prompts[0, out.sort_order[0]]
    assert torch.equal(out.sorted_memory_prompts[0], expected)


def test_question_to_memory_attends_exactly_the_prompts() -> None:
    """Corrected MLA step 1 attends over the Q prompt positions (keys are prompts, not text tokens)."""
    model = build()
    feats, text, padding = random_inputs(model.config)
    with torch.no_grad():
        glance = model.glance(feats)
        prompts, _ = model.sort_memory_prompts(glance)
        base = model.focus(feats, None, prompts, text, padding)
        bumped = model.focus(feats, None, prompts + torch.randn_like(prompts), text, padding)
    q2m = base.question_to_memory
    assert q2m.shape[-1] == model.config.num_memory_prompts
    assert not torch.allclose(q2m, bumped.question_to_memory)


def test_padding_is_masked() -> None:
    """Changing values at padded frames or padded text tokens leaves every output unchanged."""
    model = build()
    feats, text, text_padding = random_inputs(model.config, frames=10)
    frame_padding = torch.zeros(2, 10, dtype=torch.bool)
    frame_padding[0, 7:] = True
    frame_padding[1, 4:] = True
    noisy_feats = (
        feats.masked_fill(frame_padding[..., None], 0) + 50 * torch.randn_like(feats) * frame_padding[..., None]
    )
    noisy_text = text + 50 * torch.randn_like(text) * text_padding[..., None]
    with torch.no_grad():
        a = model(feats, frame_padding, text, text_padding)
        b = model(noisy_feats, frame_padding, noisy_text, text_padding)
    assert torch.allclose(a.focus.answer_logits, b.focus.answer_logits, atol=1e-5)
    assert torch.allclose(a.glance.event_logits, b.glance.event_logits, atol=1e-5)
    assert torch.allclose(a.glance.spans, b.glance.spans, atol=1e-5)
    assert a.glance.prompt_to_frame[0, :, 7:].abs().max() == 0
    assert a.focus.events_to_frames[0, :, 7:].abs().max() == 0  # row 0 = video 0, option 0


def test_padding_is_not_masked_in_reference_mode() -> None:
    model = build().eval()
    compat = reference_twin(model)
    feats, text, text_padding = random_inputs(model.config, frames=10)
    frame_padding = torch.zeros(2, 10, dtype=torch.bool)
    frame_padding[:, 6:] = True
    noisy = feats + 5 * torch.randn_like(feats) * frame_padding[..., None]
    with torch.no_grad():
        a = compat(feats, frame_padding, text, text_padding)
        b = compat(noisy, frame_padding, text, text_padding)
    assert not torch.allclose(a.glance.spans, b.glance.spans, atol=1e-5)


def test_glance_is_sensitive_to_frame_order_only_when_corrected() -> None:
    corrected = build()
    compat = reference_twin(corrected)
    feats, _, _ = random_inputs(corrected.config, frames=12)
    shuffled = feats[:, torch.randperm(12, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        assert not torch.allclose(corrected.glance(feats).spans, corrected.glance(shuffled).spans, atol=1e-4)
        assert torch.allclose(compat.glance(feats).spans, compat.glance(shuffled).spans, atol=1e-5)
        assert torch.allclose(compat.glance(feats).event_logits, compat.glance(shuffled).event_logits, atol=1e-5)


def test_features_are_standardised_with_stored_statistics() -> None:
    model = build()
    feats, text, padding = random_inputs(model.config)
    mean, std = torch.randn(model.config.feature_dim), torch.rand(model.config.feature_dim) + 0.5
    shifted = feats * std + mean
    with torch.no_grad():
        before = model(feats, None, text, padding).focus.answer_logits
        model.set_feature_statistics(mean, std)
        after = model(shifted, None, text, padding).focus.answer_logits
    assert torch.allclose(before, after, atol=1e-4)
    assert "feature_mean" in model.state_dict()


def test_answer_layer_switch() -> None:
    model = build()
    first = GlanceFocus(tiny_config(compat_answer_from_first_layer=True)).eval()
    first.load_state_dict(model.state_dict())
    feats, text, padding = random_inputs(model.config)
    with torch.no_grad():
        assert not torch.allclose(
            model(feats, None, text, padding).focus.answer_logits, first(feats, None, text, padding).focus.answer_logits
        )


def test_separate_mla_attention_modules() -> None:
    model = build(share_mla_attention=False)
    names = {n for n, _ in model.named_parameters()}
    assert "decoder.layers.0.question_attn.in_proj.weight" in names
    assert "decoder.layers.0.frame_attn.in_proj.weight" in names
    feats, text, padding = random_inputs(model.config)
    assert model(feats, None, text, padding).focus.answer_logits.shape == (2, 3)


def test_open_ended_head() -> None:
    model = build(task="open_ended", answer_vocab_size=17)
    feats, text, padding = random_inputs(model.config, options=1)
    with torch.no_grad():
        assert model(feats, None, text, padding).focus.answer_logits.shape == (2, 17)
    feats, text, padding = random_inputs(model.config, options=2)
    with pytest.raises(ValueError, match="one question sequence"):
        model(feats, None, text, padding)


def test_bad_inputs_are_refused() -> None:
    model = build()
    feats, text, padding = random_inputs(model.config)
    with pytest.raises(ValueError, match="at least one unpadded frame"):
        model(feats, torch.ones(2, 9, dtype=torch.bool), text, padding)
    with pytest.raises(ValueError, match=r"\[B, T, F\]"):
        model.glance(feats[0])
    with pytest.raises(ValueError, match="at least one token"):
        model(feats, None, text, torch.ones_like(padding))


def test_dropout_makes_training_mode_stochastic_and_eval_deterministic() -> None:
    torch.manual_seed(0)
    model = GlanceFocus(tiny_config(dropout=0.5))
    feats, text, padding = random_inputs(model.config)
    model.train()
    assert not torch.allclose(
        model(feats, None, text, padding).focus.answer_logits, model(feats, None, text, padding).focus.answer_logits
    )
    model.eval()
    assert torch.equal(
        model(feats, None, text, padding).focus.answer_logits, model(feats, None, text, padding).focus.answer_logits
    )


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"reference": True},
        {"compat_answer_from_first_layer": True},
        {"share_mla_attention": False, "num_decoder_layers": 3},
        {"task": "open_ended", "answer_vocab_size": 11},
    ],
    ids=["corrected", "reference", "first-layer-answer", "separate-mla-3-layers", "open-ended"],
)
def test_focus_without_attention_maps_gives_the_same_answers(changes: dict) -> None:
    """The answer-only focus path (fused attention, only the work the answer reads) changes nothing
    but the missing maps, with padded frames and text, hidden frames and a subset of prompts."""
    changes = dict(changes)
    reference = changes.pop("reference", False)
    torch.manual_seed(0)
    config = tiny_config(**changes)
    model = GlanceFocus(config.reference_compat() if reference else config).eval()
    options = 1 if config.task == "open_ended" else 3
    feats, text, padding = random_inputs(model.config, options=options)
    frame_padding = torch.zeros(2, 9, dtype=torch.bool)
    frame_padding[1, -2:] = True
    hidden = torch.zeros(2, 9, dtype=torch.bool)
    hidden[:, 2:4] = True
    slots = torch.tensor([[0, 2, 3, 5], [1, 2, 4, 5]])
    with torch.no_grad():
        prompts, _ = model.sort_memory_prompts(model.glance(feats, frame_padding))
        for kwargs in ({}, {"hidden_frames": hidden}, {"prompt_slots": slots}):
            given = prompts[torch.arange(2)[:, None], slots] if "prompt_slots" in kwargs else prompts
            full = model.focus(feats, frame_padding, given, text, padding, **kwargs)
            lean = model.focus(feats, frame_padding, given, text, padding, need_attention=False, **kwargs)
            torch.testing.assert_close(lean.answer_logits, full.answer_logits, atol=1e-5, rtol=1e-4)
            assert lean.encoder_attention == () and lean.layers == ()
            assert len(full.layers) == model.config.num_decoder_layers


def test_decoder_answer_state_equals_the_full_decoders_qa_state_at_any_layer() -> None:
    model = build(num_decoder_layers=3)
    g = torch.Generator().manual_seed(1)
    n, d, length = 4, model.config.d_model, 7

    def states(count: int) -> torch.Tensor:
        return torch.randn(n, count, d, generator=g)

    text_bias = torch.zeros(n, length)
    text_bias[0, -2:] = float("-inf")
    frame_bias = torch.zeros(n, 9)
    frame_bias[1, -3:] = float("-inf")
    memory = FocusMemory(states(length), states(6), None, states(9), frame_bias, text_bias)
    query_pos = model._query_pos(n)
    with torch.no_grad():
        full, _ = model.decoder.focus(query_pos, memory)
        for layer in (0, 1, 2, -1):
            answer = model.decoder.answer_state(query_pos, memory, layer)
            torch.testing.assert_close(answer, full[layer, :, -1], atol=1e-5, rtol=1e-4)


def test_encoder_output_rows_are_the_first_rows_of_the_full_encoding() -> None:
    model = build()
    x = torch.randn(3, 11, model.config.d_model, generator=torch.Generator().manual_seed(1))
    bias = torch.zeros(3, 11)
    bias[0, -3:] = float("-inf")
    with torch.no_grad():
        full, maps = model.encoder(x, bias)
        first, no_maps = model.encoder(x, bias, need_attention=False, output_rows=7)
    assert len(maps) == model.config.num_encoder_layers and no_maps == ()
    torch.testing.assert_close(first, full[:, :7], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("reference", [False, True], ids=["corrected", "reference"])
def test_several_prompt_sets_per_video_equal_repeating_the_video(reference: bool) -> None:
    """``[B*R, Q', D]`` prompts answer each video R times; the same as passing R copies of it."""
    torch.manual_seed(0)
    model = GlanceFocus(tiny_config().reference_compat() if reference else tiny_config()).eval()
    feats, text, padding = random_inputs(model.config)
    frame_padding = torch.zeros(2, 9, dtype=torch.bool)
    frame_padding[1, -3:] = True
    hidden = torch.zeros(2, 9, dtype=torch.bool)
    hidden[0, 4] = True
    slots = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5], [0, 2, 3, 4, 5]]).repeat(2, 1)  # R = 3 sets
    with torch.no_grad():
        prompts, _ = model.sort_memory_prompts(model.glance(feats, frame_padding))
        given = prompts.repeat_interleave(3, 0)[torch.arange(6)[:, None], slots]  # (B*R, Q-1, D)
        sets = model.focus(
            feats, frame_padding, given, text, padding, prompt_slots=slots, hidden_frames=hidden, need_attention=False
        )
        feats3, frame_padding3, text3, padding3, hidden3 = (
            x.repeat_interleave(3, 0) for x in (feats, frame_padding, text, padding, hidden)
        )
        copies = model.focus(feats3, frame_padding3, given, text3, padding3, prompt_slots=slots, hidden_frames=hidden3)
    assert sets.answer_logits.shape == (6, 3)
    torch.testing.assert_close(sets.answer_logits, copies.answer_logits, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(sets.answer_logits[0], sets.answer_logits[1], atol=1e-4)  # the sets differ
    with pytest.raises(ValueError, match="prompt sets per video"):
        model.focus(feats, None, prompts[:1], text, padding)
