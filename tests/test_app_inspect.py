"""The app's Inspect tab: its handlers called directly on a tiny STAR-layout dataset and a converted
reference checkpoint (the helpers of ``test_inspection.py``), and the page building with the tab."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from matplotlib.figure import Figure

import app
from glance_focus.app.inspect_tab import ALL, Inspector
from glance_focus.app.models import Models
from glance_focus.app.page import build_app
from glance_focus.app.serving import launch
from glance_focus.inspection import TABLE_COLUMNS, DataSource, filter_rows, overview, table
from tests.test_app import free_port
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_inspection import NUM_PROMPTS, converted_reference_checkpoint, write_star_dataset


@pytest.fixture(scope="module")
def inspector(tmp_path_factory: pytest.TempPathFactory) -> Inspector:
    base = tmp_path_factory.mktemp("inspect-tab")
    data = base / "star"
    write_star_dataset(data)
    models_dir = base / "models"
    converted_reference_checkpoint(models_dir / "star-ref")
    models = Models([models_dir], device="cpu")
    sources = [DataSource("star-tiny", "star", data, ("val",))]
    return Inspector(models, sources, base / "runs", base / "work")


@pytest.fixture(scope="module")
def ran(inspector: Inspector) -> tuple[Any, ...]:
    reports: list[tuple[float, str]] = []
    outputs = inspector.run("star-ref", "star-tiny", "val", lambda f, m: reports.append((f, m)))
    assert reports and reports[-1][0] == 1.0
    return outputs


def _key(ran: tuple[Any, ...]) -> list[str]:
    return ran[0]


def test_run_shows_the_runs_metrics(inspector: Inspector, ran: tuple[Any, ...]) -> None:
    key, summary, by_type, accuracy_fig, errors_fig, types, classes, listing, ids, count = ran
    assert key == ["star-ref", "star-tiny", "val"]
    run = inspector.get_run(key)
    metrics = run.metrics
    assert f"**{metrics['accuracy']:.1%}**" in summary and f"over {metrics['num_questions']} questions" in summary
    assert f"event span mIoU: {metrics['span_miou']:.3f}" in summary
    assert {r[0]: r[3] for r in by_type} == {k: round(v, 4) for k, v in metrics["accuracy_by_type"].items()}
    view = overview(run)
    assert sum(r[2] for r in by_type) == view.num_errors
    assert isinstance(accuracy_fig, Figure) and isinstance(errors_fig, Figure)
    assert types["choices"] == [("all", ALL), *run.question_types]
    assert classes["choices"] == [("all", ALL), *run.gt_event_classes]
    assert listing == {"data": table(run.rows), "headers": list(TABLE_COLUMNS)}
    assert ids["choices"] == [r.question_id for r in run.rows]
    assert count == f"{len(run.rows)} of {len(run.rows)} questions"


def test_second_run_comes_from_the_cache(inspector: Inspector, ran: tuple[Any, ...]) -> None:
    again = inspector.run("star-ref", "star-tiny", "val")
    assert "read from the cache" in again[1]
    assert inspector.get_run(again[0]).from_cache


def test_filter_to_wrong_answers(inspector: Inspector, ran: tuple[Any, ...]) -> None:
    run = inspector.get_run(_key(ran))
    listing, ids, count = inspector.filter(_key(ran), True, ALL, ALL, 0.0, 1.0, "")
    wrong = [r for r in run.rows if r.correct is False]
    assert wrong and [row[0] for row in listing["data"]] == [r.question_id for r in wrong]
    assert all(row[5] is False for row in listing["data"])
    assert ids["choices"] == [r.question_id for r in wrong]
    assert count == f"{len(wrong)} of {len(run.rows)} questions"
    listing, _, _ = inspector.filter(_key(ran), False, "Sequence", "Opening a door", 0.0, 1.0, "")
    expected = filter_rows(run, question_type="Sequence", gt_event_class="Opening a door")
    assert [row[0] for row in listing["data"]] == [r.question_id for r in expected]
    with pytest.raises(gr.Error):
        inspector.filter(_key(ran), False, ALL, ALL, 0.9, 0.1, "")


def test_filter_to_wrong_answers_resting_on_no_ground_truth_event(inspector: Inspector, ran: tuple[Any, ...]) -> None:
    run = inspector.get_run(_key(ran))
    listing, ids, count = inspector.filter(_key(ran), False, ALL, ALL, 0.0, 1.0, "", True)
    expected = filter_rows(run, evidence_outside_gt=True)
    assert [row[0] for row in listing["data"]] == [r.question_id for r in expected] == ids["choices"]
    assert all(row[5] is False and row[-1] == "no" for row in listing["data"])
    assert count == f"{len(expected)} of {len(run.rows)} questions"


def test_selecting_a_row_shows_the_question_and_figures(inspector: Inspector, ran: tuple[Any, ...]) -> None:
    run = inspector.get_run(_key(ran))
    event = gr.SelectData(None, {"index": [0, 2], "value": "x", "row_value": list(table(run.rows)[0])})
    question_id = inspector.selected_id(event)
    assert question_id == run.rows[0].question_id == "Interaction_T1_0"
    detail, options, timeline, attention, video, evidence = inspector.show(_key(ran), question_id)
    row = run.row(question_id)
    assert row.question in detail and row.predicted in detail
    assert isinstance(evidence, Figure)
    slot = row.strongest_evidence
    assert f"P{slot + 1} — {row.predicted_events[slot].label}" in detail or "does not rest on any single" in detail
    bars = evidence.axes[0].patches
    assert len(bars) == NUM_PROMPTS
    assert [round(b.get_width(), 4) for b in bars] == pytest.approx([100 * d for d in row.evidence_deltas], abs=1e-3)
    assert [o[0] for o in options] == list(row.choices)
    assert [o[1] for o in options] == [round(p, 4) for p in row.probabilities]
    assert any("predicted" in o[2] for o in options) and any("correct" in o[2] for o in options)
    assert isinstance(timeline, Figure) and isinstance(attention, Figure)
    assert video["visible"] and Path(video["value"]).read_bytes() == b"not decoded by these tests"
    assert Path(video["value"]).is_relative_to(inspector.work_dir)
    no_video = inspector.show(_key(ran), "Sequence_T2_1")[4]  # 4OKDR has no file
    assert no_video == {"__type__": "update", "value": None, "visible": False}
    with pytest.raises(gr.Error, match="not in this run"):
        inspector.show(_key(ran), "no-such-question")


def test_export_csv_and_json(inspector: Inspector, ran: tuple[Any, ...]) -> None:
    filters = (True, ALL, ALL, 0.0, 1.0, "")
    wrong = [r.question_id for r in inspector.filtered(_key(ran), *filters)]
    csv_path = Path(inspector.export(_key(ran), ".csv", *filters))
    json_path = Path(inspector.export(_key(ran), ".json", *filters))
    for path in (csv_path, json_path):
        assert path.is_relative_to(inspector.work_dir)
    with csv_path.open(newline="", encoding="utf-8") as f:
        assert [r["question_id"] for r in csv.DictReader(f)] == wrong
    assert [r["question_id"] for r in json.loads(json_path.read_text())] == wrong
    with pytest.raises(gr.Error):
        inspector.export(_key(ran), ".txt", *filters)


def test_errors_are_messages(inspector: Inspector, ran: tuple[Any, ...]) -> None:
    with pytest.raises(gr.Error, match="has no split"):
        inspector.run("star-ref", "star-tiny", "../../etc")
    with pytest.raises(gr.Error, match="unknown dataset"):
        inspector.run("star-ref", "/tmp", "val")
    with pytest.raises(gr.Error, match="listed models"):
        inspector.run("nope", "star-tiny", "val")
    with pytest.raises(gr.Error, match="Press Run"):
        inspector.filter(None, False, ALL, ALL, 0.0, 1.0, "")
    assert inspector.splits("star-tiny") == {"__type__": "update", "choices": ["val"], "value": "val"}


def test_the_page_has_an_inspect_tab_whose_events_are_private(inspector: Inspector, tmp_path: Path) -> None:
    page = build_app(inspector.models, (), inspector.sources, tmp_path / "runs")
    labels = [getattr(block, "label", None) for block in page.blocks.values() if isinstance(block, gr.Tab)]
    assert labels == ["Ask a question", "Inspect"]
    dropdown = next(b for b in page.blocks.values() if getattr(b, "elem_id", None) == "inspect-dataset")
    assert [v for _, v in dropdown.choices] == ["star-tiny"]
    api = page.get_api_info()["named_endpoints"]
    assert list(api) == ["/predict", "/evidence"]


def test_data_argument() -> None:
    assert app.parse_args(["--data", "a=/x", "--data", "b=/y"]).data == ["a=/x", "b=/y"]
    assert app.parse_args([]).data == []


# ----------------------------------------------------------------------------------------------
# In a browser


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium is not installed")
def test_in_a_browser_run_filter_wrong_and_open_one(inspector: Inspector, ran: tuple[Any, ...], tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    # a fresh run folder: Run computes (with its progress bar) rather than reading the stored run
    page_app = build_app(inspector.models, (), inspector.sources, tmp_path / "runs")
    wrong = [r for r in inspector.get_run(_key(ran)).rows if r.correct is False]
    try:
        _, url, _ = launch(page_app, "127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(url, wait_until="load")
            page.get_by_role("tab", name="Inspect").click()
            page.locator("#inspect-run").click()
            page.locator("#inspect-overview").get_by_text("Accuracy: ", exact=False).first.wait_for()
            page.locator("#inspect-count").get_by_text("20 of 20 questions").wait_for()
            page.locator("#inspect-wrong input").check()
            page.locator("#inspect-count").get_by_text(f"{len(wrong)} of 20 questions").wait_for()
            page.locator("#inspect-table [role=gridcell]").nth(1).click()  # first row, second column
            page.locator("#inspect-detail").get_by_text(wrong[0].question_id, exact=False).wait_for()
            for figure in ("#inspect-timeline", "#inspect-evidence"):
                image = page.locator(f"{figure} img")
                image.wait_for()
                assert image.evaluate("img => img.complete && img.naturalWidth > 200")
            page.locator("#inspect-detail").get_by_text("Evidence:", exact=False).wait_for()
            outside = [r for r in wrong if r.strongest_evidence_in_gt_event is False]
            page.locator("#inspect-outside input").check()
            page.locator("#inspect-count").get_by_text(f"{len(outside)} of 20 questions").wait_for()
            browser.close()
    finally:
        page_app.close()
