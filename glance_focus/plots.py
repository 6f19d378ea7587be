"""Figures of a :class:`~glance_focus.pipeline.Prediction`: the event timeline and the
memory-prompt attention.

Both figures have the same width and the same horizontal layout (in inches): a time column,
``[0, duration]`` seconds, and a side column to its right. Shown one above the other at the same
width, their time axes line up, and their rows line up with each other: row ``k`` is memory
prompt ``P{k+1}`` in temporal order (the order the focus stage reads them) in every panel.

- :func:`timeline_figure`: frame thumbnails along the time axis, then one row per memory prompt
  with its predicted span as a bar coloured by event class, labelled with the class and its
  probability; background prompts (no event) are grey and faint. Side column: the legend.
- :func:`compare_timeline_figure`: two (or more) models' timelines for one video and question,
  stacked on one time axis under one thumbnail strip, each headed by the model's answer.
- :func:`attention_figure`: glance attention of each memory prompt over the frames ``[Q, T]``,
  the answer query's attention over the frames ``[T]`` below it, and, in the side column, the
  focus stage's question-token → memory-prompt attention drawn with prompts as rows ``[Q, L]``
  (for reference-compatible models, whose "event memory" is the last positions of the encoded
  sequence, those positions labelled by token instead). Focus maps come from the decoder layer
  the answer is read from.
- :func:`evidence_figure`: per memory prompt (same rows), how much leaving it out changes the
  answer's probability, a bar coloured by sign, and the answer it flips to in the side column;
  a last row for a hidden time range, when one was hidden (:class:`~glance_focus.evidence.Evidence`).

matplotlib's object API only (no pyplot): every call builds a new :class:`Figure` on an Agg
canvas that the caller owns, so figures can be drawn from many threads of a server at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from glance_focus.evidence import Evidence
from glance_focus.pipeline import PredictedSpan, Prediction

# Horizontal layout shared by both figures, inches.
FIG_WIDTH_IN = 12.0
LEFT_IN = 0.75
TIME_WIDTH_IN = 7.75
GAP_IN = 0.55
SIDE_WIDTH_IN = 2.65
# Vertical sizes, inches.
ROW_IN = 0.36
TOP_IN = 0.75
BOTTOM_IN = 0.55
THUMB_STRIP_IN = 0.8
ANSWER_STRIP_IN = 1.0
TOKEN_LABELS_IN = 1.1

BACKGROUND_COLOUR = "#9e9e9e"
SUPPORT_COLOUR = "#c0392b"
"""Evidence bars where leaving the prompt out lowers the answer's probability (the answer rests on it)."""
AGAINST_COLOUR = "#2e86c1"
"""Evidence bars where leaving the prompt out raises the answer's probability."""
HEATMAP = "Blues"
DPI = 100
MAX_TOKENS_SHOWN = 48


def _figure(height_in: float) -> Figure:
    figure = Figure(figsize=(FIG_WIDTH_IN, height_in), dpi=DPI, facecolor="white")
    FigureCanvasAgg(figure)
    return figure


def _axes(figure: Figure, left_in: float, bottom_in: float, width_in: float, height_in: float) -> Axes:
    """Axes at an exact place given in inches from the figure's bottom-left corner."""
    w, h = figure.get_size_inches()
    return figure.add_axes((left_in / w, bottom_in / h, width_in / w, height_in / h))


def _time_axes(figure: Figure, bottom_in: float, height_in: float) -> Axes:
    return _axes(figure, LEFT_IN, bottom_in, TIME_WIDTH_IN, height_in)


def _side_axes(figure: Figure, bottom_in: float, height_in: float) -> Axes:
    return _axes(figure, LEFT_IN + TIME_WIDTH_IN + GAP_IN, bottom_in, SIDE_WIDTH_IN, height_in)


