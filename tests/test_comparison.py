"""Two models side by side: runs over one split paired question by question, and both timelines
of one prediction on one time axis."""

from __future__ import annotations

import dataclasses

import pytest
from matplotlib.patches import Rectangle

from glance_focus.comparison import by_type_table, compare_runs, filter_pairs, pairs_table
from glance_focus.inspection import InspectionError, InspectionRow, InspectionRun
from glance_focus.pipeline import PredictedSpan
from glance_focus.plots import compare_timeline_figure
from tests.test_plots import DURATION, _prediction

OPTIONS = ("red", "green", "blue")


def _row(qid: str, qtype: str, prediction: int, answer: int) -> InspectionRow:
    return InspectionRow(
        question_id=qid,
        video_id="v" + qid,
        clip_id="v" + qid,
        clip_window_s=None,
        question_type=qtype,
        question=f"question {qid}?",
        options=OPTIONS,
        choices=OPTIONS,
        probabilities=tuple(0.8 if k == prediction else 0.1 for k in range(3)),
        prediction=prediction,
        predicted=OPTIONS[prediction],
        answer=answer,
        correct_answer=OPTIONS[answer],
        correct=prediction == answer,
        confidence=0.8,
        predicted_events=(),
        gt_events=(),
        duration_s=None,
    )


def _run(predictions: dict[str, int], split: str = "val") -> InspectionRun:
    answers = {"q1": 0, "q2": 1, "q3": 2, "q4": 0}
    types = {"q1": "Sequence", "q2": "Sequence", "q3": "Interaction", "q4": "Interaction"}
    rows = tuple(_row(q, types[q], predictions[q], answers[q]) for q in answers)
    by_type: dict[str, list[bool]] = {}
    for r in rows:
        by_type.setdefault(r.question_type, []).append(bool(r.correct))
    metrics = {
        "accuracy": sum(bool(r.correct) for r in rows) / len(rows),
        "accuracy_by_type": {t: sum(v) / len(v) for t, v in sorted(by_type.items())},
        "num_questions": len(rows),
    }
    return InspectionRun(
        key="k",
        checkpoint="ckpt",
        checkpoint_fingerprint="f",
        dataset="synthetic",
        data_root="/data",
        split=split,
        features_path="f.safetensors",
        device="cpu",
        event_classes=(),
        metrics=metrics,
        rows=rows,
        seconds=0.0,
    )


def test_runs_pair_up_per_type_and_disagreements_filter() -> None:
    a = _run({"q1": 0, "q2": 1, "q3": 2, "q4": 1})  # 3 of 4 right
    b = _run({"q1": 0, "q2": 0, "q3": 1, "q4": 1})  # 1 of 4 right
    comparison = compare_runs(a, b, "sup", "uns")
    assert [p.a.question_id for p in comparison.disagreements] == ["q2", "q3"]
    by_type = {t.question_type: t for t in comparison.by_type}
    assert (by_type["Sequence"].accuracy_a, by_type["Sequence"].accuracy_b) == (1.0, 0.5)
    assert (by_type["Interaction"].accuracy_a, by_type["Interaction"].accuracy_b) == (0.5, 0.0)
    assert by_type["Sequence"].disagreements == by_type["Interaction"].disagreements == 1

    headers, rows = by_type_table(comparison)
    assert headers[2:4] == ["accuracy sup", "accuracy uns"]
    assert rows[-1] == ["all", 4, 0.75, 0.25, 2]

    only = filter_pairs(comparison.pairs, disagree_only=True, question_type="Interaction")
    assert [p.a.question_id for p in only] == ["q3"]
    headers, table = pairs_table(comparison, only)
    assert table == [["q3", "Interaction", "question q3?", "blue ✓", "green ✗", "blue"]]


def test_runs_over_different_splits_or_questions_are_refused() -> None:
    a = _run({"q1": 0, "q2": 1, "q3": 2, "q4": 1})
    with pytest.raises(InspectionError, match="different splits"):
        compare_runs(a, _run({"q1": 0, "q2": 1, "q3": 2, "q4": 1}, split="test"))
    fewer = dataclasses.replace(a, rows=a.rows[:3])
    with pytest.raises(InspectionError, match="different questions"):
        compare_runs(a, fewer)


def test_compare_timeline_puts_both_models_on_one_time_axis() -> None:
    first = _prediction()
    moved = [dataclasses.replace(e, start_s=e.start_s / 2, end_s=e.end_s / 2) for e in first.events]
    second = dataclasses.replace(
        _prediction(thumbnails=False), events=[*moved, PredictedSpan(6, 0.0, 1.0, "The object grows", 0, 0.5, False)]
    )
    figure = compare_timeline_figure([("sup", first), ("uns", second)])
    timed = [ax for ax in figure.axes if ax.get_xlim() == pytest.approx((0, DURATION))]
    assert len(timed) == 2, "the thumbnail strip and one span axis share the time axis"
    spans_ax = min(timed, key=lambda ax: ax.get_position().y0)
    bars = [p for p in spans_ax.patches if isinstance(p, Rectangle) and p.get_height() == pytest.approx(0.68)]
    assert len(bars) == len(first.events) + len(second.events)
    ticks = [t.get_text() for t in spans_ax.get_yticklabels()]
    assert ticks[0] == ticks[len(first.events) + 1] == "", "a header row is named by its own text"
    assert ticks[1 : len(first.events) + 1] == [f"P{k + 1}" for k in range(len(first.events))]
    texts = " ".join(t.get_text() for t in spans_ax.texts)
    assert "sup answers “gone” (70%)" in texts and "uns answers" in texts
    # A class both models predict has one colour in both groups (rows: name, P1.. of each model).
    edge_at = {round(b.get_y() + b.get_height() / 2): b.get_edgecolor() for b in bars}
    second_first_row = len(first.events) + 2
    assert edge_at[2] == edge_at[second_first_row + 1]  # "The object grows": P2 of both
    assert edge_at[1] == edge_at[second_first_row] != edge_at[2]
    with pytest.raises(ValueError):
        compare_timeline_figure([])
