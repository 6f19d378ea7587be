"""Start-up and serving: the warm-up that takes the start-up costs off the first requests, and
:func:`launch` with this project's serving settings."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gradio as gr

from glance_focus.app.examples import Example
from glance_focus.app.models import Models
from glance_focus.app.page import CSS, THEME
from glance_focus.app.settings import MAX_UPLOAD_BYTES
from glance_focus.app.zerogpu import zero_gpu
from glance_focus.video import default_pool

log = logging.getLogger("glance_focus.app")


def warm_up(models: Models, examples: Sequence[Example]) -> None:
    """Take the start-up costs off the first requests: start the video workers, load the default
    model and its encoders, and put the example videos' features in the feature cache.

    On ZeroGPU (where this runs before the server starts, and the GPU exists only inside a
    request) every offered model and its encoders are loaded instead, and nothing is encoded:
    the GPU workers are forked from this process, so they then find everything loaded.
    """
    try:
        default_pool()
        if models.default is None:
            return
        if zero_gpu():
            for name in models.choices:
                models.predictor(name).warm_up()
            log.info("warm-up done: %d models loaded for the GPU workers", len(models.choices))
            return
        predictor = models.predictor(models.default)
        predictor.warm_up(first_calls=True)
        for video in dict.fromkeys(example.video for example in examples):
            predictor.video_features(video)
        log.info("warm-up done: %s ready, %d example videos encoded", models.default, len(examples))
    except Exception:
        log.exception("warm-up failed; requests will load what they need")


def launch(app: gr.Blocks, host: str | None, port: int | None, share: bool = False, **kwargs: Any) -> Any:
    """Serve ``app`` with this project's serving settings (see README, "The demo")."""
    return app.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=MAX_UPLOAD_BYTES,
        show_error=False,
        allowed_paths=[],
        theme=THEME,
        css=CSS,
        **kwargs,
    )