def duration_s(prediction: Prediction) -> float:
    """Length of the time axis: the video's duration, else one frame step past the last frame."""
    if prediction.video is not None and prediction.video.duration_s > 0:
        return float(prediction.video.duration_s)
    times = prediction.attention.frame_times_s
    if len(times) == 0:
        return 1.0
    step = float(np.median(np.diff(times))) if len(times) > 1 else float(times[0]) * 2 or 1.0
    return float(times[-1]) + step / 2


def frame_edges(times_s: np.ndarray, duration: float) -> np.ndarray:
    """``[T + 1]`` cell boundaries around frame times ``[T]``: midpoints, closed by 0 and ``duration``.

    >>> frame_edges(np.array([1.0, 3.0, 5.0]), 6.0).tolist()
    [0.0, 2.0, 4.0, 6.0]
    """
    times = np.asarray(times_s, dtype=np.float64)
    middle = (times[1:] + times[:-1]) / 2
    return np.concatenate([[0.0], middle, [max(duration, float(times[-1]))]])


def _class_palette() -> list[tuple[float, float, float]]:
    """Strong qualitative colours (``tab10``, ``Dark2``, ``Set1``) without their greys, which
    mean "background" here."""
    colours = [c for name in ("tab10", "Dark2", "Set1") for c in colormaps[name].colors]
    return [c for c in colours if max(c) - min(c) > 0.05]


CLASS_PALETTE = _class_palette()


def class_colours(events: Sequence[PredictedSpan]) -> dict[int, tuple[float, float, float, float]]:
    """A colour per event class the prompts predict (background excluded), keyed by class index
    and given in order of first appearance in time, so that the classes of one prediction get
    distinct colours (the legend names them)."""
    first_seen = dict.fromkeys(e.label_index for e in sorted(events, key=lambda e: e.start_s) if not e.background)
    return {index: to_rgba(CLASS_PALETTE[k % len(CLASS_PALETTE)]) for k, index in enumerate(first_seen)}


def _scaled_rows(weights: np.ndarray) -> np.ndarray:
    """Each row of non-negative attention weights divided by its maximum (all-zero rows stay 0)."""
    weights = np.asarray(weights, dtype=np.float64)
    peak = weights.max(axis=-1, keepdims=True) if weights.size else weights
    return np.divide(weights, peak, out=np.zeros_like(weights), where=peak > 0)


def _row_labels(ax: Axes, count: int) -> None:
    ax.set_yticks(range(count), [f"P{k + 1}" for k in range(count)], fontsize=9)
    ax.set_ylim(count - 0.5, -0.5)  # P1 at the top
    ax.tick_params(axis="y", length=0)


def _thumbnail_strip(ax: Axes, prediction: Prediction, duration: float) -> None:
    """Thumbnails at their frame times (as many as fit side by side), and a tick per sampled frame."""
    ax.set_xlim(0, duration)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    times = prediction.attention.frame_times_s
    ax.vlines(times, 0, 0.08, colors="#555555", linewidth=0.8)
    thumbs = prediction.thumbnails
    if thumbs is None or len(thumbs) == 0:
        ax.text(0.5, 0.5, "no thumbnails (precomputed features)", ha="center", va="center", transform=ax.transAxes)
        return
    height_in = THUMB_STRIP_IN * 0.85
    width_in = height_in * thumbs.shape[2] / thumbs.shape[1]
    width_s = width_in / TIME_WIDTH_IN * duration
    fit = max(1, int(duration / (width_s * 1.08)))
    shown = np.unique(np.linspace(0, len(thumbs) - 1, min(fit, len(thumbs))).round().astype(int))
    for i in shown:
        centre = float(np.clip(times[i], width_s / 2, duration - width_s / 2))
        extent = (centre - width_s / 2, centre + width_s / 2, 0.12, 0.97)
        ax.imshow(thumbs[i], extent=extent, aspect="auto", zorder=2)
        ax.add_patch(
            Rectangle((extent[0], 0.12), width_s, 0.85, fill=False, edgecolor="#444444", linewidth=0.8, zorder=3)
        )
        ax.plot([times[i], centre], [0.08, 0.12], color="#555555", linewidth=0.6)
    ax.set_xlim(0, duration)  # imshow resets the limits
    ax.set_ylim(0, 1)


