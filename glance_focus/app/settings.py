"""Where the app finds its files and the limits it serves under (one place for every number an
operator may want to know; README, "The demo", explains them)."""

from __future__ import annotations

import os
from pathlib import Path

from glance_focus.video import VideoLimits

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODELS = REPO_ROOT / "assets" / "models"
"""The checkpoints offered when the operator names none (the bundled synthetic models)."""
EXAMPLES_FILE = REPO_ROOT / "assets" / "examples" / "examples.json"

MAX_UPLOAD_BYTES = 200 * 10**6
VIDEO_LIMITS = VideoLimits(max_file_bytes=MAX_UPLOAD_BYTES)
FRAMES_RANGE = (4, 128)
"""Frames-to-sample slider bounds (the model's own ``num_frames`` is the default)."""
QUEUE_SIZE = 32
CONCURRENCY = 2
"""Requests that run at once; more wait in the queue (at most ``QUEUE_SIZE``)."""
FEATURE_CACHE_BYTES = 512 * 1024**2
EXAMPLES_PER_PAGE = 4


def default_cache_root() -> Path:
    """The app's cache: ``$XDG_CACHE_HOME/glance-focus`` (``~/.cache`` by default), holding the frame
    features per video in ``features/`` and the Inspect tab's runs in ``inspection/``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glance-focus"
