"""The whole page: the introduction, one tab per tool, and the API, with the queue's limits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gradio as gr

from glance_focus.app.api import build_api
from glance_focus.app.demo_tab import build_demo_tab
from glance_focus.app.examples import Example
from glance_focus.app.inspect_tab import Inspector, build_inspect_tab
from glance_focus.app.messages import INTRO, TITLE
from glance_focus.app.models import Models
from glance_focus.app.settings import CONCURRENCY, QUEUE_SIZE, default_cache_root
from glance_focus.inspection import DataSource, data_sources

CSS = """
#answer .output-class { font-size: 1.6rem; }
.figure-help { color: var(--body-text-color-subdued); font-size: 0.9rem; }
"""
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="amber")


def build_app(
    models: Models,
    examples: Sequence[Example] = (),
    sources: Sequence[DataSource] | None = None,
    inspection_dir: str | Path | None = None,
) -> gr.Blocks:
    """The whole page: the introduction, then one tab per tool, and the API.

    ``sources``: the datasets of the Inspect tab (default: the bundled synthetic split when present);
    ``inspection_dir``: where its runs are stored (default: ``inspection`` in :func:`default_cache_root`).
    """
    inspector = Inspector(
        models,
        data_sources({}) if sources is None else sources,
        inspection_dir or default_cache_root() / "inspection",
    )
    # delete_cache: uploads older than an hour are removed every 30 minutes (else they stay until restart).
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(1800, 3600)) as app:
        gr.Markdown(INTRO)
        with gr.Tab("Ask a question"):  # tabs side by side; another tool is one more `with gr.Tab(...)`
            build_demo_tab(models, examples)
        with gr.Tab("Inspect"):
            build_inspect_tab(models, inspector)
        build_api(models)
    app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    return app