def _span_bars(
    ax: Axes,
    events: Sequence[PredictedSpan],
    colour_of: Callable[[PredictedSpan], tuple[float, float, float, float]],
    duration: float,
    first_row: int = 0,
) -> None:
    """One bar per event on rows ``first_row, first_row + 1, ...``: its span, coloured by
    ``colour_of`` (background grey, dashed and faint), labelled with the class and its probability."""
    min_width = duration * 0.004
    seconds_per_char = duration / TIME_WIDTH_IN * 0.075  # 8-point text is about 0.075 in per character
    for offset, event in enumerate(events):
        row = first_row + offset
        start, end = sorted((event.start_s, event.end_s))
        width = max(end - start, min_width)
        if event.background:
            face, edge, alpha, text_colour = BACKGROUND_COLOUR, BACKGROUND_COLOUR, 0.25, "#7a7a7a"
        else:
            face = edge = colour_of(event)
            alpha, text_colour = 0.35 + 0.6 * event.score, "black"
        ax.barh(
            row,
            width,
            left=start,
            height=0.68,
            color=to_rgba(face, alpha),
            edgecolor=edge,
            linewidth=1.0,
            linestyle="--" if event.background else "-",
            label=f"P{offset + 1}",
        )
        text = f"{event.label} · {event.score:.0%}"
        text_width = len(text) * seconds_per_char
        if text_width < width * 0.95:
            x, align = start + width / 2, "center"
        elif end + text_width + duration * 0.01 < duration:
            x, align = end + duration * 0.008, "left"
        else:
            x, align = start - duration * 0.008, "right"
        style = "italic" if event.background else "normal"
        ax.text(x, row, text, ha=align, va="center", fontsize=8, color=text_colour, style=style, clip_on=True)


def timeline_figure(prediction: Prediction) -> Figure:
    """The event timeline: one row per memory prompt (temporal order), span bars coloured by
    event class with label and confidence, background prompts grey and faint, frame thumbnails
    along the time axis, a legend of the classes present in the side column."""
    events = prediction.events
    colours = class_colours(events)
    rows = len(events)
    duration = duration_s(prediction)
    height = TOP_IN + THUMB_STRIP_IN + 0.15 + rows * ROW_IN + BOTTOM_IN
    figure = _figure(height)

    spans_ax = _time_axes(figure, BOTTOM_IN, rows * ROW_IN)
    thumbs_ax = _time_axes(figure, BOTTOM_IN + rows * ROW_IN + 0.15, THUMB_STRIP_IN)
    _thumbnail_strip(thumbs_ax, prediction, duration)
    thumbs_ax.set_xticklabels([])
    thumbs_ax.set_title("Event timeline: the event each memory prompt found", loc="left", fontsize=12)

    _span_bars(spans_ax, events, lambda event: colours[event.label_index], duration)
    spans_ax.set_xlim(0, duration)
    _row_labels(spans_ax, rows)
    spans_ax.set_xlabel("time (s)")
    spans_ax.grid(axis="x", color="#e6e6e6", linewidth=0.6)
    spans_ax.set_axisbelow(True)

    legend_ax = _side_axes(figure, BOTTOM_IN, rows * ROW_IN + 0.15 + THUMB_STRIP_IN)
    labels = {event.label_index: event.label for event in events}
    _class_legend(legend_ax, [(labels[index], colour) for index, colour in colours.items()])
    return figure


