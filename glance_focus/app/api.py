"""The programmatic API: ``/predict`` for ``gradio_client`` (hidden components, no place in the page)."""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio.data_classes import FileData
from gradio.exceptions import Error as GradioError
from gradio.utils import NamedString
from gradio_client.utils import is_valid_file

from glance_focus.app.answering import Answerer
from glance_focus.app.models import Models

VIDEO_EXTENSIONS = [".mp4", ".webm", ".mov", ".avi", ".mkv"]


def uploaded_file_input(label: str, file_types: list[str]) -> gr.File:
    """A ``gr.File`` input that passes the uploaded file's path on, and nothing else.

    ``gr.File(type="filepath")`` in gradio 6 also creates an empty, never-used temporary file in
    the upload cache on every request; under load that is one stray file per API call. This
    input checks the file type the same way and returns the upload's own path (which gradio's
    cache sweep owns). The method is replaced on the instance: a ``gr.File`` subclass would make
    gradio write a ``.pyi`` stub beside this module at import time.
    """
    component = gr.File(label=label, file_types=file_types, type="filepath")

    def process_single_file(f: FileData) -> NamedString:
        if not is_valid_file(f.path, file_types):
            raise GradioError(f"Invalid file type. Upload one of these formats: {', '.join(file_types)}")
        return NamedString(f.path)

    component._process_single_file = process_single_file
    return component


def build_api(models: Models) -> None:
    """The ``/predict`` endpoint for ``gradio_client`` (hidden components; no place in the page)."""
    answerer = Answerer(models)

    def predict(video: str | None, question: str, options: str) -> dict[str, Any]:
        """Answer a question about a video with the default model.

        Args:
            video: the video file (mp4, webm, mov, avi or mkv).
            question: the question.
            options: the answer options, one per line; empty for an open-ended model.

        Returns:
            ``{answer, answer_index, options, probabilities, events: [{start_s, end_s, label,
            score, background}], timings_s}``.
        """
        return answerer(models.default, video, question, options).to_json()

    with gr.Column(visible=False):
        api_video = uploaded_file_input("video", VIDEO_EXTENSIONS)
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
