"""The example videos under the inputs (``assets/examples/examples.json``) and where their
outputs are cached."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from glance_focus.app.settings import EXAMPLES_FILE, REPO_ROOT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    video: Path
    question: str
    options: list[str]


def load_examples(path: Path = EXAMPLES_FILE) -> list[Example]:
    """``examples.json``: a list of ``{"video": file name beside it, "question", "options"}``.

    Entries whose video is missing are skipped with a warning; no file means no examples.
    """
    if not path.is_file():
        return []
    examples = []
    for entry in json.loads(path.read_text(encoding="utf-8")):
        video = path.parent / entry["video"]
        if video.is_file():
            examples.append(Example(video, entry["question"], list(entry.get("options") or [])))
        else:
            log.warning("example video %s is missing; skipped", video)
    return examples


def examples_cache_key(files: Iterable[Path], examples: Sequence[Example]) -> str:
    """Changes whenever the model, an example or the code drawing the outputs changes (files are
    compared by size and modification time, which costs no reading)."""
    digest = hashlib.sha256(repr([(str(e.video), e.question, e.options) for e in examples]).encode())
    for path in sorted(files):
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def examples_cache_root() -> Path:
    """Where cached example outputs go: ``$GRADIO_EXAMPLES_CACHE`` if set, else ``.gradio/cached_examples``
    in the repository (not in the working directory, so it does not depend on where the app starts)."""
    return Path(os.environ.get("GRADIO_EXAMPLES_CACHE") or REPO_ROOT / ".gradio" / "cached_examples")


@contextmanager
def examples_cache_folder(folder: Path) -> Iterator[None]:
    """Where the ``gr.Examples`` built inside this block cache their outputs (gradio reads the
    folder from ``GRADIO_EXAMPLES_CACHE`` when an ``Examples`` is created)."""
    previous = os.environ.get("GRADIO_EXAMPLES_CACHE")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["GRADIO_EXAMPLES_CACHE"]
        else:
            os.environ["GRADIO_EXAMPLES_CACHE"] = previous
