"""Writing the synthetic world to disk in the STAR layout.

```
DIR/videos/{video_id}.mp4
DIR/txt_db/{split}.jsonl          one question per line (question_id, question, options, answer,
                                  video_id, question_type)
DIR/txt_db/events.json            {video_id: {"duration": s, "actions": [[class, start_s, end_s]]}}
DIR/txt_db/action_mapping.txt     "a000 A red object appears", one class per line
DIR/meta.json                     generator version, world parameters, per-split seed and counts
```

Every question is about its whole video, so ``events.json`` and the features are keyed by video
id (clip id = video id); no line carries a window. The STAR reader tells this layout from the
reference's STAR files, which key both by question id (see :mod:`glance_focus.data.star`).

Everything is a function of (seed, split, index): generation is deterministic, videos are made
in parallel in any order, and a rerun only renders the videos that are missing. Every file is
written atomically (temporary file, then rename). Annotations are written after all videos.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from glance_focus.data.types import atomic_path
from glance_focus.synthetic.questions import QUESTION_TYPES, Question, make_questions
from glance_focus.synthetic.render import VIDEO_CODEC, VIDEO_OPTIONS, VIDEO_PIX_FMT, render_frames, write_video
from glance_focus.synthetic.world import Scene, WorldConfig, build_vocabulary, sample_scene, video_rng

GENERATOR_VERSION = "1.0"
#: Shares of ``--num-videos`` when all splits are made at once.
SPLIT_FRACTIONS: tuple[tuple[str, float], ...] = (("train", 0.8), ("val", 0.1), ("test", 0.1))


@dataclass(frozen=True)
class SplitSummary:
    """What :func:`generate` made for one split: counts of videos (rendered now / already there) and
    questions per type (and the most asked of each type per video)."""

    split: str
    num_videos: int
    rendered: int
    questions_by_type: dict[str, int]
    questions_per_type: int = 1


def split_sizes(num_videos: int) -> dict[str, int]:
    """Videos per split when all splits are made from ``num_videos`` (train gets the rest)."""
    sizes = {split: round(num_videos * share) for split, share in SPLIT_FRACTIONS[1:]}
    return {SPLIT_FRACTIONS[0][0]: num_videos - sum(sizes.values()), **sizes}


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old or the whole new file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def question_record(question: Question, scene: Scene) -> dict[str, object]:
    """One ``{split}.jsonl`` line; the id's prefix is the type, as in STAR (a question after the
    first of its type about a video gets its variant number as a suffix)."""
    suffix = f"_{question.variant}" if question.variant else ""
    return {
        "question_id": f"{question.question_type}_T{question.template}_{scene.video_id}{suffix}",
        "question": question.question,
        "options": list(question.options),
        "answer": question.answer,
        "video_id": scene.video_id,
        "question_type": question.question_type,
    }


def events_record(scene: Scene) -> dict[str, object]:
    """A scene's ``events.json`` entry: duration and ``[class, start_s, end_s]`` in time order."""
    actions = [[e.cls.index, *(round(t, 4) for t in scene.span_seconds(e))] for e in scene.events]
    return {"duration": round(scene.duration, 4), "actions": actions}


_Job = tuple[str, WorldConfig, int, str, int]  # (video path, world, seed, split, index)


def _render_job(job: _Job) -> None:
    """Render and write one video (a worker's unit of work)."""
    path, config, seed, split, index = job
    scene = sample_scene(config, seed, split, index)
    write_video(render_frames(scene, config), path, config.fps)


def _render_missing(jobs: list[_Job], workers: int) -> None:
    """Render ``jobs`` on ``workers`` processes (in this process when 1), with a progress bar."""
    with tqdm(total=len(jobs), desc="videos", unit="video", disable=not jobs) as bar:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                _render_job(job)
                bar.update()
            return
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_job, jobs, chunksize=4):
                bar.update()


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _check_meta(meta: dict, config: WorldConfig, seed: int, split: str) -> None:
    """Refuse to mix videos of another generator version, world or seed in one split."""
    if not meta:
        return
    if meta.get("version") != GENERATOR_VERSION or meta.get("world") != json.loads(json.dumps(asdict(config))):
        raise ValueError("output folder holds data of another generator version or world; use another --out")
    previous = meta.get("splits", {}).get(split)
    if previous is not None and previous["seed"] != seed:
        raise ValueError(
            f"split {split!r} in the output folder was made with seed {previous['seed']}, not {seed}; use another --out"
        )


