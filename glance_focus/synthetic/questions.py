"""STAR-style multiple-choice questions about a synthetic scene.

Four question types, the closest analogues of STAR's in this world (one question of each per
video, or up to K for a training split — see :func:`make_questions`; four options, exactly one
true):

- **Interaction** (STAR: "What did the person do with the <object>?") →
  T1 "What happened to the <colour> object?" — an event of that object's lifetime (from its
  appearance, or the first frame, to its disappearance, or the end), answered "It appeared.",
  "It disappeared.", "It grew.", "It shrank." or "It turned <colour>."; the object is named by a
  colour that no other object of the video had. T2 "What happened to the background?" is the
  fallback when no object can be named so.
- **Sequence** (STAR: "What did the person do after / before <action>?") →
  T1 "What happened right after <event>?" / T2 "What happened right before <event>?" — the
  neighbouring event in time. Distractors include events of the same video at other positions,
  so the order matters, not just which events occurred.
- **Prediction** (STAR: "What will the person do next?" on a clip cut before the action) →
  T1 "What happened at the end, after <penultimate event>?" — what follows the second-to-last
  event, i.e. how the story ends.
- **Feasibility** (STAR: "What is the person able to do next?") →
  T1 "Which of these could happen next?" — judged from the final state under the world rules
  (:mod:`glance_focus.synthetic.world`): one option is possible, three are impossible (e.g. a
  vanished object cannot grow, a large object cannot grow, a new object cannot appear while
  one is there, the background cannot turn the colour it already has).

Distractors are always false for the question asked; they are chosen to differ from the
answer (and from each other) in event kind where the world allows it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from glance_focus.synthetic.world import EventClass, Scene, WorldConfig, build_vocabulary, is_feasible

QUESTION_TYPES: tuple[str, ...] = ("Interaction", "Sequence", "Prediction", "Feasibility")
NUM_OPTIONS = 4


@dataclass(frozen=True)
class Question:
    """One multiple-choice question; ``options[answer]`` is the true one. ``variant`` numbers the
    questions of one type asked about the same video (0 for the first)."""

    question_type: str
    template: int
    question: str
    options: tuple[str, ...]
    answer: int
    variant: int = 0


@dataclass(frozen=True)
class _Choice:
    """An option text together with the event kind it names (for distractor variety)."""

    text: str
    kind: str


#: A generator's result: (template number, question text, answer, three distractor texts).
_Made = tuple[int, str, _Choice, list[str]]


def event_option(cls: EventClass) -> str:
    """Option text naming that an event happened: "The object turned red."."""
    return cls.past[0].upper() + cls.past[1:] + "."


def feasibility_option(cls: EventClass) -> str:
    """Option text naming an event that could happen: "The object turns red."."""
    return cls.description + "."


def pronoun_option(cls: EventClass) -> str:
    """Option text for an Interaction question, with the subject as "It": "It turned red."."""
    verbs = {"appear": "appeared", "disappear": "disappeared", "grow": "grew", "shrink": "shrank"}
    return f"It {verbs.get(cls.kind, f'turned {cls.colour}')}."


@dataclass(frozen=True)
class _Lifetime:
    """One object from its appearance (or the first frame) to its disappearance (or the end):
    the colours it had, in order, and the object events it went through."""

    colours: tuple[str, ...]
    events: tuple[EventClass, ...]


def _lifetimes(scene: Scene) -> list[_Lifetime]:
    """The objects of a scene, in order of appearance."""
    found: list[tuple[list[str], list[EventClass]]] = []
    if scene.initial.present:
        found.append(([scene.initial.colour], []))
    for event in scene.events:
        if event.cls.kind == "appear":
            found.append(([event.cls.colour], [event.cls]))
        elif event.cls.kind != "background":
            found[-1][1].append(event.cls)
            if event.cls.kind == "turn":
                found[-1][0].append(event.cls.colour)
    return [_Lifetime(tuple(colours), tuple(events)) for colours, events in found]


def _pick_distractors(
    answer: _Choice, groups: Sequence[Sequence[_Choice]], rng: np.random.Generator
) -> list[str] | None:
    """Three distinct false options, preferring kinds not yet used, then earlier groups.

    Every candidate in ``groups`` must already be false; returns None if fewer than three.
    """
    shuffled = [[group[i] for i in rng.permutation(len(group))] for group in groups]
    chosen: list[_Choice] = []
    kinds = {answer.kind}
    for new_kinds_only in (True, False):
        for group in shuffled:
            for choice in group:
                fresh = choice.text != answer.text and all(choice.text != c.text for c in chosen)
                wanted = choice.kind not in kinds or not new_kinds_only
                if fresh and wanted and len(chosen) < NUM_OPTIONS - 1:
                    chosen.append(choice)
                    kinds.add(choice.kind)
    return [c.text for c in chosen] if len(chosen) == NUM_OPTIONS - 1 else None


def _interaction(
    scene: Scene, vocab: Sequence[EventClass], config: WorldConfig, rng: np.random.Generator
) -> _Made | None:
    """Interaction: what happened to one object (named by a colour only it had), or else to the
    background. True answers are any event of that object's whole lifetime."""
    object_choices = {pronoun_option(c): c.kind for c in vocab if c.kind != "background"}
    lifetimes = _lifetimes(scene)
    subjects = [
        (lifetime, colour)
        for lifetime in lifetimes
        for colour in dict.fromkeys(lifetime.colours)
        if lifetime.events and sum(colour in other.colours for other in lifetimes) == 1
    ]
    for i in rng.permutation(len(subjects)):
        lifetime, colour = subjects[i]
        answer_cls = lifetime.events[int(rng.integers(len(lifetime.events)))]
        answer = _Choice(pronoun_option(answer_cls), answer_cls.kind)
        true_texts = {pronoun_option(c) for c in lifetime.events}
        # "It turned <its own colour>." is left out unless true: odd as a distractor.
        false = [
            _Choice(text, kind)
            for text, kind in object_choices.items()
            if text not in true_texts and text != f"It turned {colour}."
        ]
        distractors = _pick_distractors(answer, [false], rng)
        if distractors is not None:
            return 1, f"What happened to the {colour} object?", answer, distractors
    true_events = [e.cls for e in scene.events if e.cls.kind == "background"]
    if not true_events:
        return None
    answer_cls = true_events[int(rng.integers(len(true_events)))]
    answer = _Choice(pronoun_option(answer_cls), "background")
    reached = {c.colour for c in true_events}
    background_false = [
        _Choice(f"It turned {name}.", "background") for name, _ in config.background_colours if name not in reached
    ]
    # Changes that never happen to a background come last, so they only fill up.
    other_false = [_Choice("It did not change.", "none")] + [
        _Choice(f"It turned {name}.", "object") for name, _ in config.object_colours
    ]
    distractors = _pick_distractors(answer, [background_false, other_false], rng)
    return None if distractors is None else (2, "What happened to the background?", answer, distractors)


