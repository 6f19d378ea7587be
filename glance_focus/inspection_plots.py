"""Figures of an inspection run (:mod:`glance_focus.inspection`): accuracy by question type, where the
errors fall, and one example's predicted and ground-truth events on one timeline.

Matplotlib's object API on the Agg canvas: no pyplot state, safe in a threaded server. Each function
returns a new :class:`matplotlib.figure.Figure`.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from glance_focus.inspection import EventSpan, GroupErrors, InspectionRow, Overview

CLASS_COLOURS = "tab20"
BACKGROUND_COLOUR = "#b0b0b0"
GT_EDGE = "#222222"
MAX_CLASS_BARS = 20
"""The error-by-class chart shows the classes with the most errors, at most this many."""


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_axis_off()


def class_colour(label_index: int) -> tuple[float, float, float, float]:
    """The colour of an event class (the same for predicted and ground-truth events of that class)."""
    cmap = colormaps[CLASS_COLOURS]
    return cmap(label_index % cmap.N)


def accuracy_by_type_figure(view: Overview) -> Figure:
    """Bars of accuracy per question type (from the run's metrics), the overall accuracy as a line."""
    figure = _figure(6.0, 3.2)
    ax = figure.add_subplot()
    if view.accuracy is None or not view.accuracy_by_type:
        _empty(ax, "this split hides its answers: no accuracy")
        return figure
    counts = {g.group: g for g in view.by_type}
    types = list(view.accuracy_by_type)
    values = [view.accuracy_by_type[t] for t in types]
    bars = ax.bar(types, values, color=[class_colour(i) for i in range(len(types))])
    for bar, qtype in zip(bars, types, strict=True):
        group = counts.get(qtype)
        if group is not None:
            text = f"{bar.get_height():.1%}\n{group.questions - group.errors}/{group.questions}"
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax.axhline(view.accuracy, color="0.2", linestyle="--", linewidth=1)
    ax.text(
        1.0,
        view.accuracy,
        f" overall {view.accuracy:.1%}",
        transform=ax.get_yaxis_transform(),
        va="center",
        ha="left",
        fontsize=8,
    )
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Accuracy by question type ({view.num_questions} questions)")
    ax.tick_params(axis="x", labelrotation=15)
    return figure


def _error_bars(ax, groups: Sequence[GroupErrors], title: str, xlabel: str, horizontal: bool) -> None:
    if not groups:
        _empty(ax, "no ground-truth events" if "class" in title else "no answered questions")
        return
    names = [g.group for g in groups]
    rates = [g.error_rate for g in groups]
    labels = [f"{g.errors}/{g.questions}" for g in groups]
    if horizontal:
        bars = ax.barh(names, rates, color="#d62728", alpha=0.8)
        ax.invert_yaxis()  # most errors on top
        ax.set_xlim(0, 1.2)
        ax.set_xlabel("error rate")
        ax.tick_params(axis="y", labelsize=7)
        ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
    else:
        bars = ax.bar(names, rates, color="#d62728", alpha=0.8)
        ax.set_ylim(0, 1.2)
        ax.set_ylabel("error rate")
        ax.set_xlabel(xlabel)
        ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
    ax.set_title(title, fontsize=10)


def errors_figure(view: Overview) -> Figure:
    """Error rate (and errors/questions) by ground-truth event class and by number of events per video.

    Left: the classes with the most errors (a question counts for each class its video contains);
    right: by the number of ground-truth events in the video.
    """
    by_class = list(view.by_event_class[:MAX_CLASS_BARS])
    figure = _figure(10.0, max(3.2, 0.22 * len(by_class) + 1.2))
    left, right = figure.subplots(1, 2, width_ratios=[1.4, 1])
    title = "by ground-truth event class"
    if len(view.by_event_class) > MAX_CLASS_BARS:
        title += f" (top {MAX_CLASS_BARS} of {len(view.by_event_class)} by errors)"
    _error_bars(left, by_class, title, "", horizontal=True)
    _error_bars(right, view.by_num_events, "by number of ground-truth events", "events in the video", False)
    figure.suptitle(f"Errors: {view.num_errors} of {view.num_questions} questions")
    return figure


def _span_row(ax, y: float, event: EventSpan, scale: float, ground_truth: bool) -> None:
    start, end = sorted((event.start * scale, event.end * scale))  # a model may predict end < start
    width = max(end - start, scale * 0.004)  # a degenerate span stays visible
    if ground_truth:
        colour = class_colour(event.label_index)
        ax.barh(
            y, width, left=start, height=0.7, color=to_rgba(colour, 0.55), edgecolor=GT_EDGE, hatch="//", linewidth=1.0
        )
        text = event.label
    elif event.background:
        ax.barh(y, width, left=start, height=0.6, color=to_rgba(BACKGROUND_COLOUR, 0.35), edgecolor="none")
        text = f"background {event.score or 0:.2f}"
    else:
        ax.barh(y, width, left=start, height=0.6, color=class_colour(event.label_index), edgecolor="none")
        text = f"{event.label} {event.score or 0:.2f}"
    if event.end < event.start:
        text += " (end before start)"
    box = {"facecolor": "white", "alpha": 0.6, "edgecolor": "none", "pad": 0.5} if ground_truth else None
    right = start > 0.6 * scale  # late spans: text ends at the bar's end, so it stays on the axes
    ax.text(
        end - scale * 0.005 if right else start + scale * 0.005,
        y,
        text,
        va="center",
        ha="right" if right else "left",
        fontsize=7,
        clip_on=True,
        color="0.45" if event.background else "black",
        bbox=box,
    )


def example_timeline_figure(row: InspectionRow) -> Figure:
    """One question's ground-truth events (top, hatched, framed) and its memory prompts' predicted
    spans (below, one row per prompt in temporal order, coloured by class, background dimmed, label
    and confidence) on one shared time axis: seconds when the video's duration is known, else the
    fraction of the video."""
    gt, predicted = row.gt_events, row.predicted_events
    num_rows = len(gt) + len(predicted) + (1 if gt else 0)
    figure = _figure(10.0, 0.28 * num_rows + 1.4)
    ax = figure.add_subplot()
    scale = row.duration_s or 1.0
    labels: list[str] = []
    y = 0.0
    for i, event in enumerate(gt):
        _span_row(ax, y, event, scale, ground_truth=True)
        labels.append(f"GT {i + 1}")
        y += 1
    if gt:
        ax.axhspan(-0.5, y - 0.5, color="#f3efe0", zorder=0)
        ax.axhline(y, color="0.3", linewidth=1.0)
        labels.append("")
        y += 1
    for i, event in enumerate(predicted):
        _span_row(ax, y, event, scale, ground_truth=False)
        labels.append(f"prompt {i + 1}")
        y += 1
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylim(y - 0.5, -0.5)  # first row on top
    ax.set_xlim(0, scale)
    ax.set_xlabel("time (s)" if row.duration_s else "fraction of the video")
    ax.grid(axis="x", alpha=0.3)
    verdict = (
        "" if row.correct is None else (" — correct" if row.correct else f" — wrong (correct: {row.correct_answer})")
    )
    ax.set_title(f"{row.question_id}: predicted {row.predicted!r} ({row.confidence:.2f}){verdict}", fontsize=9)
    if not gt:
        ax.text(
            0.99,
            0.01,
            "no ground-truth events",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=7,
            color="0.4",
        )
    return figure
