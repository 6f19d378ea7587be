"""The Gradio app (the only part of the project that imports gradio).

- :mod:`~glance_focus.app.zerogpu`: Hugging Face ZeroGPU detection and the ``spaces.GPU`` wrapper
- :mod:`~glance_focus.app.settings`: file locations and serving limits
- :mod:`~glance_focus.app.models`: the checkpoints offered and their predictors
- :mod:`~glance_focus.app.examples`: the example videos and their output cache
- :mod:`~glance_focus.app.messages`: text shown to a person
- :mod:`~glance_focus.app.answering`: one question, from the page or the API, to a prediction
- :mod:`~glance_focus.app.compare`: two models on one video and question (the demo tab's compare mode)
- :mod:`~glance_focus.app.demo_tab`: the "Ask a question" tab
- :mod:`~glance_focus.app.inspect_tab`: the Inspect tab
- :mod:`~glance_focus.app.api`: the ``/predict`` endpoint
- :mod:`~glance_focus.app.uploads`: the file input (any file; the content decides)
- :mod:`~glance_focus.app.page`: the whole page (:func:`build_app`)
- :mod:`~glance_focus.app.serving`: warm-up and :func:`launch`
"""

from glance_focus.app import zerogpu  # noqa: F401  (first: `spaces` must patch torch before CUDA starts)
from glance_focus.app.examples import Example, load_examples
from glance_focus.app.models import Models
from glance_focus.app.page import build_app
from glance_focus.app.serving import launch, warm_up
from glance_focus.app.settings import DEFAULT_MODELS, default_cache_root

__all__ = [
    "DEFAULT_MODELS",
    "Example",
    "Models",
    "build_app",
    "default_cache_root",
    "launch",
    "load_examples",
    "warm_up",
]
