"""A tiny model learns a tiny synthetic batch through both stages (answer and event spans)."""

from __future__ import annotations

import torch

from glance_focus.config import LossConfig
from glance_focus.losses import GlanceFocusCriterion
from glance_focus.matcher import EventTargets
from glance_focus.model import GlanceFocus
from tests.tiny import tiny_config


def make_batch(seed: int = 0):
    """8 videos of 12 frames; each has 2-3 events whose frames carry the event's class signature.

    The question asks which class the *first* event has; options are the class names' text codes.
    """
    g = torch.Generator().manual_seed(seed)
    config = tiny_config(num_memory_prompts=4, num_event_classes=4, dropout=0.0)
    signatures = torch.randn(config.num_event_classes, config.feature_dim, generator=g) * 2
    option_codes = torch.randn(config.num_event_classes, 3, config.text_hidden_size, generator=g)
    frames = torch.randn(8, 12, config.feature_dim, generator=g) * 0.1
    labels, spans, answers = [], [], []
    for b in range(8):
        n = 2 + b % 2
        bounds = torch.linspace(0, 12, n + 1).long()
        classes = torch.randperm(config.num_event_classes, generator=g)[:n]
        for i in range(n):
            frames[b, bounds[i] : bounds[i + 1]] += signatures[classes[i]]
        labels.append(classes)
        spans.append(torch.stack([bounds[:-1], bounds[1:]], -1).float() / 12)
        answers.append(0)
    # Options: option k is "class classes[(k) % n]"; the answer is always class of the first event,
    # placed at a video-dependent position so position alone cannot answer.
    text = torch.zeros(8, 3, 3, config.text_hidden_size)
    answer_index = []
    for b in range(8):
        first = labels[b][0].item()
        others = [c for c in range(config.num_event_classes) if c != first][:2]
        position = b % 3
        choices = [*others[:position], first, *others[position:]]
        text[b] = option_codes[torch.tensor(choices)]
        answer_index.append(position)
    padding = torch.zeros(8, 3, 3, dtype=torch.bool)
    return config, frames, text, padding, EventTargets.from_lists(labels, spans), torch.tensor(answer_index)


def test_tiny_model_learns_answers_and_spans() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses time to thread synchronisation
    try:
        train_and_check()
    finally:
        torch.set_num_threads(threads)


def train_and_check() -> None:
    torch.manual_seed(0)
    config, frames, text, padding, targets, answers = make_batch()
    model = GlanceFocus(config)
    criterion = GlanceFocusCriterion(LossConfig(weights={"qa": 1.0, "cls": 0.5, "l1": 2.0}), config.span_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(400):
        out = model(frames, None, text, padding)
        loss = criterion(out.glance.event_logits, out.glance.spans, out.focus.answer_logits, answers, targets)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        accuracy = (out.focus.answer_logits.argmax(-1) == answers).float().mean().item()
        if accuracy == 1.0 and loss.terms["l1"].item() < 0.03:
            break
    model.eval()
    with torch.no_grad():
        out = model(frames, None, text, padding)
        final = criterion(out.glance.event_logits, out.glance.spans, out.focus.answer_logits, answers, targets)
    assert (out.focus.answer_logits.argmax(-1) == answers).all()
    assert final.terms["l1"].item() < 0.05
