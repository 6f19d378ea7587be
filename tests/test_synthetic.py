"""The synthetic multi-event world: determinism, STAR layout, video fidelity, question truth.

The question checks are an independent oracle: the state a question depends on is read back from
rendered pixels and ``events.json``, not from the generator's own bookkeeping.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import decord
import numpy as np
import pytest

from glance_focus.synthetic import (
    QUESTION_TYPES,
    Scene,
    WorldConfig,
    build_vocabulary,
    generate,
    make_questions,
    render_frames,
    sample_scene,
    video_rng,
)
from glance_focus.synthetic.star_layout import split_sizes

REPO = Path(__file__).resolve().parents[1]
CONFIG = WorldConfig()
VOCAB = build_vocabulary(CONFIG)
SEED = 3
NUM_VIDEOS = 12


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dataset with all three splits."""
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, SEED, NUM_VIDEOS, workers=1)
    return root


def _read_split(root: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (root / "txt_db" / f"{split}.jsonl").read_text().splitlines()]


def _scenes(n: int, seed: int = 11, split: str = "oracle") -> list[Scene]:
    return [sample_scene(CONFIG, seed, split, i) for i in range(n)]


# --- reading the world back from pixels (the oracle) ------------------------------------------------


def _pixel_state(frame: np.ndarray) -> tuple[str, str | None, int]:
    """(background, object colour or None, size level) of a rendered frame."""
    corner = tuple(int(v) for v in frame[0, 0])  # the largest disc never reaches a corner
    background = next(name for name, rgb in CONFIG.background_colours if rgb == corner)
    for name, rgb in CONFIG.object_colours:
        area = np.all(frame == np.asarray(rgb, np.uint8), axis=-1).sum()
        if area:
            # Interior pixels only (the edge is blended), so compare with the inner disc's area.
            size = int(np.argmin([abs(area - np.pi * (r - 0.5) ** 2) for r in CONFIG.radii]))
            return background, name, size
    return background, None, 0


def _oracle_feasible(state: tuple[str, str | None, int], description: str) -> bool:
    """The world rules written from the action text, independently of ``world.is_feasible``."""
    background, colour, size = state
    words = description.split()
    if description.startswith("A "):
        return colour is None
    if description.startswith("The background turns"):
        return words[-1] != background
    if colour is None:
        return False
    if description.endswith("disappears"):
        return words[1] == colour
    if description.startswith("The object turns"):
        return words[-1] != colour
    if description == "The object grows":
        return size < len(CONFIG.radii) - 1
    assert description == "The object shrinks"
    return size > 0


def _lifetime_texts(initial_colour: str | None, actions: list[str]) -> list[tuple[set[str], set[str]]]:
    """Per object lifetime: (colours it had, "It ..." texts of what happened to it)."""
    lifetimes: list[tuple[set[str], set[str]]] = [({initial_colour}, set())] if initial_colour else []
    for description in actions:
        words = description.split()
        if description.startswith("A "):
            lifetimes.append(({words[1]}, {"It appeared."}))
        elif description.endswith("disappears"):
            lifetimes[-1][1].add("It disappeared.")
        elif description.startswith("The object turns"):
            lifetimes[-1][0].add(words[-1])
            lifetimes[-1][1].add(f"It turned {words[-1]}.")
        elif description == "The object grows":
            lifetimes[-1][1].add("It grew.")
        elif description == "The object shrinks":
            lifetimes[-1][1].add("It shrank.")
    return lifetimes


def _past_option(description: str) -> str:
    """ "The object turns red" -> "The object turned red." (independent of the generator)."""
    verbs = {"appears": "appeared", "disappears": "disappeared", "turns": "turned", "grows": "grew"}
    verbs["shrinks"] = "shrank"
    return " ".join(verbs.get(word, word) for word in description.split()) + "."