def _class_legend(ax: Axes, classes: Sequence[tuple[str, tuple[float, float, float, float]]]) -> None:
    """The side column's legend: each (class name, colour), then background."""
    ax.axis("off")
    handles = [Patch(facecolor=colour, label=name) for name, colour in classes]
    handles.append(Patch(facecolor=to_rgba(BACKGROUND_COLOUR, 0.25), edgecolor=BACKGROUND_COLOUR, ls="--"))
    handles[-1].set_label("background (no event)")
    ax.legend(
        handles=handles,
        loc="upper left",
        frameon=False,
        fontsize=8,
        title="event class · bar opacity = confidence",
        title_fontsize=8,
        alignment="left",
    )


def compare_timeline_figure(predictions: Sequence[tuple[str, Prediction]]) -> Figure:
    """Several models' answers to one question about one video, their timelines on one time axis.

    ``predictions``: (model name, its prediction) pairs. Thumbnails of the first prediction that has
    them on top; then, per model, a header row with its answer and probability and one row per
    memory prompt (temporal order). Classes are coloured by name, so a class both models know has
    one colour.
    """
    if not predictions:
        raise ValueError("nothing to compare")
    duration = max(duration_s(p) for _, p in predictions)
    names = [e.label for _, p in predictions for e in sorted(p.events, key=lambda e: e.start_s) if not e.background]
    colours = {name: to_rgba(CLASS_PALETTE[k % len(CLASS_PALETTE)]) for k, name in enumerate(dict.fromkeys(names))}
    rows = sum(len(p.events) + 1 for _, p in predictions)
    height = TOP_IN + THUMB_STRIP_IN + 0.15 + rows * ROW_IN + BOTTOM_IN
    figure = _figure(height)

    spans_ax = _time_axes(figure, BOTTOM_IN, rows * ROW_IN)
    thumbs_ax = _time_axes(figure, BOTTOM_IN + rows * ROW_IN + 0.15, THUMB_STRIP_IN)
    with_thumbnails = next((p for _, p in predictions if p.thumbnails is not None), predictions[0][1])
    _thumbnail_strip(thumbs_ax, with_thumbnails, duration)
    thumbs_ax.set_xlim(0, duration)
    thumbs_ax.set_xticklabels([])
    thumbs_ax.set_title("Event timelines of the compared models, on one time axis", loc="left", fontsize=12)

    ticks: list[str] = []
    row = 0
    for name, prediction in predictions:
        answer = f"{name} answers “{prediction.answer}” ({prediction.probabilities[prediction.answer_index]:.0%})"
        spans_ax.axhspan(row - 0.5, row + 0.5, color="#eef0f6", zorder=0)
        spans_ax.text(duration * 0.005, row, answer, ha="left", va="center", fontsize=9, weight="bold", clip_on=True)
        ticks.append("")  # the header row's own text names the model (a tick label would be clipped)
        _span_bars(spans_ax, prediction.events, lambda event: colours[event.label], duration, first_row=row + 1)
        ticks += [f"P{k + 1}" for k in range(len(prediction.events))]
        row += len(prediction.events) + 1
    spans_ax.set_xlim(0, duration)
    spans_ax.set_yticks(range(rows), ticks, fontsize=9)
    spans_ax.set_ylim(rows - 0.5, -0.5)
    spans_ax.tick_params(axis="y", length=0)
    spans_ax.set_xlabel("time (s)")
    spans_ax.grid(axis="x", color="#e6e6e6", linewidth=0.6)
    spans_ax.set_axisbelow(True)

    legend_ax = _side_axes(figure, BOTTOM_IN, rows * ROW_IN + 0.15 + THUMB_STRIP_IN)
    _class_legend(legend_ax, list(colours.items()))
    return figure