def _neighbour_question(
    scene: Scene, vocab: Sequence[EventClass], position: int, reference: int, rng: np.random.Generator
) -> tuple[_Choice, list[str]] | None:
    """Answer and distractors when the answer is the event at ``position`` and the question
    names the event at ``reference``: in-video events elsewhere first, then absent classes."""
    answer_cls = scene.events[position].cls
    answer = _Choice(event_option(answer_cls), answer_cls.kind)
    excluded = {answer_cls.index, scene.events[reference].cls.index}
    in_video = [e.cls for e in scene.events if e.cls.index not in excluded]
    seen = {e.cls.index for e in scene.events}
    absent = [c for c in vocab if c.index not in seen]
    groups = [[_Choice(event_option(c), c.kind) for c in group] for group in (in_video, absent)]
    distractors = _pick_distractors(answer, groups, rng)
    return None if distractors is None else (answer, distractors)


def _sequence(scene: Scene, vocab: Sequence[EventClass], config: WorldConfig, rng: np.random.Generator) -> _Made | None:
    """Sequence: the event right after / right before a named event."""
    first = int(rng.integers(len(scene.events) - 1))
    if rng.random() < 0.5:
        template, reference, position = 1, first, first + 1
        text = f"What happened right after {scene.events[reference].cls.past}?"
    else:
        template, reference, position = 2, first + 1, first
        text = f"What happened right before {scene.events[reference].cls.past}?"
    result = _neighbour_question(scene, vocab, position, reference, rng)
    return None if result is None else (template, text, *result)


