"""The Gradio app, launched on a loopback port and driven through ``gradio_client`` as an API
user would: a real video, every kind of bad input, what the server exposes.

The bundled model and examples (``assets/``) are used when present; otherwise a small
checkpoint and synthetic example videos are made here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

import app
from glance_focus.app.answering import parse_options
from glance_focus.app.examples import Example, load_examples
from glance_focus.app.messages import model_summary
from glance_focus.app.models import Models, find_checkpoints
from glance_focus.app.page import build_app
from glance_focus.app.serving import launch
from glance_focus.app.settings import DEFAULT_MODELS, MAX_UPLOAD_BYTES
from glance_focus.synthetic import WorldConfig, make_questions, render_frames, sample_scene, video_rng, write_video
from tests.test_pipeline import make_checkpoint, sample_video

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------------
# Helpers shared with test_browser.py


def synthetic_examples(folder: Path, count: int = 2) -> list[Example]:
    """``count`` videos of the synthetic world with one question each, as ``examples.json`` + mp4s."""
    folder.mkdir(parents=True, exist_ok=True)
    world = WorldConfig()
    entries = []
    for index in range(count):
        scene = sample_scene(world, 11, "demo", index)
        write_video(render_frames(scene, world), folder / f"demo_{index}.mp4", world.fps)
        question = make_questions(scene, world, video_rng(11, "demo", index, 1))[0]
        entries.append({"video": f"demo_{index}.mp4", "question": question.question, "options": list(question.options)})
    (folder / "examples.json").write_text(json.dumps(entries), encoding="utf-8")
    return load_examples(folder / "examples.json")


def demo_assets(root: Path) -> tuple[list[Path], list[Example], bool]:
    """(checkpoints, examples, bundled): the bundled ones if present, else made under ``root``."""
    checkpoints, examples = find_checkpoints([DEFAULT_MODELS]), load_examples()
    if checkpoints and examples:
        return checkpoints, examples, True
    return [make_checkpoint(root / "model")], synthetic_examples(root / "examples"), False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(checkpoints: list[Path], examples: list[Example], root: Path) -> Iterator[str]:
    """Build and launch the app in this process on a free loopback port; yield its URL."""
    previous = os.environ.get("GRADIO_EXAMPLES_CACHE")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(root / "cached_examples")
    models = Models(checkpoints, device="cpu", cache_dir=root / "features")
    demo = build_app(models, examples)
    try:
        _, url, _ = launch(demo, "127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True)
        yield url
    finally:
        demo.close()
        if previous is None:
            os.environ.pop("GRADIO_EXAMPLES_CACHE", None)
        else:
            os.environ["GRADIO_EXAMPLES_CACHE"] = previous


# ----------------------------------------------------------------------------------------------
# Fixtures


@dataclass
class Served:
    url: str
    client: Client
    examples: list[Example]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("app")
    checkpoints, examples, _ = demo_assets(root)
    with serve(checkpoints, examples, root) as url:
        yield Served(url, Client(url, verbose=False), examples)


@pytest.fixture(scope="module")
def bikes() -> Path:
    return sample_video("bikes.mp4")


def _predict(served: Served, video: Path, question: str, options: str) -> dict:
    return served.client.predict(handle_file(str(video)), question, options, api_name="/predict")


def _evidence(served: Served, video: Path, question: str, options: str) -> dict:
    return served.client.predict(handle_file(str(video)), question, options, api_name="/evidence")


# ----------------------------------------------------------------------------------------------
# The API


def test_the_api_lists_predict_and_evidence_and_nothing_internal(served: Served) -> None:
    endpoints = served.client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert list(endpoints) == ["/predict", "/evidence"]
    for name in endpoints:
        parameters = endpoints[name]["parameters"]
        assert [p["parameter_name"] for p in parameters] == ["video", "question", "options", "model"]
        assert parameters[-1]["parameter_has_default"], "clients that send three arguments keep working"


def test_evidence_gives_the_effect_of_leaving_out_each_memory_prompt(served: Served) -> None:
    example = served.examples[0]
    options = "\n".join(example.options)
    evidence = _evidence(served, example.video, example.question, options)
    prediction = _predict(served, example.video, example.question, options)
    assert set(evidence) == {"answer", "options", "probabilities", "evidence"}
    assert evidence["answer"] == prediction["answer"] and evidence["options"] == example.options
    assert evidence["probabilities"] == pytest.approx(prediction["probabilities"], abs=1e-5)
    answer_probability = evidence["probabilities"][example.options.index(evidence["answer"])]
    assert len(evidence["evidence"]) == len(prediction["events"])
    for slot, (entry, event) in enumerate(zip(evidence["evidence"], prediction["events"], strict=True)):
        assert set(entry) == {"slot", "start_s", "end_s", "label", "probability_without", "delta", "flips_to"}
        assert entry["slot"] == slot
        assert (entry["start_s"], entry["end_s"], entry["label"]) == (event["start_s"], event["end_s"], event["label"])
        assert 0 <= entry["probability_without"] <= 1
        assert entry["delta"] == pytest.approx(entry["probability_without"] - answer_probability, abs=2e-6)
        assert entry["flips_to"] is None or entry["flips_to"] in set(example.options) - {evidence["answer"]}


def test_a_real_video_returns_the_json_and_a_second_question_hits_the_feature_cache(
    served: Served, bikes: Path
) -> None:
    options = ["a bike passes", "nothing moves", "it rains"]
    result = _predict(served, bikes, "What happens in the video?", "\n".join(options) + "\n")
    assert {"answer", "answer_index", "probabilities", "events", "timings_s"} <= set(result)
    assert result["answer"] in options and result["answer"] == options[result["answer_index"]]
    assert len(result["probabilities"]) == len(options)
    assert sum(result["probabilities"]) == pytest.approx(1, abs=1e-4)
    assert result["events"] and all({"start_s", "end_s", "label", "score"} <= set(e) for e in result["events"])
    assert all(e["start_s"] >= 0 and e["end_s"] >= 0 and 0 <= e["score"] <= 1 for e in result["events"])
    assert result["timings_s"]["total"] > 0 and not result["timings_s"]["feature_cache_hit"]

    again = _predict(served, bikes, "Does it rain?", "yes\nno")
    assert again["timings_s"]["feature_cache_hit"] and again["timings_s"]["image_encoder"] == 0
    assert again["timings_s"]["total"] < result["timings_s"]["total"]


def _file(name: str, data: bytes | Callable[[], bytes]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data() if callable(data) else data)
        return path

    return make


def audio_only_video(folder: Path) -> Path:
    """An MP4 with one AAC audio stream and no video."""
    av = pytest.importorskip("av")
    import numpy as np

    path = folder / "voice.mp4"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        for k in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, k * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _half_of_bikes() -> bytes:
    data = sample_video("bikes.mp4").read_bytes()
    return data[: len(data) // 2]


BAD_REQUESTS = {
    "text renamed .mp4": (_file("notes.mp4", b"these are my notes, not a video\n" * 50), "Q?", "a\nb", "not a video"),
    "0 bytes": (_file("empty.mp4", b""), "Q?", "a\nb", "is empty (0 bytes)"),
    "truncated mp4": (_file("cut.mp4", _half_of_bikes), "Q?", "a\nb", "truncated"),
    "audio only": (audio_only_video, "Q?", "a\nb", "has no video stream"),
    "text file": (_file("notes.txt", b"hello, these are my notes\n" * 20), "Q?", "a\nb", "not a video"),
    "empty question": (None, "   ", "a\nb", "Please type a question"),
    "no options": (None, "What happens?", "\n \n", "give at least two"),
    "one option": (None, "What happens?", "only this", "give at least two"),
    "duplicate options": (None, "What happens?", "a bike\nA bike\nrain", "must differ"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gives_a_clear_message_and_the_next_request_succeeds(
    case: str, served: Served, bikes: Path, tmp_path: Path
) -> None:
    make, question, options, words = BAD_REQUESTS[case]
    video = make(tmp_path) if make else bikes
    with pytest.raises(Exception, match=re.escape(words)) as caught:
        _predict(served, video, question, options)
    assert "Traceback" not in str(caught.value)
    assert _predict(served, bikes, "What happens?", "a bike passes\nit rains")["answer"] in (
        "a bike passes",
        "it rains",
    )


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_evidence_refuses_bad_input_with_the_messages_of_predict(
    case: str, served: Served, bikes: Path, tmp_path: Path
) -> None:
    make, question, options, words = BAD_REQUESTS[case]
    video = make(tmp_path) if make else bikes
    with pytest.raises(Exception, match=re.escape(words)) as caught:
        _evidence(served, video, question, options)
    assert "Traceback" not in str(caught.value)


# ----------------------------------------------------------------------------------------------
# Serving hygiene


def test_no_file_outside_the_upload_cache_is_served(served: Served) -> None:
    for path in (ROOT / "app.py", ROOT / "README.md", Path("/etc/passwd"), served.examples[0].video):
        response = httpx.get(f"{served.url}gradio_api/file={path}")
        assert response.status_code in (403, 404), path


def test_repeated_api_requests_leave_no_new_file_in_the_upload_cache(served: Served, bikes: Path) -> None:
    from gradio.utils import get_upload_folder

    def files() -> list[Path]:
        return sorted(p for p in Path(get_upload_folder()).rglob("*") if p.is_file())

    _predict(served, bikes, "What happens?", "a bike passes\nit rains")  # the upload itself is cached
    before = files()
    for question in ("Does it rain?", "Is it day?", "What moves?"):
        _predict(served, bikes, question, "yes\nno")
    assert files() == before


def test_serving_settings(served: Served) -> None:
    config = httpx.get(f"{served.url}config").json()
    assert config["max_file_size"] == MAX_UPLOAD_BYTES
    assert config["show_error"] is False
    assert config["analytics_enabled"] is False
    info = httpx.get(f"{served.url}gradio_api/queue/status").json()
    assert info["queue_size"] == 0  # the queue is on


def test_importing_the_app_loads_no_model() -> None:
    code = "import sys, app; print(sorted(m for m in ('open_clip', 'decord', 'transformers') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"


# ----------------------------------------------------------------------------------------------
# Page text and command line


def test_models_are_found_in_a_folder_and_described(tmp_path: Path) -> None:
    first = make_checkpoint(tmp_path / "models" / "first")
    make_checkpoint(tmp_path / "models" / "second", task="open_ended", answer_vocab_size=5)
    (tmp_path / "models" / "not-a-model").mkdir()
    namesake = make_checkpoint(tmp_path / "other" / "first")
    models = Models([tmp_path / "models", first, namesake], device="cpu")
    assert list(models.choices) == ["first", "second", "other/first"]
    summary = model_summary(models.choices["first"])
    assert "ViT-B-32:random-seed0" in summary and "minilm" in summary and "appear, vanish, grow" in summary
    assert "open-ended" in model_summary(models.choices["second"])
    assert "No model found" in model_summary(None)


def test_the_summary_states_what_the_model_knows(tmp_path: Path) -> None:
    choice = Models([make_checkpoint(tmp_path / "synthetic-sup")], device="cpu").choices["synthetic-sup"]
    metadata = {"dataset": "synthetic", "setting": "supervised", "test": {"accuracy": 0.8125, "span_miou": 0.61}}
    synthetic = dataclasses.replace(choice, info=dataclasses.replace(choice.info, metadata=metadata))
    summary = model_summary(synthetic)
    assert "synthetic, supervised; held-out test accuracy 81.2%, event span mIoU 0.61" in summary
    assert "only knows a synthetic world" in summary and "meaningless" in summary


def test_command_line() -> None:
    args = app.parse_args(["--checkpoint", "a", "--checkpoint", "b", "--port", "7000", "--device", "cpu"])
    assert args.checkpoint == ["a", "b"] and args.port == 7000 and args.device == "cpu"
    assert not args.share and args.host is None  # gradio's default: $GRADIO_SERVER_NAME (set on Spaces) or loopback
    with pytest.raises(SystemExit, match="no checkpoint"):
        app.main(["--checkpoint", str(ROOT / "tests")])


def test_cache_dir_holds_the_feature_cache_and_the_inspection_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = {}

    def build_app(models: Models, examples: object, sources: object, inspection_dir: Path) -> str:
        built.update(features=models.cache_dir, inspection=inspection_dir)
        return "page"

    monkeypatch.setattr(app, "build_app", build_app)
    monkeypatch.setattr(app, "warm_up", lambda *args: None)
    monkeypatch.setattr(app, "launch", lambda page, *args: built.update(launched=page))
    app.main(["--cache-dir", str(tmp_path / "cache"), "--device", "cpu"])
    assert built == {
        "features": tmp_path / "cache" / "features",
        "inspection": tmp_path / "cache" / "inspection",
        "launched": "page",
    }


def test_options_are_one_per_line() -> None:
    assert parse_options(" a \n\nb\n") == ["a", "b"]
    assert parse_options("  \n") is None and parse_options(None) is None


def test_gradio_is_imported_only_by_the_app_package() -> None:
    """The library and the training programs run without gradio; only ``glance_focus/app/`` lays out pages."""
    import ast

    importers = []
    for path in [*(ROOT / "glance_focus").rglob("*.py"), *(ROOT / "train").rglob("*.py")]:
        if (ROOT / "glance_focus" / "app") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(name == "gradio" or name.startswith(("gradio.", "gradio_client")) for name in names):
                importers.append(str(path.relative_to(ROOT)))
    assert importers == []
