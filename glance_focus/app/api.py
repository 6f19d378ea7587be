"""The programmatic API for ``gradio_client``: ``/predict`` and ``/evidence`` (hidden components, no
place in the page).

Both take the video, the question, the options and, optionally, the name of one of the server's
models (the model selector's names); without one they answer with the first, as they did before
models could be named, so existing clients keep working.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from glance_focus.app.answering import Answerer
from glance_focus.app.models import Models
from glance_focus.app.uploads import uploaded_file_input


def build_api(models: Models) -> None:
    """The ``/predict`` and ``/evidence`` endpoints for ``gradio_client`` (hidden components; no place
    in the page). Both take the same inputs and give a person's mistakes the same messages."""
    answerer = Answerer(models)

    def predict(video: str | None, question: str, options: str, model: str | None = "") -> dict[str, Any]:
        """Answer a question about a video.

        Args:
            video: the video file, in any format the server's decoder reads (MP4, WebM, MOV, MKV,
                AVI, MPEG, MPEG-TS, 3GP, ...); judged by its content, not its name.
            question: the question.
            options: the answer options, one per line; empty for an open-ended model.
            model: the name of one of the server's models; empty for the first (the default).

        Returns:
            ``{answer, answer_index, options, probabilities, events: [{start_s, end_s, label,
            score, background}], timings_s, model}``.
        """
        name = model_name(model)
        return {**answerer(name, video, question, options).to_json(), "model": name}

    def model_name(model: str | None) -> str | None:
        """The model a request names (empty: the first); a person's message for an unknown name."""
        name = (model or "").strip() or models.default
        if name not in models.choices:
            offered = ", ".join(models.choices) or "none"
            raise gr.Error(f"There is no model named {name!r} on this server; it offers: {offered}.")
        return name

    def evidence(video: str | None, question: str, options: str, model: str | None = "") -> dict[str, Any]:
        """How much the answer rests on each memory prompt: the model answers again with each one left out.

        Args:
            video: the video file (mp4, webm, mov, avi or mkv).
            question: the question.
            options: the answer options, one per line; empty for an open-ended model.
            model: the name of one of the server's models; empty for the first (the default).

        Returns:
            ``{answer, options, probabilities, evidence: [{slot, start_s, end_s, label,
            probability_without, delta, flips_to}]}``, one evidence entry per memory prompt in
            temporal order; ``delta`` = ``probability_without`` minus the answer's probability;
            ``flips_to`` is the answer without that prompt, or null where it stays.
        """
        return answerer.evidence(model_name(model), video, question, options).to_json()

    with gr.Column(visible=False):
        api_video = uploaded_file_input("video")
        api_question = gr.Textbox(label="question")
        api_options = gr.Textbox(label="options", lines=4)
        api_model = gr.Textbox(label="model", value="")
        api_result = gr.JSON(label="result")
    gr.on(
        [],
        predict,
        inputs=[api_video, api_question, api_options, api_model],
        outputs=api_result,
        api_name="predict",
        concurrency_id="inference",
    )
    gr.on(
        [],
        evidence,
        inputs=[api_video, api_question, api_options, api_model],
        outputs=api_result,
        api_name="evidence",
        concurrency_id="inference",
    )
