"""Figures of a prediction: what each panel holds, and that the two figures line up."""

from __future__ import annotations

import dataclasses
import io
import sys

import numpy as np
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from glance_focus.pipeline import AttentionMaps, PredictedSpan, Prediction, Timings, VideoSummary
from glance_focus.plots import attention_figure, duration_s, frame_edges, timeline_figure

Q, T, L = 6, 12, 9
DURATION = 7.5
CLASSES = ["A red object appears", "The object grows", "The red object disappears"]


def _prediction(thumbnails: bool = True) -> Prediction:
    rng = np.random.default_rng(0)
    times = (np.arange(T) + 0.5) * DURATION / T
    events = [
        PredictedSpan(k, 1.5 * k, 1.5 * k + 1.4, CLASSES[k], k, 0.9 - 0.1 * k, False) for k in range(len(CLASSES))
    ]
    events += [PredictedSpan(k, 6.5, 7.0, "background", len(CLASSES), 0.7, True) for k in range(len(CLASSES), Q)]

    def rows(n: int, m: int) -> np.ndarray:
        weights = rng.random((n, m))
        return weights / weights.sum(-1, keepdims=True)

    attention = AttentionMaps(
        frame_times_s=times,
        prompt_to_frame=rows(Q, T),
        question_tokens=["[CLS]", "what", "happened", "after", "it", "grew", "?", "gone", "[SEP]"],
        question_to_memory=rows(L, Q),
        events_to_frames=rows(L, T),
        answer_to_frames=rows(1, T)[0],
    )
    return Prediction(
        answer="gone",
        answer_index=1,
        options=["here", "gone"],
        probabilities=[0.3, 0.7],
        events=events,
        attention=attention,
        timings=Timings(total=1.0),
        video=VideoSummary(duration_s=DURATION, fps=8.0, width=64, height=48, num_frames=72),
        thumbnails=rng.integers(0, 255, (T, 24, 32, 3), dtype=np.uint8) if thumbnails else None,
    )


def _time_axes(figure: Figure) -> list:
    """Axes whose x axis is the video's time, [0, duration] seconds."""
    return [ax for ax in figure.axes if ax.get_xlim() == pytest.approx((0, DURATION))]


def test_timeline_has_one_bar_per_memory_prompt_and_the_thumbnails() -> None:
    prediction = _prediction()
    figure = timeline_figure(prediction)
    thumbs_ax, spans_ax = sorted(_time_axes(figure), key=lambda ax: -ax.get_position().y0)
    bars = [p for p in spans_ax.patches if isinstance(p, Rectangle)]
    assert len(bars) == Q
    for bar, event in zip(bars, prediction.events, strict=True):
        assert bar.get_x() == pytest.approx(event.start_s)
        assert bar.get_width() == pytest.approx(event.end_s - event.start_s)
    assert [t.get_text() for t in spans_ax.get_yticklabels()] == [f"P{k + 1}" for k in range(Q)]
    texts = [t.get_text() for t in spans_ax.texts]
    assert "A red object appears · 90%" in texts and texts.count("background · 70%") == Q - len(CLASSES)
    # Background prompts are grey and faint; event prompts are coloured and more opaque.
    event_face, background_face = bars[0].get_facecolor(), bars[-1].get_facecolor()
    assert len(set(np.round(background_face[:3], 3))) == 1 and background_face[3] < event_face[3]
    assert len({tuple(np.round(b.get_facecolor()[:3], 3)) for b in bars[: len(CLASSES)]}) == len(CLASSES)
    images = [artist for artist in thumbs_ax.get_children() if isinstance(artist, AxesImage)]
    assert 1 <= len(images) <= T
    legend = figure.legends or [ax.get_legend() for ax in figure.axes if ax.get_legend() is not None]
    assert [t.get_text() for t in legend[0].get_texts()] == [*CLASSES, "background (no event)"]


def test_attention_panels_have_the_expected_shapes() -> None:
    prediction = _prediction()
    figure = attention_figure(prediction)
    meshes = {ax: [c for c in ax.collections if isinstance(c, QuadMesh)] for ax in figure.axes}
    shapes = sorted(m[0].get_array().shape for m in meshes.values() if m)
    assert shapes == sorted([(Q, T), (Q, L)])
    token_ax = next(ax for ax, m in meshes.items() if m and m[0].get_array().shape == (Q, L))
    assert [t.get_text() for t in token_ax.get_xticklabels()] == prediction.attention.question_tokens
    glance_ax = next(ax for ax, m in meshes.items() if m and m[0].get_array().shape == (Q, T))
    # Each glance row is scaled to its maximum, so every row reaches 1.
    assert np.allclose(meshes[glance_ax][0].get_array().max(axis=1), 1)
    assert [t.get_text() for t in glance_ax.get_yticklabels()] == [f"P{k + 1}" for k in range(Q)]
    assert len(_time_axes(figure)) == 2  # glance heatmap and the answer query's curve


def test_time_axes_and_rows_line_up_across_the_two_figures() -> None:
    prediction = _prediction()
    timeline, attention = timeline_figure(prediction), attention_figure(prediction)
    assert timeline.get_figwidth() == attention.get_figwidth()
    columns = {
        (round(ax.get_position().x0, 6), round(ax.get_position().x1, 6))
        for figure in (timeline, attention)
        for ax in _time_axes(figure)
    }
    assert len(columns) == 1  # every time axis spans exactly the same horizontal extent
    spans_ax = min(_time_axes(timeline), key=lambda ax: ax.get_position().y0)
    glance_ax = max(_time_axes(attention), key=lambda ax: ax.get_position().y0)
    row_height = [
        ax.get_position().height * fig.get_figheight() / Q for ax, fig in ((spans_ax, timeline), (glance_ax, attention))
    ]
    assert row_height[0] == pytest.approx(row_height[1])


def test_figures_without_thumbnails_or_video_summary_still_draw() -> None:
    prediction = dataclasses.replace(_prediction(thumbnails=False), video=None)
    assert duration_s(prediction) == pytest.approx(DURATION)
    for figure in (timeline_figure(prediction), attention_figure(prediction)):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        assert buffer.getvalue().startswith(b"\x89PNG")


def test_figures_leave_no_pyplot_state() -> None:
    for figure in (timeline_figure(_prediction()), attention_figure(_prediction())):
        assert isinstance(figure, Figure)
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or pyplot.get_fignums() == []


def test_frame_edges_close_the_time_axis() -> None:
    edges = frame_edges(np.array([0.5, 1.5, 2.5]), 3.0)
    assert edges.tolist() == [0.0, 1.0, 2.0, 3.0]