def _check_question(question: dict, descriptions: list[str], first: np.ndarray, last: np.ndarray) -> None:
    """Assert that the answer is true and every distractor false, from the events and pixels."""
    options, answer = question["options"], question["answer"]
    wrong = [o for i, o in enumerate(options) if i != answer]
    text = question["question"]
    if question["question_type"] == "Feasibility":
        state = _pixel_state(last)
        by_option = {d + ".": d for d in (c.description for c in VOCAB)}
        assert _oracle_feasible(state, by_option[options[answer]])
        assert not any(_oracle_feasible(state, by_option[o]) for o in wrong)
    elif question["question_type"] == "Interaction":
        if text == "What happened to the background?":
            targets = {f"It turned {d.split()[-1]}." for d in descriptions if d.startswith("The background")}
            assert options[answer] in targets and not targets & set(wrong)
        else:
            colour = text.split()[-2]
            lifetimes = [t for c, t in _lifetime_texts(_pixel_state(first)[1], descriptions) if colour in c]
            assert len(lifetimes) == 1, "the colour must name exactly one object"
            assert options[answer] in lifetimes[0] and not lifetimes[0] & set(wrong)
    else:
        pasts = [_past_option(d) for d in descriptions]
        reference = text.split(", after ")[-1].split(" after ")[-1].split(" before ")[-1].rstrip("?")
        i = [p[:-1].lower() for p in pasts].index(reference.lower())
        if question["question_type"] == "Prediction":
            assert i == len(pasts) - 2
            expected = pasts[-1]
        else:
            expected = pasts[i + 1] if "right after" in text else pasts[i - 1]
        assert options[answer] == expected
        assert expected not in wrong


# --- determinism ---------------------------------------------------------------------------------------


def test_same_seed_same_scenes_questions_and_frames() -> None:
    for index in range(5):
        a, b = sample_scene(CONFIG, 7, "train", index), sample_scene(CONFIG, 7, "train", index)
        assert a == b
        qa = make_questions(a, CONFIG, video_rng(7, "train", index, stream=1))
        qb = make_questions(b, CONFIG, video_rng(7, "train", index, stream=1))
        assert qa == qb
        np.testing.assert_array_equal(render_frames(a, CONFIG), render_frames(b, CONFIG))


def test_different_seed_or_split_gives_different_videos() -> None:
    base = [sample_scene(CONFIG, 7, "train", i) for i in range(5)]
    for other in (
        [sample_scene(CONFIG, 8, "train", i) for i in range(5)],
        [sample_scene(CONFIG, 7, "test", i) for i in range(5)],
    ):
        assert all(a.events != b.events or a.initial != b.initial for a, b in zip(base, other, strict=True))


