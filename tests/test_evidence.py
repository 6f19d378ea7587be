"""Counterfactual evidence: leaving each memory prompt out, and hiding a time range."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from glance_focus.evidence import (
    HiddenRangeError,
    answer_without_each_prompt,
    build_evidence,
    hidden_frame_mask,
    hidden_range_evidence,
    leave_one_out,
)
from glance_focus.model import GlanceFocus
from glance_focus.pipeline import InputError, Predictor
from glance_focus.plots import evidence_figure
from glance_focus.text_features import question_sequences
from tests.tiny import random_inputs, tiny_config

BUNDLED = Path(__file__).resolve().parents[1] / "assets" / "models" / "synthetic-sup"
CONFIGS = {
    "corrected": tiny_config(),
    "compat": tiny_config().reference_compat(),
    "open_ended": tiny_config(task="open_ended", answer_vocab_size=11),
}


def build(name: str, **changes) -> GlanceFocus:
    torch.manual_seed(0)
    config = CONFIGS[name]
    return GlanceFocus(config if not changes else tiny_config(**changes)).eval()


def inputs(model: GlanceFocus, tokens: int = 7):
    options = 1 if model.config.task == "open_ended" else 3
    feats, text, padding = random_inputs(model.config, batch=2, frames=9, options=options, tokens=tokens)
    frame_padding = torch.zeros(2, 9, dtype=torch.bool)
    frame_padding[1, -3:] = True  # the second video is shorter
    return feats, frame_padding, text, padding


# ============================================================================ leave-one-out


@pytest.mark.parametrize("tokens", [7, 3], ids=["text-longer-than-Q", "text-shorter-than-Q"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_batched_leave_one_out_equals_removing_each_prompt_alone(name: str, tokens: int) -> None:
    """Each of the Q answers of the one batched pass equals a focus stage run, unbatched, on the
    other Q-1 prompts (with 3 text tokens the compat event window reaches back into the prompts)."""
    model = build(name)
    feats, frame_padding, text, padding = inputs(model, tokens)
    result = leave_one_out(model, feats, frame_padding, text, padding)
    prompts, _ = model.sort_memory_prompts(result.glance)
    num_prompts = model.config.num_memory_prompts
    assert result.without.shape == (2, num_prompts, result.probabilities.shape[-1])
    for b in range(2):
        for k in range(num_prompts):
            keep = torch.tensor([j for j in range(num_prompts) if j != k])
            with torch.no_grad():
                alone = model.focus(
                    feats[b : b + 1],
                    frame_padding[b : b + 1],
                    prompts[b : b + 1, keep],
                    text[b : b + 1],
                    padding[b : b + 1],
                    prompt_slots=keep[None],
                )
            torch.testing.assert_close(result.without[b, k], alone.answer_logits[0].softmax(-1), atol=1e-5, rtol=1e-4)
    # and removing a prompt does change answers (the comparison above is not vacuous)
    assert (result.without - result.probabilities[:, None]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["corrected", "compat"])
def test_a_removed_prompt_has_no_influence_on_its_answer(name: str) -> None:
    model = build(name)
    feats, frame_padding, text, padding = inputs(model)
    with torch.no_grad():
        prompts, _ = model.sort_memory_prompts(model.glance(feats, frame_padding))
    altered = prompts.clone()
    altered[:, 2] = 5 * torch.randn_like(altered[:, 2])
    base = answer_without_each_prompt(model, feats, frame_padding, prompts, text, padding)
    changed = answer_without_each_prompt(model, feats, frame_padding, altered, text, padding)
    torch.testing.assert_close(base[:, 2], changed[:, 2], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(base[:, 3], changed[:, 3], atol=1e-4)


def test_naming_every_slot_equals_the_default_focus() -> None:
    model = build("corrected")
    feats, frame_padding, text, padding = inputs(model)
    with torch.no_grad():
        prompts, _ = model.sort_memory_prompts(model.glance(feats, frame_padding))
        slots = torch.arange(model.config.num_memory_prompts).expand(2, -1)
        named = model.focus(feats, frame_padding, prompts, text, padding, prompt_slots=slots)
        default = model.focus(feats, frame_padding, prompts, text, padding)
    torch.testing.assert_close(named.answer_logits, default.answer_logits)


def test_chunked_leave_one_out_equals_one_pass() -> None:
    model = build("corrected")
    feats, frame_padding, text, padding = inputs(model)
    one = leave_one_out(model, feats, frame_padding, text, padding)
    chunked = leave_one_out(model, feats, frame_padding, text, padding, chunk_videos=1)
    torch.testing.assert_close(one.without, chunked.without, atol=1e-6, rtol=1e-5)


def test_leave_one_out_refuses_training_mode_and_single_prompt_models() -> None:
    model = build("corrected").train()
    feats, frame_padding, text, padding = inputs(model)
    with pytest.raises(ValueError, match="eval mode"):
        leave_one_out(model, feats, frame_padding, text, padding)
    single = build("corrected", num_memory_prompts=1)
    with pytest.raises(ValueError, match="at least two"):
        leave_one_out(single, feats, frame_padding, text, padding)


# ============================================================================ hidden frames


@pytest.mark.parametrize("name", ["compat", "no_positions"])
def test_hidden_frames_equal_deleting_them_in_models_without_time_positions(name: str) -> None:
    """Without time positions (the reference, or a corrected model with ``temporal_position="none"``)
    hiding frames must equal cutting them out of the video, in both stages; the reference's float
    masks, which ignore padding, must not let them back in."""
    model = build("compat") if name == "compat" else build("corrected", temporal_position="none")
    feats, _, text, padding = inputs(model)
    hidden = torch.zeros(2, 9, dtype=torch.bool)
    hidden[:, 3:6] = True
    with torch.no_grad():
        masked = model(feats, None, text, padding, hidden_frames=hidden)
        cut = model(feats[:, ~hidden[0]], None, text, padding)
        full = model(feats, None, text, padding)
    torch.testing.assert_close(masked.focus.answer_logits, cut.focus.answer_logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(masked.glance.spans, cut.glance.spans, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        masked.glance.prompt_to_frame[..., ~hidden[0]], cut.glance.prompt_to_frame, atol=1e-6, rtol=1e-5
    )
    assert not torch.allclose(masked.focus.answer_logits, full.focus.answer_logits, atol=1e-4)


def test_hidden_frames_are_ignored_and_the_others_keep_their_times() -> None:
    model = build("corrected")  # sine time positions
    feats, _, text, padding = inputs(model)
    hidden = torch.zeros(2, 9, dtype=torch.bool)
    hidden[:, 6:] = True  # the end of the video
    scrambled = feats.clone()
    scrambled[hidden] = 10 * torch.randn_like(scrambled[hidden])
    with torch.no_grad():
        masked = model(feats, None, text, padding, hidden_frames=hidden).focus.answer_logits
        masked_scrambled = model(scrambled, None, text, padding, hidden_frames=hidden).focus.answer_logits
        cut = model(feats[:, :6], None, text, padding).focus.answer_logits  # times stretched to fill [0, 1]
    torch.testing.assert_close(masked, masked_scrambled, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(masked, cut, atol=1e-4)


def test_hidden_frame_mask_selects_the_frames_inside_the_range() -> None:
    times = (np.arange(12) + 0.5) * 0.5  # 0.25, 0.75, ..., 5.75 s
    assert hidden_frame_mask(times, 1.0, 2.6, 6.0).nonzero().flatten().tolist() == [2, 3, 4]
    assert hidden_frame_mask(times, 0.25, 0.75, 6.0).nonzero().flatten().tolist() == [0, 1]  # inclusive


@pytest.mark.parametrize(
    "start,end,message",
    [
        (3.0, 2.0, "must end after it starts"),
        (2.0, 2.0, "must end after it starts"),
        (-1.0, 2.0, "within the video"),
        (5.0, 7.5, "within the video"),
        (1.0, 1.1, "No sampled frame lies between 1.00 and 1.10 s"),
        (0.0, 6.0, "covers every sampled frame"),
        ("soon", 2.0, "start and an end"),
        (float("nan"), 2.0, "start and an end"),
    ],
)
def test_bad_hidden_ranges_say_what_is_wrong(start, end, message: str) -> None:
    times = (np.arange(12) + 0.5) * 0.5
    with pytest.raises(HiddenRangeError, match=message):
        hidden_frame_mask(times, start, end, 6.0)


# ============================================================================ summaries


@dataclass
class Span:
    slot: int
    start_s: float
    end_s: float
    label: str


def test_evidence_names_the_prompt_whose_removal_hurts_most() -> None:
    probabilities = torch.tensor([0.96, 0.03, 0.01])
    without = torch.tensor([[0.95, 0.04, 0.01], [0.97, 0.02, 0.01], [0.90, 0.09, 0.01], [0.31, 0.60, 0.09]])
    events = [Span(k, 0.5 * k, 0.5 * k + 1, f"event {k}") for k in range(3)] + [Span(3, 2.1, 3.4, "The object grows")]
    names = ["It grew.", "It shrank.", "Nothing."]
    evidence = build_evidence(probabilities, without, 0, names, [0, 1, 2], events)
    assert [p.flips_to for p in evidence.prompts] == [None, None, None, "It shrank."]
    assert evidence.prompts[1].delta == pytest.approx(0.01, abs=1e-6)
    assert evidence.strongest.slot == 3
    assert evidence.sentence() == (
        "The answer rests most on P4 — The object grows, 2.1–3.4 s: without it, 'It grew.' falls from 96 % to "
        "31 % and 'It shrank.' becomes the answer."
    )
    flat = build_evidence(probabilities, probabilities.expand(4, -1), 0, names, [0, 1, 2], events)
    assert flat.sentence().startswith("The answer does not rest on any single memory prompt")

    hidden = hidden_range_evidence(probabilities, without[3], 0, names, [0, 1, 2], 2.0, 3.5, 4)
    assert hidden.answer == hidden.flips_to == "It shrank." and hidden.delta == pytest.approx(-0.65)
    with_hidden = dataclasses.replace(evidence, hidden=hidden)
    assert with_hidden.hidden_sentence() == (
        "Hiding 2.0–3.5 s (4 frames): 'It grew.' goes from 96 % to 31 % and 'It shrank.' becomes the answer."
    )
    figure = evidence_figure(with_hidden)
    bars_ax = figure.axes[0]
    assert [t.get_text() for t in bars_ax.get_yticklabels()] == ["P1", "P2", "P3", "P4", "hidden"]
    widths = [round(patch.get_width(), 3) for patch in bars_ax.patches]
    assert widths == pytest.approx([-1.0, 1.0, -6.0, -65.0, -65.0], abs=1e-3)


# ============================================================================ the Predictor


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(BUNDLED, device="cpu")


QUESTION = "What happened to the object?"
OPTIONS = ["It grew.", "It shrank.", "It turned red.", "It disappeared."]


def test_predictor_evidence_agrees_with_the_model_run_by_hand(predictor: Predictor) -> None:
    torch.manual_seed(1)
    features = torch.randn(24, 512)
    duration = 6.0  # frames at 0.125 + 0.25 i s
    evidence = predictor.evidence_features(features, QUESTION, OPTIONS, duration_s=duration, hide=(1.0, 2.6))
    prediction = predictor.predict_features(features, QUESTION, OPTIONS, duration_s=duration)
    assert evidence.answer == prediction.answer
    np.testing.assert_allclose(evidence.probabilities, prediction.probabilities, atol=1e-6)
    assert [(p.slot, p.label) for p in evidence.prompts] == [(e.slot, e.label) for e in prediction.events]
    spans = [(p.start_s, p.end_s) for p in evidence.prompts]
    # the same spans up to float rounding (the answer runs on one thread, the evidence on the default count)
    np.testing.assert_allclose(spans, [(e.start_s, e.end_s) for e in prediction.events], atol=1e-5)

    model = predictor.model
    text, padding = predictor.text.encode([question_sequences(QUESTION, OPTIONS)])
    hidden = torch.zeros(1, 24, dtype=torch.bool)
    hidden[0, 4:10] = True  # 1.125 ... 2.375 s
    with torch.no_grad():
        by_hand = model(features[None], None, text, padding, hidden_frames=hidden).focus.answer_logits[0].softmax(-1)
        prompts = model(features[None], None, text, padding).sorted_memory_prompts
        keep = torch.tensor([j for j in range(10) if j != 4])
        without_p5 = model.focus(features[None], None, prompts[:, keep], text, padding, prompt_slots=keep[None])
    assert evidence.hidden is not None and evidence.hidden.frames_hidden == 6
    np.testing.assert_allclose(evidence.hidden.probabilities, by_hand.tolist(), atol=1e-5)
    p5 = without_p5.answer_logits[0].softmax(-1)[evidence.answer_index]
    assert evidence.prompts[4].probability_without == pytest.approx(float(p5), abs=1e-5)
    assert evidence.prompts[4].delta == pytest.approx(float(p5) - evidence.answer_probability, abs=1e-5)

    data = evidence.to_json()
    assert set(data) == {"answer", "options", "probabilities", "evidence", "hidden"}
    assert set(data["evidence"][0]) == {"slot", "start_s", "end_s", "label", "probability_without", "delta", "flips_to"}


@pytest.mark.parametrize(
    "hide,message",
    [((2.0, 1.0), "must end after it starts"), ((0.0, 9.0), "within the video"), ((1.0,), r"\(start, end\)")],
)
def test_predictor_evidence_rejects_bad_ranges_as_input_errors(predictor: Predictor, hide, message: str) -> None:
    features = torch.randn(24, 512)
    with pytest.raises(InputError, match=message):
        predictor.evidence_features(features, QUESTION, OPTIONS, duration_s=6.0, hide=hide)
    with pytest.raises(InputError, match="at least two"):
        predictor.evidence_features(features, QUESTION, ["only one"], duration_s=6.0)
