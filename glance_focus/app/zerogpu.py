"""Hugging Face ZeroGPU: whether this process runs on it, and the ``spaces.GPU`` wrapper for the
one function that needs the accelerator (a no-op everywhere else).

Imported before anything that imports torch (see ``glance_focus/app/__init__.py``): the ``spaces``
package must patch torch before CUDA is touched.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

try:
    import spaces
except ImportError:
    spaces = None

GPU_DURATION_S = 60
"""The most GPU time one request may hold."""

_F = TypeVar("_F", bound=Callable)


def zero_gpu() -> bool:
    """Whether this process runs on a ZeroGPU Space."""
    return bool(os.environ.get("SPACES_ZERO_GPU"))


def on_gpu(fn: _F) -> _F:
    """``spaces.GPU`` (Hugging Face ZeroGPU; no effect elsewhere) when the ``spaces`` package is
    installed, else ``fn`` itself."""
    return fn if spaces is None else spaces.GPU(duration=GPU_DURATION_S)(fn)
