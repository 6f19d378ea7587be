"""The programmatic API for ``gradio_client``: ``/predict`` and ``/evidence`` (hidden components, no
place in the page)."""

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

    def predict(video: str | None, question: str, options: str) -> dict[str, Any]:
        """Answer a question about a video with the default model.

        Args:
            video: the video file, in any format the server's decoder reads (MP4, WebM, MOV, MKV,
                AVI, MPEG, MPEG-TS, 3GP, ...); judged by its content, not its name.
            question: the question.
            options: the answer options, one per line; empty for an open-ended model.

        Returns:
            ``{answer, answer_index, options, probabilities, events: [{start_s, end_s, label,
            score, background}], timings_s}``.
        """
        return answerer(models.default, video, question, options).to_json()

    def evidence(video: str | None, question: str, options: str) -> dict[str, Any]:
        """How much the answer rests on each memory prompt: the model answers again with each one left out.

        Args:
            video: the video file (mp4, webm, mov, avi or mkv).
            question: the question.
            options: the answer options, one per line; empty for an open-ended model.

        Returns:
            ``{answer, options, probabilities, evidence: [{slot, start_s, end_s, label,
            probability_without, delta, flips_to}]}``, one evidence entry per memory prompt in
            temporal order; ``delta`` = ``probability_without`` minus the answer's probability;
            ``flips_to`` is the answer without that prompt, or null where it stays.
        """
        return answerer.evidence(models.default, video, question, options).to_json()

    with gr.Column(visible=False):
        api_video = uploaded_file_input("video")
        api_question = gr.Textbox(label="question")
        api_options = gr.Textbox(label="options", lines=4)
        api_result = gr.JSON(label="result")
    gr.on(
        [],
        predict,
        inputs=[api_video, api_question, api_options],
        outputs=api_result,
        api_name="predict",
        concurrency_id="inference",
    )
    gr.on(
        [],
        evidence,
        inputs=[api_video, api_question, api_options],
        outputs=api_result,
        api_name="evidence",
        concurrency_id="inference",
    )
