"""One question from the page or the API: check what was sent, prepare the video on the CPU,
answer in the GPU function, and turn the library's errors into messages for the person
(``gr.Error``); unexpected ones are logged and shown as a generic message.

The steps (see :mod:`glance_focus.app.zerogpu` for why they are split this way):

1. here, in the server process: the model, the frames count, the question and options are checked,
   the model and its encoders are loaded, and :meth:`Predictor.prepare` hashes, probes and decodes
   the video (or finds its features in the feature cache) and makes the thumbnails;
2. :meth:`Answerer.answer_prepared`, the GPU function (on ZeroGPU a forked worker): encode the
   decoded frames and answer; a mistake raised there is already a ``gr.Error`` when it leaves;
3. here again: the new features go into the feature cache.

The evidence (:meth:`Answerer.evidence`) takes the same steps, with
:meth:`Answerer.evidence_prepared` as its GPU function.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import gradio as gr

from glance_focus.app.messages import UNEXPECTED_ERROR, model_summary, model_unavailable
from glance_focus.app.models import Models
from glance_focus.app.settings import FRAMES_RANGE
from glance_focus.app.zerogpu import gpu_duration_s, gpu_function, zero_gpu
from glance_focus.checkpoint import CheckpointError
from glance_focus.encoders import EncoderFingerprintError, EncoderUnavailableError
from glance_focus.evidence import Evidence
from glance_focus.pipeline import InputError, Prediction, Predictor, PreparedVideo
from glance_focus.video import VideoError

log = logging.getLogger(__name__)


def parse_options(text: str | None) -> list[str] | None:
    """One option per line; None when there are none (open-ended)."""
    options = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return options or None


@contextmanager
def person_messages(model: str, what: str) -> Iterator[None]:
    """Within the block, the library's errors become ``gr.Error`` messages for the person: what
    is wrong with their input as it is, a model the server cannot load as such (details in the log),
    anything else
    logged (``what`` says what was being done) and shown as :data:`UNEXPECTED_ERROR`."""
    try:
        yield
    except gr.Error:
        raise
    except (InputError, VideoError) as exc:
        raise gr.Error(str(exc)) from None
    except (CheckpointError, EncoderUnavailableError, EncoderFingerprintError):
        log.exception("model %s cannot be used", model)  # the operator's problem: the log says what to fix
        raise gr.Error(model_unavailable(model)) from None
    except Exception:
        log.exception("%s failed (model %s)", what, model)
        raise gr.Error(UNEXPECTED_ERROR) from None


class Answerer:
    """Runs one request (see the module's docstring for its steps)."""

    def __init__(self, models: Models) -> None:
        self.models = models
        self._answer_on_gpu = gpu_function(self.answer_prepared, duration=self.gpu_duration_s)
        self._evidence_on_gpu = gpu_function(self.evidence_prepared, duration=self.gpu_duration_s)

    def gpu_duration_s(self, model: str, prepared: PreparedVideo, *_: object) -> int:
        """The GPU time :meth:`answer_prepared` or :meth:`evidence_prepared` asks for (ZeroGPU's
        ``duration``; called with the same arguments)."""
        return gpu_duration_s(prepared.frames_to_encode, self.models.choices[model].info.frame_encoder)

    def answer_prepared(self, model: str, prepared: PreparedVideo, question: str, options: list[str]) -> Prediction:
        """The GPU function: encode the prepared frames (unless cached) and answer. It decodes
        nothing and touches no cache; whatever it raises is a ``gr.Error``."""
        with person_messages(model, "answering"):
            return self.models.predictor(model).answer_prepared(prepared, question, options)

    def evidence_prepared(
        self,
        model: str,
        prepared: PreparedVideo,
        question: str,
        options: list[str],
        hide: tuple[float, float] | None,
    ) -> tuple[Evidence, object]:
        """The evidence's GPU function (as :meth:`answer_prepared`): the evidence and the frame
        features ``[T, F]`` to cache."""
        with person_messages(model, "weighing the evidence"):
            return self.models.predictor(model).evidence_prepared(prepared, question, options, hide)

    def __call__(
        self,
        model: str | None,
        video: str | None,
        question: str,
        options: str | None,
        num_frames: float | None = None,
        progress: gr.Progress | None = None,
    ) -> Prediction:
        predictor, prepared, question, checked_options = self._prepare(
            model, video, question, options, num_frames, progress
        )
        if progress is not None:
            progress(0.5, desc="Encoding the frames and answering…")
        prediction = self._answer_on_gpu(model, prepared, question, checked_options)
        with person_messages(model, "caching the features"):
            predictor.remember(prepared, prediction.features)
        return prediction

    def evidence(
        self,
        model: str | None,
        video: str | None,
        question: str,
        options: str | None,
        num_frames: float | None = None,
        hide: tuple[float, float] | None = None,
        progress: gr.Progress | None = None,
    ) -> Evidence:
        """The answer's leave-one-out evidence (:meth:`Predictor.evidence`), checked like an answer;
        ``hide=(start_s, end_s)`` also answers without that stretch of the video."""
        predictor, prepared, question, checked_options = self._prepare(
            model, video, question, options, num_frames, progress
        )
        if progress is not None:
            progress(0.5, desc="Encoding the frames and weighing the evidence…")
        evidence, features = self._evidence_on_gpu(model, prepared, question, checked_options, hide)
        with person_messages(model, "caching the features"):
            predictor.remember(prepared, features)
        return evidence

    def _prepare(
        self,
        model: str | None,
        video: str | None,
        question: str,
        options: str | None,
        num_frames: float | None,
        progress: gr.Progress | None,
    ) -> tuple[Predictor, PreparedVideo, str, list[str]]:
        """Step 1 (see the module's docstring): the predictor, the prepared video and the checked
        question and options; ``gr.Error`` for anything a person must change."""
        if model not in self.models.choices:
            raise gr.Error("Please choose one of the listed models." if self.models.choices else model_summary(None))
        if not video:
            raise gr.Error("Please upload a video.")
        frames = None
        if num_frames is not None:
            frames = int(num_frames)
            if not FRAMES_RANGE[0] <= frames <= FRAMES_RANGE[1]:
                raise gr.Error(f"Frames to sample must be between {FRAMES_RANGE[0]} and {FRAMES_RANGE[1]}.")
        with person_messages(model, f"preparing {video}"):
            if progress is not None and not self.models.loaded(model):
                progress(0.05, desc="Loading the model (first request only)…")
            predictor = self.models.predictor(model)
            checked_question, checked_options = predictor.check_question(question, parse_options(options))
            predictor.warm_up()  # the encoders exist before any GPU worker is forked
            if progress is not None:
                progress(0.2, desc="Decoding the video…")
            # Off ZeroGPU the frames are encoded while decoding continues (in this process).
            prepared = predictor.prepare(video, frames, encode_while_decoding=not zero_gpu())
        return predictor, prepared, checked_question, checked_options
