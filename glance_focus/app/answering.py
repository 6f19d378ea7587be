"""One question from the page or the API: check what was sent, call the model (on the GPU where
there is one), and turn the library's errors into messages for the person (``gr.Error``)."""

from __future__ import annotations

import logging

import gradio as gr

from glance_focus.app.messages import UNEXPECTED_ERROR, model_summary
from glance_focus.app.models import Models
from glance_focus.app.settings import FRAMES_RANGE
from glance_focus.app.zerogpu import on_gpu
from glance_focus.checkpoint import CheckpointError
from glance_focus.encoders import EncoderUnavailableError
from glance_focus.pipeline import InputError, Prediction
from glance_focus.video import VideoError

log = logging.getLogger(__name__)


def parse_options(text: str | None) -> list[str] | None:
    """One option per line; None when there are none (open-ended)."""
    options = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return options or None


class Answerer:
    """Runs one request: checks what the page sent, calls the model, turns the library's errors
    into messages for the person (``gr.Error``) and hides unexpected ones behind a generic message."""

    def __init__(self, models: Models) -> None:
        self.models = models
        self._predict = on_gpu(models.predict)

    def __call__(
        self,
        model: str | None,
        video: str | None,
        question: str,
        options: str | None,
        num_frames: float | None = None,
        progress: gr.Progress | None = None,
    ) -> Prediction:
        if model not in self.models.choices:
            raise gr.Error("Please choose one of the listed models." if self.models.choices else model_summary(None))
        if not video:
            raise gr.Error("Please upload a video.")
        frames = None
        if num_frames is not None:
            frames = int(num_frames)
            if not FRAMES_RANGE[0] <= frames <= FRAMES_RANGE[1]:
                raise gr.Error(f"Frames to sample must be between {FRAMES_RANGE[0]} and {FRAMES_RANGE[1]}.")
        try:
            if progress is not None and not self.models.loaded(model):
                progress(0.05, desc="Loading the model (first request only)…")
            if progress is not None:
                progress(0.2, desc="Decoding the video and encoding its frames…")
            return self._predict(model, video, question, parse_options(options), frames)
        except (InputError, VideoError) as exc:
            raise gr.Error(str(exc)) from None
        except (CheckpointError, EncoderUnavailableError) as exc:
            log.exception("model %s cannot be used", model)
            raise gr.Error(f"The model {model} cannot be used on this server: {exc}") from None
        except Exception:
            log.exception("prediction failed (model %s, video %s)", model, video)
            raise gr.Error(UNEXPECTED_ERROR) from None
