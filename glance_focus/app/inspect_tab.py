"""The Inspect tab: a model over a whole dataset split (library: :mod:`glance_focus.inspection`),
accuracy per question type, the wrong answers (also: those resting on no ground-truth event), one
question in detail with its evidence, exports; and a second model's run over the same split beside
it (library: :mod:`glance_focus.comparison`): accuracy per type for each, and the questions on
which they disagree."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr

from glance_focus.app.messages import model_summary
from glance_focus.app.models import ModelChoice, Models
from glance_focus.app.zerogpu import zero_gpu
from glance_focus.comparison import RunComparison, by_type_table, compare_runs, filter_pairs, pairs_table
from glance_focus.inspection import (
    TABLE_COLUMNS,
    DataSource,
    InspectionRow,
    InspectionRun,
    example_detail,
    export_rows,
    filter_rows,
    find_source,
    load_cached_run,
    overview,
    run_inspection,
    table,
)
from glance_focus.inspection_plots import accuracy_by_type_figure, errors_figure, example_timeline_figure
from glance_focus.plots import attention_figure, evidence_figure

log = logging.getLogger(__name__)

MAX_ID_CHOICES = 2000
"""Question ids offered in the Inspect tab's dropdown (more can be typed)."""
RUNS_IN_MEMORY = 4
ALL = ""
"""The filter dropdowns' "no filter" value."""
INSPECT_UNEXPECTED = "Something went wrong while inspecting; the error was logged."
EVENT_QUALITY_NAMES = {
    "span_miou": "event span mIoU",
    "span_recall_at_0.5": "event recall at IoU 0.5",
    "event_class_accuracy": "matched event class accuracy",
    "span_miou_class_agnostic": "event span mIoU, matched on spans alone",
    "num_events": "ground-truth events",
}


@contextmanager
def _user_errors(what: str) -> Iterator[None]:
    """The library's ``ValueError`` messages go to the person; anything else is logged."""
    try:
        yield
    except gr.Error:
        raise
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
    except Exception:
        log.exception("inspection failed: %s", what)
        raise gr.Error(INSPECT_UNEXPECTED) from None


def overview_markdown(run: InspectionRun) -> str:
    """Accuracy overall and event quality, from ``run.metrics`` (Markdown)."""
    view = overview(run)
    source = "read from the cache" if run.from_cache else f"computed in {run.seconds:.1f} s"
    accuracy = "hidden by the split" if view.accuracy is None else f"**{view.accuracy:.1%}**"
    lines = [
        f"**{Path(run.checkpoint).name}** on **{run.dataset} / {run.split}** ({source}, device `{run.device}`)",
        "",
        f"- Accuracy: {accuracy} over {view.num_questions} questions ({view.num_errors} wrong)",
    ]
    if view.event_quality:
        for key, value in view.event_quality.items():
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            lines.append(f"- {EVENT_QUALITY_NAMES.get(key, key)}: {shown}")
    else:
        lines.append("- Event quality: no ground-truth events in this split")
    return "\n".join(lines)


def accuracy_by_type_table(run: InspectionRun) -> list[list[Any]]:
    """``[type, questions, wrong, accuracy]`` per question type; accuracy from ``run.metrics``."""
    view = overview(run)
    groups = {g.group: g for g in view.by_type}
    return [
        [
            name,
            groups[name].questions if name in groups else "",
            groups[name].errors if name in groups else "",
            round(accuracy, 4),
        ]
        for name, accuracy in sorted(view.accuracy_by_type.items())
    ]