def _prediction(
    scene: Scene, vocab: Sequence[EventClass], config: WorldConfig, rng: np.random.Generator
) -> _Made | None:
    """Prediction: what follows the penultimate event (how the video ends)."""
    last = len(scene.events) - 1
    text = f"What happened at the end, after {scene.events[last - 1].cls.past}?"
    result = _neighbour_question(scene, vocab, last, last - 1, rng)
    return None if result is None else (1, text, *result)


def _feasibility(
    scene: Scene, vocab: Sequence[EventClass], config: WorldConfig, rng: np.random.Generator
) -> _Made | None:
    """Feasibility: which event is possible from the final state."""
    final = scene.final
    feasible = [c for c in vocab if is_feasible(final, c, config)]
    kinds = sorted({c.kind for c in feasible})
    kind = kinds[int(rng.integers(len(kinds)))]
    of_kind = [c for c in feasible if c.kind == kind]
    answer_cls = of_kind[int(rng.integers(len(of_kind)))]
    answer = _Choice(feasibility_option(answer_cls), answer_cls.kind)
    infeasible = [_Choice(feasibility_option(c), c.kind) for c in vocab if not is_feasible(final, c, config)]
    distractors = _pick_distractors(answer, [infeasible], rng)
    return None if distractors is None else (1, "Which of these could happen next?", answer, distractors)


_GENERATORS: dict[str, Callable[[Scene, Sequence[EventClass], WorldConfig, np.random.Generator], _Made | None]] = {
    "Interaction": _interaction,
    "Sequence": _sequence,
    "Prediction": _prediction,
    "Feasibility": _feasibility,
}


def make_questions(scene: Scene, config: WorldConfig, rng: np.random.Generator, per_type: int = 1) -> list[Question]:
    """Questions about ``scene``: up to ``per_type`` of each type, grouped by type in
    ``QUESTION_TYPES`` order.

    The questions are drawn in ``per_type`` rounds of one question per type (where the scene
    allows it); a draw that repeats an earlier (question, answer) of its type is dropped, so a
    scene with few possible questions yields fewer. The first round does not depend on
    ``per_type``. In each round the answer positions are a random permutation of ``0..3``, so
    over a split every position is about equally frequent (exactly, with one round and every type
    present). More rounds give a training split more supervision per video at no extra video or
    feature-extraction cost.
    """
    vocab = build_vocabulary(config)
    by_type: dict[str, list[Question]] = {qtype: [] for qtype in QUESTION_TYPES}
    asked: set[tuple[str, str, str]] = set()
    for _ in range(per_type):
        positions = rng.permutation(NUM_OPTIONS)
        for qtype, position in zip(QUESTION_TYPES, positions, strict=True):
            made = _GENERATORS[qtype](scene, vocab, config, rng)
            if made is None:
                continue
            template, text, answer, distractors = made
            # The options are drawn even for a repeat, so each draw uses the random stream alike.
            options = [distractors[i] for i in rng.permutation(len(distractors))]
            options.insert(int(position), answer.text)
            if (qtype, text, answer.text) in asked:
                continue
            asked.add((qtype, text, answer.text))
            variant = len(by_type[qtype])
            by_type[qtype].append(Question(qtype, template, text, tuple(options), int(position), variant))
    return [question for qtype in QUESTION_TYPES for question in by_type[qtype]]
