"""Two models side by side in the app: ``/predict`` with a model name through ``gradio_client``, the
demo tab's compare mode, and the Inspect tab's comparison of two runs over one split."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from gradio_client import Client, handle_file
from matplotlib.figure import Figure

from glance_focus.app.answering import Answerer
from glance_focus.app.compare import Comparer
from glance_focus.app.inspect_tab import ALL, Inspector
from glance_focus.app.models import Models
from glance_focus.checkpoint import load_checkpoint, save_checkpoint
from glance_focus.inspection import DataSource
from tests.test_app import demo_assets, serve
from tests.test_inspection import converted_reference_checkpoint, write_star_dataset
from tests.test_pipeline import make_checkpoint

QUESTION = "What happened right after the object grew?"


@dataclass
class TwoModels:
    client: Client
    models: Models
    names: list[str]
    video: Path
    options: list[str]


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoModels]:
    """The app serving the bundled model (or a made one) first and a tiny untrained one second."""
    root = tmp_path_factory.mktemp("compare")
    checkpoints, examples, _ = demo_assets(root)
    tiny = make_checkpoint(root / "tiny", d_model=32, ffn_dim=64)
    paths = [checkpoints[0], tiny]
    with serve(paths, examples, root) as url:
        models = Models(paths, device="cpu", cache_dir=root / "features-direct")
        example = examples[0]
        yield TwoModels(Client(url, verbose=False), models, list(models.choices), example.video, example.options)


def _predict(two: TwoModels, *model: str) -> dict:
    options = "\n".join(two.options)
    return two.client.predict(handle_file(str(two.video)), QUESTION, options, *model, api_name="/predict")


def test_predict_takes_an_optional_model_name(two: TwoModels) -> None:
    endpoints = two.client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    parameters = endpoints["/predict"]["parameters"]
    assert [p["parameter_name"] for p in parameters] == ["video", "question", "options", "model"]
    assert parameters[-1]["parameter_has_default"]

    first, second = two.names
    default = _predict(two)  # an existing client: three arguments
    assert default["model"] == first
    named_first = _predict(two, first)
    assert named_first["model"] == first and named_first["probabilities"] == default["probabilities"]
    named_second = _predict(two, second)
    assert named_second["model"] == second
    assert named_second["probabilities"] != default["probabilities"]
    assert named_second["answer"] in two.options


def test_an_unknown_model_name_is_a_message_listing_the_models(two: TwoModels) -> None:
    with pytest.raises(Exception, match="no model named 'nope'") as caught:
        _predict(two, "nope")
    assert all(name in str(caught.value) for name in two.names)
    assert _predict(two)["answer"] in two.options  # and the server keeps serving


def test_compare_mode_shows_both_answers_probabilities_and_timelines(two: TwoModels) -> None:
    first, second = two.names
    comparer = Comparer(Answerer(two.models))
    summary, table, figure = comparer(str(two.video), QUESTION, "\n".join(two.options), first, second)
    a, b = _predict(two, first), _predict(two, second)
    assert f"**{first}**: {a['answer']}" in summary and f"**{second}**: {b['answer']}" in summary
    assert ("They agree." in summary) == (a["answer"] == b["answer"])
    assert table["headers"] == ["option", first, second, "chosen by"]
    assert [row[0] for row in table["data"]] == two.options
    assert [row[1] for row in table["data"]] == pytest.approx(a["probabilities"], abs=1e-3)
    assert [row[2] for row in table["data"]] == pytest.approx(b["probabilities"], abs=1e-3)
    chosen = {row[0]: row[3] for row in table["data"]}
    assert first in chosen[a["answer"]] and second in chosen[b["answer"]]
    assert isinstance(figure, Figure)
    headers = [t.get_text() for ax in figure.axes for t in ax.texts if "answers" in t.get_text()]
    assert [h.split(" answers")[0] for h in headers] == [first, second], "both models' rows on the one time axis"


def test_compare_mode_refuses_one_model_twice(two: TwoModels) -> None:
    import gradio as gr

    comparer = Comparer(Answerer(two.models))
    first = two.names[0]
    with pytest.raises(gr.Error, match="two different models"):
        comparer(str(two.video), QUESTION, "\n".join(two.options), first, first)
    with pytest.raises(gr.Error, match="model to compare with"):
        comparer(str(two.video), QUESTION, "\n".join(two.options), first, None)


# ----------------------------------------------------------------------------------------------
# Inspect: two runs over one split


@pytest.fixture(scope="module")
def inspector(tmp_path_factory: pytest.TempPathFactory) -> Inspector:
    """The converted reference model and a copy whose answer head was disturbed, over a tiny STAR split."""
    base = tmp_path_factory.mktemp("inspect-compare")
    data = base / "star"
    write_star_dataset(data)
    models_dir = base / "models"
    converted_reference_checkpoint(models_dir / "a-ref")
    loaded = load_checkpoint(models_dir / "a-ref")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in loaded.model.answer_head.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * p.abs().mean() * 3)
    save_checkpoint(models_dir / "b-disturbed", loaded.model, loaded.info, loaded.text_encoder_state)
    models = Models([models_dir], device="cpu")
    sources = [DataSource("star-tiny", "star", data, ("val",))]
    return Inspector(models, sources, base / "runs", base / "work")


def test_inspect_compares_two_runs_per_type_and_lists_disagreements(inspector: Inspector) -> None:
    key = inspector.run("a-ref", "star-tiny", "val")[0]
    key_b, summary, by_type, types, listing, count = inspector.compare(key, "b-disturbed")
    run_a, run_b = inspector.get_run(key), inspector.get_run(key_b)
    assert key_b == ["b-disturbed", "star-tiny", "val"]
    rows = {r[0]: r for r in by_type["data"]}
    for qtype, accuracy in run_a.metrics["accuracy_by_type"].items():
        assert rows[qtype][2] == round(accuracy, 4)
        assert rows[qtype][3] == round(run_b.metrics["accuracy_by_type"][qtype], 4)
    differ = [r.question_id for r in run_a.rows if r.prediction != run_b.row(r.question_id).prediction]
    assert rows["all"][4] == len(differ)
    assert f"{len(differ)} of {len(run_a.rows)} questions differently" in summary
    assert differ, "the disturbed model answers some questions otherwise"
    assert [r[0] for r in listing["data"]] == differ
    assert count == f"{len(differ)} of {len(run_a.rows)} questions ({len(differ)} answered differently)"
    assert listing["headers"][3:5] == ["a-ref", "b-disturbed"]
    assert types["choices"] == [("all", ALL), *run_a.question_types]

    everything, _ = inspector.compare_filter(key, key_b, False, ALL)
    assert [r[0] for r in everything["data"]] == [r.question_id for r in run_a.rows]
    qtype = run_a.row(differ[0]).question_type
    one_type, text = inspector.compare_filter(key, key_b, True, qtype)
    expected = [q for q in differ if run_a.row(q).question_type == qtype]
    assert [r[0] for r in one_type["data"]] == expected
    assert text.startswith(f"{len(expected)} of {len(run_a.rows)} questions")


def test_inspect_compare_needs_another_model_and_a_run(inspector: Inspector) -> None:
    import gradio as gr

    key = inspector.run("a-ref", "star-tiny", "val")[0]
    with pytest.raises(gr.Error, match="another model"):
        inspector.compare(key, "a-ref")
    with pytest.raises(gr.Error, match="Press Run first"):
        inspector.compare(None, "b-disturbed")
    with pytest.raises(gr.Error, match="Press Compare first"):
        inspector.compare_filter(key, None)
