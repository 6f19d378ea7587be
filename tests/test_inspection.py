"""The library behind the Inspect tab, on a tiny STAR-layout dataset in the reference's own format
(``txt_db/*.jsonl``, ``events.json``, ``action_mapping.txt``, ``vis_db/s3d.pth``) and a converted
reference-code checkpoint: the run equals ``train/evaluate.py``, is cached, filters, exports,
details one example with its attention maps, and plots."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from glance_focus import inspection
from glance_focus.checkpoint import load_checkpoint
from glance_focus.config import GlanceFocusConfig
from glance_focus.inspection import (
    BUNDLED_NAME,
    InspectionError,
    InspectionRun,
    data_sources,
    errors_by_event_class,
    example_detail,
    export_rows,
    filter_rows,
    find_source,
    load_cached_run,
    overview,
    parse_data_args,
    predictor_for,
    row_evidence,
    run_inspection,
    strongest_evidence_text,
    table,
)
from glance_focus.inspection_plots import accuracy_by_type_figure, errors_figure, example_timeline_figure
from glance_focus.reference import convert_reference_to_checkpoint

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_FIXTURE = ROOT.parent / "shared" / "fixtures" / "reference" / "reference.safetensors"

FEATURE_DIM = 8  # as the STAR fixture's vis_db/s3d.pth
NUM_FRAMES = 8
NUM_PROMPTS = 5
CLASSES = ["Holding some clothes", "Putting clothes somewhere", "Opening a door", "Sitting on a bed"]
QUESTION_TYPES = ["Interaction", "Sequence", "Prediction", "Feasibility"]
# video id -> (duration s, [(class code or index, start s, end s)], feature frames); NOEVT has no events.
VIDEOS = {
    "6H78U": (20.0, [(3, 8.0, 14.0), ("a001", 2.0, 6.0), (0, 0.0, 3.5)], 12),
    "4OKDR": (10.0, [("a002", 4.0, 12.5)], 5),
    "YSKX3": (40.0, [(1, 10.0, 20.0), (2, 30.0, 36.0)], 16),
    "ZZXQF": (15.0, [(0, 1.0, 5.0), (1, 5.0, 9.0), (2, 9.0, 12.0), (3, 12.0, 15.0)], 9),
    "NOEVT": (0.0, [], 7),
}


def reference_state(
    feature_dim: int = FEATURE_DIM,
    d_model: int = 32,
    ffn: int = 64,
    layers: int = 2,
    prompts: int = NUM_PROMPTS,
    classes: int = len(CLASSES),
    text_hidden: int = 384,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random weights under the reference code's key names (no text encoder inside: the reference
    model reads ``text_hidden``-d token states, here MiniLM's)."""
    d = d_model
    shapes: dict[str, tuple[int, ...]] = {
        "input_proj.main.0.weight_v": (d, feature_dim),
        "input_proj.main.0.weight_g": (),
        "input_proj.main.0.bias": (d,),
        "query_embed.weight": (prompts, d),
        "qa_embed.weight": (1, d),
        "position_embeddings.weight": (prompts, d),
        "event_class_embed.weight": (classes + 1, d),
        "event_class_embed.bias": (classes + 1,),
        "span_embed.layers.0.weight": (d, d),
        "span_embed.layers.0.bias": (d,),
        "span_embed.layers.1.weight": (d, d),
        "span_embed.layers.1.bias": (d,),
        "span_embed.layers.2.weight": (2, d),
        "span_embed.layers.2.bias": (2,),
        "answer_head.0.weight": (2 * d, d),
        "answer_head.0.bias": (2 * d,),
        "answer_head.2.weight": (1, 2 * d),
        "answer_head.2.bias": (1,),
        "transformer.resizer.fc.weight": (d, text_hidden),
        "transformer.resizer.fc.bias": (d,),
        "transformer.resizer.layer_norm.weight": (d,),
        "transformer.resizer.layer_norm.bias": (d,),
        "transformer.decoder.norm.weight": (d,),
        "transformer.decoder.norm.bias": (d,),
    }
    for stack, norms, attentions in (
        ("encoder", 2, ("self_attn",)),
        ("decoder", 5, ("self_attn", "cross_attn_image")),
    ):
        for i in range(layers):
            prefix = f"transformer.{stack}.layers.{i}"
            for attn in attentions:
                shapes[f"{prefix}.{attn}.in_proj_weight"] = (3 * d, d)
                shapes[f"{prefix}.{attn}.in_proj_bias"] = (3 * d,)
                shapes[f"{prefix}.{attn}.out_proj.weight"] = (d, d)
                shapes[f"{prefix}.{attn}.out_proj.bias"] = (d,)
            shapes[f"{prefix}.linear1.weight"] = (ffn, d)
            shapes[f"{prefix}.linear1.bias"] = (ffn,)
            shapes[f"{prefix}.linear2.weight"] = (d, ffn)
            shapes[f"{prefix}.linear2.bias"] = (d,)
            for n in range(1, norms + 1):
                shapes[f"{prefix}.norm{n}.weight"] = (d,)
                shapes[f"{prefix}.norm{n}.bias"] = (d,)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        value = torch.randn(shape, generator=generator) * 0.3
        if "norm" in key and key.endswith("weight"):
            value = value + 1.0
        state[key] = value
    state["input_proj.main.0.weight_g"] = torch.tensor(2.0)
    return state


