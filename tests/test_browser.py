"""The app in a real browser (headless Debian chromium driven by playwright): what a first-time user does.

Screenshots of each step are saved under ``tests/artifacts/`` (gitignored) for a human to look at.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 120_000
GENERATOR = "Browser Gen"
LABEL = "browser_gen"

if not CHROMIUM.is_file():
    pytest.skip(f"no browser at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")

from test_app import AppServer, head_args, sample_images  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("browser-home")
    srv = AppServer(home, head_args(home, tmp_path_factory), tmp_path_factory.mktemp("logs") / "app.log")
    yield srv
    srv.stop()
    assert "Traceback" not in srv.output(), srv.output()


@pytest.fixture(scope="module")
def page(server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        except Exception as exc:  # noqa: BLE001 - e.g. missing shared libraries
            pytest.skip(f"chromium does not start: {exc}")
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(server.url)
        pg.wait_for_selector("#attr-files")
        pg.wait_for_function("document.querySelector('#head-banner')?.innerText.includes('Active head')")
        yield pg
        context.close()
        browser.close()
        assert not errors, errors


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, list[Path]]:
    folder = tmp_path_factory.mktemp("browser-images")
    return {"single": sample_images(folder, "stable_diffusion_v1", 1, seed=3),
            "batch": sample_images(folder, "real", 2, start=10, seed=4)
            + sample_images(folder, "dalle_mini", 1, start=10, seed=5),
            "enroll": sample_images(folder, "latent_diffusion", 4, start=120, seed=6)}


def shot(page, name: str) -> None:
    page.wait_for_timeout(400)  # let transitions settle
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def text_of(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_landing_page_explains_itself(page):
    text = page.inner_text("body")
    assert "Which generative model made this image?" in text
    for tab in ("Attribute", "Enroll", "Verify", "Zoo"):
        assert page.get_by_role("tab", name=tab).is_visible()
    shot(page, "01_landing.png")


def test_attribute_one_image_shows_verdict(page, images):
    page.locator("#attr-files input[type=file]").set_input_files([str(images["single"][0])])
    page.click("#attr-button")
    page.wait_for_function("document.querySelector('#attr-verdict')?.innerText.includes('Verdict')")
    verdict = text_of(page, "#attr-verdict")
    assert "Verdict:" in verdict and images["single"][0].name in verdict
    assert "Traceback" not in page.inner_text("body")
    shot(page, "02_attribute_one.png")


def test_attribute_batch_shows_table_and_csv(page, images, tmp_path):
    page.click("#attr-clear")
    bad = tmp_path / "notes.png"
    bad.write_text("not really a png")
    files = [str(p) for p in images["batch"]] + [str(bad)]
    page.locator("#attr-files input[type=file]").set_input_files(files)
    page.click("#attr-button")
    page.wait_for_function("document.querySelector('#attr-summary')?.innerText.includes('4 images')")
    table = text_of(page, "#attr-table")
    assert "notes.png" in table and "not a recognised image format" in table
    assert page.locator("#attr-csv").is_visible()
    shot(page, "03_attribute_batch.png")


def test_enroll_a_generator(page, images):
    open_tab(page, "Enroll")
    page.locator("#enroll-name textarea, #enroll-name input").first.fill(GENERATOR)
    page.locator("#enroll-files input[type=file]").set_input_files([str(p) for p in images["enroll"]])
    page.click("#enroll-button")
    page.wait_for_function("document.querySelector('#enroll-status')?.innerText.includes('Enrolled')")
    assert LABEL in text_of(page, "#enroll-status")
    page.wait_for_function(f"document.querySelector('#enrolled-table')?.innerText.includes('{LABEL}')")
    page.get_by_text("Share this head").click()
    page.get_by_text("Export active head (.zip)").wait_for()
    page.get_by_text("HF_TOKEN").first.wait_for()  # pushing explains that it needs a token
    shot(page, "04_enroll.png")


def test_verify_one_image(page, images):
    open_tab(page, "Verify")
    box = page.locator("#verify-model input")
    box.click()
    box.fill(LABEL)
    page.locator("ul[role=listbox] li", has_text=LABEL).first.click()
    page.locator("#verify-files input[type=file]").set_input_files([str(images["enroll"][0])])
    page.click("#verify-button")
    page.wait_for_function("/\\b(Match|No match)\\b/.test(document.querySelector('#verify-summary')?.innerText || '')")
    summary = text_of(page, "#verify-summary")
    assert LABEL in summary and "score" in summary
    shot(page, "05_verify.png")


def test_verify_whitebox_mode_explains_what_it_needs(page):
    page.get_by_label("White-box: diffusers pipeline folder or Hub id").check()
    page.get_by_text("Calibration file").first.wait_for()
    assert not page.locator("#verify-model").is_visible()
    page.click("#verify-button")  # no pipeline given yet
    page.wait_for_function("document.querySelector('#verify-summary')?.innerText.includes('pipeline folder or Hub id')")
    shot(page, "06_verify_whitebox.png")
    for close in page.locator(".toast-close").all():
        close.click()
    page.get_by_label("Black-box: a class of the active head").check()
    page.locator("#verify-model").wait_for()


def test_zoo_tab_shows_the_active_head(page):
    open_tab(page, "Zoo")
    page.wait_for_function(f"document.querySelector('#zoo-info')?.innerText.includes('{LABEL}')")
    info = text_of(page, "#zoo-info")
    assert "Backbone" in info and "Classes" in info
    shot(page, "07_zoo.png")
