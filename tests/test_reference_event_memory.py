"""The reference code slices its focus "event memory" as the last 10 encoded positions, a literal
10 whatever the number of memory prompts; reference-compatible models do the same."""

from __future__ import annotations

import pytest
import torch

from glance_focus.model import GlanceFocus
from tests.tiny import random_inputs, tiny_config


@pytest.mark.parametrize("num_prompts", [6, 10, 13])
def test_reference_event_memory_is_ten_positions_whatever_the_prompt_count(num_prompts: int) -> None:
    torch.manual_seed(0)
    config = tiny_config(num_memory_prompts=num_prompts).reference_compat()
    assert config.compat_event_memory_size == 10
    model = GlanceFocus(config).eval()
    frames, text, padding = random_inputs(config, frames=9, tokens=7)
    with torch.no_grad():
        focus = model(frames, None, text, padding).focus
    tokens = text.shape[2]
    assert focus.question_to_memory.shape[-1] == 10
    # the frame memory is everything before those 10: frames, prompts and the other text positions
    assert focus.events_to_frames.shape[-1] == 9 + num_prompts + tokens - 10


def test_corrected_event_memory_is_the_prompts() -> None:
    torch.manual_seed(0)
    config = tiny_config(num_memory_prompts=6)
    model = GlanceFocus(config).eval()
    frames, text, padding = random_inputs(config, frames=9)
    with torch.no_grad():
        focus = model(frames, None, text, padding).focus
    assert focus.question_to_memory.shape[-1] == 6 and focus.events_to_frames.shape[-1] == 9