def test_generation_is_byte_identical_and_resumable(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    summaries = generate(again, SEED, NUM_VIDEOS, workers=2)
    assert sum(s.rendered for s in summaries) == NUM_VIDEOS
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in files:
        assert (dataset / name).read_bytes() == (again / name).read_bytes(), name
    # A rerun renders nothing and rewrites the same annotations.
    assert sum(s.rendered for s in generate(again, SEED, NUM_VIDEOS, workers=1)) == 0
    assert (dataset / "txt_db" / "train.jsonl").read_bytes() == (again / "txt_db" / "train.jsonl").read_bytes()
    other = tmp_path / "other"
    generate(other, SEED + 1, NUM_VIDEOS, workers=1)
    assert (other / "txt_db" / "train.jsonl").read_bytes() != (again / "txt_db" / "train.jsonl").read_bytes()
    assert (other / "txt_db" / "events.json").read_bytes() != (again / "txt_db" / "events.json").read_bytes()


def test_output_folder_refuses_another_seed_for_a_split(dataset: Path) -> None:
    with pytest.raises(ValueError, match="seed"):
        generate(dataset, SEED + 1, 2, split="test")


# --- layout ----------------------------------------------------------------------------------------------


def test_layout_files_parse_and_agree(dataset: Path) -> None:
    events = json.loads((dataset / "txt_db" / "events.json").read_text())
    mapping = (dataset / "txt_db" / "action_mapping.txt").read_text().splitlines()
    assert [line.split(" ", 1)[0] for line in mapping] == [f"a{i:03d}" for i in range(len(mapping))]
    assert len(mapping) == len(VOCAB) and 15 <= len(mapping) <= 20
    meta = json.loads((dataset / "meta.json").read_text())
    assert meta["splits"].keys() == {"train", "val", "test"}
    assert {s: meta["splits"][s]["num_videos"] for s in meta["splits"]} == split_sizes(NUM_VIDEOS)
    assert meta["fps"] == CONFIG.fps and meta["frame_size"] == [CONFIG.frame_size] * 2

    question_ids: set[str] = set()
    for split in ("train", "val", "test"):
        questions = _read_split(dataset, split)
        assert len({q["video_id"] for q in questions}) == meta["splits"][split]["num_videos"]
        for q in questions:
            assert q["question_id"].split("_")[0] == q["question_type"] in QUESTION_TYPES
            assert q["question_id"] not in question_ids
            question_ids.add(q["question_id"])
            assert q["video_id"].startswith(f"syn_{split}_")
            assert q["video_id"] in events and (dataset / "videos" / f"{q['video_id']}.mp4").is_file()
            assert len(q["options"]) == 4 and len(set(q["options"])) == 4
            assert isinstance(q["answer"], int) and 0 <= q["answer"] < 4
    for entry in events.values():
        actions = entry["actions"]
        assert 3 <= len(actions) <= 5
        assert 6.0 <= entry["duration"] <= 10.0
        assert all(0 <= cls < len(mapping) for cls, _, _ in actions)
        assert len({cls for cls, _, _ in actions}) == len(actions), "no class repeats within a video"
        for (_, start, end), (_, next_start, _) in zip(actions, [*actions[1:], [0, entry["duration"], 0]], strict=True):
            assert 0 < start < end <= entry["duration"]
            assert end - start >= 1.5 and end == next_start, "spans tile the time after the lead-in"


def test_answer_positions_balanced_and_all_types_present() -> None:
    questions = [
        q for i, scene in enumerate(_scenes(300)) for q in make_questions(scene, CONFIG, video_rng(11, "x", i, 1))
    ]
    types = Counter(q.question_type for q in questions)
    assert set(types) == set(QUESTION_TYPES) and min(types.values()) >= 290
    positions = Counter(q.answer for q in questions)
    assert max(positions.values()) - min(positions.values()) <= 0.05 * len(questions)
    for qtype in QUESTION_TYPES:
        per_type = Counter(q.answer for q in questions if q.question_type == qtype)
        assert min(per_type.values()) >= 0.15 * types[qtype], qtype


def test_event_classes_are_balanced_enough() -> None:
    counts = Counter(e.cls.index for scene in _scenes(1000) for e in scene.events)
    assert set(counts) == {c.index for c in VOCAB}
    assert max(counts.values()) <= 3 * min(counts.values())
    assert Counter(len(scene.events) for scene in _scenes(300)).keys() == {3, 4, 5}


# --- rendering and video -----------------------------------------------------------------------------


def test_span_boundaries_are_visible() -> None:
    """Each span starts with a visible change; abrupt spans hold their state; grow / shrink
    change the object's area monotonically for the whole span."""
    for scene in _scenes(40):
        frames = render_frames(scene, CONFIG).astype(np.int16)
        for event in scene.events:
            assert np.abs(frames[event.start] - frames[event.start - 1]).max() > 0
            span = frames[event.start : event.end]
            if event.cls.kind in ("grow", "shrink"):
                area = (np.abs(span - span[:, :1, :1]).sum(-1) > 0).sum((1, 2))
                steps = np.diff(area) * (1 if event.cls.kind == "grow" else -1)
                assert (steps > 0).all()
            else:
                assert (span == span[:1]).all()


def test_videos_decode_with_expected_frames_and_colours(dataset: Path) -> None:
    events = json.loads((dataset / "txt_db" / "events.json").read_text())
    for video_id in sorted(events)[:6]:
        split, index = video_id.split("_")[1], int(video_id.split("_")[2])
        scene = sample_scene(CONFIG, SEED, split, index)
        reader = decord.VideoReader(str(dataset / "videos" / f"{video_id}.mp4"))
        assert len(reader) == scene.num_frames == round(events[video_id]["duration"] * CONFIG.fps)
        assert reader.get_avg_fps() == pytest.approx(CONFIG.fps)
        decoded = reader.get_batch(list(range(len(reader)))).asnumpy().astype(np.float32)
        rendered = render_frames(scene, CONFIG).astype(np.float32)
        assert decoded.shape == rendered.shape == (scene.num_frames, CONFIG.frame_size, CONFIG.frame_size, 3)
        np.testing.assert_allclose(decoded.mean((1, 2)), rendered.mean((1, 2)), atol=2.0)
        assert np.abs(decoded - rendered).mean() < 1.5


def test_render_subset_matches_full_render() -> None:
    scene = _scenes(1)[0]
    indices = np.linspace(0, scene.num_frames - 1, 32).round().astype(int)
    np.testing.assert_array_equal(render_frames(scene, CONFIG, indices), render_frames(scene, CONFIG)[indices])


# --- question truth ---------------------------------------------------------------------------------


def test_questions_in_dataset_are_true(dataset: Path) -> None:
    events = json.loads((dataset / "txt_db" / "events.json").read_text())
    descriptions = [c.description for c in VOCAB]
    for split in ("train", "val", "test"):
        for q in _read_split(dataset, split):
            scene = sample_scene(CONFIG, SEED, split, int(q["video_id"][-5:]))
            first, last = render_frames(scene, CONFIG, np.array([0, scene.num_frames - 1]))
            actions = [descriptions[cls] for cls, _, _ in events[q["video_id"]]["actions"]]
            _check_question(q, actions, first, last)


@pytest.mark.parametrize("qtype", QUESTION_TYPES)
def test_answers_true_and_distractors_false(qtype: str) -> None:
    checked = 0
    for i, scene in enumerate(_scenes(250)):
        first, last = render_frames(scene, CONFIG, np.array([0, scene.num_frames - 1]))
        actions = [e.cls.description for e in scene.events]
        for q in make_questions(scene, CONFIG, video_rng(11, "oracle", i, stream=1)):
            if q.question_type == qtype:
                record = {
                    "question": q.question,
                    "options": list(q.options),
                    "answer": q.answer,
                    "question_type": q.question_type,
                }
                _check_question(record, actions, first, last)
                checked += 1
    assert checked >= 240


def test_more_questions_per_type_keep_the_first_round_and_are_distinct_and_true() -> None:
    sequence_counts = []
    for i, scene in enumerate(_scenes(60)):
        first, last = render_frames(scene, CONFIG, np.array([0, scene.num_frames - 1]))
        actions = [e.cls.description for e in scene.events]
        single = make_questions(scene, CONFIG, video_rng(11, "oracle", i, stream=1))
        several = make_questions(scene, CONFIG, video_rng(11, "oracle", i, stream=1), per_type=6)
        assert [q for q in several if q.variant == 0] == single
        keys = [(q.question_type, q.question, q.options[q.answer]) for q in several]
        assert len(keys) == len(set(keys))
        for qtype in QUESTION_TYPES:
            variants = [q.variant for q in several if q.question_type == qtype]
            assert variants == list(range(len(variants))) and len(variants) <= 6
        for q in several:
            record = {"question": q.question, "options": list(q.options), "answer": q.answer}
            _check_question({**record, "question_type": q.question_type}, actions, first, last)
        sequence_counts.append(sum(q.question_type == "Sequence" for q in several))
    assert np.mean(sequence_counts) >= 2.5, "several distinct Sequence questions per video"


# --- command line ------------------------------------------------------------------------------------


def test_cli_single_split(tmp_path: Path) -> None:
    command = [
        sys.executable,
        str(REPO / "train" / "make_synthetic.py"),
        "--out",
        str(tmp_path),
        "--seed",
        "5",
        "--num-videos",
        "3",
        "--split",
        "test",
        "--workers",
        "1",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "test: 3 videos (3 rendered now)" in result.stdout
    assert sorted(p.name for p in (tmp_path / "txt_db").iterdir()) == [
        "action_mapping.txt",
        "events.json",
        "test.jsonl",
    ]
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [f"syn_test_{i:05d}.mp4" for i in range(3)]
    assert json.loads((tmp_path / "meta.json").read_text())["splits"].keys() == {"test"}
    rerun = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "(0 rendered now)" in rerun.stdout
    single_ids = [q["question_id"] for q in _read_split(tmp_path, "test")]

    subprocess.run([*command, "--questions-per-type", "4"], capture_output=True, text=True, check=True)
    ids = [q["question_id"] for q in _read_split(tmp_path, "test")]
    assert len(ids) == len(set(ids)) > len(single_ids) and set(single_ids) <= set(ids)
    assert json.loads((tmp_path / "meta.json").read_text())["splits"]["test"]["questions_per_type"] == 4
