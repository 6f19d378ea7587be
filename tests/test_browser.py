"""The app in a real browser (Debian's Chromium driven by Playwright), as a person uses it:
upload a video, ask, read the answer and look at the figures; hide a stretch of the video in the
evidence panel; click an example; upload a broken file or a video under any name. Screenshots go
to a temporary folder, so a test run leaves the checkout as it was;
``GLANCE_FOCUS_REFRESH_SCREENSHOTS=1`` (with the bundled model) writes them to ``docs/`` instead,
where the README shows them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from glance_focus.app.examples import Example
from glance_focus.app.settings import EXAMPLES_PER_PAGE
from tests.test_app import ROOT, demo_assets, serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ANSWER = "#answer [data-testid=label-output-value]"
TIMEOUT_MS = 120_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium is not installed"),
]


@dataclass
class Site:
    url: str
    checkpoints: list[Path]
    examples: list[Example]
    screenshots: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("browser")
    checkpoints, examples, bundled = demo_assets(root)
    refresh = bundled and os.environ.get("GLANCE_FOCUS_REFRESH_SCREENSHOTS") == "1"
    screenshots = ROOT / "docs" if refresh else root / "screenshots"
    screenshots.mkdir(exist_ok=True)
    with serve(checkpoints, examples, root) as url:
        yield Site(url, checkpoints, examples, screenshots)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, site: Site) -> Iterator:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    # "load", then the upload box: the page keeps a connection open (queue heartbeat), so it never goes network-idle.
    page.goto(site.url, wait_until="load")
    page.locator("#video").wait_for(state="visible")
    yield page
    context.close()


def _upload(page, video: Path) -> None:
    page.locator("#video input[type=file]").set_input_files(str(video))
    page.locator("#video-preview video").wait_for()


def _ask(page, question: str, options: list[str]) -> None:
    page.locator("#question textarea, #question input").first.fill(question)
    page.locator("#options textarea").fill("\n".join(options))
    page.locator("#submit").click()


def _figure_rendered(page, selector: str) -> bool:
    image = page.locator(f"{selector} img")
    image.wait_for()
    return image.evaluate("img => img.complete && img.naturalWidth > 200 && img.naturalHeight > 100")


def test_upload_ask_and_see_the_answer_and_both_figures(page, site: Site) -> None:
    example = site.examples[0]
    _upload(page, example.video)
    _ask(page, example.question, example.options)
    page.locator(ANSWER).wait_for()
    assert page.locator(ANSWER).inner_text().strip() in example.options
    assert _figure_rendered(page, "#timeline") and _figure_rendered(page, "#attention")
    assert "total" in page.locator("#timings").inner_text()
    page.wait_for_timeout(500)  # let the figures settle before the screenshots
    page.screenshot(path=str(site.screenshots / "screenshot-demo.png"), full_page=True)
    page.locator("#attention").screenshot(path=str(site.screenshots / "screenshot-attention.png"))


def test_an_example_fills_the_inputs_and_shows_its_cached_outputs(page, site: Site) -> None:
    row = min(len(site.examples), EXAMPLES_PER_PAGE) - 1  # the last one on the first page
    example = site.examples[row]
    page.locator("#examples tbody tr").nth(row).click()
    page.locator(ANSWER).wait_for()
    assert page.locator("#question textarea, #question input").first.input_value() == example.question
    assert page.locator("#options textarea").input_value().splitlines() == example.options
    assert page.locator(ANSWER).inner_text().strip() in example.options
    assert _figure_rendered(page, "#timeline") and _figure_rendered(page, "#attention")


def test_a_broken_upload_shows_a_message_and_the_page_keeps_working(page, site: Site, tmp_path: Path) -> None:
    fake = tmp_path / "holiday.mp4"
    fake.write_bytes(b"definitely not a video " * 200)
    page.locator("#video input[type=file]").set_input_files(str(fake))
    page.wait_for_timeout(500)
    _ask(page, "What happened?", ["This.", "That."])
    page.get_by_text("is not a video", exact=False).first.wait_for()
    assert page.locator(ANSWER).count() == 0

    good = tmp_path / "good.mp4"
    shutil.copy(site.examples[0].video, good)
    page.locator("#video button[aria-label='Clear']").first.click()
    _upload(page, good)
    page.locator("#submit").click()
    page.locator(ANSWER).wait_for()
    assert page.locator(ANSWER).inner_text().strip() in ("This.", "That.")


EVIDENCE_EXAMPLE = "What happened right after the object shrank?"
"""A bundled example whose answer rests on one event (hiding 3.0-4.5 s flips it)."""


def test_the_evidence_panel_appears_and_hiding_a_stretch_changes_the_probabilities(page, site: Site) -> None:
    example = next((e for e in site.examples if e.question == EVIDENCE_EXAMPLE), site.examples[0])
    _upload(page, example.video)
    _ask(page, example.question, example.options)
    page.locator(ANSWER).wait_for()
    assert _figure_rendered(page, "#evidence")
    sentence = page.locator("#evidence-sentence").inner_text()
    assert "The answer rests most on P" in sentence or "does not rest on any single memory prompt" in sentence
    start, end = (float(page.locator(f"#{name} input").input_value()) for name in ("hide-start", "hide-end"))
    assert 0 <= start < end, "the range to hide is preset to the strongest evidence's span"
    if example.question == EVIDENCE_EXAMPLE:
        start, end = 3.0, 4.5
        page.locator("#hide-start input").fill(str(start))
        page.locator("#hide-end input").fill(str(end))
    before = page.locator("#answer").inner_text()
    page.locator("#hide-button").click()
    page.locator("#hidden-sentence").get_by_text(f"Hiding {start:.1f}–{end:.1f} s", exact=False).wait_for()
    hidden = page.locator("#hidden-answer").inner_text()
    assert hidden.strip() and hidden != before, "the probabilities without that stretch differ"
    if example.question == EVIDENCE_EXAMPLE:
        assert "becomes the answer" in page.locator("#hidden-sentence").inner_text()
    page.wait_for_timeout(500)  # let the figure settle before the screenshot
    page.locator("#evidence-panel").first.screenshot(path=str(site.screenshots / "screenshot-evidence.png"))

    page.locator("#hide-start input").fill("5")
    page.locator("#hide-end input").fill("2")
    page.locator("#hide-button").click()
    page.get_by_text("must end after it starts", exact=False).first.wait_for()


def test_compare_mode_shows_both_models_on_one_page(page, site: Site) -> None:
    if len(site.checkpoints) < 2:
        pytest.skip("the compare mode needs a second model (the bundled pair is missing)")
    example = next((e for e in site.examples if e.question == EVIDENCE_EXAMPLE), site.examples[0])
    _upload(page, example.video)
    page.locator("#question textarea, #question input").first.fill(example.question)
    page.locator("#options textarea").fill("\n".join(example.options))
    page.locator("#compare-submit").click()
    summary = page.locator("#compare-summary")
    summary.get_by_text("They ", exact=False).wait_for()
    names = [path.name for path in site.checkpoints[:2]]
    assert all(name in summary.inner_text() for name in names), "both models' answers"
    page.wait_for_function(  # one row per option, with both models' probabilities
        "options => options.every(o => document.querySelector('#compare-table').innerText.includes(o))",
        arg=example.options,
    )
    assert _figure_rendered(page, "#compare-timeline")
    page.wait_for_timeout(500)  # let the figure settle before the screenshot
    page.locator("#compare-box").screenshot(path=str(site.screenshots / "screenshot-compare.png"))


@pytest.mark.parametrize("name", ["clip.ts", "clip.mpg", "clip"])
def test_any_video_file_is_accepted_by_the_page_whatever_its_name(page, name: str, tmp_path: Path) -> None:
    """The upload control judges nothing by name or type: the server reads the content."""
    from tests.test_hostile_inputs import write_clip

    formats = {"clip.ts": ("mpegts", "libx264"), "clip.mpg": ("mpeg", "mpeg2video"), "clip": ("mpegts", "libx264")}
    clip = write_clip(tmp_path / name, *formats[name])
    page.locator("#video input[type=file]").set_input_files(str(clip))
    page.wait_for_timeout(1000)
    _ask(page, "What happened?", ["This.", "That."])
    page.locator(ANSWER).wait_for()
    assert page.locator(ANSWER).inner_text().strip() in ("This.", "That.")