def attention_figure(prediction: Prediction) -> Figure:
    """The memory-prompt attention, rows and time axis aligned with :func:`timeline_figure`:
    glance attention of each memory prompt over the frames, the answer query's attention over
    the frames, and the question tokens' attention over the memory prompts (side column)."""
    att = prediction.attention
    rows = att.prompt_to_frame.shape[0]
    duration = duration_s(prediction)
    edges = frame_edges(att.frame_times_s, duration)
    heat_in = rows * ROW_IN
    gap_in = 0.55
    height = TOP_IN + heat_in + gap_in + ANSWER_STRIP_IN + BOTTOM_IN
    figure = _figure(max(height, TOP_IN + heat_in + TOKEN_LABELS_IN + 0.2))
    answer_bottom = BOTTOM_IN
    heat_bottom = answer_bottom + ANSWER_STRIP_IN + gap_in

    glance_ax = _time_axes(figure, heat_bottom, heat_in)
    glance_ax.pcolormesh(
        edges, np.arange(rows + 1) - 0.5, _scaled_rows(att.prompt_to_frame), cmap=HEATMAP, vmin=0, vmax=1
    )
    glance_ax.set_xlim(0, duration)
    _row_labels(glance_ax, rows)
    title = "Glance: memory prompt → frames (each row scaled to its maximum)"
    if att.padding_rows:  # a clip model's short video, padded with zero rows the maps leave out
        # on its own line: one long line would run into the side column's title
        title += f"\n{att.padding_share:.0%} of the attention went to {att.padding_rows} zero padding rows (not shown)"
    glance_ax.set_title(title, loc="left", fontsize=11, wrap=True)
    glance_ax.tick_params(axis="x", labelbottom=False)
    colours = class_colours(prediction.events)
    for row, event in enumerate(prediction.events):
        if not event.background:  # the prompt's predicted span, under its attention
            colour = colours[event.label_index]
            glance_ax.plot([event.start_s, event.end_s], [row + 0.36] * 2, color="white", linewidth=4.5)
            glance_ax.plot([event.start_s, event.end_s], [row + 0.36] * 2, color=colour, linewidth=2.5)

    answer_ax = _time_axes(figure, answer_bottom, ANSWER_STRIP_IN)
    weights = np.asarray(att.answer_to_frames, dtype=np.float64)
    answer_ax.stairs(weights, edges, fill=True, color="#3b6fb6", alpha=0.35)
    answer_ax.stairs(weights, edges, color="#3b6fb6", linewidth=1.2)
    if len(weights):
        peak = int(np.argmax(weights))
        answer_ax.axvline(att.frame_times_s[peak], color="#c0392b", linestyle="--", linewidth=1)
        answer_ax.annotate(
            f"peak {att.frame_times_s[peak]:.1f} s",
            (att.frame_times_s[peak], weights[peak]),
            xytext=(4, -2),
            textcoords="offset points",
            fontsize=8,
            color="#c0392b",
            va="top",
        )
        answer_ax.set_ylim(0, max(float(weights.max()) * 1.15, 1e-6))
    answer_ax.set_xlim(0, duration)
    answer_ax.set_xlabel("time (s)")
    answer_ax.set_ylabel("weight", fontsize=9)
    answer_ax.set_title(f"Focus: answer query → frames (for “{prediction.answer}”)", loc="left", fontsize=11, wrap=True)

    tokens = list(att.question_tokens)[:MAX_TOKENS_SHOWN]
    token_ax = _side_axes(figure, heat_bottom, heat_in)
    if tokens:
        matrix = _scaled_rows(np.asarray(att.question_to_memory)[: len(tokens)]).T  # [Q, L]
        token_ax.pcolormesh(
            np.arange(len(tokens) + 1), np.arange(matrix.shape[0] + 1) - 0.5, matrix, cmap=HEATMAP, vmin=0, vmax=1
        )
        token_ax.set_xticks(np.arange(len(tokens)) + 0.5, tokens, rotation=90, fontsize=7)
        token_ax.set_xlim(0, len(tokens))
    keys = att.question_memory_keys
    token_ax.set_ylim(len(keys or range(rows)) - 0.5, -0.5)
    token_ax.tick_params(length=0)
    if keys is None:
        token_ax.set_yticks(range(rows), [])
        token_ax.set_title("Focus: question tokens → prompts", loc="left", fontsize=11)
        token_ax.set_xlabel("each token's column scaled to its maximum", fontsize=8)
    else:  # reference layout: the "event memory" is the sequence's last positions, not the prompts
        token_ax.set_yticks(range(len(keys)), [_short(key) for key in keys], fontsize=7)
        token_ax.set_title(f"Focus: tokens → last {len(keys)} positions", loc="left", fontsize=10)
        token_ax.set_xlabel("reference layout: these rows are text positions,\nnot the memory prompts", fontsize=8)
    return figure