def detail_markdown(row: InspectionRow, note: str | None, evidence_sentence: str | None = None) -> str:
    verdict = {True: "✅ correct", False: "❌ wrong", None: "answer not public"}[row.correct]
    lines = [
        f"**{row.question_id}** · {row.question_type} · video `{row.video_id}`"
        + (f" ({row.duration_s:.1f} s)" if row.duration_s else ""),
        "",
        f"**Q:** {row.question}",
        "",
        f"- Predicted: **{row.predicted}** ({row.confidence:.1%})",
        f"- Correct: **{row.correct_answer if row.correct_answer is not None else '—'}** · {verdict}",
    ]
    if evidence_sentence:
        inside = {True: "inside a ground-truth event", False: "outside every ground-truth event", None: ""}
        where = inside[row.strongest_evidence_in_gt_event]
        lines += ["", f"**Evidence:** {evidence_sentence}" + (f" Its span lies {where}." if where else "")]
    if note:
        lines += ["", f"> {note}"]
    return "\n".join(lines)


def options_table(row: InspectionRow) -> list[list[Any]]:
    """``[option, probability, mark]``: every answer choice, the predicted and the correct one marked."""
    out = []
    for choice, probability in zip(row.choices, row.probabilities, strict=True):
        marks = []
        if choice == row.predicted:
            marks.append("predicted")
        if row.correct_answer is not None and choice == row.correct_answer:
            marks.append("correct")
        out.append([choice, round(probability, 4), " + ".join(marks)])
    return out


