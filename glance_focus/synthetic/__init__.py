"""The bundled synthetic multi-event video world (DESIGN.md §6).

- :mod:`~glance_focus.synthetic.world`: scene state, event vocabulary, event sampling, spans
- :mod:`~glance_focus.synthetic.render`: frames from states (in memory) and H.264 writing
- :mod:`~glance_focus.synthetic.questions`: STAR-style questions and their analogues
- :mod:`~glance_focus.synthetic.star_layout`: the dataset on disk in the STAR layout

``python train/make_synthetic.py --out DIR --seed S --num-videos N [--split test]`` generates it.
"""

from glance_focus.synthetic.questions import QUESTION_TYPES, Question, make_questions
from glance_focus.synthetic.render import render_frames, write_video
from glance_focus.synthetic.star_layout import generate
from glance_focus.synthetic.world import (
    EventClass,
    Scene,
    SceneState,
    WorldConfig,
    build_vocabulary,
    sample_scene,
    video_rng,
)

__all__ = [
    "QUESTION_TYPES",
    "EventClass",
    "Question",
    "Scene",
    "SceneState",
    "WorldConfig",
    "build_vocabulary",
    "generate",
    "make_questions",
    "render_frames",
    "sample_scene",
    "video_rng",
    "write_video",
]