def evidence_figure(evidence: Evidence) -> Figure:
    """The effect of leaving each memory prompt out (rows as in :func:`timeline_figure`): a bar of the
    change in the answer's probability, in percentage points, red where the answer rests on the
    prompt and blue where it is surer without it, labelled with the prompt's event; the side column
    names the answer each removal flips to. A hidden time range, if any, gets its own row below."""
    prompts = evidence.prompts
    rows = len(prompts) + (1 if evidence.hidden is not None else 0)
    height = TOP_IN + rows * ROW_IN + BOTTOM_IN + 0.2
    figure = _figure(height)
    ax = _time_axes(figure, BOTTOM_IN, rows * ROW_IN)
    deltas = [100 * p.delta for p in prompts]
    labels = [f"P{p.slot + 1}" for p in prompts]
    texts = [f"{p.label}, {p.start_s:.1f}–{p.end_s:.1f} s" for p in prompts]
    flips = [p.flips_to for p in prompts]
    if evidence.hidden is not None:
        h = evidence.hidden
        deltas.append(100 * h.delta)
        labels.append("hidden")
        texts.append(f"frames of {h.start_s:.1f}–{h.end_s:.1f} s hidden ({h.frames_hidden})")
        flips.append(h.flips_to)
    limit = max(10.0, min(100.0, max((abs(d) for d in deltas), default=0.0) * 1.15))
    for row, delta in enumerate(deltas):
        colour = SUPPORT_COLOUR if delta < 0 else AGAINST_COLOUR
        ax.barh(row, delta, height=0.62, color=to_rgba(colour, 0.75), edgecolor=colour, linewidth=0.8)
        # the event's label on the side of zero the bar does not take
        x, align = (limit * 0.02, "left") if delta < 0 else (-limit * 0.02, "right")
        ax.text(x, row, f"{texts[row]}  ({delta:+.0f} pp)", ha=align, va="center", fontsize=8, clip_on=True)
    ax.axvline(0, color="#333333", linewidth=0.8)
    if evidence.hidden is not None:
        ax.axhline(len(prompts) - 0.5, color="#999999", linewidth=0.8, linestyle=":")
    ax.set_xlim(-limit, limit)
    ax.set_yticks(range(rows), labels, fontsize=9)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="x", color="#e6e6e6", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_xlabel(f"change in the probability of “{evidence.answer}” when left out (percentage points)")
    ax.set_title(
        f"Evidence: what the answer rests on (“{evidence.answer}”, {evidence.answer_probability:.0%})",
        loc="left",
        fontsize=12,
    )

    side = _side_axes(figure, BOTTOM_IN, rows * ROW_IN)
    side.set_xlim(0, 1)
    side.set_ylim(rows - 0.5, -0.5)
    side.axis("off")
    side.text(0, -0.75, "answer when left out", fontsize=8, color="#555555", va="bottom")
    for row, flip in enumerate(flips):
        text, colour = ("→ " + flip, SUPPORT_COLOUR) if flip is not None else ("(unchanged)", "#777777")
        side.text(0, row, text, fontsize=8, va="center", color=colour, clip_on=True)
    return figure


def _short(label: str, limit: int = 7) -> str:
    """``label`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    return label if len(label) <= limit else label[: limit - 1] + "…"