class Inspector:
    """The Inspect tab's handlers: plain functions over :mod:`glance_focus.inspection`.

    A run is named by a key ``[model, dataset, split]`` (what the page keeps in its state); runs
    stay in memory (a few) and in ``cache_dir`` (all); exports and video copies go to ``work_dir``,
    a temporary folder of the app.
    """

    def __init__(
        self,
        models: Models,
        sources: Sequence[DataSource],
        cache_dir: str | Path,
        work_dir: str | Path | None = None,
    ) -> None:
        self.models = models
        self.device = "cpu" if zero_gpu() else models.device
        """Where runs compute. On ZeroGPU the CPU, on purpose: a run reads precomputed features and runs
        only the small Glance-Focus model (no image encoder), it is cached, and a whole split could
        outlast a GPU slot and spend the visitor's GPU quota on a researcher's tool."""
        self.sources = list(sources)
        self.cache_dir = Path(cache_dir)
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="glance-focus-inspect-"))
        self._runs: dict[tuple[str, str, str], InspectionRun] = {}
        self._lock = threading.Lock()

    # -- choosing what to run

    @property
    def dataset_names(self) -> list[str]:
        return [s.name for s in self.sources]

    def splits(self, dataset: str | None) -> dict[str, Any]:
        """The split dropdown for ``dataset`` (its splits, the first selected)."""
        source = next((s for s in self.sources if s.name == dataset), None)
        splits = list(source.splits) if source else []
        return gr.update(choices=splits, value=splits[0] if splits else None)

    def _resolve(self, model: str | None, dataset: str | None, split: str | None) -> tuple[ModelChoice, DataSource]:
        if model not in self.models.choices:
            raise gr.Error("Please choose one of the listed models." if self.models.choices else model_summary(None))
        if not dataset or not split:
            raise gr.Error("Please choose a dataset and a split.")
        with _user_errors("choosing a source"):
            return self.models.choices[model], find_source(self.sources, dataset, split)

    def _remember(self, key: tuple[str, str, str], run: InspectionRun) -> None:
        with self._lock:
            self._runs.pop(key, None)
            self._runs[key] = run
            while len(self._runs) > RUNS_IN_MEMORY:
                self._runs.pop(next(iter(self._runs)))

    def get_run(self, key: Sequence[str] | None) -> InspectionRun:
        """The run the page shows (``key`` from its state): in memory, else read from the cache."""
        if not key or len(key) != 3:
            raise gr.Error("Press Run first.")
        model, dataset, split = (str(k) for k in key)
        with self._lock:
            run = self._runs.get((model, dataset, split))
        if run is not None:
            return run
        choice, source = self._resolve(model, dataset, split)
        with _user_errors("reading a stored run"):
            run = load_cached_run(choice.path, source.dataset, source.root, split, self.cache_dir, device=self.device)
        if run is None:
            raise gr.Error("Press Run first.")
        self._remember((model, dataset, split), run)
        return run

    # -- handlers

    def run(
        self,
        model: str | None,
        dataset: str | None,
        split: str | None,
        progress: gr.Progress | None = None,
    ) -> tuple[Any, ...]:
        """Run (or reopen) the model over the split: state key, overview, its table and figures,
        the filter choices, the table and the question ids."""
        choice, source = self._resolve(model, dataset, split)
        with _user_errors("running"):
            run = run_inspection(
                choice.path, source.dataset, source.root, split, self.cache_dir, progress, device=self.device
            )
        key = [choice.name, source.name, str(split)]
        self._remember((key[0], key[1], key[2]), run)
        view = overview(run)
        rows = list(run.rows)
        return (
            key,
            overview_markdown(run),
            accuracy_by_type_table(run),
            accuracy_by_type_figure(view),
            errors_figure(view),
            gr.update(choices=[("all", ALL), *run.question_types], value=ALL),
            gr.update(choices=[("all", ALL), *run.gt_event_classes], value=ALL),
            *self._listing(rows, len(rows)),
        )

    def _listing(self, rows: Sequence[InspectionRow], total: int) -> tuple[Any, ...]:
        ids = [r.question_id for r in rows[:MAX_ID_CHOICES]]
        count = f"{len(rows)} of {total} questions"
        return {"data": table(rows), "headers": list(TABLE_COLUMNS)}, gr.update(choices=ids), count

    def filtered(
        self,
        key: Sequence[str] | None,
        wrong_only: bool = False,
        question_type: str | None = ALL,
        gt_event_class: str | None = ALL,
        min_confidence: float = 0.0,
        max_confidence: float = 1.0,
        text: str | None = "",
        evidence_outside_gt: bool = False,
    ) -> list[InspectionRow]:
        run = self.get_run(key)
        low, high = float(min_confidence), float(max_confidence)
        if low > high:
            raise gr.Error("The lowest confidence is above the highest.")
        return filter_rows(
            run,
            wrong_only=bool(wrong_only),
            question_type=question_type or None,
            gt_event_class=gt_event_class or None,
            confidence_range=None if (low, high) == (0.0, 1.0) else (low, high),
            text_search=text or None,
            evidence_outside_gt=bool(evidence_outside_gt),
        )

    def filter(self, key: Sequence[str] | None, *filters: Any) -> tuple[Any, ...]:
        """The table, question ids and count for the filters (the ``filtered`` arguments)."""
        rows = self.filtered(key, *filters)
        return self._listing(rows, len(self.get_run(key).rows))

    @staticmethod
    def selected_id(evt: gr.SelectData) -> str | dict[str, Any]:
        """The question id of the table row the person clicked."""
        row = evt.row_value or []
        return str(row[0]) if row else gr.update()

    def _video_copy(self, path: Path | None) -> str | None:
        """A copy of the dataset's video in the app's folder (the page serves nothing else)."""
        if path is None or not path.is_file():
            return None
        stat = path.stat()
        name = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        target = self.work_dir / "videos" / f"{name}{path.suffix.lower()}"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(target.suffix + ".part")
            shutil.copyfile(path, tmp)
            tmp.replace(target)
        return str(target)

    def show(self, key: Sequence[str] | None, question_id: str | None) -> tuple[Any, ...]:
        """One question: text, options with probabilities, its timeline, its attention, its video and
        its evidence (the stored leave-one-out of the run)."""
        if not question_id:
            raise gr.Error("Choose a question (a row of the table or its id).")
        run = self.get_run(key)
        with _user_errors(f"showing {question_id}"):
            detail = example_detail(run, str(question_id).strip())
            timeline = example_timeline_figure(detail.row)
            attention = attention_figure(detail.prediction) if detail.prediction is not None else None
            video = self._video_copy(detail.video_path)
            evidence = detail.evidence
        return (
            detail_markdown(detail.row, detail.note, evidence.sentence() if evidence else None),
            options_table(detail.row),
            timeline,
            attention,
            gr.update(value=video, visible=video is not None),
            evidence_figure(evidence) if evidence is not None else None,
        )

    # -- a second model over the same split

    def comparison(self, key: Sequence[str] | None, key_b: Sequence[str] | None) -> RunComparison:
        """The run shown (``key``) paired with the second model's run (``key_b``)."""
        if not key_b:
            raise gr.Error("Press Compare first.")
        run_a, run_b = self.get_run(key), self.get_run(key_b)
        assert key is not None  # get_run refused anything else
        with _user_errors("pairing two runs"):
            return compare_runs(run_a, run_b, str(key[0]), str(key_b[0]))

    def compare(
        self, key: Sequence[str] | None, model_b: str | None, progress: gr.Progress | None = None
    ) -> tuple[Any, ...]:
        """Run ``model_b`` over the split of the run shown (or reopen it) and pair the two: its state
        key, a summary, accuracy per type for each, the type filter, the pairs, their count."""
        run_a = self.get_run(key)
        assert key is not None
        model_a, dataset, split = (str(k) for k in key)
        if model_b == model_a:
            raise gr.Error("Choose another model to compare with.")
        choice, source = self._resolve(model_b, dataset, split)
        with _user_errors("comparing"):
            run_b = run_inspection(
                choice.path, source.dataset, source.root, split, self.cache_dir, progress, device=self.device
            )
            comparison = compare_runs(run_a, run_b, model_a, choice.name)
        key_b = [choice.name, source.name, split]
        self._remember((key_b[0], key_b[1], key_b[2]), run_b)
        headers, rows = by_type_table(comparison)
        summary = (
            f"**{model_a}** and **{choice.name}** on **{dataset} / {split}**: they answer "
            f"{len(comparison.disagreements)} of {len(comparison.pairs)} questions differently."
        )
        return (
            key_b,
            summary,
            {"headers": headers, "data": rows},
            gr.update(choices=[("all", ALL), *run_a.question_types], value=ALL),
            *self._pair_listing(comparison, comparison.disagreements),
        )

    def compare_filter(
        self,
        key: Sequence[str] | None,
        key_b: Sequence[str] | None,
        disagree_only: bool = True,
        question_type: str | None = ALL,
    ) -> tuple[Any, ...]:
        """The pairs table and its count for the filters."""
        comparison = self.comparison(key, key_b)
        pairs = filter_pairs(comparison.pairs, disagree_only=bool(disagree_only), question_type=question_type or None)
        return self._pair_listing(comparison, pairs)

    @staticmethod
    def _pair_listing(comparison: RunComparison, pairs: Sequence[Any]) -> tuple[Any, ...]:
        headers, rows = pairs_table(comparison, pairs)
        count = (
            f"{len(pairs)} of {len(comparison.pairs)} questions ({len(comparison.disagreements)} answered differently)"
        )
        return {"headers": headers, "data": rows}, count

    def export(self, key: Sequence[str] | None, suffix: str, *filters: Any) -> str:
        """The filtered rows written as ``.csv`` or ``.json`` in a fresh folder of the app."""
        if suffix not in (".csv", ".json"):
            raise gr.Error("Export as CSV or JSON.")
        rows = self.filtered(key, *filters)  # also checks the key
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(map(str, key or ())))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="export-", dir=self.work_dir))
        with _user_errors("exporting"):
            return str(export_rows(rows, folder / f"inspection-{stem}{suffix}"))