def write_star_dataset(root: Path) -> None:
    """A STAR-layout folder in the reference's format, with one video file present (6H78U)."""
    rng = random.Random(0)
    txt_db = root / "txt_db"
    txt_db.mkdir(parents=True)
    (txt_db / "action_mapping.txt").write_text("".join(f"a{i:03d} {name}\n" for i, name in enumerate(CLASSES)))
    events = {
        vid: {"duration": duration, "actions": [[label, start, end] for label, start, end in actions]}
        for vid, (duration, actions, _) in VIDEOS.items()
        if actions
    }
    (txt_db / "events.json").write_text(json.dumps(events))
    verbs = ["took", "opened", "closed", "held", "put down", "sat on", "washed", "threw"]
    objects = ["the book", "the door", "the clothes", "the bed", "the cup"]
    lines = []
    for n in range(20):
        vid = list(VIDEOS)[n % len(VIDEOS)]
        qtype = QUESTION_TYPES[n % len(QUESTION_TYPES)]
        obj = rng.choice(objects)
        options = [f"{v.capitalize()} {obj}." for v in rng.sample(verbs, 4)]
        record = {
            "question_id": f"{qtype}_T{n % 3 + 1}_{n}",
            "video_id": vid,
            "question": f"What did the person do with {obj} (case {n})?",
            "options": options,
            "answer": rng.randrange(4),
        }
        lines.append(json.dumps(record))
    (txt_db / "val.jsonl").write_text("\n".join(lines) + "\n")
    generator = torch.Generator().manual_seed(1)
    features = {vid: torch.randn(frames, FEATURE_DIM, generator=generator) for vid, (_, _, frames) in VIDEOS.items()}
    (root / "vis_db").mkdir()
    torch.save(features, root / "vis_db" / "s3d.pth")
    (root / "videos").mkdir()
    (root / "videos" / "6H78U.mp4").write_bytes(b"not decoded by these tests")


