"""Glance-Focus demo: upload a video, ask a question, see the answer, the events the memory
prompts found and the attention that led to the answer.

The entry point only (arguments, build, launch; ``python app.py`` is also the Hugging Face Spaces
entry): the page lives in :mod:`glance_focus.app`, the work in :class:`glance_focus.pipeline.Predictor`.
``python app.py --help`` lists the options. Importing this module is cheap: it reads the
checkpoints' ``config.json`` files and lays out the page; models and encoders are built on first
use (or by the start-up warm-up of :func:`main`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from glance_focus.app import DEFAULT_MODELS, Models, build_app, default_cache_root, launch, load_examples, warm_up
from glance_focus.app.messages import TITLE
from glance_focus.app.zerogpu import zero_gpu
from glance_focus.checkpoint import CheckpointError, resolve_checkpoint_path
from glance_focus.inspection import data_sources, parse_data_args

if TYPE_CHECKING:
    from gradio import Blocks

log = logging.getLogger("glance_focus.app")

CHECKPOINT_ENV = "GLANCE_FOCUS_CHECKPOINT"
"""Checkpoints to serve when no --checkpoint is given (a Space's variables cannot pass arguments)."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=TITLE)
    parser.add_argument(
        "--host", default=None, help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1; 0.0.0.0: all)"
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument(
        "--checkpoint",
        action="append",
        help="a checkpoint directory or a folder of them, or hf://OWNER/REPO[@REVISION][/SUBDIR] (a Hub model "
        f"repository, downloaded into the Hugging Face cache); repeatable (default: ${CHECKPOINT_ENV}, "
        "whitespace-separated, as a Space sets it, else assets/models beside app.py)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache folder: frame features in DIR/features, Inspect runs in DIR/inspection "
        "(default: ~/.cache/glance-focus)",
    )
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a dataset folder for the Inspect tab, shown as NAME; repeatable (the bundled synthetic "
        "validation split is always offered when present)",
    )
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up requests
    cache_root = args.cache_dir or default_cache_root()
    try:
        wanted = args.checkpoint or os.environ.get(CHECKPOINT_ENV, "").split()
        paths = [resolve_checkpoint_path(c) for c in wanted] if wanted else [DEFAULT_MODELS]
        models = Models(paths, device=args.device, cache_dir=cache_root / "features")
    except CheckpointError as exc:
        sys.exit(f"error: {exc}")
    if not models.choices:
        sys.exit(f"error: no checkpoint in {', '.join(map(str, paths))}")
    try:
        sources = data_sources(parse_data_args(args.data))
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    examples = load_examples()
    app = build_app(models, examples, sources, inspection_dir=cache_root / "inspection")
    if zero_gpu():
        warm_up(models, examples)
    else:
        threading.Thread(target=warm_up, args=(models, examples), name="warm-up", daemon=True).start()
    launch(app, args.host, args.port, args.share)


def _module_demo() -> Blocks:
    """The page with the bundled model and examples (for ``gradio app.py`` and imports)."""
    try:
        models = Models([DEFAULT_MODELS], cache_dir=default_cache_root() / "features")
    except CheckpointError:
        log.exception("bundled model unreadable")
        models = Models([])
    return build_app(models, load_examples())


demo = _module_demo()

if __name__ == "__main__":
    main()
