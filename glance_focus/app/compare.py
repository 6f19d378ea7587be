"""Compare mode of the "Ask a question" tab: two models answer the same video and question; the
page shows both answers, every option's probability under each, and both event timelines on one
time axis (:func:`~glance_focus.plots.compare_timeline_figure`)."""

from __future__ import annotations

from typing import Any

import gradio as gr
from matplotlib.figure import Figure

from glance_focus.app.answering import Answerer
from glance_focus.pipeline import Prediction
from glance_focus.plots import compare_timeline_figure


def compare_markdown(name_a: str, a: Prediction, name_b: str, b: Prediction) -> str:
    """Both answers with their probabilities, and whether they agree (Markdown)."""
    verdict = "They agree." if a.answer == b.answer else "**They disagree.**"
    return "\n".join(
        [
            f"- **{name_a}**: {a.answer} ({a.probabilities[a.answer_index]:.1%})",
            f"- **{name_b}**: {b.answer} ({b.probabilities[b.answer_index]:.1%})",
            "",
            verdict,
        ]
    )


def probabilities_table(name_a: str, a: Prediction, name_b: str, b: Prediction) -> dict[str, Any]:
    """``{"headers", "data"}``: one row per answer choice of either model (the options, or an
    open-ended model's top answers), its probability under each ("" where a model did not rank
    it), and which model chose it."""
    probs_a = dict(zip(a.options, a.probabilities, strict=True))
    probs_b = dict(zip(b.options, b.probabilities, strict=True))
    rows = []
    for choice in dict.fromkeys([*a.options, *b.options]):
        chosen = [name for name, p in ((name_a, a), (name_b, b)) if p.answer == choice]
        rows.append(
            [
                choice,
                round(probs_a[choice], 4) if choice in probs_a else "",
                round(probs_b[choice], 4) if choice in probs_b else "",
                " + ".join(chosen),
            ]
        )
    return {"headers": ["option", name_a, name_b, "chosen by"], "data": rows}


class Comparer:
    """The compare handler: both models through the same :class:`Answerer` checks and messages."""

    def __init__(self, answerer: Answerer) -> None:
        self.answerer = answerer

    def __call__(
        self,
        video: str | None,
        question: str,
        options: str | None,
        model_a: str | None,
        model_b: str | None,
        num_frames: float | None = None,
        progress: gr.Progress | None = None,
    ) -> tuple[str, dict[str, Any], Figure]:
        if not model_b or model_b not in self.answerer.models.choices:
            raise gr.Error("Choose the model to compare with.")
        if model_a == model_b:
            raise gr.Error("Choose two different models to compare.")
        a = self.answerer(model_a, video, question, options, num_frames, progress)
        b = self.answerer(model_b, video, question, options, num_frames, progress)
        assert model_a is not None  # the answerer refused anything else
        return (
            compare_markdown(model_a, a, model_b, b),
            probabilities_table(model_a, a, model_b, b),
            compare_timeline_figure([(model_a, a), (model_b, b)]),
        )