def build_inspect_tab(models: Models, inspector: Inspector) -> None:
    """The Inspect tab (call inside a ``gr.Tab``): a model over a dataset split, its errors, one question."""
    datasets = inspector.dataset_names
    first_splits = list(inspector.sources[0].splits) if inspector.sources else []
    gr.Markdown(
        "Run a model over a whole dataset split, see where it answers wrongly, and open any question. "
        "Datasets are those the server was started with (`--data NAME=DIR`); a run is stored, so running "
        "it again is instant."
        if datasets
        else "**No dataset available.** Start the app with `--data NAME=DIR` (a STAR, AGQA, NExT-QA, "
        "EgoTaskQA or synthetic dataset folder)."
    )
    key = gr.State(None)
    with gr.Row():
        model = gr.Dropdown(list(models.choices), value=models.default, label="Model", elem_id="inspect-model")
        dataset = gr.Dropdown(
            datasets, value=datasets[0] if datasets else None, label="Dataset", elem_id="inspect-dataset"
        )
        split = gr.Dropdown(
            first_splits, value=first_splits[0] if first_splits else None, label="Split", elem_id="inspect-split"
        )
        run_button = gr.Button("Run", variant="primary", elem_id="inspect-run", scale=0, min_width=120)
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            summary = gr.Markdown(elem_id="inspect-overview")
            by_type = gr.Dataframe(
                headers=["question type", "questions", "wrong", "accuracy"],
                label="Accuracy per question type",
                interactive=False,
                elem_id="inspect-by-type",
            )
        with gr.Column(scale=5):
            accuracy_plot = gr.Plot(label="Accuracy per question type", format="png", elem_id="inspect-accuracy")
    errors_plot = gr.Plot(label="Where the errors are", format="png", elem_id="inspect-errors")

    others = list(models.choices)[1:]
    key_b = gr.State(None)
    with gr.Accordion("Compare with another model", open=False, visible=bool(others), elem_id="inspect-compare"):
        gr.Markdown(
            "Run a second model over the same split (stored like any run): accuracy per question type for "
            "each, and the questions on which they answer differently. Click a row to open the question below."
        )
        with gr.Row():
            compare_model = gr.Dropdown(
                list(models.choices),
                value=others[0] if others else None,
                label="Second model",
                elem_id="inspect-compare-model",
            )
            compare_button = gr.Button("Compare", elem_id="inspect-compare-run", scale=0, min_width=120)
        compare_summary = gr.Markdown(elem_id="inspect-compare-summary")
        compare_by_type = gr.Dataframe(
            headers=["question type", "questions", "accuracy A", "accuracy B", "answers differ"],
            label="Accuracy per question type, each model",
            interactive=False,
            elem_id="inspect-compare-by-type",
        )
        with gr.Row():
            disagree_only = gr.Checkbox(
                value=True, label="Only questions where they disagree", elem_id="inspect-compare-disagree"
            )
            compare_type = gr.Dropdown([("all", ALL)], value=ALL, label="Question type", elem_id="inspect-compare-type")
        compare_count = gr.Markdown(elem_id="inspect-compare-count")
        compare_rows = gr.Dataframe(interactive=False, max_height=360, wrap=True, elem_id="inspect-compare-table")

    gr.Markdown("### Questions")
    with gr.Row():
        wrong_only = gr.Checkbox(label="Wrong answers only", elem_id="inspect-wrong")
        question_type = gr.Dropdown([("all", ALL)], value=ALL, label="Question type", elem_id="inspect-type")
        gt_class = gr.Dropdown([("all", ALL)], value=ALL, label="Ground-truth event class", elem_id="inspect-class")
        low = gr.Slider(0, 1, value=0, step=0.01, label="Confidence from", elem_id="inspect-low")
        high = gr.Slider(0, 1, value=1, step=0.01, label="Confidence to", elem_id="inspect-high")
        search = gr.Textbox(label="Search (question or id; Enter)", elem_id="inspect-search")
        outside = gr.Checkbox(
            label="Wrong, resting on no ground-truth event",
            info="the prompt the answer rests on most lies outside every ground-truth event",
            elem_id="inspect-outside",
        )
    count = gr.Markdown(elem_id="inspect-count")
    rows = gr.Dataframe(
        headers=list(TABLE_COLUMNS), interactive=False, max_height=420, wrap=True, elem_id="inspect-table"
    )
    with gr.Row():
        question_id = gr.Dropdown(
            [], label="Question id (click a row, choose or type)", allow_custom_value=True, elem_id="inspect-qid"
        )
        csv_button = gr.Button("Export CSV", elem_id="inspect-csv")
        json_button = gr.Button("Export JSON", elem_id="inspect-json")
        export_file = gr.File(label="Export", interactive=False, elem_id="inspect-export")

    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            detail = gr.Markdown(elem_id="inspect-detail")
            options = gr.Dataframe(
                headers=["option", "probability", ""], interactive=False, label="Options", elem_id="inspect-options"
            )
        with gr.Column(scale=4):
            video = gr.Video(label="Video", interactive=False, visible=False, height=260, elem_id="inspect-video")
    timeline = gr.Plot(label="Ground truth vs memory prompts", format="png", elem_id="inspect-timeline")
    evidence = gr.Plot(label="Evidence: each memory prompt left out", format="png", elem_id="inspect-evidence")
    attention = gr.Plot(label="Memory-prompt attention", format="png", elem_id="inspect-attention")

    filters = [wrong_only, question_type, gt_class, low, high, search, outside]
    listing = [rows, question_id, count]

    def run_fn(model_name, dataset_name, split_name, progress: gr.Progress = gr.Progress()):  # noqa: B008
        """Run, then clear the filters (the table lists every question of the new run)."""
        return (*inspector.run(model_name, dataset_name, split_name, progress), False, 0.0, 1.0, "", False)

    dataset.change(inspector.splits, dataset, split, api_visibility="private", queue=False)
    run_button.click(
        run_fn,
        [model, dataset, split],
        [
            key,
            summary,
            by_type,
            accuracy_plot,
            errors_plot,
            question_type,
            gt_class,
            *listing,
            wrong_only,
            low,
            high,
            search,
            outside,
        ],
        api_visibility="private",
        concurrency_id="inspection",
        concurrency_limit=1,
    )
    gr.on(
        [
            wrong_only.change,
            question_type.change,
            gt_class.change,
            low.release,
            high.release,
            search.submit,
            outside.change,
        ],
        inspector.filter,
        [key, *filters],
        listing,
        api_visibility="private",
        trigger_mode="always_last",
    )
    rows.select(inspector.selected_id, None, question_id, api_visibility="private", queue=False)
    question_id.change(
        inspector.show,
        [key, question_id],
        [detail, options, timeline, attention, video, evidence],
        api_visibility="private",
        trigger_mode="always_last",
    )

    def compare_fn(state, model_b, progress: gr.Progress = gr.Progress()):  # noqa: B008
        """Compare, then show only the disagreements of every type."""
        return (*inspector.compare(state, model_b, progress), True)

    compare_button.click(
        compare_fn,
        [key, compare_model],
        [key_b, compare_summary, compare_by_type, compare_type, compare_rows, compare_count, disagree_only],
        api_visibility="private",
        concurrency_id="inspection",
        concurrency_limit=1,
    )
    gr.on(
        [disagree_only.change, compare_type.change],
        inspector.compare_filter,
        [key, key_b, disagree_only, compare_type],
        [compare_rows, compare_count],
        api_visibility="private",
        trigger_mode="always_last",
    )
    compare_rows.select(inspector.selected_id, None, question_id, api_visibility="private", queue=False)

    def export_csv(state, *values):
        return inspector.export(state, ".csv", *values)

    def export_json(state, *values):
        return inspector.export(state, ".json", *values)

    csv_button.click(export_csv, [key, *filters], export_file, api_visibility="private")
    json_button.click(export_json, [key, *filters], export_file, api_visibility="private")
