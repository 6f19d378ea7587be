"""Scene state, event vocabulary and event sampling of the synthetic multi-event world.

A scene is a plain, single-coloured background with at most one filled disc (the *object*) on
it. Everything that happens is built from what the offline frame encoder (a seeded random
ViT-B-32, pooled output) can see: the object's colour, whether it is there, its size, and the
background colour. Position is random per appearance and carries no meaning.

Event classes (17 with the default palette; index = line of ``action_mapping.txt``):

=========================  =====================================  ==============================
kind                       classes                                visible change
=========================  =====================================  ==============================
``appear``                 "A {red,green,blue,yellow} object      abrupt: the disc pops in
                           appears"
``disappear``              "The {colour} object disappears"       abrupt: the disc vanishes
``turn``                   "The object turns {colour}"            abrupt: the disc's colour flips
``grow`` / ``shrink``      "The object grows" / "... shrinks"     gradual: area ramps one size
                                                                  level over the whole span
``background``             "The background turns                  abrupt: the whole background
                           {black,white,gray}"                    flips
=========================  =====================================  ==============================

**Span definition.** Events never overlap. An event's span runs from the first frame that shows
its change to the first frame of the next event (the last event's span ends with the video).
Both boundaries are visible: an abrupt event shows its new state from its first frame and holds
it for the whole span; grow and shrink ramp the disc's area over the whole span, so the size
changes exactly while the span lasts. A quiet lead-in (the initial state, about 1 s) precedes the
first event. Spans are 1.5–2.5 s, 3–5 events per video, videos 6–10 s long.

**World rules** (what the Feasibility questions test): at most one object at a time, so a new one
can only appear on an empty scene; only a present object can disappear, change colour, grow or
shrink; colour and background changes must change something; sizes have three levels (small,
medium, large) and grow/shrink move one level. Within one video no event class repeats, so every
event is named unambiguously by its description.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace

import numpy as np

KINDS: tuple[str, ...] = ("appear", "disappear", "turn", "grow", "shrink", "background")


@dataclass(frozen=True)
class WorldConfig:
    """Every number of the world. Colours are ``(name, (r, g, b))``; times are in frames.

    Attributes:
        fps: frame rate of the rendered video.
        frame_size: width = height of a frame in pixels.
        object_colours: the object's palette (few, well separated hues).
        background_colours: the background's palette (plain, high contrast to every object).
        radii: disc radius in pixels of each size level, small to large.
        event_counts: possible numbers of events per video, and ``event_count_weights`` their
            sampling weights.
        event_frames: inclusive range of one event's span length.
        lead_in_frames: inclusive range of the quiet opening before the first event.
        video_frames: inclusive range of a video's length; spans are stretched or shortened
            (never below ``event_frames[0]``) to fit.
        initial_object_prob: probability that the object is already there in the first frame.
        kind_weights: sampling weight of each event kind, shared among its feasible classes.
        max_background_events: cap per video, so that most events concern the object.
    """

    fps: int = 8
    frame_size: int = 224
    object_colours: tuple[tuple[str, tuple[int, int, int]], ...] = (
        ("red", (220, 40, 40)),
        ("green", (40, 180, 70)),
        ("blue", (40, 90, 235)),
        ("yellow", (240, 210, 40)),
    )
    background_colours: tuple[tuple[str, tuple[int, int, int]], ...] = (
        ("black", (0, 0, 0)),
        ("white", (255, 255, 255)),
        ("gray", (128, 128, 128)),
    )
    radii: tuple[int, ...] = (28, 46, 68)
    event_counts: tuple[int, ...] = (3, 4, 5)
    event_count_weights: tuple[float, ...] = (0.3, 0.4, 0.3)
    event_frames: tuple[int, int] = (12, 20)
    lead_in_frames: tuple[int, int] = (6, 10)
    video_frames: tuple[int, int] = (48, 80)
    initial_object_prob: float = 0.6
    kind_weights: tuple[tuple[str, float], ...] = (
        ("appear", 3.0),
        ("disappear", 2.5),
        ("turn", 3.0),
        ("grow", 2.0),
        ("shrink", 2.0),
        ("background", 1.5),
    )
    max_background_events: int = 2

    def object_rgb(self, name: str) -> tuple[int, int, int]:
        """RGB of an object colour name."""
        return dict(self.object_colours)[name]

    def background_rgb(self, name: str) -> tuple[int, int, int]:
        """RGB of a background colour name."""
        return dict(self.background_colours)[name]


@dataclass(frozen=True)
class EventClass:
    """One event class: its index in ``action_mapping.txt`` and its texts.

    ``colour`` is the appearing / disappearing object's colour, the new object colour for
    ``turn``, the new background colour for ``background``, and None for grow / shrink.
    """

    index: int
    kind: str
    colour: str | None
    description: str  # present tense, as in action_mapping.txt: "The object turns red"
    past: str  # clause for questions: "the object turned red"

    @property
    def action_id(self) -> str:
        """STAR-style class id, e.g. ``a007``."""
        return f"a{self.index:03d}"


@dataclass(frozen=True)
class SceneState:
    """What a frame shows between changes.

    ``colour`` is None when no object is present; ``size`` is a level index into
    ``WorldConfig.radii``; ``centre`` is the disc centre ``(x, y)`` in pixels.
    """

    background: str
    colour: str | None = None
    size: int = 0
    centre: tuple[float, float] = (0.0, 0.0)

    @property
    def present(self) -> bool:
        """Whether an object is in the scene."""
        return self.colour is not None


@dataclass(frozen=True)
class Event:
    """One event of a scene: its class, its span in frames ``[start, end)``, and the states
    just before and after it (for grow / shrink, ``after`` is the state reached at the end)."""

    cls: EventClass
    start: int
    end: int
    before: SceneState
    after: SceneState


@dataclass(frozen=True)
class Scene:
    """A whole video's story: the initial state and its events in temporal order."""

    video_id: str
    num_frames: int
    fps: int
    initial: SceneState
    events: tuple[Event, ...] = field(default_factory=tuple)

    @property
    def duration(self) -> float:
        """Length of the video in seconds."""
        return self.num_frames / self.fps

    @property
    def final(self) -> SceneState:
        """The state the video ends in."""
        return self.events[-1].after if self.events else self.initial

    def span_seconds(self, event: Event) -> tuple[float, float]:
        """An event's span as ``(start_s, end_s)``."""
        return event.start / self.fps, event.end / self.fps


