"""Hugging Face ZeroGPU: whether this process runs on it, and :func:`gpu_function`, the
``spaces.GPU`` wrapper for the one step that needs the accelerator (a no-op everywhere else).

How ZeroGPU runs a ``spaces.GPU`` function (``spaces`` 0.51): the call's arguments are pickled to
a worker process **forked** from the server (and kept for later calls while it is idle), the
function runs there with the GPU attached, and its result is pickled back. An exception that is
not a ``gr.Error`` comes back only as "ZeroGPU worker error" with its class name, so everything
the function raises for a person must already be a ``gr.Error``. The time it holds the GPU counts
against the visitor's daily quota; the ``duration`` it asks for sets its queue priority and its
limit. So this app does all the work that needs no GPU (validation, hashing, probing, decoding,
thumbnails, feature-cache lookup) before the call, passes the decoded frames in, and asks for a
duration computed from the frames still to encode (:func:`gpu_duration_s`).

Imported before anything that imports torch (see ``glance_focus/app/__init__.py``): the ``spaces``
package must patch torch before CUDA is touched.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TypeVar

try:
    import spaces
except ImportError:
    spaces = None

GPU_DURATION_S = 60
"""The most GPU time one request may ask for (seconds)."""
GPU_BASE_S = 8.0
"""Seconds of every GPU call besides the image encoder: attaching the GPU to a fresh worker and
moving the weights to it, the text encoder and the Glance-Focus model (well under a second)."""
FRAMES_PER_S = {"ViT-B-32": 400.0, "ViT-B-16": 150.0, "ViT-L-14": 40.0}
"""Image-encoder speed assumed per architecture: a cold start (first batch, kernels chosen) far
below the measured steady state, so the requested duration is never too short."""
FALLBACK_FRAMES_PER_S = 20.0
"""For an encoder not listed in :data:`FRAMES_PER_S`."""

_F = TypeVar("_F", bound=Callable)


def zero_gpu() -> bool:
    """Whether this process runs on a ZeroGPU Space: ``SPACES_ZERO_GPU`` read as the ``spaces``
    package reads it (``1``, ``t`` or ``true`` in any case; anything else, e.g. ``false``, is off)."""
    value = os.environ.get("SPACES_ZERO_GPU")
    return value is not None and value.lower() in ("1", "t", "true")


def gpu_duration_s(frames_to_encode: int, frame_encoder: str) -> int:
    """Seconds of GPU to ask for: :data:`GPU_BASE_S` plus the image encoder's time for
    ``frames_to_encode`` frames with the encoder ``frame_encoder`` (``ARCH:PRETRAINED``), rounded up
    and at most :data:`GPU_DURATION_S`."""
    speed = FRAMES_PER_S.get(frame_encoder.split(":", 1)[0], FALLBACK_FRAMES_PER_S)
    return min(GPU_DURATION_S, math.ceil(GPU_BASE_S + frames_to_encode / speed))


def gpu_function(fn: _F, duration: Callable[..., int]) -> _F:
    """``fn`` as a ZeroGPU function asking for ``duration(*args)`` seconds (``spaces.GPU``, which
    returns ``fn`` itself off ZeroGPU), or ``fn`` itself when the ``spaces`` package is absent."""
    return fn if spaces is None else spaces.GPU(duration=duration)(fn)
