"""The file input of the page and the API: any file, judged by its content (the probe), never by
its name or type."""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio.data_classes import FileData
from gradio.utils import NamedString


def uploaded_file_input(label: str, **kwargs: Any) -> gr.File:
    """A ``gr.File`` input for any file, that passes the uploaded file's path on and nothing else.

    No file-type list: a video is judged by its content (the probe), whatever its name, so an
    ``.mpg``, ``.ts`` or ``.3gp`` file, or one without an extension, is read like an ``.mp4``.
    ``gr.File(type="filepath")`` in gradio 6 also creates an empty, never-used temporary file in
    the upload cache on every request; under load that is one stray file per API call. This
    input returns the upload's own path instead (which gradio's cache sweep owns). The method is
    replaced on the instance: a ``gr.File`` subclass would make gradio write a ``.pyi`` stub beside
    this module at import time.
    """
    component = gr.File(label=label, type="filepath", **kwargs)

    def process_single_file(f: FileData) -> NamedString:
        return NamedString(f.path)

    component._process_single_file = process_single_file
    return component