def build_vocabulary(config: WorldConfig) -> tuple[EventClass, ...]:
    """The world's event classes in index order (the order of ``action_mapping.txt``)."""
    objects = [name for name, _ in config.object_colours]
    backgrounds = [name for name, _ in config.background_colours]
    specs: list[tuple[str, str | None, str, str]] = []
    specs += [("appear", c, f"A {c} object appears", f"a {c} object appeared") for c in objects]
    specs += [("disappear", c, f"The {c} object disappears", f"the {c} object disappeared") for c in objects]
    specs += [("turn", c, f"The object turns {c}", f"the object turned {c}") for c in objects]
    specs += [("grow", None, "The object grows", "the object grew")]
    specs += [("shrink", None, "The object shrinks", "the object shrank")]
    specs += [("background", c, f"The background turns {c}", f"the background turned {c}") for c in backgrounds]
    return tuple(EventClass(i, *spec) for i, spec in enumerate(specs))


def is_feasible(state: SceneState, cls: EventClass, config: WorldConfig) -> bool:
    """Whether ``cls`` can happen next in ``state`` under the world rules (module docstring)."""
    if cls.kind == "appear":
        return not state.present
    if cls.kind == "background":
        return cls.colour != state.background
    if not state.present:
        return False
    if cls.kind == "disappear":
        return cls.colour == state.colour
    if cls.kind == "turn":
        return cls.colour != state.colour
    if cls.kind == "grow":
        return state.size < len(config.radii) - 1
    return state.size > 0  # shrink