def converted_reference_checkpoint(out: Path) -> Path:
    """The reference fixture's STAR model as a checkpoint of ours in ``out`` (frames of unknown origin)."""
    return convert_reference_to_checkpoint(
        reference_state(),
        out,
        CLASSES,
        frame_encoder="unknown",
        text_encoder="minilm",
        num_frames=NUM_FRAMES,
        num_heads=4,
        metadata={"dataset": "star"},
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("inspection")
    data = base / "star"
    write_star_dataset(data)
    checkpoint = converted_reference_checkpoint(base / "converted")
    return {"base": base, "data": data, "checkpoint": checkpoint, "cache": base / "cache"}


@pytest.fixture(scope="module")
def run(setup: dict[str, Path]) -> InspectionRun:
    reports: list[tuple[float, str]] = []
    result = run_inspection(
        setup["checkpoint"], "star", setup["data"], "val", setup["cache"], lambda f, m: reports.append((f, m)), "cpu"
    )
    assert reports[-1][0] == 1.0 and all(0.0 <= f <= 1.0 for f, _ in reports)
    assert not result.from_cache
    return result


def test_converted_reference_checkpoint_is_reference_compatible(setup: dict[str, Path]) -> None:
    loaded = load_checkpoint(setup["checkpoint"])
    config = loaded.model.config
    assert (config.feature_dim, config.d_model, config.num_memory_prompts, config.text_hidden_size) == (8, 32, 5, 384)
    assert config.compat_float_masks and config.temporal_position == "none"
    assert loaded.info.event_classes == tuple(CLASSES) and loaded.info.frame_encoder == "unknown"


def test_reference_layout_matches_the_reference_fixture() -> None:
    if not REFERENCE_FIXTURE.is_file():
        pytest.skip(f"{REFERENCE_FIXTURE} not found")
    with safe_open(str(REFERENCE_FIXTURE), "pt") as f:
        expected = {
            k.removeprefix("weights."): tuple(f.get_slice(k).get_shape())
            for k in f.keys()  # noqa: SIM118 (safe_open has no __iter__)
            if k.startswith("weights.") and ".text_encoder." not in k
        }
    ours = reference_state(feature_dim=48, d_model=64, ffn=128, prompts=10, classes=6, text_hidden=32)
    assert {k: tuple(v.shape) for k, v in ours.items()} == expected


def test_conversion_refuses_a_text_encoder_of_another_width(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="384"):
        convert_reference_to_checkpoint(reference_state(text_hidden=32), tmp_path / "bad", CLASSES)
    assert not (tmp_path / "bad").exists()


def test_run_equals_train_evaluate_cli(setup: dict[str, Path], run: InspectionRun, tmp_path: Path) -> None:
    predictions = tmp_path / "predictions.jsonl"
    command = [sys.executable, str(ROOT / "train" / "evaluate.py"), "--checkpoint", str(setup["checkpoint"])]
    command += ["--data", str(setup["data"]), "--dataset", "star", "--split", "val", "--device", "cpu"]
    command += ["--json", "--predictions", str(predictions)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    cli = json.loads(done.stdout.strip().splitlines()[-1])
    assert {k: v for k, v in cli.items() if k not in ("checkpoint", "dataset", "split")} == run.metrics
    assert run.metrics["num_questions"] == len(run.rows) == 20
    assert run.metrics["span_miou"] is not None
    by_id = {p["question_id"]: p for p in map(json.loads, predictions.read_text().splitlines())}
    for row in run.rows:
        assert row.prediction == by_id[row.question_id]["prediction"]
        assert list(row.probabilities) == by_id[row.question_id]["probabilities"]
        assert row.correct == by_id[row.question_id]["correct"]
    assert 0 < sum(r.correct is False for r in run.rows) < len(run.rows), "some right, some wrong"


def test_second_call_is_served_from_the_cache(
    setup: dict[str, Path], run: InspectionRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_run(*args, **kwargs):
        raise AssertionError("evaluated again")

    monkeypatch.setattr(inspection, "evaluate_checkpoint", must_not_run)
    again = run_inspection(setup["checkpoint"], "star", setup["data"], "val", setup["cache"], device="cpu")
    assert again.from_cache and again == run
    cached = load_cached_run(setup["checkpoint"], "star", setup["data"], "val", setup["cache"], device="cpu")
    assert cached == run
    assert load_cached_run(setup["checkpoint"], "star", setup["data"], "val", setup["base"] / "empty", "cpu") is None
    assert not [p.name for p in setup["cache"].iterdir() if p.name.startswith(".")], "no temporary files left"


def test_a_changed_split_is_another_run(setup: dict[str, Path], run: InspectionRun, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "star"
    shutil.copytree(setup["data"], data)
    assert load_cached_run(setup["checkpoint"], "star", data, "val", setup["cache"], device="cpu") is None
    lines = (data / "txt_db" / "val.jsonl").read_text().splitlines()
    (data / "txt_db" / "val.jsonl").write_text("\n".join(lines[:5]) + "\n")
    small = run_inspection(setup["checkpoint"], "star", data, "val", setup["cache"], device="cpu")
    assert not small.from_cache and small.metrics["num_questions"] == 5 and small.key != run.key


def test_rows_hold_question_answer_and_both_event_sets(run: InspectionRun) -> None:
    row = run.row("Interaction_T1_0")
    assert row.video_id == "6H78U" and row.question_type == "Interaction"
    assert row.question.startswith("What did the person do with") and len(row.options) == 4
    assert row.choices == row.options and len(row.probabilities) == 4
    assert abs(sum(row.probabilities) - 1) < 1e-4
    assert row.confidence == max(row.probabilities) == row.probabilities[row.prediction]
    assert row.predicted == row.options[row.prediction] and row.correct_answer == row.options[row.answer]
    assert row.correct == (row.prediction == row.answer)
    assert row.duration_s == 20.0 and row.num_gt_events == 3
    assert [e.label for e in row.gt_events] == [CLASSES[0], CLASSES[1], CLASSES[3]]  # earliest first
    assert [e.seconds(20.0) for e in row.gt_events] == [(0.0, 3.5), (2.0, 6.0), (8.0, 14.0)]
    assert row.gt_classes == tuple(sorted([CLASSES[0], CLASSES[1], CLASSES[3]]))
    assert len(row.predicted_events) == NUM_PROMPTS
    starts = [e.start for e in row.predicted_events]
    assert all(0 <= e.start <= 1 and 0 <= e.end <= 1 for e in row.predicted_events)
    assert {e.label for e in row.predicted_events} <= {*CLASSES, "background"}
    assert all((e.label == "background") == e.background for e in row.predicted_events)
    assert len(starts) == NUM_PROMPTS
    no_events = next(r for r in run.rows if r.video_id == "NOEVT")
    assert no_events.duration_s is None and no_events.gt_events == ()
    assert run.event_classes == tuple(CLASSES) and run.question_types == sorted(QUESTION_TYPES)


def test_filters(run: InspectionRun) -> None:
    rows = run.rows
    assert filter_rows(run) == list(rows)
    wrong = filter_rows(run, wrong_only=True)
    assert wrong == [r for r in rows if not r.correct] and wrong
    assert all(r.question_type == "Sequence" for r in filter_rows(run, question_type="Sequence"))
    assert len(filter_rows(run, question_type="Sequence")) == 5
    with_door = filter_rows(run, gt_event_class="Opening a door")
    assert {r.video_id for r in with_door} == {"4OKDR", "YSKX3", "ZZXQF"}
    low, high = sorted(r.confidence for r in rows)[5], sorted(r.confidence for r in rows)[14]
    ranged = filter_rows(run, confidence_range=(low, high))
    assert ranged and all(low <= r.confidence <= high for r in ranged)
    assert [r.question_id for r in filter_rows(run, text_search="  CASE 17) ")] == ["Sequence_T3_17"]
    assert [r.question_id for r in filter_rows(run, text_search="7) case")] == ["Feasibility_T2_7", "Sequence_T3_17"]
    assert [r.question_id for r in filter_rows(run, text_search="Prediction_T3_2")] == ["Prediction_T3_2"]
    combined = filter_rows(run, wrong_only=True, question_type="Interaction", gt_event_class="Sitting on a bed")
    expected = [
        r
        for r in rows
        if r.correct is False and r.question_type == "Interaction" and "Sitting on a bed" in r.gt_classes
    ]
    assert combined == expected
    assert filter_rows(run, question_type="", gt_event_class=None, text_search="") == list(rows)


def test_overview_and_error_breakdowns(run: InspectionRun) -> None:
    view = overview(run)
    assert view.accuracy == run.metrics["accuracy"] and view.accuracy_by_type == run.metrics["accuracy_by_type"]
    assert view.num_errors == sum(not r.correct for r in run.rows)
    assert view.event_quality is not None and view.event_quality["span_miou"] == run.metrics["span_miou"]
    for group in view.by_type:
        assert group.accuracy == pytest.approx(run.metrics["accuracy_by_type"][group.group])
    assert sum(g.questions for g in view.by_type) == 20
    by_class = {g.group: g for g in errors_by_event_class(run.rows)}
    door = [r for r in run.rows if "Opening a door" in r.gt_classes]
    assert by_class["Opening a door"].questions == len(door)
    assert by_class["Opening a door"].errors == sum(not r.correct for r in door)
    assert [g.errors for g in view.by_event_class] == sorted((g.errors for g in view.by_event_class), reverse=True)
    by_count = {g.group: g for g in view.by_num_events}
    assert sorted(by_count, key=int) == ["0", "1", "2", "3", "4"]
    assert by_count["0"].questions == 4  # NOEVT's questions
    assert by_count["3"].errors == sum(not r.correct for r in run.rows if r.video_id == "6H78U")


def test_export_csv_and_json(run: InspectionRun, tmp_path: Path) -> None:
    wrong = filter_rows(run, wrong_only=True)
    json_path = export_rows(wrong, tmp_path / "errors.json")
    csv_path = export_rows(wrong, tmp_path / "errors.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["errors.csv", "errors.json"]
    records = json.loads(json_path.read_text())
    with csv_path.open(newline="", encoding="utf-8") as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["question_id"] for r in records] == [r["question_id"] for r in csv_rows] == [r.question_id for r in wrong]
    first, row = records[0], wrong[0]
    assert first["question"] == row.question and first["options"] == list(row.options)
    assert first["predicted"] == row.predicted and first["correct_answer"] == row.correct_answer
    assert first["correct"] is False and first["confidence"] == pytest.approx(row.confidence, abs=1e-6)
    assert len(first["predicted_events"]) == NUM_PROMPTS and len(first["gt_events"]) == row.num_gt_events
    if row.duration_s:
        # a random model may predict end < start; the export keeps the model's numbers
        assert all(0 <= e[k] <= row.duration_s for e in first["predicted_events"] for k in ("start_s", "end_s"))
    assert json.loads(csv_rows[0]["options"]) == list(row.options)
    assert json.loads(csv_rows[0]["predicted_events"]) == first["predicted_events"]
    assert len(first["evidence"]) == NUM_PROMPTS
    slot = row.strongest_evidence
    assert first["strongest_evidence_slot"] == slot
    assert (
        first["evidence"][slot]["delta"]
        == first["strongest_evidence_delta"]
        == min(e["delta"] for e in first["evidence"])
    )
    assert first["strongest_evidence_in_gt_event"] == row.strongest_evidence_in_gt_event
    assert json.loads(csv_rows[0]["evidence"]) == first["evidence"]
    assert csv_rows[0]["strongest_evidence_slot"] == str(slot)
    assert csv_rows[0]["correct"] == "False" and float(csv_rows[0]["confidence"]) == first["confidence"]
    with pytest.raises(InspectionError):
        export_rows(wrong, tmp_path / "errors.xlsx")
    assert table(wrong)[0] == [
        row.question_id,
        row.question_type,
        row.question,
        row.predicted,
        row.correct_answer,
        False,
        round(row.confidence, 3),
        row.num_gt_events,
        strongest_evidence_text(row),
        {True: "yes", False: "no", None: ""}[row.strongest_evidence_in_gt_event],
    ]


def test_example_detail_with_attention_maps(run: InspectionRun) -> None:
    detail = example_detail(run, "Interaction_T1_0")
    assert detail.video_path is not None and detail.video_path.name == "6H78U.mp4"
    assert detail.duration_s == 20.0
    assert detail.options_with_probabilities == list(zip(detail.row.options, detail.row.probabilities, strict=True))
    assert [s["label"] for s in detail.gt_spans] == [e.label for e in detail.row.gt_events]
    assert detail.gt_spans[-1]["start"] == 8.0 and detail.gt_spans[-1]["end"] == 14.0
    assert all(0 <= s[k] <= 20.0 for s in detail.predicted_spans for k in ("start", "end"))
    maps = detail.attention
    assert maps is not None
    frames = NUM_FRAMES  # 12 feature frames subsampled to the checkpoint's 8
    tokens = len(maps.question_tokens)
    assert maps.frame_times_s.shape == (frames,) and 0 < maps.frame_times_s[0] < maps.frame_times_s[-1] < 20.0
    assert maps.prompt_to_frame.shape == (NUM_PROMPTS, frames)
    # a reference-layout model's "event memory" is the reference's last positions of the encoded sequence
    assert maps.question_to_memory.shape == (tokens, GlanceFocusConfig().compat_event_memory_size)
    assert maps.events_to_frames.shape == (tokens, frames)
    assert maps.answer_to_frames.shape == (frames,)
    short = example_detail(run, "Sequence_T2_1")  # 4OKDR: 5 feature frames, fewer than 8
    assert short.video_path is None and short.attention is not None
    assert short.attention.prompt_to_frame.shape == (NUM_PROMPTS, 5)
    assert predictor_for(run) is predictor_for(run), "the Predictor is built once"
    assert detail.prediction is not None and detail.prediction.options == list(detail.row.options)
    if detail.note is None:
        assert detail.prediction.answer_index == detail.row.prediction
    row = run.row("Interaction_T1_0")
    odd = dataclasses.replace(run, rows=(dataclasses.replace(row, options=("Took.", "took.", "Sat.", "Ran.")),))
    refused = example_detail(odd, row.question_id)
    assert refused.attention is None and "no attention maps" in (refused.note or "")
    assert example_detail(run, "Interaction_T1_0", attention=False).attention is None
    with pytest.raises(InspectionError):
        example_detail(run, "no-such-question")


def test_figures_build(run: InspectionRun) -> None:
    view = overview(run)
    for figure in (
        accuracy_by_type_figure(view),
        errors_figure(view),
        example_timeline_figure(run.row("Interaction_T1_0")),
        example_timeline_figure(next(r for r in run.rows if r.video_id == "NOEVT")),
    ):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        assert buffer.getvalue().startswith(b"\x89PNG")
    timeline = example_timeline_figure(run.row("Interaction_T1_0"))
    labels = [t.get_text() for t in timeline.axes[0].get_yticklabels()]
    assert labels[:3] == ["GT 1", "GT 2", "GT 3"] and labels[4:] == [f"prompt {i}" for i in range(1, 6)]
    assert timeline.axes[0].get_xlim() == (0.0, 20.0)


def test_data_arguments_and_sources(tmp_path: Path) -> None:
    star, agqa = tmp_path / "star", tmp_path / "agqa"
    (star / "txt_db").mkdir(parents=True)
    (star / "txt_db" / "val.jsonl").write_text("")
    (star / "txt_db" / "test.jsonl").write_text("")
    agqa.mkdir()
    roots = parse_data_args([f"star={star}", f"agqa-small={agqa}"])
    assert roots == {"star": star.resolve(), "agqa-small": agqa.resolve()}
    for bad in ("star", f"={star}", f"a b={star}", "x=", f"x={tmp_path / 'missing'}"):
        with pytest.raises(InspectionError):
            parse_data_args([bad])
    with pytest.raises(InspectionError, match="twice"):
        parse_data_args([f"s={star}", f"s={agqa}"])

    bundled = tmp_path / "bundled"
    (bundled / "txt_db").mkdir(parents=True)
    (bundled / "txt_db" / "val.jsonl").write_text("")
    sources = data_sources(roots, bundled_root=bundled)
    assert [(s.name, s.dataset, s.splits, s.bundled) for s in sources] == [
        (BUNDLED_NAME, "synthetic", ("val",), True),
        ("star", "star", ("val", "test"), False),
        ("agqa-small", "agqa", (), False),
    ]
    assert [s.name for s in data_sources(roots, bundled_root=tmp_path / "absent")] == ["star", "agqa-small"]
    assert find_source(sources, "star", "test").root == star.resolve()
    with pytest.raises(InspectionError):
        find_source(sources, str(star), "val")  # a path is not a name
    with pytest.raises(InspectionError):
        find_source(sources, "star", "train")


def test_rows_hold_the_leave_one_out_evidence_of_their_batch(setup: dict[str, Path], run: InspectionRun) -> None:
    """Each row's evidence equals the model answering that question, as batched in evaluation (the
    compat model's padded text tokens count), with one memory prompt removed at a time."""
    from torch.utils.data import DataLoader

    from glance_focus.batching import VideoQADataset, collate_qa
    from glance_focus.data.features import FeatureStore
    from glance_focus.data.registry import load_split
    from glance_focus.evaluation import checkpoint_text_features

    loaded = load_checkpoint(setup["checkpoint"])
    model = loaded.model.eval()
    split = load_split("star", setup["data"], "val")
    dataset = VideoQADataset(split, FeatureStore(run.features_path), NUM_FRAMES, NUM_PROMPTS, "se")
    batch = next(iter(DataLoader(dataset, batch_size=64, collate_fn=collate_qa)))
    assert len(batch.indices) == len(run.rows), "the whole split is one evaluation batch"
    text, padding = checkpoint_text_features(loaded).encode(batch.sequences)
    checked = 0
    for position, index in enumerate(batch.indices.tolist()):
        row = run.row(split.examples[index].question_id)
        assert len(row.evidence_without) == len(row.evidence_flips_to) == NUM_PROMPTS
        if position % 4:
            continue
        one = slice(position, position + 1)
        with torch.no_grad():
            full = model(batch.frames[one], batch.frame_padding[one], text[one], padding[one])
            for k in range(NUM_PROMPTS):
                keep = torch.tensor([j for j in range(NUM_PROMPTS) if j != k])
                alone = (
                    model.focus(
                        batch.frames[one],
                        batch.frame_padding[one],
                        full.sorted_memory_prompts[:, keep],
                        text[one],
                        padding[one],
                        prompt_slots=keep[None],
                    )
                    .answer_logits[0]
                    .softmax(-1)
                )
                assert row.evidence_without[k] == pytest.approx(float(alone[row.prediction]), abs=1e-5)
                new_answer = int(alone.argmax())
                expected = None if new_answer == row.prediction else row.choices[new_answer]
                assert row.evidence_flips_to[k] == expected
        checked += 1
    assert checked >= 5
    assert any(abs(d) > 1e-3 for r in run.rows for d in r.evidence_deltas), "removing prompts changes answers"


def test_strongest_evidence_and_the_outside_every_event_filter(run: InspectionRun) -> None:
    for row in run.rows:
        slot = row.strongest_evidence
        assert slot is not None and row.evidence_deltas[slot] == min(row.evidence_deltas)
        if row.gt_events:
            inside = any(row.predicted_events[slot].overlaps(e) for e in row.gt_events)
            assert row.strongest_evidence_in_gt_event is inside
        else:
            assert row.strongest_evidence_in_gt_event is None
    outside = filter_rows(run, evidence_outside_gt=True)
    assert outside == [r for r in run.rows if r.correct is False and r.strongest_evidence_in_gt_event is False]

    # a wrong answer resting on P1 (0.5-0.6 of the video) while the only event is at 0.1-0.3
    row = next(r for r in run.rows if r.correct is False and r.gt_events)
    events = (
        inspection.EventSpan("a", 0, 0.5, 0.6, 0.9),
        inspection.EventSpan("b", 1, 0.1, 0.3, 0.9),
    )
    gt = (inspection.EventSpan("b", 1, 0.1, 0.3),)
    made = dataclasses.replace(
        row, predicted_events=events, gt_events=gt, evidence_without=(0.1, 0.5), evidence_flips_to=("x", None)
    )
    assert made.strongest_evidence == 0 and made.strongest_evidence_in_gt_event is False
    assert filter_rows([made], evidence_outside_gt=True) == [made]
    overlapping = dataclasses.replace(made, gt_events=(*gt, inspection.EventSpan("a", 0, 0.55, 0.8)))
    assert overlapping.strongest_evidence_in_gt_event is True
    assert filter_rows([overlapping], evidence_outside_gt=True) == []
    right = dataclasses.replace(made, correct=True)
    assert filter_rows([right], evidence_outside_gt=True) == []
    assert strongest_evidence_text(made) == f"P1 a ({round(100 * (0.1 - made.confidence)):+d} pp)"


def test_example_detail_carries_the_stored_evidence(run: InspectionRun) -> None:
    detail = example_detail(run, "Interaction_T1_0", attention=False)
    evidence = detail.evidence
    assert evidence is not None and evidence == row_evidence(detail.row)
    assert [p.probability_without for p in evidence.prompts] == list(detail.row.evidence_without)
    assert [(p.start_s, p.end_s) for p in evidence.prompts] == [(s["start"], s["end"]) for s in detail.predicted_spans]
    assert evidence.strongest.slot == detail.row.strongest_evidence
    assert evidence.sentence().startswith("The answer ")