def generate(
    out: str | os.PathLike[str],
    seed: int,
    num_videos: int,
    split: str | None = None,
    workers: int = 1,
    config: WorldConfig | None = None,
    questions_per_type: int = 1,
) -> list[SplitSummary]:
    """Make (or complete) a dataset: videos, questions, events and the shared files.

    Args:
        out: dataset root (created if missing).
        seed: generation seed; (seed, split, index) determines each video.
        num_videos: number of videos in all.
        split: make only this split, with all ``num_videos`` videos; if None, make train / val /
            test in the proportions of :data:`SPLIT_FRACTIONS`. Video ids are
            ``syn_{split}_{index:05d}``.
        workers: processes rendering videos.
        config: the world; the default world if None.
        questions_per_type: questions of each type asked about each video, at most (see
            :func:`~glance_focus.synthetic.questions.make_questions`); more than 1 is meant for
            training splits.

    Returns:
        One :class:`SplitSummary` per split made.

    Raises:
        ValueError: if ``out`` already holds one of these splits from another seed, or data of
            another generator version or world.
    """
    config = config or WorldConfig()
    root = Path(out)
    sizes = {split: num_videos} if split is not None else split_sizes(num_videos)
    meta = _read_json(root / "meta.json")
    for name in sizes:
        _check_meta(meta, config, seed, name)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "txt_db").mkdir(exist_ok=True)

    scenes = {
        name: [sample_scene(config, seed, name, index) for index in range(count)] for name, count in sizes.items()
    }
    jobs = {
        name: [
            (str(path), config, seed, name, index)
            for index, scene in enumerate(split_scenes)
            if not (path := root / "videos" / f"{scene.video_id}.mp4").exists()
        ]
        for name, split_scenes in scenes.items()
    }
    _render_missing([job for split_jobs in jobs.values() for job in split_jobs], workers)

    events = _read_json(root / "txt_db" / "events.json")
    summaries = []
    for name, split_scenes in scenes.items():
        records = [
            question_record(question, scene)
            for index, scene in enumerate(split_scenes)
            for question in make_questions(scene, config, video_rng(seed, name, index, stream=1), questions_per_type)
        ]
        atomic_write_text(root / "txt_db" / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in records))
        events = {key: value for key, value in events.items() if not key.startswith(f"syn_{name}_")}
        events.update({scene.video_id: events_record(scene) for scene in split_scenes})
        by_type = Counter(record["question_type"] for record in records)
        summaries.append(
            SplitSummary(
                name, len(split_scenes), len(jobs[name]), {t: by_type[t] for t in QUESTION_TYPES}, questions_per_type
            )
        )
    atomic_write_text(root / "txt_db" / "events.json", json.dumps(events, sort_keys=True) + "\n")
    mapping = "".join(f"{cls.action_id} {cls.description}\n" for cls in build_vocabulary(config))
    atomic_write_text(root / "txt_db" / "action_mapping.txt", mapping)
    _write_meta(root, meta, config, seed, summaries)
    return summaries


def _write_meta(root: Path, meta: dict, config: WorldConfig, seed: int, summaries: list[SplitSummary]) -> None:
    """Record the generator, the world and the splits in ``meta.json`` (other splits kept)."""
    splits = dict(meta.get("splits", {}))
    for summary in summaries:
        splits[summary.split] = {
            "seed": seed,
            "num_videos": summary.num_videos,
            "num_questions": sum(summary.questions_by_type.values()),
            "questions_by_type": summary.questions_by_type,
            "questions_per_type": summary.questions_per_type,
        }
    meta = {
        "generator": "glance_focus.synthetic",
        "version": GENERATOR_VERSION,
        "fps": config.fps,
        "frame_size": [config.frame_size, config.frame_size],
        "num_classes": len(build_vocabulary(config)),
        "question_types": list(QUESTION_TYPES),
        "video": {"codec": VIDEO_CODEC, "pix_fmt": VIDEO_PIX_FMT, **VIDEO_OPTIONS},
        "world": asdict(config),
        "splits": dict(sorted(splits.items())),
    }
    atomic_write_text(root / "meta.json", json.dumps(meta, indent=2) + "\n")
