"""The focus maps the app draws are those of the decoder layer the answer is read from: the last
layer in corrected models, the first in reference-compatible ones (whose later layers never reach
the answer)."""

from __future__ import annotations

import torch

from glance_focus.model import FocusOutput, GlanceFocus
from tests.tiny import random_inputs, tiny_config


def perturbed_last_layer(model: GlanceFocus) -> GlanceFocus:
    twin = GlanceFocus(model.config).eval()
    twin.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        for p in twin.decoder.layers[-1].parameters():
            p.add_(0.5 * torch.randn_like(p))
    return twin


def focus_of_both(model: GlanceFocus, changed: GlanceFocus) -> tuple[FocusOutput, FocusOutput]:
    """Both models' focus stage on the same inputs and the same memory prompts (the glance stage
    reads every decoder layer, so the prompts are the first model's)."""
    frames, text, padding = random_inputs(model.config)
    with torch.no_grad():
        prompts, _ = model.sort_memory_prompts(model.glance(frames))
        return model.focus(frames, None, prompts, text, padding), changed.focus(frames, None, prompts, text, padding)


def test_reference_answer_maps_come_from_the_first_layer() -> None:
    torch.manual_seed(0)
    model = GlanceFocus(tiny_config().reference_compat()).eval()
    changed = perturbed_last_layer(model)
    a, b = focus_of_both(model, changed)
    assert a.answer_layer == 0
    assert torch.allclose(a.answer_logits, b.answer_logits, atol=1e-6)
    # what the app shows for the answer must not depend on a layer the answer never reads
    assert torch.allclose(a.answer_to_frames, b.answer_to_frames, atol=1e-6)
    assert torch.allclose(a.question_to_memory, b.question_to_memory, atol=1e-6)
    assert not torch.allclose(a.layers[-1].query_to_selection, b.layers[-1].query_to_selection)


def test_corrected_answer_maps_come_from_the_last_layer() -> None:
    torch.manual_seed(0)
    model = GlanceFocus(tiny_config()).eval()
    changed = perturbed_last_layer(model)
    a, b = focus_of_both(model, changed)
    assert a.answer_layer == model.config.num_decoder_layers - 1
    assert not torch.allclose(a.answer_logits, b.answer_logits, atol=1e-4)
    assert not torch.allclose(a.answer_to_frames, b.answer_to_frames, atol=1e-4)
    assert torch.equal(a.answer_to_selection, a.layers[-1].query_to_selection[:, -1])