def random_centre(config: WorldConfig, rng: np.random.Generator) -> tuple[float, float]:
    """A disc centre at which even the largest disc stays inside the frame."""
    margin = config.radii[-1] + 4
    x, y = rng.uniform(margin, config.frame_size - margin, size=2)
    return round(float(x), 2), round(float(y), 2)


def apply_event(state: SceneState, cls: EventClass, config: WorldConfig, rng: np.random.Generator) -> SceneState:
    """The state after ``cls`` happens in ``state`` (which must be feasible)."""
    if cls.kind == "appear":
        size = int(rng.integers(len(config.radii)))
        return replace(state, colour=cls.colour, size=size, centre=random_centre(config, rng))
    if cls.kind == "disappear":
        return replace(state, colour=None, size=0, centre=(0.0, 0.0))
    if cls.kind in ("turn", "background"):
        key = "colour" if cls.kind == "turn" else "background"
        return replace(state, **{key: cls.colour})
    return replace(state, size=state.size + (1 if cls.kind == "grow" else -1))


def video_id(split: str, index: int) -> str:
    """Stable video id, e.g. ``syn_train_00012``."""
    return f"syn_{split}_{index:05d}"


def video_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """A generator that decides one aspect of one video (stream 0: the scene, 1: its questions).

    Seeded from (seed, split, index, stream) so that videos are independent of each other (they
    can be made in any order, in parallel, or resumed) and different seeds or splits never
    coincide.
    """
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index, stream])


def _span_lengths(count: int, config: WorldConfig, rng: np.random.Generator) -> tuple[int, list[int]]:
    """Lead-in and span lengths in frames, adjusted so the video length is in range."""
    lead_in = int(rng.integers(config.lead_in_frames[0], config.lead_in_frames[1] + 1))
    lengths = [int(n) for n in rng.integers(config.event_frames[0], config.event_frames[1] + 1, size=count)]
    lo, hi = config.video_frames
    while lead_in + sum(lengths) > hi and max(lengths) > config.event_frames[0]:
        lengths[int(np.argmax(lengths))] -= 1
    while lead_in + sum(lengths) < lo:
        lengths[int(np.argmin(lengths))] += 1
    return lead_in, lengths


def sample_scene(config: WorldConfig, seed: int, split: str, index: int) -> Scene:
    """Sample one video's story, deterministically from (seed, split, index)."""
    rng = video_rng(seed, split, index)
    vocab = build_vocabulary(config)
    kind_weight = dict(config.kind_weights)
    count_p = np.asarray(config.event_count_weights) / sum(config.event_count_weights)
    count = int(rng.choice(config.event_counts, p=count_p))
    lead_in, lengths = _span_lengths(count, config, rng)

    backgrounds = [name for name, _ in config.background_colours]
    objects = [name for name, _ in config.object_colours]
    state = SceneState(background=backgrounds[int(rng.integers(len(backgrounds)))])
    if rng.random() < config.initial_object_prob:
        colour = objects[int(rng.integers(len(objects)))]
        state = replace(
            state, colour=colour, size=int(rng.integers(len(config.radii))), centre=random_centre(config, rng)
        )
    initial = state

    events: list[Event] = []
    used: set[int] = set()
    start = lead_in
    for length in lengths:
        background_left = sum(e.cls.kind == "background" for e in events) < config.max_background_events
        candidates = [
            c
            for c in vocab
            if c.index not in used and is_feasible(state, c, config) and (c.kind != "background" or background_left)
        ]
        per_kind = {kind: sum(c.kind == kind for c in candidates) for kind in KINDS}
        weights = np.array([kind_weight[c.kind] / per_kind[c.kind] for c in candidates])
        cls = candidates[int(rng.choice(len(candidates), p=weights / weights.sum()))]
        after = apply_event(state, cls, config, rng)
        events.append(Event(cls, start, start + length, state, after))
        used.add(cls.index)
        state = after
        start += length
    return Scene(video_id(split, index), start, config.fps, initial, tuple(events))
